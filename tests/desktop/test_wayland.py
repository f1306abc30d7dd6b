"""The Wayland paths no compositor here provides, against a stand-in ydotool that records what it was
asked to do (ydotoold needs /dev/uinput, which this machine lacks), and the messages when the tools
or global hotkeys are missing. wtype, wl-copy and wl-paste run for real under headless sway in
test_wayland_session.py."""

import os
import shutil
import socket
import stat

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.desktop.clipboard import WlClipboard  # noqa: E402
from app.desktop.hotkeys import HotkeyListener  # noqa: E402
from app.desktop.injection import WaylandKeys  # noqa: E402
from app.desktop.keys import parse_combo  # noqa: E402
from app.desktop.paste import FAILED, Paster  # noqa: E402
from app.desktop.session import display_server  # noqa: E402
from app.errors import UserError  # noqa: E402

RECORDER = """#!/bin/sh
printf '%s\\n' "${{0##*/}} $*" >> "{log}"
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"

    def install(name, script=RECORDER):
        path = bin_dir / name
        path.write_text(script.format(log=log, dir=tmp_path))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    for helper in ("cat", "sleep"):  # all the stand-ins need; nothing else of the real PATH is visible
        (bin_dir / helper).symlink_to(shutil.which(helper))
    monkeypatch.setenv("PATH", str(bin_dir))
    return install, log, tmp_path


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


def test_ydotool_is_used_only_with_its_daemon_and_sends_evdev_key_codes(tools, monkeypatch):
    install, log, tmp = tools
    install("ydotool")
    monkeypatch.setenv("YDOTOOL_SOCKET", str(tmp / "ydotool.sock"))
    without = WaylandKeys()
    assert without.mechanism == "clipboard" and "ydotoold" in without.reason
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # where ydotoold 1.x listens
    daemon.bind(str(tmp / "ydotool.sock"))
    try:
        keys = WaylandKeys()
        assert keys.mechanism == "ydotool"
        keys.send("ctrl+v")
    finally:
        daemon.close()
    assert calls(log) == ["ydotool key 29:1 47:1 47:0 29:0"]


def test_without_a_tool_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="install wtype .* or start the ydotool daemon"):
        WaylandKeys().send("ctrl+v")


def test_without_a_portal_wayland_sessions_are_told_to_bind_the_toggle_command(monkeypatch, qtbot, tmp_path):
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")  # no session bus at all
    assert display_server() == "wayland"
    listener = HotkeyListener(parse_combo("<ctrl>+<shift>+<space>"), parse_combo("<esc>"))
    with qtbot.waitSignal(listener.unavailable, timeout=10_000) as problem:
        listener.start()
    assert "python -m app toggle" in problem.args[0] and listener.problem == problem.args[0]
    assert listener.mechanism == "none: bind `python -m app toggle`"


def test_a_clipboard_that_cannot_be_set_is_a_failure_not_a_claim(monkeypatch, tmp_path, qtbot):
    """The real wl-copy with no compositor to talk to: the notice must not say the text is on the clipboard."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("WAYLAND_DISPLAY", "no-compositor-here")
    monkeypatch.delenv("SWAYSOCK", raising=False)
    assert WlClipboard.available(), "wl-clipboard is missing: run `packaging/setup.sh deps`"
    paster = Paster(server="wayland", injector=WaylandKeys())
    with qtbot.waitSignal(paster.finished, timeout=10_000) as done:
        paster.paste("the dictated words")
    ok, message = done.args
    assert not ok and paster.outcome == FAILED
    assert message.startswith("The text could not be put on the clipboard (wl-copy:"), message
