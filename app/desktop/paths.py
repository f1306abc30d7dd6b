"""Where the app keeps its files, with nothing heavier than platformdirs imported.

`python -m app toggle` is a keyboard shortcut on Wayland: it must reach the running app in a
tenth of a second, so the path to the instance socket is computed here without numpy or Qt.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

APP_NAME = "diffusion-dictate"


def config_dir() -> Path:
    """The per-OS settings folder (XDG_CONFIG_HOME on Linux)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def instance_address() -> str:
    """The running instance's local socket: a Unix socket path, or a pipe name on Windows.

    Derived from the settings folder, so there is one instance per user and settings, and test
    instances with their own XDG_CONFIG_HOME never meet the user's.
    """
    name = f"{APP_NAME}-{hashlib.sha1(str(config_dir()).encode()).hexdigest()[:12]}"
    if sys.platform == "win32":
        return name
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), name)
