"""The worker process over its real pipes: diffusion progress and cancel, bad frames, idle unload.

Each worker is a real `python -m app worker` subprocess driven by the synchronous `WorkerPipe`; the
model is the tiny random-weight diffusion checkpoint (Whisper on real speech is exercised through
the Qt client in test_worker_client.py). One torch thread per worker: the test machine's two cores
are shared, and competing thread pools slow a tiny model down several times over.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.worker.pipe import WorkerExited, WorkerPipe
from app.worker.protocol import MAGIC, MAX_PAYLOAD_BYTES, PREFIX, PROTOCOL_VERSION, Frame, audio_payload, encode
from tests.speech import clips

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A 3 s LibriVox clip of real speech."""
    return load_audio(next(c for c in clips(source="librivox") if c.id == "librivox-0880").path)


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory) -> EngineSpec:
    """A tiny random-weight diffusion checkpoint, written by the engine's own tool."""
    out = tmp_path_factory.mktemp("tiny-diffusion")
    subprocess.run(
        [sys.executable, "-m", "app.engine.diffusion.tiny", str(out)],
        check=True, capture_output=True, env={**os.environ, **ONE_THREAD},
    )
    model = out / "adapter" if (out / "adapter").is_dir() else out
    return EngineSpec(engine="diffusion", model=str(model), quantization="fp32", device="cpu")


@pytest.fixture(scope="module")
def worker(tiny_diffusion):
    """A worker with the tiny diffusion model loaded, shared by this module's tests."""
    with WorkerPipe(env=ONE_THREAD) as w:
        w.load(tiny_diffusion)
        yield w


def _collect(worker: WorkerPipe, job_id: str) -> tuple[list[Frame], Frame]:
    """Progress frames of `job_id` and its final result or error frame."""
    progress = []
    while True:
        frame = worker.next()
        assert isinstance(frame, Frame), frame
        if frame.get("id") != job_id:
            continue
        if frame.type == "progress":
            progress.append(frame)
        elif frame.type in ("result", "error"):
            return progress, frame


def test_hello_describes_the_loaded_model(worker, tiny_diffusion):
    hello = worker.hello
    assert hello["protocol"] == PROTOCOL_VERSION and hello["loaded"] is True and hello["pid"] == worker.pid
    assert (hello["engine"], hello["model"], hello["device"]) == ("diffusion", tiny_diffusion.model, "cpu")
    assert hello["quantization"] == "fp32" and hello["gpu_memory"] is None


def test_one_progress_frame_per_denoising_step(worker, speech):
    job = worker.submit(speech, language="en", steps=6)
    progress, answer = _collect(worker, job)
    assert answer.type == "result", answer.header
    assert [(p["step"], p["total"]) for p in progress] == [(k, 6) for k in range(1, answer["steps_used"] + 1)]
    assert len(answer["timings"]["steps"]) == answer["steps_used"]
    assert progress[-1]["draft"] == answer["text"]
    assert answer["worker_ms"] >= answer["timings"]["total"] > 0


def test_empty_audio_gets_the_engines_error(worker):
    job = worker.submit(np.zeros(0, dtype=np.float32))
    progress, answer = _collect(worker, job)
    assert (answer.type, answer["code"], progress) == ("error", "empty_audio", [])
    assert answer["message"] == "The audio is empty: there is nothing to transcribe."


def test_cancel_stops_a_job_between_steps_and_drops_a_queued_one(worker, speech):
    running = worker.submit(speech, language="en", steps=48)
    queued = worker.submit(speech, language="en", steps=48)
    first = worker.expect("progress")
    assert (first["id"], first["step"]) == (running, 1)
    worker.send("cancel", id=queued)
    worker.send("cancel", id=running)
    progress, answer = _collect(worker, running)
    assert (answer.type, answer["code"]) == ("error", "cancelled")
    assert len(progress) + 1 < 48  # stopped between steps, long before the last one
    progress, answer = _collect(worker, queued)
    assert (answer.type, answer["code"], progress) == ("error", "cancelled", [])


def test_bad_frames_get_error_frames_and_the_worker_carries_on(worker, speech):
    reference = _collect(worker, worker.submit(speech, language="en", steps=2))[1]["text"]
    worker.write(b"\x00garbage \xff\xfe not a frame at all" * 50)
    assert worker.next()["code"] == "malformed_frame"
    worker.write(encode("transcribe", audio_payload(speech), id="cut")[:40])  # cut short inside its header...
    worker.send("ping", seq=1)  # ...by the next frame
    assert worker.next()["code"] == "truncated_frame"
    assert worker.expect("pong")["seq"] == 1
    worker.write(PREFIX.pack(MAGIC, PROTOCOL_VERSION, 2, MAX_PAYLOAD_BYTES + 1) + b"{}")
    assert worker.next()["code"] == "frame_too_large"
    worker.send("frobnicate", id="z")
    answer = worker.next()
    assert (answer["id"], answer["code"]) == ("z", "unknown_message")
    worker.send("transcribe", b"\0\0\0", id="odd")  # not a whole float32 sample
    answer = worker.next()
    assert (answer["id"], answer["code"]) == ("odd", "bad_message")
    worker.send("transcribe", audio_payload(speech), id="vocab", vocabulary="Kubernetes")  # not a list
    answer = worker.next()
    assert (answer["id"], answer["code"]) == ("vocab", "bad_message") and "vocabulary" in answer["message"]
    # After all that the worker still answers, and gives the same text for the same audio.
    worker.send("ping", seq=2)
    assert worker.expect("pong")["seq"] == 2
    assert _collect(worker, worker.submit(speech, language="en", steps=2))[1]["text"] == reference


def test_idle_unload_and_reload_on_the_next_job(worker, tiny_diffusion, speech):
    worker.load(tiny_diffusion, idle_unload_s=0.2)
    assert worker.expect("hello")["loaded"] is False  # unloaded after 0.2 s without a job
    job = worker.submit(speech, language="en", steps=2)
    assert worker.expect("hello")["loaded"] is True  # loaded again for the job
    assert _collect(worker, job)[1].type == "result"
    hello = worker.load(tiny_diffusion)  # back to never unloading: the same model is kept, not reloaded
    assert hello["loaded"] is True and hello.get("note") == "already loaded"


def test_version_mismatch_is_a_clear_error():
    with WorkerPipe() as worker:  # no model: the protocol alone
        worker.handshake()
        worker.write(encode("ping", version=PROTOCOL_VERSION + 1, seq=1))
        answer = worker.next()
        assert answer["code"] == "version_mismatch"
        assert f"version {PROTOCOL_VERSION + 1}" in answer["message"] and "Reinstall the app" in answer["message"]
        worker.send("ping", seq=2)
        assert worker.expect("pong")["seq"] == 2


def test_a_stream_that_ends_mid_frame_is_reported_and_the_worker_exits_cleanly():
    with WorkerPipe() as worker:
        worker.handshake()
        worker.write(encode("transcribe", b"\0" * 4000, id="x")[:1000])
        worker.process.stdin.close()
        answer = worker.next()
        assert (answer["code"], answer["id"]) == ("truncated_frame", None)
        with pytest.raises(WorkerExited, match="exited with status 0"):
            worker.next()


def test_prints_and_native_writes_cannot_reach_the_frame_stream():
    code = (
        "import os; from app.worker.server import _claim_stdio\n"
        "read_fd, write_fd = _claim_stdio()\n"
        "print('a library prints'); os.write(1, b'C code writes to fd 1')\n"
        "os.write(write_fd, b'frames only')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout == b"frames only"
    assert b"a library prints" in done.stderr and b"C code writes to fd 1" in done.stderr
