"""When the engine's speed-up pieces run: between jobs, one at a time, never at the same time as a job.

The engine here is a stand-in (`PiecesEngine`) whose pieces only sleep and write down when they
ran: what is tested is the scheduling of the real worker (`Server`, over real pipes, on a thread
of this process) and of the real speech server's queue, where timing has to be exact and the
order has to be seen. The real diffusion engine's pieces (compiled layers) run in a real worker
process in test_worker_preparation.py.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time

import numpy as np
import pytest
from starlette.requests import Request

from app.engine import EngineSpec, Progress, Transcript
from app.engine.base import Preparation
from app.server.app_factory import ServerOptions, create_app
from app.server.batching import EngineQueue
from app.server.request_checks import TranscriptionRequest
from app.worker.engine_slot import EngineSlot
from app.worker.protocol import Frame, FrameDecoder, audio_payload, encode
from app.worker.server import FrameWriter, Server

PIECE_S = 0.3


class PiecesEngine:
    """Stand-in engine: one piece per known "shape" (a clip length); a job of a new length adds one.

    `log` gets ("piece", label, start, end) and ("job", id, start, end) entries, so a test can check
    that nothing overlapped. `broken` makes that piece raise (a bug); `stubborn` offers a piece again
    after it ran (another bug); neither may hang the worker.
    """

    name = "pieces"

    def __init__(self, shapes=(1600, 3200, 4800), *, broken: str | None = None, stubborn: bool = False,
                 beside: bool = False) -> None:
        self.shapes = list(shapes)
        self.ready: set[int] = set()
        self.log: list[tuple] = []
        self.broken, self.stubborn, self.beside = broken, stubborn, beside
        self._lock = threading.Lock()

    def preparations(self) -> list[Preparation]:
        """`beside`: pieces that may run beside jobs, as the diffusion engine's compiles."""
        return [Preparation(f"shape {n}", lambda n=n: self._prepare(n), alongside_jobs=self.beside)
                for n in self.shapes if n not in self.ready]

    def _prepare(self, n: int) -> None:
        start = time.monotonic()
        time.sleep(PIECE_S)
        if self.broken == f"shape {n}":
            raise RuntimeError("a bug in the piece")
        if not self.stubborn:
            self.ready.add(n)
        self.log.append(("piece", f"shape {n}", start, time.monotonic()))

    def transcribe(self, audio, *, language="auto", steps=None, on_progress=None, vocabulary=()) -> Transcript:
        start = time.monotonic()
        if len(audio) not in self.shapes:
            self.shapes.append(len(audio))  # a new shape: one more piece for after this job
        path = "prepared" if len(audio) in self.ready else "eager"
        time.sleep(0.05)
        if on_progress:
            on_progress(Progress(step=1, total=1, draft="x"))
        self.log.append(("job", len(audio), start, time.monotonic()))
        return Transcript(text=f"{len(audio)} samples", language="en", steps_used=1, timings={"path": path})


