"""A real Wayland desktop for the end-to-end tests: Debian's sway (wlroots), headless.

`WaylandSession` starts sway with the headless backend and the pixman software renderer (no GPU, no
input devices, no seat manager), in a runtime folder of its own, with a generated config that binds
the app's hotkey to `python -m app toggle` exactly as a user binds it in their desktop's keyboard
settings. Keys are real key events through the compositor: `wtype` is a virtual keyboard
(zwp_virtual_keyboard_v1), so sway sees the combo, fires the binding and never passes it to the
focused window. Clipboard and focus are read back with wl-clipboard and sway's IPC (swaymsg).

sway refuses to start as root (it cannot drop privileges it could regain). Under root (CI, this
machine) it runs in a new user namespace (`unshare --user`), where it is not root but still the same
user outside: the sockets it makes stay reachable to the tests, and the commands it execs reach the
app's instance socket.

Targets: `WaylandTarget` (the Qt editor of target_app.py as a native Wayland client) and `Foot`
(the foot terminal running terminal_reader.py, which writes every byte it gets to a file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.desktop.harness import PYTHON, ROOT, Session, wait_for

HOTKEY_KEYS = ("ctrl", "shift", "space")  # the app's default <ctrl>+<shift>+<space>
HOLD_KEYS = ("ctrl", "alt", "h")  # bound to `app start` on press and `app stop` on release
TOOLS = ("sway", "swaymsg", "wtype", "wl-copy", "wl-paste", "foot", "dbus-daemon")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if not shutil.which(t)]


class WaylandSession(Session):
    """Headless sway; `env` is the environment of a native Wayland client on it."""

    def __init__(self, workdir: Path, config_home: Path) -> None:
        super().__init__(workdir)
        self.runtime = workdir / "runtime"
        self.config_home = config_home  # the app's XDG_CONFIG_HOME: `app toggle` finds the instance by it

    def start(self) -> "WaylandSession":
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        config = self.workdir / "sway.config"
        mods, key = HOTKEY_KEYS[:-1], HOTKEY_KEYS[-1]
        config.write_text("\n".join([
            "output HEADLESS-1 resolution 1280x800",
            "focus_follows_mouse no",
            f"bindsym {'+'.join(mods)}+{key} exec {PYTHON} -m app toggle",
            # hold-to-talk without a portal: start on press, stop on release
            f"bindsym --no-repeat {'+'.join(HOLD_KEYS)} exec {PYTHON} -m app start",
            f"bindsym --release {'+'.join(HOLD_KEYS)} exec {PYTHON} -m app stop",
        ]) + "\n")
        base = {k: v for k, v in os.environ.items()
                if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SWAYSOCK", "DBUS_SESSION_BUS_ADDRESS", "QT_QPA_PLATFORM")}
        common = {**base, "XDG_RUNTIME_DIR": str(self.runtime), "XDG_CONFIG_HOME": str(self.config_home),
                  "XDG_SESSION_TYPE": "wayland", "XDG_CURRENT_DESKTOP": "sway"}
        sway_env = {**common, "WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1", "WLR_RENDERER": "pixman"}
        argv = ["sway", "--config", str(config)]
        if os.getuid() == 0:
            probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, (
                f"sway refuses to run as root, and a user namespace for it is not allowed here "
                f"({probe.stderr.strip()}): run the tests as a normal user, or allow unprivileged user namespaces")
            argv = ["unshare", "--user", *argv]
        self.sway = self.spawn(argv, "sway", env=sway_env)
        wait_for(lambda: self.sway.poll() is not None or (self._socket("wayland-[0-9]") and self._socket("sway-ipc.*")),
                 "sway to open its sockets", 30)
        if self.sway.poll() is not None:
            raise AssertionError(f"sway exited at start:\n{(self.workdir / 'sway.log').read_text()[-3000:]}")
        self.env = {**common, "WAYLAND_DISPLAY": self._socket("wayland-[0-9]").name,
                    "SWAYSOCK": str(self._socket("sway-ipc.*")), "QT_QPA_PLATFORM": "wayland"}
        wait_for(lambda: self.swaymsg("-t", "get_outputs").strip().startswith("["), "sway to answer on its IPC socket")
        return self

    def _socket(self, pattern: str) -> Path | None:
        return next((p for p in self.runtime.glob(pattern) if not p.name.endswith(".lock")), None)

    def swaymsg(self, *args: str) -> str:
        return self.run("swaymsg", *args)

    def focused(self) -> dict:
        """The focused window: {"app_id": ..., "name": title}, or {} when none has the focus."""
        def find(node: dict) -> dict | None:
            if node.get("focused") and node.get("type") in ("con", "floating_con"):
                return node
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                if (hit := find(child)) is not None:
                    return hit
            return None

        try:
            node = find(json.loads(self.swaymsg("-t", "get_tree")))
        except ValueError:
            return {}
        return {"app_id": node.get("app_id"), "name": node.get("name")} if node else {}

    def windows(self) -> list[str]:
        """The titles of all mapped windows."""
        def walk(node: dict):
            if node.get("type") in ("con", "floating_con") and node.get("pid"):
                yield node.get("name") or ""
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                yield from walk(child)

        return list(walk(json.loads(self.swaymsg("-t", "get_tree"))))

    def press_hotkey(self) -> None:
        """The hotkey as a real key event: a virtual keyboard presses ctrl, shift, space and lets go."""
        *mods, key = HOTKEY_KEYS
        args = [a for m in mods for a in ("-M", m)] + ["-k", key] + [a for m in reversed(mods) for a in ("-m", m)]
        done = subprocess.run(["wtype", *args], env=self.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"wtype failed: {done.stderr}"

    def hold_keys(self, seconds: float) -> subprocess.Popen:
        """Press HOLD_KEYS, keep them down for `seconds`, then let go (in the background)."""
        *mods, key = HOLD_KEYS
        args = [a for m in mods for a in ("-M", m)] + ["-P", key, "-s", str(int(seconds * 1000)), "-p", key]
        args += [a for m in reversed(mods) for a in ("-m", m)]
        return subprocess.Popen(["wtype", *args], env=self.env)

    def set_clipboard(self, text: str) -> None:
        """Another program owns the clipboard with `text` (wl-copy forks and keeps serving it)."""
        subprocess.run(["wl-copy", "--type", "text/plain;charset=utf-8"], input=text.encode(), env=self.env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        wait_for(lambda: self.clipboard() == text, "the clipboard to hold the user's text", 10)

    def clipboard(self) -> str:
        return self.run("wl-paste", "--no-newline", timeout=10)


class WaylandWindow:
    criteria = ""

    def __init__(self, session: WaylandSession) -> None:
        self.session = session

    def focus(self) -> None:
        wait_for(lambda: "true" in self.session.swaymsg(f"{self.criteria} focus"), f"{self.criteria} to take focus", 30)
        wait_for(self.has_focus, f"{self.criteria} focused")

    def has_focus(self) -> bool:
        raise NotImplementedError


class WaylandTarget(WaylandWindow):
    """target_app.py's QTextEdit as a native Wayland client; its text is read back from its log."""

    title = "dictation-target"
    criteria = f'[title="^{title}$"]'

    def __init__(self, session: WaylandSession) -> None:
        super().__init__(session)
        self.log = session.workdir / "wayland-target.jsonl"
        self.log.unlink(missing_ok=True)
        session.spawn([PYTHON, "-m", "tests.desktop.target_app", str(self.log)], "wayland-target")
        wait_for(lambda: self.title in self.session.windows(), "the Wayland target window to map", 60)

    def has_focus(self) -> bool:
        return self.session.focused().get("name") == self.title

    def text(self) -> str:
        try:
            lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        except (FileNotFoundError, ValueError):
            return ""
        return lines[-1]["text"] if lines else ""


