"""A recording stopped by "Longest recording" says so, and what to do for longer dictations: the real
DictationApp (its recorder hearing a real speech clip through the test audio source, its real worker)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.audio.sources import TEST_AUDIO_ENV  # noqa: E402
from app.config import Settings  # noqa: E402
from tests.data import WHISPER_TINY_EN_CT2  # noqa: E402
from tests.speech import clips  # noqa: E402
from tests.test_kept_recordings import LONG, start_app, stop_app  # noqa: E402


def test_a_recording_cut_at_its_longest_length_says_how_to_record_longer(home, qtbot, monkeypatch):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    clip = next(c for c in clips(source="librivox", language="en") if c.seconds > 6)
    monkeypatch.setenv(TEST_AUDIO_ENV, str(clip.path))
    settings = Settings(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu", language="en",
                        overlay=False, max_seconds=5, history=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        texts: list[str] = []
        app.transcribed.connect(lambda job_id, transcript: texts.append(transcript["text"]))
        app.controller.command("start")  # as `python -m app start`, and nobody stops it
        qtbot.waitUntil(lambda: bool(texts), timeout=LONG)
        assert texts[0].strip(), "what was said before the limit is transcribed"
        limit = [n for n in notices if "maximum length" in n]
        assert limit and "Longest recording" in limit[0], notices  # where to raise it
    finally:
        stop_app(app, ui)
