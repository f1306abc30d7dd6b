"""The diffusion engine's speed-up pieces in a real worker process: compiled layers on the CPU.

A real `python -m app worker` with the tiny random-weight diffusion checkpoint, `compile=True`,
device cpu: the engine offers one piece per prompt shape (torch.compile of its decoder layers), and
the worker runs them after the load, on a thread of their own while jobs go on. One such worker for the whole module (a cold
compile costs tens of seconds on two cores); a second one without compile gives the eager text.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.worker.pipe import WorkerPipe
from app.worker.protocol import Frame
from tests.speech import clips
from tests.test_diffusion_engine import tiny_checkpoint

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
LONG_S = 600.0  # generous waits for a loaded machine (not a speed assertion)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A 3 s LibriVox clip of real speech."""
    return load_audio(next(c for c in clips(source="librivox") if c.id == "librivox-0880").path)


@pytest.fixture(scope="module")
def compiled_spec(tmp_path_factory) -> EngineSpec:
    """The tiny diffusion checkpoint (written by the engine's own tool), with compile on, on the CPU."""
    adapter = tiny_checkpoint(tmp_path_factory)
    return EngineSpec(engine="diffusion", model=str(adapter), quantization="fp32", device="cpu", compile=True)


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory) -> dict:
    """One torch thread, and an empty Inductor cache of its own: the compile is cold, so a piece takes seconds."""
    return {**ONE_THREAD, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("inductor-cache"))}


@pytest.fixture(scope="module")
def run(compiled_spec, speech, worker_env):
    """Load with compile on, send a dictation right after the hello and a ping during the first piece,
    then read every frame until both the dictation's result and the final `preparing` frame arrived."""
    with WorkerPipe(env=worker_env) as worker:
        hello = worker.load(compiled_spec, timeout=LONG_S)
        job = worker.submit(speech, language="en", steps=4)
        frames: list[Frame] = []
        pong, pinged_during = None, None
        while True:
            frame = worker.next(LONG_S)
            assert isinstance(frame, Frame), frame
            frames.append(frame)
            if frame.type == "preparing" and frame["label"] and pinged_during is None:
                pinged_during = frame["label"]
                worker.send("ping", seq=1)  # the worker is inside this piece (or about to enter it)
            if frame.type == "pong":
                pong = frame
            if frame.type == "error":
                pytest.fail(f"the worker answered with an error: {frame.header}")
            got_result = any(f.type == "result" and f["id"] == job for f in frames)
            prepared = frames[-1].type == "preparing" and frames[-1]["label"] is None
            if got_result and prepared and pong is not None:
                break
        again = worker.transcribe(speech, language="en", steps=4, timeout=LONG_S)  # every piece has run now
        yield dict(hello=hello, job=job, frames=frames, pong=pong, pinged_during=pinged_during, again=again,
                   preparing=list(worker.preparing), worker=worker)


def test_preparing_frames_follow_the_loaded_hello_and_count_up_to_a_final_one(run):
    assert run["hello"]["loaded"] is True and run["hello"]["load_ms"] > 0
    preparing = [f.header for f in run["frames"] if f.type == "preparing"]
    assert len(preparing) >= 2, "compile on: the engine has at least one piece"
    done = [p["done"] for p in preparing]
    assert done == sorted(done) and done[0] == 0
    running = [p for p in preparing if p["label"] is not None]
    assert all(isinstance(p["label"], str) and p["label"] and p["done"] < p["total"] for p in running)
    final = preparing[-1]
    assert final["label"] is None and final["done"] == final["total"] == len(running) and "error" not in final
    assert final["ms"] > 0 and [p["ms"] for p in preparing] == sorted(p["ms"] for p in preparing)
    assert run["preparing"] == preparing  # WorkerPipe kept the same frames


def test_a_dictation_right_after_the_load_does_not_wait_for_the_compile(run):
    """Issue 16: while a first compile runs, dictation works on the eager path. The compile piece
    starts right after the loaded hello, on a thread of its own; the dictation sent then is answered
    before the compile ends (a cold compile takes seconds, an eager tiny dictation a fraction of one).
    Usually it is answered while the compile runs; on a loaded machine the compile's thread may get
    going only once the dictation is done, which is no wait either."""
    frames = run["frames"]
    order = [(f.type, f["label"] if f.type == "preparing" else f.header.get("id")) for f in frames]
    result_at = next(i for i, f in enumerate(frames) if f.type == "result" and f["id"] == run["job"])
    assert frames[result_at]["text"].strip()
    compile_started = next(i for i, f in enumerate(frames) if f.type == "preparing" and f["label"])
    assert frames[compile_started]["label"].startswith("compiled layers")
    final_at = max(i for i, f in enumerate(frames) if f.type == "preparing" and f["label"] is None)
    assert result_at < final_at, f"the dictation was answered only after the compile: {order}"


def test_ping_is_answered_during_a_piece_and_names_it(run):
    pong = run["pong"]
    assert pong["seq"] == 1 and pong["job"] in (None, run["job"])  # the dictation may run beside the compile
    assert pong["preparing"] == run["pinged_during"], "the ping arrived while the piece ran (pieces take seconds)"


def test_compiled_and_eager_paths_give_the_same_text(run, compiled_spec, speech):
    """Once every piece has run, the compiled path gives the eager path's seeded text. (The dictation answered
    during the compile is not compared: Dynamo sets the random state back after compiling a frame, which can
    move a seeded draw running meanwhile to another; `Preparation` in app/engine/base.py.)"""
    with WorkerPipe(env=ONE_THREAD) as eager:  # no compile, no pieces on the CPU: the eager path only
        eager.load(dataclasses.replace(compiled_spec, compile=False), timeout=LONG_S)
        assert eager.transcribe(speech, language="en", steps=4, timeout=LONG_S)["text"] == run["again"]["text"]
        eager.send("ping", seq=2)
        assert eager.expect("pong")["preparing"] is None
        assert eager.preparing == []  # nothing to prepare, so no frames


def test_the_reload_after_an_idle_unload_prepares_its_new_engine_again(run, compiled_spec, speech):
    worker: WorkerPipe = run["worker"]
    worker.load(compiled_spec, idle_unload_s=0.5)  # the same model: only the idle time changes
    assert worker.expect("hello", timeout=LONG_S)["loaded"] is False  # unloaded after half a second
    seen = len(worker.preparing)
    result = worker.transcribe(speech, language="en", steps=4, timeout=LONG_S)  # loads it again first
    assert result["text"].strip()  # its compile may run beside it: see the test above
    final = worker.wait_prepared(LONG_S, after=seen)
    fresh = worker.preparing[seen:]
    assert fresh[0]["done"] == 0 and fresh[0]["label"]  # a new engine: its count starts again
    assert final["done"] == final["total"] >= 1 and "error" not in final
    worker.load(compiled_spec, idle_unload_s=None)
