"""The settings window follows a real worker's speed-up pieces, and dictation works while they run.

A real worker process (tiny random-weight diffusion checkpoint, `compile=True`, CPU) under the real
Qt `WorkerClient`, attached to the real settings wiring (`AppUi`); the rest of the app (tray,
paster, hotkeys) is the stand-in of test_settings_live.py. The window renders offscreen, as the
other settings-window tests do.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QLabel  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.config import Settings  # noqa: E402
from app.engine import EngineSpec  # noqa: E402
from app.ui.sounds import SoundCues  # noqa: E402
from app.ui.widgets.preparation_status import preparation_text  # noqa: E402
from app.ui.wiring import AppUi  # noqa: E402
from app.worker.client import WorkerClient  # noqa: E402
from tests.speech import clips  # noqa: E402
from tests.test_diffusion_engine import tiny_checkpoint  # noqa: E402
from tests.test_settings_live import FakeApp, FakePaster  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
LONG = 600_000  # ms; generous waits for a loaded machine (not a speed assertion)


@pytest.fixture
def compiled_spec(tmp_path_factory) -> EngineSpec:
    adapter = tiny_checkpoint(tmp_path_factory)
    return EngineSpec(engine="diffusion", model=str(adapter), quantization="fp32", device="cpu", compile=True)


@pytest.fixture
def env(tmp_path, monkeypatch, qapp, compiled_spec):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    app = FakeApp(Settings(engine="diffusion", model=compiled_spec.model, device="cpu", overlay=False))
    # The real client and worker process; an Inductor cache of its own, so the compile is cold (seconds).
    app.worker = WorkerClient(compiled_spec, env={**ONE_THREAD, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    ui = AppUi(app, cues=SoundCues(False, player=lambda data, rate: None), repaster=FakePaster())
    yield SimpleNamespace(app=app, ui=ui, worker=app.worker)
    app.worker.stop()  # first: its last signals may still reach what the test connected to the window
    ui.shutdown()


def test_the_model_page_shows_the_pieces_then_ready_and_a_dictation_is_answered_meanwhile(env, qtbot, tmp_path):
    worker, ui = env.worker, env.ui
    ui.show_settings()
    ui.settings_window.show_page("Model")
    status = ui.preparation_status
    assert not status.isVisible()  # nothing known yet
    seen: list[tuple[int, int, str, str, bool]] = []  # what the window showed at each signal

    def record(done: int, total: int, label: str) -> None:
        seen.append((done, total, label, status.line.text(), status.bar.isVisible()))

    worker.preparing.connect(record)
    states: list[str] = []
    worker.state_changed.connect(states.append)
    results: dict[str, dict] = {}
    worker.result.connect(lambda job, transcript: results.__setitem__(job, transcript))
    worker.start()
    # a piece is under way (a callback returning None counts as met at once: hence bool)
    qtbot.waitUntil(lambda: bool(worker.preparation.get("label")), timeout=LONG)
    engine_field = ui.settings_window.editors["engine"].widget
    # laid out at the top of the Model page, above the engine choice
    qtbot.waitUntil(lambda: status.isVisible() and 0 < status.geometry().bottom() < engine_field.geometry().top())
    page = status.parentWidget()

    def squeezed() -> list[str]:  # word-wrapped texts on the page given less height than they need
        return [label.text()[:40] for label in page.findChildren(QLabel) if label.isVisible() and label.wordWrap()
                and label.height() < label.heightForWidth(label.width())]

    qtbot.waitUntil(lambda: not squeezed())  # the rows below moved down, none was squeezed
    shot = ui.settings_window.grab()  # left in the test's folder: what the user sees
    shot.save(str(tmp_path / "preparing.png"))
    speech = load_audio(next(c for c in clips(source="librivox") if c.id == "librivox-0880").path)
    job = worker.submit(speech, language="en", steps=4)
    qtbot.waitUntil(lambda: job in results, timeout=LONG)
    qtbot.waitUntil(lambda: bool(worker.preparation.get("total")) and worker.preparation["label"] is None, timeout=LONG)

    running = [s for s in seen if s[2]]
    assert running, "the worker reported its pieces"
    for done, total, label, text, bar in running:
        assert text == f"Getting faster on this computer: {done} of {total} done (now: {label}). Dictation works meanwhile."
        assert bar and status.bar.maximum() >= total
    final = worker.preparation
    assert final["done"] == final["total"] and "error" not in final
    assert status.line.text() == f"Ready: all speed-ups prepared in {final['ms'] / 1000:.1f} s."
    assert status.isVisible() and not status.bar.isVisible()
    assert results[job]["text"].strip()
    assert "restarting" not in states and "failed" not in states  # a long compile is no hang


def test_the_sentences_for_each_state():
    assert preparation_text({}) == ""
    assert preparation_text({"done": 3, "total": 7, "label": "GPU graphs for German", "ms": 900.0}, "cuda:0") == (
        "Getting faster on this GPU: 3 of 7 done (now: GPU graphs for German). Dictation works meanwhile.")
    assert preparation_text({"done": 7, "total": 7, "label": None, "ms": 12_400.0}, "cuda") == (
        "Ready: all speed-ups prepared in 12.4 s.")
    assert preparation_text({"done": 2, "total": 2, "label": None, "ms": 5.0, "error": "x failed"}, "cpu").startswith(
        "Speed-ups stopped after 2 of 2 (x failed)")


def test_the_tray_status_line_says_it_gets_faster_while_pieces_run():
    """DictationApp's status line, run on a stand-in app (the real one needs a tray, hotkeys, a microphone)."""
    from app.ui.dictation import DictationApp

    shown: list[str] = []
    app = SimpleNamespace(engine_problem=None, hotkeys_ok=True, settings=Settings(hotkey="<ctrl>+<alt>+d", mode="hold"),
                          tray=SimpleNamespace(set_status=shown.append, offer_retry=lambda offered: None),
                          worker=SimpleNamespace(preparation={"done": 1, "total": 3, "label": "GPU graphs for English"}))
    DictationApp._worker_state(app, "ready")
    app.worker.preparation = {"done": 3, "total": 3, "label": None, "ms": 4000.0}
    DictationApp._worker_state(app, "busy")
    assert shown[0].startswith("Ready: hold") and shown[0].endswith(" · getting faster (1 of 3)")
    assert "getting faster" not in shown[1]
