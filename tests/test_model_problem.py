"""Why the model cannot run stays where the user can find it: the real DictationApp with its UI wiring and its
real worker subprocess, whose model folder is missing, then fixed.

The reason comes in a tray notice that is gone after seconds (trays without notifications never show it); the
tray's menu then points to the settings window, whose banner says it until the model works.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.config import Settings  # noqa: E402
from tests.data import WHISPER_TINY_EN_CT2  # noqa: E402
from tests.test_kept_recordings import LONG, home, start_app, stop_app  # noqa: E402, F401

MISSING = "/nonexistent/whisper-model-folder"


def test_the_reason_the_model_cannot_run_is_in_the_settings_window_until_it_runs(home, qtbot):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    settings = Settings(engine="faster-whisper", model=MISSING, device="cpu", language="en", overlay=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "failed", timeout=LONG)
        reason = app.engine_problem
        assert reason and MISSING in reason and reason in notices  # the notice said it, for seconds
        assert "open Settings" in app.tray.status, app.tray.status  # the menu says where it is kept

        ui.show_settings()
        banner = ui.settings_window.banner
        assert banner.isVisibleTo(ui.settings_window) and reason in banner.text(), banner.text()

        # The user fixes the model on that page: once it runs, the banner goes.
        ui.apply(dataclasses.replace(settings, model=str(WHISPER_TINY_EN_CT2)), settings)
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        assert not banner.isVisibleTo(ui.settings_window), banner.text()
    finally:
        stop_app(app, ui)
