"""The Qt WorkerClient against real worker processes: Whisper on real speech, kill -9, cancel, failures.

Stand-in workers (a process that exits at once, one that never speaks, one that speaks another
protocol version) are real subprocesses too; they check the supervision without loading a model.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.worker.client import WorkerClient
from app.worker.protocol import PROTOCOL_VERSION
from tests.data import WHISPER_TINY_EN
from tests.speech import clips, wer

WHISPER = EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two shared cores: one torch thread is several times faster here
LONG = 180_000  # ms; generous waits for a loaded machine (not a speed assertion)


class Recorder:
    """Everything a client emits, in order."""

    def __init__(self, client: WorkerClient) -> None:
        self.states: list[str] = []
        self.results: dict[str, dict] = {}
        self.failures: list[tuple[str, str, str]] = []
        self.progress: dict[str, list[tuple[int, int, str]]] = {}
        client.state_changed.connect(self.states.append)
        client.result.connect(lambda job, t: self.results.__setitem__(job, t))
        client.failed.connect(lambda job, code, msg: self.failures.append((job, code, msg)))
        client.progress.connect(lambda job, step, total, draft: self.progress.setdefault(job, []).append((step, total, draft)))

    def failure(self, job_id: str) -> tuple[str, str, str] | None:
        return next((f for f in self.failures if f[0] == job_id), None)

    def done(self, job_id: str) -> bool:
        return job_id in self.results or self.failure(job_id) is not None


@pytest.fixture(scope="module")
def speech():
    clip = next(c for c in clips(source="librivox") if c.id == "librivox-0890")
    return load_audio(clip.path), clip.text


@pytest.fixture(scope="module")
def client(qapp):
    """One Whisper tiny.en worker client shared by the tests below; each leaves it ready."""
    c = WorkerClient(WHISPER, env=ONE_THREAD)
    yield c
    c.stop()


def _ready(qtbot, client: WorkerClient) -> None:
    if client.state != "ready":
        if client.state in ("stopped", "failed"):
            client.start()
        qtbot.waitUntil(lambda: client.state == "ready", timeout=LONG)


def test_round_trip_on_real_speech(qtbot, client, speech):
    audio, reference = speech
    rec = Recorder(client)
    with qtbot.waitSignal(client.ready, timeout=LONG) as ready:
        client.start()
    assert ready.args[0]["engine"] == "whisper" and ready.args[0]["protocol"] == PROTOCOL_VERSION
    assert rec.states == ["starting", "loading", "ready"]
    job = client.submit(audio, language="en")
    assert client.state == "busy"
    qtbot.waitUntil(lambda: rec.done(job), timeout=LONG)
    transcript = rec.results[job]
    assert wer([reference], [transcript["text"]]) < 0.15, transcript["text"]
    assert transcript["attempts"] == 1 and transcript["timings"]["total"] > 0
    assert [p[0] for p in rec.progress[job]] == list(range(1, len(rec.progress[job]) + 1))
    assert rec.progress[job][-1][2] == transcript["text"]
    assert client.state == "ready" and rec.states[-2:] == ["busy", "ready"]


def test_the_vocabulary_travels_to_the_engine(qtbot, client, tmp_path):
    """`submit(vocabulary=...)` reaches Whisper as its prompt: a term it mishears alone, it writes with it."""
    from benchmarks.vocabulary import SENTENCES, TERMS, synthesize_sentences, term_found

    audio = synthesize_sentences(tmp_path)[0]  # "Please deploy the new service on Kubernetes before Friday."
    _ready(qtbot, client)
    rec = Recorder(client)
    plain, prompted = client.submit(audio, language="en"), client.submit(audio, language="en", vocabulary=TERMS)
    qtbot.waitUntil(lambda: rec.done(plain) and rec.done(prompted), timeout=LONG)
    assert not term_found(SENTENCES[0][0], rec.results[plain]["text"])
    assert term_found(SENTENCES[0][0], rec.results[prompted]["text"])


def test_kill_9_mid_job_and_the_job_still_completes_with_the_same_text(qtbot, client, speech):
    audio, _ = speech
    _ready(qtbot, client)
    rec = Recorder(client)
    reference_job = client.submit(audio, language="en")
    qtbot.waitUntil(lambda: rec.done(reference_job), timeout=LONG)
    first_pid = client.pid
    killed: list[int] = []

    def kill_mid_job(job_id: str, step: int, total: int, draft: str) -> None:
        if job_id == job and not killed:
            killed.append(step)
            os.kill(client.pid, signal.SIGKILL)

    client.progress.connect(kill_mid_job)
    job = client.submit(audio, language="en")
    queued = client.submit(audio[: len(audio) // 2], language="en")  # in flight too: re-sent after it
    qtbot.waitUntil(lambda: rec.done(job) and rec.done(queued), timeout=LONG)
    client.progress.disconnect(kill_mid_job)
    assert killed == [1]
    assert rec.results[job]["text"] == rec.results[reference_job]["text"]
    assert rec.results[job]["attempts"] == 2 and rec.results[queued]["attempts"] == 2
    assert "restarting" in rec.states and client.pid != first_pid and not rec.failures


def test_a_recording_the_worker_dies_on_twice_is_set_aside_and_the_next_goes_on(qtbot, client, speech):
    """A recording that crashes the model (here: killed at its first step, every time) used to be sent
    again after every restart until three crashes put the worker in `failed`, taking the dictations
    behind it down too; and it was sent again, and crashed it again, at each later model load. Now it
    fails on its own at the second end of the worker while it ran; the dictation behind it is transcribed."""
    audio, reference = speech
    _ready(qtbot, client)
    rec = Recorder(client)
    kills: list[int] = []

    def kill_it(job_id: str, step: int, total: int, draft: str) -> None:
        if job_id == poison and client.pid is not None:
            kills.append(client.pid)
            os.kill(client.pid, signal.SIGKILL)

    client.progress.connect(kill_it)
    poison = client.submit(audio, language="en")
    behind = client.submit(audio, language="en")
    qtbot.waitUntil(lambda: rec.done(poison) and rec.done(behind), timeout=LONG)
    client.progress.disconnect(kill_it)
    assert len(set(kills)) == 2, kills  # two worker processes died on it; a third never got it
    job, code, message = rec.failure(poison)
    assert code == "worker_crashed" and "set aside" in message and poison not in rec.results
    assert wer([reference], [rec.results[behind]["text"]]) < 0.15
    qtbot.waitUntil(lambda: client.state == "ready", timeout=LONG)


def test_cancel_ends_a_job_with_cancelled_and_never_a_result(qtbot, client, speech):
    audio, reference = speech
    _ready(qtbot, client)
    rec = Recorder(client)
    cancelled = client.submit(audio, language="en")
    client.cancel(cancelled)
    after = client.submit(audio, language="en")
    qtbot.waitUntil(lambda: rec.done(cancelled) and rec.done(after), timeout=LONG)
    assert rec.failure(cancelled)[1] == "cancelled" and cancelled not in rec.results
    assert wer([reference], [rec.results[after]["text"]]) < 0.15
    assert client.state == "ready"


def test_a_model_that_cannot_load_fails_clearly_and_configure_recovers(qtbot, client, speech):
    audio, reference = speech
    _ready(qtbot, client)
    rec = Recorder(client)
    client.configure(EngineSpec(engine="whisper", model="/nonexistent/whisper", device="cpu"))
    qtbot.waitUntil(lambda: client.state == "failed", timeout=LONG)
    job, code, message = rec.failures[0]
    assert (job, code) == ("", "no_model") and "/nonexistent/whisper" in message
    refused = client.submit(audio)
    qtbot.waitUntil(lambda: rec.done(refused), timeout=LONG)
    assert rec.failure(refused)[1:] == (code, message)
    with qtbot.waitSignal(client.ready, timeout=LONG):
        client.configure(WHISPER)
    job = client.submit(audio, language="en")
    qtbot.waitUntil(lambda: rec.done(job), timeout=LONG)
    assert wer([reference], [rec.results[job]["text"]]) < 0.15


def _stand_in(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_that_keeps_crashing_ends_in_failed_with_advice(qtbot, qapp):
    client = WorkerClient(WHISPER, command=_stand_in("import sys; sys.stderr.write('CUDA driver exploded\\n'); sys.exit(3)"))
    rec = Recorder(client)
    client.start()
    job = client.submit(np.zeros(1600, dtype=np.float32))
    qtbot.waitUntil(lambda: client.state == "failed", timeout=LONG)
    assert rec.states.count("restarting") == 2 and rec.states[-1] == "failed"
    (general, code, message), (failed_job, job_code, _) = rec.failures
    assert (general, code, failed_job, job_code) == ("", "worker_failed", job, "worker_failed")
    assert "3 times" in message and "Settings" in message and "CUDA driver exploded" in message


def test_a_silent_worker_is_killed_as_hung(qtbot, qapp):
    client = WorkerClient(
        WHISPER, command=_stand_in("import time; time.sleep(600)"),
        heartbeat_s=0.1, start_timeout_s=0.5, max_crashes=1,
    )
    rec = Recorder(client)
    client.start()
    qtbot.waitUntil(lambda: client.state == "failed", timeout=LONG)
    assert "did not answer" in rec.failures[0][2]


def test_a_worker_wedged_in_an_early_transcription_is_killed_when_a_dictation_waits_behind_it(qtbot, qapp):
    """The stall check judges what the worker runs, also an early transcription (Transcribe during pauses),
    which the client holds no job for: wedged there, it keeps the dictation behind it waiting forever."""
    wedged = (
        "import os, sys; from app.worker.protocol import FrameDecoder, encode\n"
        "out = sys.stdout.buffer\n"
        "def send(type_, **fields): out.write(encode(type_, **fields)); out.flush()\n"
        f"send('hello', protocol={PROTOCOL_VERSION}, loaded=False)\n"
        "decoder = FrameDecoder()\n"
        "while data := os.read(0, 1 << 20):\n"
        "    for frame in decoder.feed(data):\n"
        "        if frame.type == 'load': send('hello', protocol=" + str(PROTOCOL_VERSION) + ", loaded=True)\n"
        "        elif frame.type == 'ping': send('pong', seq=frame['seq'], job='early-1', step_age_s=1000.0)\n"
    )
    client = WorkerClient(WHISPER, command=_stand_in(wedged), heartbeat_s=0.1, stall_after_s=5, max_crashes=1)
    rec = Recorder(client)
    client.start()
    qtbot.waitUntil(lambda: client.state == "ready", timeout=LONG)
    job = client.submit(np.zeros(1600, dtype=np.float32))
    qtbot.waitUntil(lambda: rec.done(job), timeout=15_000)
    assert rec.failure(job)[1] == "worker_failed" and "made no progress" in rec.failure(job)[2]
    client.stop()


def test_a_worker_of_another_protocol_version_is_refused(qtbot, qapp):
    old_worker = (
        "import sys, time; from app.worker.protocol import encode\n"
        f"sys.stdout.buffer.write(encode('hello', version={PROTOCOL_VERSION + 1}, protocol={PROTOCOL_VERSION + 1}))\n"
        "sys.stdout.flush(); time.sleep(600)\n"
    )
    client = WorkerClient(WHISPER, command=_stand_in(old_worker))
    rec = Recorder(client)
    client.start()
    qtbot.waitUntil(lambda: client.state == "failed", timeout=LONG)
    assert rec.failures[0][:2] == ("", "version_mismatch")
    assert "Reinstall the app" in rec.failures[0][2] and "starting" in rec.states and "restarting" not in rec.states
    client.start()  # a mismatch is final: restarting the same worker cannot help
    assert client.state == "failed"


def test_a_worker_that_cannot_start_fails_at_once(qtbot, qapp):
    client = WorkerClient(WHISPER, command=["/nonexistent/dictate-worker", "worker"])
    rec = Recorder(client)
    client.start()
    qtbot.waitUntil(lambda: client.state == "failed", timeout=LONG)
    assert rec.failures[0][:2] == ("", "worker_failed") and "could not be started" in rec.failures[0][2]
    assert "restarting" not in rec.states