class Foot(WaylandWindow):
    """foot (app_id "foot", a terminal: pastes with Ctrl+Shift+V) running terminal_reader.py."""

    criteria = '[app_id="^foot$"]'

    def __init__(self, session: WaylandSession) -> None:
        super().__init__(session)
        self.out = session.workdir / "foot.out"
        self.out.unlink(missing_ok=True)  # terminal_reader creates it once the tty is raw: ready for input
        session.spawn(["foot", "--title", "dictation-foot", PYTHON, "-m", "tests.desktop.terminal_reader",
                       str(self.out)], "foot")
        wait_for(lambda: "dictation-foot" in self.session.windows() and self.out.exists(), "foot and its reader", 60)

    def has_focus(self) -> bool:
        return self.session.focused().get("app_id") == "foot"

    def text(self) -> str:
        return self.out.read_bytes().decode(errors="replace")


class PortalStandIn:
    """A private session bus (dbus-daemon) with the STAND-IN GlobalShortcuts portal of
    portal_standin.py on it; `press`, `release` and `assign` play the desktop's part."""

    def __init__(self, workdir: Path, env: dict, mode: str = "bound", name: str = "portal") -> None:
        self.log = workdir / f"{name}-calls.jsonl"
        self.log.unlink(missing_ok=True)
        self.bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address"], stdout=subprocess.PIPE,
                                    stderr=open(workdir / f"{name}-bus.log", "ab"), env=env)
        self.address = self.bus.stdout.readline().decode().strip()
        assert self.address, f"dbus-daemon did not start; see {workdir / f'{name}-bus.log'}"
        self.env = {**env, "DBUS_SESSION_BUS_ADDRESS": self.address}
        self.proc = subprocess.Popen([PYTHON, "-m", "tests.desktop.portal_standin", str(self.log), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env, cwd=ROOT,
                                     stderr=open(workdir / f"{name}.log", "ab"))
        assert self.proc.stdout.readline().strip() == b"ready", "the stand-in portal did not start"

    def _say(self, word: str) -> None:
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()

    def press(self) -> None:
        self._say("press")

    def release(self) -> None:
        self._say("release")

    def assign(self) -> None:
        self._say("assign")

    def calls(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        for proc in (self.proc, self.bus):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
