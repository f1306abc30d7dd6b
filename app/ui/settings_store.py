"""The live settings: one object owns the current `Settings`, saves every change and announces it.

The settings window writes through `set()`, the running app listens to `changed` and applies what
changed without a restart. Each change is validated by the schema (`config.validate`) and saved
atomically right away, so there is no Save button to forget and a crash loses nothing. A change
that cannot be saved (read-only folder, full disk) still applies for this session, and `failed`
says why it will not survive a restart.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app import config
from app.config import Settings

log = logging.getLogger(__name__)


class SettingsStore(QObject):
    """Holds the settings; `changed(new, old)` after each accepted change, `failed(sentence)` on save errors."""

    changed = Signal(object, object)
    failed = Signal(str)

    def __init__(self, settings: Settings | None = None, problems: list[str] | None = None, *,
                 path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path or config.settings_path()
        if settings is None:
            settings, problems = config.load(self.path)
        self._settings = settings
        self.problems: list[str] = list(problems or [])  # what loading had to repair, for the window's banner
        for problem in self.problems:
            log.warning("settings: %s", problem)

    @property
    def settings(self) -> Settings:
        return self._settings

    def set(self, name: str, value: Any) -> Settings:
        """Validate, apply, save and announce one setting; raises UserError (unchanged) when invalid."""
        value = config.validate(name, value)
        if getattr(self._settings, name) == value:
            return self._settings
        config.check_together(dataclasses.replace(self._settings, **{name: value}), name)
        return self.replace(**{name: value})

    def replace(self, **values: Any) -> Settings:
        """Apply several already-valid values at once (e.g. engine and model together)."""
        old = self._settings
        new = dataclasses.replace(old, **values)
        if new == old:
            return old
        self._settings = new
        try:
            config.save(new, self.path)
        except OSError as exc:
            self.failed.emit(f"The settings could not be saved to {self.path} ({exc}). The change applies until "
                             "the app is closed; check that the folder is writable.")
        self.changed.emit(new, old)
        return new


def changed_fields(new: Settings, old: Settings) -> set[str]:
    """Names of the settings that differ."""
    return {f.name for f in config.schema() if getattr(new, f.name) != getattr(old, f.name)}
