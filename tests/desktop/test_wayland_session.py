"""End to end on a real Wayland desktop: headless sway, the app as a native Wayland client.

The user's way on Wayland: `python -m app toggle` bound to the hotkey in the desktop's settings
(here a sway `bindsym`); a virtual keyboard (wtype) presses it, so sway fires the binding as it
would for a real key. Speech comes in through the recorder's audio seam, the real worker (Whisper
tiny.en) transcribes, the app pastes with wl-clipboard + wtype, and the text must land in the
focused window of another process: a Qt editor (native Wayland) and the foot terminal, each read
back by itself, with the user's clipboard given back and nothing in the window that was not focused.
Also here: hold-to-talk by a press and a release binding; the desktop portal's GlobalShortcuts
through a STAND-IN portal service on a private bus (no desktop here binds and presses keys through a
real one: docs/wayland.md); and the text left on the real clipboard where no key injector exists.
"""

import json
import os
import shutil
import subprocess
from unittest import mock

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # this process's own Qt (the Paster test)

from app.desktop.clipboard import WlClipboard  # noqa: E402
from app.desktop.hotkeys import HotkeyListener  # noqa: E402
from app.desktop.keys import parse_combo  # noqa: E402
from app.desktop.paste import ON_CLIPBOARD, PASTED, PasteOptions, Paster  # noqa: E402
from app.desktop.paths import instance_address  # noqa: E402
from app.desktop.wayland_clipboard import DataControlClipboard  # noqa: E402
from tests.desktop.conftest import APP_SETTINGS, ARTIFACTS  # noqa: E402
from tests.desktop.harness import CLIP_END, PYTHON, ROOT, App, wait_for  # noqa: E402
from tests.desktop.test_dictation import LONG_WAIT, MAX_WER, wer  # noqa: E402
from tests.desktop.wayland_harness import (Foot, PortalStandIn, WaylandSession, WaylandTarget,  # noqa: E402
                                           missing_tools)


@pytest.fixture(scope="module")
def wayland(tmp_path_factory):
    if shutil.which("sway") is None:
        pytest.skip("sway is not installed (Debian: apt install sway), and these tests need a Wayland compositor")
    missing = missing_tools()
    assert not missing, f"missing Wayland test tools {missing}: run `packaging/setup.sh deps`"
    workdir = tmp_path_factory.mktemp("wayland")
    session = WaylandSession(workdir, config_home=workdir / "config").start()
    yield session
    session.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, ARTIFACTS / f"wayland-{log.name}")


@pytest.fixture(scope="module")
def wl_target(wayland):
    return WaylandTarget(wayland)


@pytest.fixture(scope="module")
def foot(wayland):
    return Foot(wayland)


@pytest.fixture(scope="module")
def portal(wayland):
    """The STAND-IN GlobalShortcuts portal on a private session bus (see portal_standin.py for why)."""
    standin = PortalStandIn(wayland.workdir, wayland.env)
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def wayland_app(wayland, clips, wl_target, foot, portal):
    app = App(wayland, wayland.workdir, APP_SETTINGS)
    app.env["DBUS_SESSION_BUS_ADDRESS"] = portal.address
    assert app.config_home == wayland.config_home, "sway's binding must reach this instance"
    with mock.patch.dict(os.environ, {"XDG_CONFIG_HOME": str(app.config_home),
                                      "XDG_RUNTIME_DIR": wayland.env["XDG_RUNTIME_DIR"]}):
        app.address = instance_address()  # in the session's runtime folder
    app.start()
    try:
        wait_for(lambda: (s := app.status()) and s["worker"] == "ready", "the speech worker", 180)
    except AssertionError as exc:
        app.stop()
        raise AssertionError(f"{exc}\n--- app log ---\n{app.log()[-4000:]}") from None
    yield app
    app.stop()


