"""Start at login: an XDG autostart entry on Linux, a Run key on Windows, a LaunchAgent on macOS.

Each is the per-user mechanism of its desktop, needs no administrator rights and is undone by
deleting one entry. The command is this very installation (`python -m app` from this interpreter,
or the frozen executable), so a virtual environment keeps working. Only the Linux entry is
exercised by the tests; the Windows and macOS ones follow their platforms' documentation.
"""

from __future__ import annotations

import os
import plistlib
import sys
from pathlib import Path

from app.desktop.paths import APP_NAME
from app.errors import UserError

DESKTOP_FILE = f"{APP_NAME}.desktop"
_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
_AGENT_LABEL = "org.diffusion-dictate.app"


def launch_command() -> list[str]:
    """The command that starts the tray app from this installation."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "app"]


def xdg_autostart_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "autostart" / DESKTOP_FILE


def is_enabled() -> bool:
    if sys.platform == "win32":
        return _windows_value() is not None
    if sys.platform == "darwin":
        return _mac_agent_file().exists()
    return xdg_autostart_file().exists()


def set_enabled(enabled: bool) -> None:
    """Add or remove the login entry; raises a UserError that says what to check when it cannot."""
    try:
        if sys.platform == "win32":
            _set_windows(enabled)
        elif sys.platform == "darwin":
            _set_mac(enabled)
        else:
            _set_xdg(enabled)
    except OSError as exc:
        raise UserError(f"Could not change the start-at-login setting ({exc}); check that your settings folder "
                        "is writable.", code="autostart_failed") from exc


def _set_xdg(enabled: bool) -> None:
    path = xdg_autostart_file()
    if not enabled:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    exec_line = " ".join(_desktop_quote(arg) for arg in launch_command())
    path.write_text(
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=Dictate\n"
        "Comment=Hold a hotkey, speak, release: the words appear in the focused window\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
        "X-GNOME-Autostart-Delay=3\n",  # after the tray host, so the icon finds its place
        encoding="utf-8")


def _desktop_quote(arg: str) -> str:
    """Quote for a .desktop Exec line (the spec's rules: double quotes, backslash-escaped specials)."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`%'):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped.replace("%", "%%")}"'


def _windows_value() -> str | None:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY) as key:
            return winreg.QueryValueEx(key, APP_NAME)[0]
    except FileNotFoundError:
        return None


def _set_windows(enabled: bool) -> None:
    import subprocess
    import winreg

    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        if enabled:
            winreg.SetValueEx(key, APP_NAME, 0, winreg.REG_SZ, subprocess.list2cmdline(launch_command()))
        else:
            try:
                winreg.DeleteValue(key, APP_NAME)
            except FileNotFoundError:
                pass


def _mac_agent_file() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{_AGENT_LABEL}.plist"


def _set_mac(enabled: bool) -> None:
    path = _mac_agent_file()
    if not enabled:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plistlib.dumps({"Label": _AGENT_LABEL, "ProgramArguments": launch_command(),
                                     "RunAtLoad": True, "ProcessType": "Interactive"}))


__all__ = ["is_enabled", "set_enabled", "launch_command", "xdg_autostart_file"]