class InProcessWorker:
    """The real worker loop on a thread, over real pipes; frames come back through a queue."""

    def __init__(self, engine: PiecesEngine) -> None:
        self.engine = engine
        self._to_r, self._to_w = os.pipe()
        self._from_r, self._from_w = os.pipe()
        self.server = Server(self._to_r, FrameWriter(self._from_w), EngineSlot(lambda spec: engine))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.thread.start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        decoder = FrameDecoder()
        while data := os.read(self._from_r, 1 << 16):
            for frame in decoder.feed(data):
                self.frames.put(frame)

    def send(self, type_: str, payload: bytes = b"", **fields) -> None:
        os.write(self._to_w, encode(type_, payload, **fields))

    def until(self, predicate, timeout: float = 20.0) -> list[Frame]:
        """Frames up to and including the first that `predicate` accepts."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(deadline - time.monotonic(), 0.01))
            seen.append(frame)
            if predicate(frame):
                return seen

    def close(self) -> None:
        self.send("shutdown")
        self.thread.join(10)
        assert not self.thread.is_alive()
        for fd in (self._to_r, self._to_w, self._from_w):
            os.close(fd)


def is_final(frame: Frame) -> bool:
    return frame.type == "preparing" and frame["label"] is None and frame["done"] == frame["total"]


@pytest.fixture
def make_worker():
    made = []

    def make(engine: PiecesEngine) -> InProcessWorker:
        made.append(InProcessWorker(engine))
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def overlaps(log: list[tuple]) -> list[tuple]:
    spans = sorted((start, end, kind) for kind, _, start, end in log)
    return [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def test_pieces_follow_the_load_one_frame_each_then_a_final_one(make_worker):
    worker = make_worker(PiecesEngine())
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    frames = worker.until(is_final)
    hello = next(f for f in frames if f.type == "hello" and f["loaded"])
    preparing = [f.header for f in frames if f.type == "preparing"]
    assert frames.index(hello) < frames.index(next(f for f in frames if f.type == "preparing"))
    assert [(p["done"], p["total"], p["label"]) for p in preparing] == [
        (0, 3, "shape 1600"), (1, 3, "shape 3200"), (2, 3, "shape 4800"), (3, 3, None)]
    assert preparing[-1]["ms"] >= 3 * PIECE_S * 1000 * 0.9 and "error" not in preparing[-1]
    assert [p["ms"] for p in preparing] == sorted(p["ms"] for p in preparing)


def test_a_job_waits_for_one_piece_at_most_and_never_runs_beside_one(make_worker):
    engine = PiecesEngine(shapes=(1600, 3200, 4800, 6400, 8000))
    worker = make_worker(engine)
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    worker.until(lambda f: f.type == "preparing")  # the first piece has started
    sent = time.monotonic()
    worker.send("transcribe", audio_payload(np.zeros(8000, np.float32)), id="job")  # the last piece's shape
    result = worker.until(lambda f: f.type == "result")[-1]
    answered = time.monotonic() - sent
    assert result["timings"]["path"] == "eager" and answered < 2 * PIECE_S + 1.0
    frames = worker.until(is_final)
    assert frames[-1]["done"] == 5
    pieces_before_job = [e for e in engine.log if e[0] == "piece" and e[3] <= next(j for j in engine.log if j[0] == "job")[2]]
    assert len(pieces_before_job) <= 2 and not overlaps(engine.log)


def test_pieces_that_may_run_beside_jobs_do_while_jobs_are_answered_at_once(make_worker):
    engine = PiecesEngine(shapes=(1600, 3200, 4800), beside=True)
    worker = make_worker(engine)
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    worker.until(lambda f: f.type == "preparing")  # the first piece has started, on its own thread
    sent = time.monotonic()
    for n in range(3):
        worker.send("transcribe", audio_payload(np.zeros(4800, np.float32)), id=f"job-{n}")
        worker.until(lambda f: f.type == "result")
    answered = time.monotonic() - sent
    assert answered < PIECE_S  # three jobs of 0.05 s each, none of them waiting for a piece of 0.3 s
    final = worker.until(is_final)[-1]
    assert final["done"] == 3 and "error" not in final.header
    pieces = [e for e in engine.log if e[0] == "piece"]
    jobs = [e for e in engine.log if e[0] == "job"]
    assert not overlaps(pieces)  # still one piece at a time
    assert any(p[2] < j[2] < p[3] for p in pieces for j in jobs)  # and jobs ran while one did


def test_a_job_of_a_new_shape_adds_a_piece_to_the_same_count(make_worker):
    engine = PiecesEngine(shapes=(1600,))
    worker = make_worker(engine)
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    worker.until(is_final)
    worker.send("transcribe", audio_payload(np.zeros(2400, np.float32)), id="job")
    frames = worker.until(is_final)
    preparing = [(f["done"], f["total"], f["label"]) for f in frames if f.type == "preparing"]
    assert preparing == [(1, 2, "shape 2400"), (2, 2, None)]
    worker.send("transcribe", audio_payload(np.zeros(2400, np.float32)), id="again")
    assert worker.until(lambda f: f.type == "result")[-1]["timings"]["path"] == "prepared"


def test_ping_during_a_piece_says_preparing_not_a_job(make_worker):
    worker = make_worker(PiecesEngine(shapes=(1600,)))
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    worker.until(lambda f: f.type == "preparing")
    worker.send("ping", seq=7)
    pong = worker.until(lambda f: f.type == "pong")[-1]
    assert (pong["seq"], pong["job"], pong["step_age_s"], pong["preparing"]) == (7, None, None, "shape 1600")
    worker.until(is_final)
    worker.send("ping", seq=8)
    assert worker.until(lambda f: f.type == "pong")[-1]["preparing"] is None


def test_a_piece_that_raises_ends_the_preparations_and_the_worker_goes_on(make_worker):
    worker = make_worker(PiecesEngine(broken="shape 3200"))
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    final = worker.until(is_final)[-1]
    assert final["done"] == 2 and "shape 3200 failed (RuntimeError: a bug in the piece)" in final["error"]
    worker.send("transcribe", audio_payload(np.zeros(4800, np.float32)), id="job")
    assert worker.until(lambda f: f.type == "result")[-1]["timings"]["path"] == "eager"


def test_a_piece_offered_again_after_it_ran_does_not_loop(make_worker):
    engine = PiecesEngine(shapes=(1600,), stubborn=True)
    worker = make_worker(engine)
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    final = worker.until(is_final)[-1]
    assert final["done"] == 1 and "again" in final["error"]
    time.sleep(3 * PIECE_S)
    assert len([e for e in engine.log if e[0] == "piece"]) == 1


def test_the_speech_server_prepares_between_batches_and_health_counts():
    engine = PiecesEngine(shapes=(1600, 3200, 4800, 6400))
    slot = EngineSlot(lambda spec: engine)
    slot.load(EngineSpec())
    engine_queue = EngineQueue(slot, max_batch=1)
    api = create_app(engine_queue, ServerOptions(model_id="pieces"))
    health = next(route.endpoint for route in api.routes if getattr(route, "path", "") == "/health")
    seen: list[tuple[int, int]] = []
    healths: list[dict | None] = []

    async def scenario() -> Transcript:
        runner = asyncio.create_task(engine_queue.run())
        await asyncio.sleep(0.1)  # the first piece is under way
        healths.append((await health(Request({"type": "http", "headers": []})))["preparing"])
        job = engine_queue.submit(TranscriptionRequest(np.zeros(6400, np.float32), "en", None, "json", False, ()))
        outcome = await job.done
        while engine_queue.preparation.pending or not engine_queue.preparation.done:
            seen.append((engine_queue.preparation.done, engine_queue.preparation.total))
            await asyncio.sleep(0.05)
        healths.append((await health(Request({"type": "http", "headers": []})))["preparing"])
        runner.cancel()
        return outcome

    try:
        outcome = asyncio.run(scenario())
    finally:
        engine_queue.shutdown()
    assert outcome.timings["path"] == "eager"  # it ran before its shape's piece
    assert engine_queue.preparation.done == 4 and not engine_queue.preparation.pending
    assert seen and all(total == 4 and done < 4 for done, total in seen)
    assert healths == [{"done": 0, "total": 4}, None]
    assert not overlaps(engine.log)
    job = next(e for e in engine.log if e[0] == "job")
    assert len([e for e in engine.log if e[0] == "piece" and e[3] <= job[2]]) <= 1


def test_a_load_of_the_same_model_repeats_the_progress_after_its_hello(make_worker):
    worker = make_worker(PiecesEngine(shapes=(1600,)))
    worker.send("load", id="load-1", spec=EngineSpec().to_dict())
    first = worker.until(is_final)[-1]
    worker.send("load", id="load-2", spec=EngineSpec().to_dict(), idle_unload_s=600)  # only the idle time changed
    frames = worker.until(lambda f: f.type == "preparing")
    assert [f.type for f in frames] == ["hello", "preparing"] and frames[0]["note"] == "already loaded"
    assert frames[1].header == first.header  # the app's progress line comes back as it was


def test_after_an_out_of_memory_step_down_the_new_engine_is_prepared_from_zero():
    """With quantization auto a job that runs out of GPU memory loads the model smaller (test_worker_oom.py);
    the pieces that follow are the new engine's, counted from 0."""
    import torch

    loaded: list[PiecesEngine] = []

    class TooBig(PiecesEngine):
        def transcribe(self, audio, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def load(spec: EngineSpec) -> PiecesEngine:
        loaded.append((TooBig if spec.quantization in ("auto", "bf16") else PiecesEngine)(shapes=(1600, 3200)))
        loaded[-1].quantization = "bf16" if spec.quantization == "auto" else spec.quantization
        return loaded[-1]

    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    server = Server(to_r, FrameWriter(from_w), EngineSlot(load))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    decoder, frames = FrameDecoder(), []

    def until(predicate) -> None:
        while not any(predicate(f) for f in frames):
            frames.extend(decoder.feed(os.read(from_r, 1 << 16)))

    os.write(to_w, encode("load", id="load-1", spec=EngineSpec(quantization="auto").to_dict()))
    until(is_final)
    first_round = len(frames)
    os.write(to_w, encode("transcribe", audio_payload(np.zeros(1600, np.float32)), id="job"))
    until(lambda f: f.type == "result")
    while not any(is_final(f) for f in frames[first_round:]):
        frames.extend(decoder.feed(os.read(from_r, 1 << 16)))
    os.write(to_w, encode("shutdown"))
    thread.join(10)
    later = [(f["done"], f["total"]) for f in frames[first_round:] if f.type == "preparing"]
    assert [e.quantization for e in loaded] == ["bf16", "fp8"]
    assert later == [(0, 2), (1, 2), (2, 2)] and loaded[1].ready == {1600, 3200}
    for fd in (to_r, to_w, from_r, from_w):
        os.close(fd)


def test_the_speech_server_answers_requests_while_a_piece_runs_beside_them():
    engine = PiecesEngine(shapes=(1600, 3200), beside=True)
    slot = EngineSlot(lambda spec: engine)
    slot.load(EngineSpec())
    engine_queue = EngineQueue(slot, max_batch=1)

    async def scenario() -> Transcript:
        runner = asyncio.create_task(engine_queue.run())
        await asyncio.sleep(0.1)  # the first piece is under way, on its own thread
        job = engine_queue.submit(TranscriptionRequest(np.zeros(3200, np.float32), "en", None, "json", False, ()))
        outcome = await job.done
        while engine_queue.preparation.pending or engine_queue.preparation.done < 2:
            await asyncio.sleep(0.05)
        runner.cancel()
        return outcome

    try:
        outcome = asyncio.run(scenario())
    finally:
        engine_queue.shutdown()
    assert outcome.timings["path"] == "eager"
    pieces = [e for e in engine.log if e[0] == "piece"]
    (job,) = [e for e in engine.log if e[0] == "job"]
    assert len(pieces) == 2 and not overlaps(pieces)
    assert pieces[0][2] < job[2] < job[3] < pieces[0][3]  # answered inside the first piece