def dictate_by_binding(session: WaylandSession, app: App, clip) -> None:
    """Press the bound hotkey to start, let the clip be spoken, press it again to stop."""
    app.speak(clip)
    played = app.count(CLIP_END)
    session.press_hotkey()
    wait_for(lambda: app.status()["state"] == "recording", "sway's binding to start the recording", 30)
    app.wait_spoken(played, LONG_WAIT)
    session.press_hotkey()
    wait_for(lambda: app.status()["state"] != "recording", "sway's binding to stop the recording", 30)


def test_the_app_runs_as_a_native_wayland_client_and_pastes_with_wtype(wayland, wayland_app):
    maps = open(f"/proc/{wayland_app.proc.pid}/maps").read()
    assert "libqwayland" in maps and "libqxcb" not in maps, "Qt must run on its Wayland platform plugin"
    log = wait_for(lambda: "paste keys on Wayland" in wayland_app.log() and wayland_app.log(),
                   "the paste mechanism to be chosen")
    assert "paste keys on Wayland: wtype" in log, log[-2000:]


def test_the_bound_hotkey_dictates_into_a_wayland_qt_window(wayland, wayland_app, wl_target, foot, clips):
    clip = clips["espeak-en-02"]
    wl_target.focus()
    before_foot = foot.text()
    wayland.set_clipboard("what the user had copied")
    dictate_by_binding(wayland, wayland_app, clip["path"])
    text = wait_for(lambda: wl_target.text().strip(), "text in the Wayland target", LONG_WAIT)
    wayland_app.wait_idle()
    assert wer(clip["text"], text) <= MAX_WER, text
    assert wayland.clipboard() == "what the user had copied", "the clipboard must be given back"
    assert wl_target.text() == text, "the text must be pasted exactly once"
    assert wl_target.has_focus(), f"the focus moved to {wayland.focused()}"
    assert foot.text() == before_foot, "nothing may reach the window that was not focused"
    assert wayland_app.history()[-1]["outcome"] == "pasted"


def test_foot_gets_the_transcript_with_the_terminal_keystroke(wayland, wayland_app, wl_target, foot, clips):
    clip = clips["espeak-en-05"]
    foot.focus()
    before_target = wl_target.text()
    start = len(foot.text())
    wayland.set_clipboard("before the terminal paste")
    dictate_by_binding(wayland, wayland_app, clip["path"])
    received = wait_for(lambda: foot.text()[start:].strip(), "text in foot", LONG_WAIT)
    wayland_app.wait_idle()
    assert "\x16" not in received, "a plain Ctrl+V reached the terminal"
    assert "paste: sent ctrl+shift+v to foot" in wayland_app.log()
    assert wer(clip["text"], received) <= MAX_WER, received
    assert wayland.clipboard() == "before the terminal paste"
    assert wl_target.text() == before_target, "nothing may reach the window that was not focused"


def test_hold_to_talk_with_a_press_and_a_release_binding(wayland, wayland_app, wl_target, clips):
    """sway's `bindsym` (press: `app start`) and `bindsym --release` (`app stop`): hold-to-talk where the
    desktop has no GlobalShortcuts portal."""
    clip = clips["espeak-en-06"]
    wl_target.focus()
    start = len(wl_target.text())
    wayland_app.speak(clip["path"])
    played = wayland_app.count(CLIP_END)
    holding = wayland.hold_keys(6.0)
    wait_for(lambda: wayland_app.status()["state"] == "recording", "the press binding to start the recording", 30)
    wayland_app.wait_spoken(played, LONG_WAIT)
    assert holding.poll() is None and wayland_app.status()["state"] == "recording", "still held: still recording"
    holding.wait(30)
    text = wait_for(lambda: wl_target.text()[start:].strip(), "text in the Wayland target", LONG_WAIT)
    wayland_app.wait_idle()
    assert wer(clip["text"], text) <= MAX_WER, text


