"""A real X11 desktop for end-to-end tests and the latency benchmark.

`XSession` runs Xvfb (display number picked by the server itself, so parallel runs never clash),
openbox (focus, _NET_ACTIVE_WINDOW) and trayer (a system tray). `App` runs `python -m app` with
its own settings folder and the test audio hook. Paste targets, each in a process of its own:
`Target` (a QTextEdit), `GtkEditor` (mousepad), `PlainTerminal` (xterm as installed) and `Terminal`
(an xterm that also pastes with Ctrl+Shift+V). Every wait polls for a condition with a
generous deadline: nothing here asserts on time.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

from app.desktop.paths import instance_address
from app.desktop.remote import request
from tests.desktop.real_keyboard import RealKeyboard

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
_XDOTOOL_ACTIONS = {"key", "keydown", "keyup", "type", "mousemove", "click", "mousedown", "mouseup", "windowactivate"}
CLIP_END = "test audio source: end of"  # the app's log line when the test microphone has played its clip


def wait_for(predicate, what, timeout: float = 60.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds. `what` is a
    text, or a function that writes it when the wait fails (what a window holds then, not when the wait began)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class Session:
    """A desktop session the tests start (X11 or Wayland): the programs it runs and their environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    def spawn(self, argv: list[str], name: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        """Start a program on this display, its output appended to `log` (default: NAME.log)."""
        out = open(log or self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env or self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def run(self, *argv: str, input: bytes | None = None, timeout: float = 30) -> str:
        done = subprocess.run(argv, env=self.env, input=input, capture_output=True, timeout=timeout)
        return done.stdout.decode(errors="replace")

    def stop(self) -> None:
        """Terminate the programs, last first (killed after 10 s), and forget them."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()


class XSession(Session):
    """Xvfb + openbox + trayer. `env` is the environment for programs on this display."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._keyboard: RealKeyboard | None = None  # the server's keyboard device, opened on first use

    def start(self, attempts: int = 2) -> "XSession":
        """Xvfb, openbox, trayer; once more with a fresh X server when they do not come up. Seen on a
        loaded machine: openbox could not open the display Xvfb had just announced."""
        attempt = 1
        while True:
            try:
                return self._start_once()
            except (AssertionError, RuntimeError):
                self.stop()  # a session that failed to start must not leave its X server running
                if attempt == attempts:
                    raise
                attempt += 1

    def _start_once(self) -> "XSession":
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                pass_fds=(write_fd,), stderr=open(self.workdir / "xvfb.log", "wb"))
        os.close(write_fd)
        self.procs.append(xvfb)
        with os.fdopen(read_fd) as fh:
            display = fh.readline().strip()
        if not display:
            raise RuntimeError(f"Xvfb did not start; see {self.workdir / 'xvfb.log'}")
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")}
        self.env = {**env, "DISPLAY": f":{display}", "XDG_SESSION_TYPE": "x11", "QT_QPA_PLATFORM": "xcb"}
        openbox = self.spawn(["openbox"], "openbox")
        wait_for(lambda: openbox.poll() is not None or "window id" in self.run("xprop", "-root", "_NET_SUPPORTING_WM_CHECK"),
                 "openbox to manage the screen")
        if openbox.poll() is not None:
            raise AssertionError(f"openbox exited without managing the screen; see {self.workdir / 'openbox.log'}")
        self.spawn(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "24",
                    "--SetDockType", "true", "--transparent", "false"], "trayer")
        wait_for(self.tray_ready, "trayer to own the system tray selection")
        return self

    def tray_ready(self) -> bool:
        code = "from Xlib import display; d = display.Display(); " \
               "print(d.get_selection_owner(d.intern_atom('_NET_SYSTEM_TRAY_S0')))"
        return self.run(PYTHON, "-c", code).strip() not in ("0", "")

    def xdotool(self, *args: str) -> str:
        """Run xdotool; a key or pointer action it could not send fails the test at once (a query such as
        `search` may find nothing, which is its answer, not a failure)."""
        if args and args[0] in _XDOTOOL_ACTIONS:
            done = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, timeout=30)
            assert done.returncode == 0, f"xdotool {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}"
            return done.stdout.decode(errors="replace")
        return self.run("xdotool", *args)

    @property
    def keyboard(self) -> RealKeyboard:
        """Keys as a person's keyboard sends them (`real_keyboard.py`): the hotkey is held here, not through
        xdotool's XTest device, which the app's own paste shares."""
        if self._keyboard is None:
            self._keyboard = RealKeyboard(self.env["DISPLAY"])
        return self._keyboard

    @contextlib.contextmanager
    def holding(self, down: str, up: str):
        """Keys held on the keyboard for the block's length and released in `up`'s order even when the
        block fails: a key left down would start or end the next test's dictation."""
        self.keyboard.down(down)
        try:
            yield
        finally:
            self.keyboard.up(up)

    def set_clipboard(self, text: str) -> None:
        """Another program owns the clipboard with `text` (xclip keeps serving it in the background)."""
        subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=text.encode(), env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    def clipboard(self) -> str:
        return self.run("xclip", "-selection", "clipboard", "-o", timeout=10)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        code = ("import sys; from PySide6.QtGui import QGuiApplication; app = QGuiApplication([]); "
                "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)")
        subprocess.run([PYTHON, "-c", code, str(path)], env=self.env, timeout=30)

    def stop(self) -> None:
        if self._keyboard is not None:
            self._keyboard.close()
            self._keyboard = None
        super().stop()


