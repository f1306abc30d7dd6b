"""How the GUI side starts the worker: the command line and environment, for both clients."""

from __future__ import annotations

import os
import sys


def worker_command() -> list[str]:
    """`python -m app worker`, or the frozen executable with a `worker` argument (PyInstaller)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "worker"]
    return [sys.executable, "-m", "app", "worker"]


def worker_environment(extra: dict | None = None) -> dict[str, str]:
    """The current environment with `extra` layered on top (values converted to str)."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env