@pytest.fixture
def wayland_client(wayland, monkeypatch):
    """This process as a client of the sway session. Its data-control connection is made by the first test
    that pastes and shared by the others, as in the app: one per process (see DataControl)."""
    for name in ("WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "SWAYSOCK"):
        monkeypatch.setenv(name, wayland.env[name])


@pytest.fixture
def clipboard_manager(wayland):
    """A clipboard manager as cliphist and clipman run: `wl-paste --watch` reads every new clipboard at once
    (here into a file, one entry a line)."""
    log = wayland.workdir / "clipboard-manager.txt"
    log.write_text("")
    manager = wayland.spawn(["wl-paste", "--watch", "sh", "-c", f"cat >> {log}; echo >> {log}"], "clipboard-manager")
    wayland.set_clipboard("the user's copy")
    wait_for(lambda: "the user's copy" in log.read_text(), "the clipboard manager to read the clipboard")
    yield log
    manager.terminate()
    manager.wait(10)


def test_a_clipboard_manager_reading_every_copy_does_not_take_the_paste(wayland, wayland_client, wl_target,
                                                                        clipboard_manager, qtbot):
    """cliphist, clipman, Klipper read each new clipboard the moment it is set. With `wl-copy --paste-once`
    that read was the one paste: the target got nothing and the history said Pasted. Served through
    data-control, the manager's read (before the paste key) is served and not counted, the target's is."""
    wl_target.focus()
    before = wl_target.text()
    paster = Paster(server="wayland")
    assert isinstance(paster.clipboard, DataControlClipboard)
    with qtbot.waitSignal(paster.finished, timeout=10_000) as done:
        paster.paste("words the manager reads first")
    assert done.args[0] and paster.outcome == PASTED, done.args
    text = wait_for(lambda: wl_target.text()[len(before):], "the paste in the Wayland target")
    assert text == "words the manager reads first", "pasted exactly once, and nothing else"
    assert "words the manager reads first" in clipboard_manager.read_text(), "the manager did read the transcript"
    assert wayland.clipboard() == "the user's copy", "the clipboard must be given back"
    assert wl_target.has_focus()


@pytest.fixture
def no_key_injector(wayland, wayland_client, tmp_path, monkeypatch):
    """This process as a client of the sway session with wl-clipboard but neither wtype nor ydotool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("wl-copy", "wl-paste", "cat"):  # wl-copy runs cat to save its input
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("clipboard", ["data-control", "wl-copy"])
def test_without_a_key_injector_the_text_stays_on_the_clipboard_with_a_notice(wayland, wayland_app, wl_target,
                                                                               no_key_injector, qtbot, clipboard):
    """A compositor session where nothing can send keys (no wtype, no ydotool daemon): the real
    clipboard under sway (our data-control owner, or wl-clipboard where a desktop has no data-control),
    the paste keystroke impossible. The transcript must stay on the clipboard, the notice must say so,
    and the focused window must get nothing."""
    wl_target.focus()
    before = wl_target.text()
    wayland.set_clipboard("the user's clipboard")
    paster = Paster(server="wayland", clipboard=WlClipboard() if clipboard == "wl-copy" else None)
    assert isinstance(paster.clipboard, WlClipboard if clipboard == "wl-copy" else DataControlClipboard)
    assert paster.injector.mechanism == "clipboard"
    with qtbot.waitSignal(paster.finished, timeout=10_000) as done:
        paster.paste("the dictated words")
    ok, message = done.args
    assert not ok and paster.outcome == ON_CLIPBOARD
    assert "The text is on the clipboard: paste it yourself" in message and "install wtype" in message
    assert "\n" not in message, "a one-line notice"
    assert wayland.clipboard() == "the dictated words"
    assert wl_target.text() == before


def test_the_portal_shortcut_is_a_real_push_to_talk_key(wayland, wayland_app, wl_target, portal, clips):
    """The desktop's GlobalShortcuts portal (a STAND-IN here) reports press and release: hold to talk."""
    calls = wait_for(lambda: [c for c in portal.calls() if c["method"] == "BindShortcuts"] and portal.calls(),
                     "the app to bind its shortcut")
    bind = next(c for c in calls if c["method"] == "BindShortcuts")
    assert bind["signature"] == "oa(sa{sv})sa{sv}" and "CTRL+SHIFT+space" in json.dumps(bind["body"])
    assert wait_for(lambda: wayland_app.status()["hotkeys"], "the app to take the portal's key")
    assert "hotkeys: desktop portal (GlobalShortcuts): Ctrl+Shift+Space" in wayland_app.log()
    clip = clips["espeak-en-08"]
    wl_target.focus()
    start = len(wl_target.text())
    wayland.set_clipboard("kept")
    wayland_app.speak(clip["path"])
    played = wayland_app.count(CLIP_END)
    portal.press()
    wait_for(lambda: wayland_app.status()["state"] == "recording", "the portal's press to start the recording")
    wayland_app.wait_spoken(played, LONG_WAIT)
    assert wayland_app.status()["state"] == "recording", "held: still recording"
    portal.release()
    text = wait_for(lambda: wl_target.text()[start:].strip(), "text in the Wayland target", LONG_WAIT)
    wayland_app.wait_idle()
    assert wer(clip["text"], text) <= MAX_WER, text
    assert wayland.clipboard() == "kept"


def test_a_desktop_that_assigns_no_key_yet_is_waited_for(wayland, qtbot, monkeypatch):
    """KDE Plasma 5.27 answers BindShortcuts with no key until the user assigns one (seen with the
    real xdg-desktop-portal-kde, see docs/wayland.md); the STAND-IN plays that desktop."""
    standin = PortalStandIn(wayland.workdir, wayland.env, mode="unassigned", name="portal-unassigned")
    try:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", standin.address)
        monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
        listener = HotkeyListener(parse_combo("<ctrl>+<shift>+<space>"), parse_combo("<esc>"))
        with qtbot.waitSignal(listener.unavailable, timeout=20_000) as problem:
            listener.start()
        assert "assign one in its shortcut settings" in problem.args[0] and "python -m app toggle" in problem.args[0]
        assert listener.mechanism == "desktop portal (GlobalShortcuts): no key"
        with qtbot.waitSignal(listener.ready, timeout=20_000):
            standin.assign()
        assert listener.mechanism == "desktop portal (GlobalShortcuts): Ctrl+Shift+Space" and listener.problem is None
        with qtbot.waitSignals([listener.pressed, listener.released], order="strict", timeout=20_000):
            standin.press()
            standin.release()
        listener.stop()
    finally:
        standin.stop()


def test_a_new_hotkey_in_settings_asks_the_desktop_again(wayland, qtbot, monkeypatch):
    """Changing the hotkey closes the portal session and binds anew with the new key as the suggestion
    (the STAND-IN portal records the calls); press and release then come through the new session."""
    standin = PortalStandIn(wayland.workdir, wayland.env, name="portal-rebind")
    try:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", standin.address)
        monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
        listener = HotkeyListener(parse_combo("<ctrl>+<shift>+<space>"), parse_combo("<esc>"))
        with qtbot.waitSignal(listener.ready, timeout=20_000):
            listener.start()
        with qtbot.waitSignal(listener.ready, timeout=20_000):
            listener.set_combos(parse_combo("<ctrl>+<alt>+d"), parse_combo("<esc>"))
        binds = [c for c in standin.calls() if c["method"] == "BindShortcuts"]
        assert len(binds) == 2 and "CTRL+ALT+d" in json.dumps(binds[1]["body"]), binds
        assert binds[0]["body"][0] != binds[1]["body"][0], "a new session, not the old one again"
        with qtbot.waitSignals([listener.pressed, listener.released], order="strict", timeout=20_000):
            standin.press()
            standin.release()
        listener.set_combos(parse_combo("<ctrl>+<alt>+d"), parse_combo("<esc>"))  # unchanged: no new session
        qtbot.wait(300)
        assert len([c for c in standin.calls() if c["method"] == "BindShortcuts"]) == 2
        listener.stop()
    finally:
        standin.stop()


def test_settings_say_how_hotkey_and_paste_work_here(wayland, wayland_app):
    assert wayland_app.command("show")["ok"]
    wait_for(lambda: any(t.endswith("settings") for t in wayland.windows()), "the settings window")
    line = wait_for(lambda: [ln for ln in wayland_app.log().splitlines() if "settings: On this desktop" in ln],
                    "the settings window to show the mechanisms")[-1]
    assert line.endswith("hotkey: desktop portal (GlobalShortcuts): Ctrl+Shift+Space. Paste keys: wtype."), line
    wayland.swaymsg('[title="settings$"] kill')


def test_typing_without_a_key_injector_leaves_the_text_on_the_clipboard(wayland, no_key_injector, qtbot):
    """Paste method "type" where nothing can type: the text must still reach the (real) clipboard."""
    wayland.set_clipboard("the user's clipboard")
    paster = Paster(PasteOptions(method="type"), server="wayland")
    with qtbot.waitSignal(paster.finished, timeout=10_000) as done:
        paster.paste("typed words")
    ok, message = done.args
    assert not ok and paster.outcome == ON_CLIPBOARD and "The text is on the clipboard" in message
    assert wayland.clipboard() == "typed words"


def test_text_left_on_the_clipboard_outlives_the_app(wayland):
    """What the app serves through data-control is gone when its connection closes; at exit it is handed
    to wl-copy, so a transcript left for the user to paste (or the clipboard put back) is still there
    after the app quits."""
    script = ("from app.desktop.paste import Paster, PasteOptions\n"
              "paster = Paster(PasteOptions(method='copy'), server='wayland')\n"
              "assert type(paster.clipboard).__name__ == 'DataControlClipboard', paster.clipboard\n"
              "paster.paste('left for the user')\n"
              "paster.close()\n")
    env = {**wayland.env, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([PYTHON, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert wayland.clipboard() == "left for the user"


GONE_SCRIPT = """
import gc, sys, time
from app.desktop.wayland_clipboard import DataControlClipboard
import subprocess
clipboard = DataControlClipboard()
for n in range(5):  # offers of others' copies, our offers and the clipboard put back: objects of each kind
    subprocess.run(["wl-copy", f"copied {n}"], check=True)
    saved = clipboard.snapshot()
    offer = clipboard.offer(f"words on offer {n}")
    clipboard.restore(saved, offer)
clipboard.offer("words on offer")
print("offered", flush=True)
control = DataControlClipboard._shared
device, registry = control._device, control._registry
sys.stdin.readline()  # the compositor is stopped meanwhile
deadline = time.monotonic() + 20
while control._display._ptr is not None and time.monotonic() < deadline:
    time.sleep(0.05)
assert control.lost, "the selection thread did not see the compositor go"
# freed in order by the thread itself: every object before the connection, none left for the GC
assert control._display._ptr is None and device.destroyed and registry.destroyed and control._registry is None
del clipboard, control, device, registry
DataControlClipboard._shared = None
gc.collect()
print("collected", flush=True)
"""


def test_a_compositor_that_goes_away_leaves_the_app_running(tmp_path):
    """Once the compositor closed the connection, Python collected the connection's objects in any order,
    and one freed after the connection itself crashed the process (a segfault in the suite, not every
    run). The thread that served the clipboard now frees them in order; the GC then finds nothing to free."""
    session = WaylandSession(tmp_path, config_home=tmp_path / "config").start()
    # glibc fills freed memory, so that a use after free fails here rather than some time later
    env = {**session.env, "QT_QPA_PLATFORM": "offscreen", "MALLOC_PERTURB_": "165", "MALLOC_CHECK_": "3"}
    app = subprocess.Popen([PYTHON, "-c", GONE_SCRIPT], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "offered", app.stderr.read()
        session.stop()
        out, err = app.communicate("go\n", timeout=60)
    finally:
        session.stop()
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0 and out.strip() == "collected", f"rc {app.returncode}\n{err[-3000:]}"