class Window:
    """Something on the display the paste can land in."""

    title = ""

    def __init__(self, session: XSession) -> None:
        self.session = session
        self.window_id = ""

    def _find(self) -> None:
        self.window_id = wait_for(lambda: self.session.xdotool("search", "--name", f"^{self.title}$").split(),
                                  f"the {self.title} window")[0]

    def focus(self) -> None:
        self.session.xdotool("windowactivate", "--sync", self.window_id)
        wait_for(lambda: self.session.xdotool("getactivewindow").strip() == self.window_id, f"{self.title} focused")


class Target(Window):
    """The Qt text editor of target_app.py; its changes are read back from its log."""

    title = "dictation-target"

    def __init__(self, session: XSession, workdir: Path) -> None:
        super().__init__(session)
        self.log = workdir / "target.jsonl"
        self.log.unlink(missing_ok=True)
        session.spawn([PYTHON, "-m", "tests.desktop.target_app", str(self.log)], "target")
        wait_for(lambda: self.changes(), "the target editor to start")
        self._find()

    def changes(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        except (FileNotFoundError, ValueError):
            return []

    def text(self) -> str:
        changes = self.changes()
        return changes[-1]["text"] if changes else ""

    def clear(self) -> None:
        self.focus()
        self.session.xdotool("key", "--clearmodifiers", "ctrl+a", "BackSpace")
        wait_for(lambda: self.text() == "", "the target to be emptied")


class Terminal(Window):
    """xterm set up like modern terminals, where Ctrl+Shift+V pastes the clipboard (the app sends the
    xterm family Shift+Insert with the text in PRIMARY, which pastes here too)."""

    title = "dictation-terminal"

    def __init__(self, session: XSession, workdir: Path) -> None:
        super().__init__(session)
        self.out = workdir / "terminal.out"
        self.out.write_bytes(b"")
        translations = "XTerm*VT100.translations: #override Shift Ctrl <Key>V: insert-selection(CLIPBOARD)"
        session.spawn(["xterm", "-title", self.title, "-xrm", translations, "-e", PYTHON, "-m",
                       "tests.desktop.terminal_reader", str(self.out)], "xterm")
        self._find()

    def text(self) -> str:
        return self.out.read_bytes().decode(errors="replace")


class PlainTerminal(Window):
    """xterm exactly as installed (no resources, no translations), its tty bytes written to a file:
    the terminal a new user meets, where Ctrl+Shift+V does nothing and Shift+Insert pastes PRIMARY."""

    title = "dictation-xterm"

    def __init__(self, session: XSession, workdir: Path) -> None:
        super().__init__(session)
        self.out = workdir / "plain-terminal.out"
        self.out.write_bytes(b"")
        session.spawn(["xterm", "-title", self.title, "-e", PYTHON, "-m", "tests.desktop.terminal_reader",
                       str(self.out)], "plain-xterm")
        self._find()

    def received(self) -> bytes:
        return self.out.read_bytes()

    def clear(self) -> None:
        """As a user starts afresh: Enter (the line is done), then the bytes so far are forgotten. The app sees
        that key, so the next dictation does not go on from the last one (no space before it)."""
        self.focus()
        self.session.xdotool("key", "Return")
        wait_for(lambda: self.received().endswith(b"\r"), "the Enter in the terminal")
        self.out.write_bytes(b"")


class GtkEditor(Window):
    """mousepad (GTK 3, from Debian) editing a file; its text is read back by saving (Ctrl+S)."""

    def __init__(self, session: XSession, workdir: Path) -> None:
        super().__init__(session)
        self.path = workdir / "gtk-target.txt"
        self.path.write_text("")
        self.title = f"{self.path} - Mousepad"
        session.spawn(["mousepad", str(self.path)], "mousepad")
        self._find()

    def text(self) -> str:
        if self.modified():  # the title starts with "*" until the file is saved
            self.focus()
            self.session.xdotool("key", "--clearmodifiers", "ctrl+s")
            wait_for(lambda: not self.modified(), "mousepad to save its text", 20)
        return self.path.read_text()

    def modified(self) -> bool:
        return self.session.xdotool("getwindowname", self.window_id).startswith("*")

    def clear(self) -> None:
        self.focus()
        self.session.xdotool("key", "--clearmodifiers", "ctrl+a", "BackSpace")
        wait_for(lambda: self.text() == "", "the GTK editor to be emptied")


class App:
    """The dictation app under test, with its own settings folder and the test audio hook."""

    def __init__(self, session: XSession, workdir: Path, settings: dict) -> None:
        self.session = session
        self.config_home = workdir / "config"
        (self.config_home / "diffusion-dictate").mkdir(parents=True, exist_ok=True)
        (self.config_home / "diffusion-dictate" / "settings.json").write_text(json.dumps(settings))
        self.audio_link = workdir / "speech.wav"  # the "microphone": re-pointed between dictations
        self.log_path = workdir / "app.log"
        self.log_path.write_text("")
        with mock.patch.dict(os.environ, {"XDG_CONFIG_HOME": str(self.config_home)}):
            self.address = instance_address()
        self.data_home = workdir / "data"  # the history database is in here
        self.env = {**session.env, "XDG_CONFIG_HOME": str(self.config_home), "XDG_DATA_HOME": str(self.data_home),
                    "DICTATE_TEST_AUDIO": str(self.audio_link), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> float:
        """Start the app; return seconds until it answered on its remote channel."""
        self.started_at = time.monotonic()
        self.proc = self.session.spawn([PYTHON, "-m", "app"], "app", env=self.env, log=self.log_path)
        wait_for(lambda: self.status() or self.proc.poll() is not None, "the app to answer", timeout=60, interval=0.005)
        answered = time.monotonic() - self.started_at
        assert self.proc.poll() is None, f"the app exited early:\n{self.log()}"
        return answered

    def wait_ready(self) -> dict:
        """Until the model is loaded and the hotkeys are live."""
        return wait_for(lambda: (s := self.status()) and s["worker"] == "ready" and s["hotkeys"] and s,
                        "the speech worker and the hotkeys", timeout=180)

    def status(self) -> dict | None:
        return request("status", timeout_s=5, address=self.address)

    def command(self, name: str) -> dict | None:
        return request(name, timeout_s=5, address=self.address)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def transcripts(self) -> list[str]:
        """Every transcript the worker returned, in order, as the app logged it."""
        return [ast.literal_eval(m) for m in re.findall(r"transcribed job=\S+ worker_ms=\S+ text=(.*)$", self.log(),
                                                        re.MULTILINE)]

    def history(self) -> list[dict]:
        """The app's history, oldest first: text, outcome and paste result of each dictation."""
        path = self.data_home / "diffusion-dictate" / "history.sqlite3"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT id, text, outcome, paste_ok FROM dictations ORDER BY id").fetchall()
        return [{"id": r[0], "text": r[1], "outcome": r[2], "paste_ok": r[3]} for r in rows]

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def speak(self, clip: Path) -> None:
        """Point the test microphone at `clip` for the next recording."""
        self.audio_link.unlink(missing_ok=True)
        self.audio_link.symlink_to(clip)

    def wait_spoken(self, played: int, timeout: float = 180) -> None:
        """Until the test microphone has played one more clip to its end than `played` (a `count(CLIP_END)`
        taken before the dictation began)."""
        self.wait(lambda: self.count(CLIP_END) > played, "the clip to be spoken", timeout)

    def wait_recording(self, how: str, timeout: float = 30):
        return self.wait(lambda: (s := self.status()) and s["state"] == "recording", f"{how} to start recording",
                         timeout)

    def wait(self, predicate, what: str, timeout: float = 60.0):
        """`wait_for`, and on a timeout the app's state and the end of its log in the failure: a CI run
        keeps no artifacts, and the failure message is all that is left to find the cause by."""
        try:
            return wait_for(predicate, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\napp status: {self.status()}\n--- app log (end) ---\n"
                                 f"{self.log()[-3000:]}") from None

    def wait_idle(self) -> dict:
        return wait_for(lambda: (s := self.status()) and s["state"] in ("idle", "error") and s["queued"] == 0 and s,
                        "the app to finish its dictations", timeout=120)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def maps_torch(self) -> bool:
        return "torch" in Path(f"/proc/{self.proc.pid}/maps").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def hold_and_release(session, app, clip, order, hold_s: float = 0.0) -> None:
    """Press Ctrl+Shift+Space, keep it down until the clip is spoken (and `hold_s` more), release in `order`."""
    app.speak(clip)
    played = app.count(CLIP_END)
    session.keyboard.down("ctrl+shift+space")
    try:
        app.wait_recording("the hotkey")
        app.wait_spoken(played)
        time.sleep(hold_s)
    finally:
        for key in order:
            session.keyboard.up(key)
            time.sleep(0.4)


def missing_tools() -> list[str]:
    tools = ("Xvfb", "openbox", "trayer", "xdotool", "xclip", "xprop", "xterm", "mousepad")
    return [tool for tool in tools if not shutil.which(tool)]
