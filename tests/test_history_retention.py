"""The history's retention ("Keep for (days)", "Keep at most") holds while the app runs, not only at its start.

The real DictationApp with its UI wiring, its real worker (Whisper tiny.en on CTranslate2) and real speech:
each transcript reaches the history the way a dictation's does.
"""

from __future__ import annotations

import os
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.audio.loading import load_audio  # noqa: E402
from app.config import Settings  # noqa: E402
from tests.data import WHISPER_TINY_EN_CT2  # noqa: E402
from tests.speech import clips  # noqa: E402
from tests.test_kept_recordings import LONG, start_app, stop_app  # noqa: E402

pytestmark = pytest.mark.slow


def test_transcripts_beyond_the_retention_are_deleted_as_new_ones_arrive(home, qtbot):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    spoken = clips(source="espeak", language="en")[:3]
    settings = Settings(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu", language="en",
                        overlay=False, history_days=1, history_max=2)
    app, ui, _notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        # A transcript from three days ago, in a history the app has had open since (it runs for weeks).
        old = ui.history.add("an old transcript", created=time.time() - 3 * 86400)
        stored: list[str] = []
        app.transcribed.connect(lambda job_id, transcript: stored.append(job_id))  # after the history's own slot
        for done, clip in enumerate(spoken, 1):
            app.transcribe(load_audio(clip.path))
            qtbot.waitUntil(lambda: len(stored) == done, timeout=LONG)
        kept = ui.history.search()
        assert ui.history.get(old) is None, "a transcript older than 'Keep for (days)' is still kept"
        assert len(kept) == 2, [e.text for e in kept]  # "Keep at most 2": the two newest
    finally:
        stop_app(app, ui)
