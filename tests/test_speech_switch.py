"""Switching between a model on this computer and a speech server while the app runs (`SpeechSwitch`).

Real parts: a real worker process and a real speech server subprocess, both with Whisper tiny.en
(CTranslate2, test data), real espeak-ng speech, the real `WorkerClient` and `ServerClient` behind
the switch, as the app builds them. Qt offscreen.
"""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QObject

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.server.client import ServerClient
from app.worker.client import WorkerClient
from app.worker.speech_client import SpeechClient
from app.worker.speech_switch import SpeechSwitch, runs_on_server
from tests.data import WHISPER_TINY_EN_CT2
from tests.server_process import ServerProcess
from tests.speech import clips, wer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytestmark = pytest.mark.slow
LOCAL = EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    folder = tmp_path_factory.mktemp("switch-server")
    server = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu"],
                           folder / "server.log")
    yield server.wait_ready()
    server.stop()


def make_client(spec: EngineSpec, parent: QObject) -> SpeechClient:
    """As the app does (`DictationApp._speech_client`)."""
    if runs_on_server(spec):
        return ServerClient(spec, parent, token_loader=lambda: None, retry_s=0.5)
    return WorkerClient(spec, parent, env={"OMP_NUM_THREADS": "1"})


def test_switching_to_a_server_and_back_loses_no_dictation(qtbot, server):
    speech = [c for c in clips(source="espeak", language="en")][:3]
    audio = [load_audio(c.path) for c in speech]
    switch = SpeechSwitch(LOCAL, make_client)
    results: dict[str, dict] = {}
    failures: list = []
    states: list[str] = []
    switch.result.connect(lambda job, transcript: results.__setitem__(job, transcript))
    switch.failed.connect(lambda *args: failures.append(args))
    switch.state_changed.connect(states.append)
    try:
        switch.start()
        qtbot.waitUntil(lambda: switch.state == "ready", timeout=120_000)
        worker = switch.client
        worker_pid = switch.pid
        assert isinstance(worker, WorkerClient) and worker_pid

        # A dictation in flight on the worker, then the switch to the server.
        on_worker = switch.submit(audio[0], language="en")
        switch.configure(EngineSpec(engine="server", model=server.url))
        assert isinstance(switch.client, ServerClient) and switch.pending == 1
        qtbot.waitUntil(lambda: switch.state == "ready" and on_worker in results, timeout=120_000)
        assert wer([speech[0].text], [results[on_worker]["text"]]) <= 0.3  # the worker finished its job
        qtbot.waitUntil(lambda: worker.state == "stopped", timeout=10_000)  # and was stopped after it
        assert switch.pid is None and switch.info["engine"] == "faster-whisper"  # the server's /health

        on_server = switch.submit(audio[1], language="en")
        qtbot.waitUntil(lambda: on_server in results, timeout=120_000)
        assert wer([speech[1].text], [results[on_server]["text"]]) <= 0.3

        switch.configure(LOCAL)  # and back to a model on this computer
        assert isinstance(switch.client, WorkerClient)
        qtbot.waitUntil(lambda: switch.state == "ready", timeout=120_000)
        assert switch.pid and switch.pid != worker_pid
        back_home = switch.submit(audio[2], language="en")
        qtbot.waitUntil(lambda: back_home in results, timeout=120_000)
        assert wer([speech[2].text], [results[back_home]["text"]]) <= 0.3
    finally:
        switch.stop()
    assert failures == [] and len(results) == 3
    assert "starting" in states and states[-1] in ("ready", "stopped")


def test_cancel_reaches_the_job_on_the_client_that_finishes_it(qtbot, server):
    audio = load_audio(clips(source="espeak", language="en")[0].path)
    switch = SpeechSwitch(LOCAL, make_client)
    failed: list = []
    results: list = []
    switch.failed.connect(lambda job, code, message: failed.append((job, code)))
    switch.result.connect(lambda job, transcript: results.append(job))
    try:
        switch.start()
        qtbot.waitUntil(lambda: switch.state == "ready", timeout=120_000)
        job = switch.submit(audio, language="en")
        switch.configure(EngineSpec(engine="server", model=server.url))
        switch.cancel(job)  # the job is the worker's, which is no longer the current client
        qtbot.waitUntil(lambda: bool(failed), timeout=10_000)
        assert failed == [(job, "cancelled")] and results == []
    finally:
        switch.stop()
