"""The bounded queue in front of the server's one engine, and the thread the engine runs on.

Requests that arrive while the engine is busy wait here, at most `max_waiting` of them; one more is
refused at once with 429 and a `Retry-After` that estimates when a place frees up, because a client
that waits in an unbounded queue on a shared box only learns of the overload from its timeout.

The engine runs on a single thread (no engine is thread-safe). When it is free it takes the oldest
waiting request and, where the engine has `transcribe_batch` (diffusion), up to `max_batch - 1` more
that ask for the same number of steps: their canvases are denoised together, and a denoising step
reads every weight whatever the batch, so on a GPU eight requests cost little more than one. Whisper
runs them one by one. Each request still gets its own text, language, timings and progress stream;
a client that goes away cancels its own request only. A request answered in timed segments (`srt`,
`vtt`, `verbose_json`: `app.engine.segments`) runs alone: the pieces of its recording are its batch.

A model failure is handled as the worker handles it (`app.worker.engine_slot`): out of GPU memory
with quantization `auto` shrinks the model and runs the job again; any other exception from the
engine (a CUDA error, a bug) answers 503 and loads the model again before the next job. A batch
refused for one request's sake (a 400) is run again one by one, so each request gets its own answer.

Speculative requests (`speculative=true`: the app transcribing a dictation ahead, at a pause while
the key is still held) use what would otherwise be idle time, and cost another request at most the
rest of one step: they are refused while another request waits or runs (on a busy shared server one
would mostly be stopped half done), and a request that arrives ends every waiting one and stops every
running one at its next step (Whisper on CTranslate2, which cannot stop inside a 30 s window, at the
window's end); a waiting one is not kept for later, because a dictation that ended at its pause may
wait for its answer, and would wait behind every later request. A client's newer request, of either
kind, ends that client's earlier speculative ones, which are stale by then.

The engine's speed-up pieces (`Engine.preparations`: compiled layers, CUDA graphs) run one at a
time, as in the worker: a compile on a thread of its own while requests go on, a capture on the
engine thread while no request waits, looking at the queue between pieces; `/health` shows how
far they are (`preparing`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from app.engine import Engine, Progress, Transcript
from app.engine.base import BatchItem
from app.engine.segments import Segmented, Stopped, transcribe_segments
from app.errors import UserError
from app.server.api_errors import ApiError
from app.server.request_checks import TranscriptionRequest
from app.worker.engine_slot import EngineSlot, as_out_of_memory
from app.worker.preparation import PreparationProgress

log = logging.getLogger("app.server")

# UserError codes from an engine that mean "the model cannot run", not "the request is wrong".
_MODEL_CODES = {"out_of_memory", "load_failed", "not_loaded", "no_model", "model_missing"}


class _Cancelled(Exception):
    """Raised from the progress callback when the client has gone away."""


T = TypeVar("T")


def _cancelled() -> ApiError:
    return ApiError(499, "The client closed the connection.", "cancelled")


def _given_way() -> ApiError:
    return ApiError(409, "This speculative request gave way to a newer request; send the recording again if it "
                    "is still wanted.", "superseded")


@dataclass(eq=False)  # jobs are told apart by identity: comparing their fields would compare audio arrays
class Job:
    """One request in the queue; `events` carries progress to a streaming response, `done` the outcome."""

    request: TranscriptionRequest
    loop: asyncio.AbstractEventLoop
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    received: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    done: asyncio.Future = field(init=False)
    cancelled: bool = False
    given_way: bool = False  # a speculative job stopped for a newer request: answered 409, not 499
    queue_ms: float = 0.0

    def __post_init__(self) -> None:
        self.done = self.loop.create_future()
        if self.request.speculative:  # told apart in the log
            self.id = f"early-{self.id}"

    @property
    def speculative(self) -> bool:
        return self.request.speculative

    def cancel(self) -> None:
        """The client disconnected: skip the job if it still waits, stop it at its next step if it runs."""
        self.cancelled = True

    def give_way(self) -> None:
        """A speculative job ends for a newer request: skipped if it waits, stopped at its next step if it runs."""
        self.given_way = self.cancelled = True


class EngineQueue:
    """Owns the engine slot; `submit` from request handlers, `run` as one background task."""

    def __init__(self, slot: EngineSlot, *, max_waiting: int = 16, max_batch: int = 8, log_text: bool = False) -> None:
        self.slot = slot
        self.max_waiting = max_waiting
        self.max_batch = max_batch
        self._log_text = log_text
        self._waiting: deque[Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self.running: list[Job] = []
        self._seconds_per_job = 2.0  # a running estimate for Retry-After
        self.preparation = PreparationProgress()  # used by one thread at a time; /health reads its numbers
        self._beside: threading.Thread | None = None  # a piece running beside requests (a compile)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting, speculative ones not counted (they never hold anyone up)."""
        return sum(1 for job in self._waiting if not job.speculative and not job.cancelled)

    def speculations(self) -> dict[str, int]:
        """Speculative requests waiting and running, for /health."""
        return {"waiting": sum(1 for job in self._waiting if job.speculative and not job.cancelled),
                "running": sum(1 for job in self.running if job.speculative and not job.cancelled)}

    def check_speculation(self) -> None:
        """Raise 429 when a speculative request would not be taken now (asked before its audio is decoded
        and checked for speech, so that a refused one costs the server no more than its upload)."""
        if self.waiting or any(not job.speculative for job in self.running) \
                or self.speculations()["waiting"] >= self.max_waiting:
            raise ApiError(429, "The server is busy with other requests; a speculative request is only taken "
                           "while no other request waits or runs.", "queue_full", headers={"Retry-After": "1"})

    def submit(self, request: TranscriptionRequest) -> Job:
        """Queue `request`, or raise 429 when `max_waiting` requests already wait (for a speculative one:
        when any does). See the module docstring for what a request does to speculative ones."""
        assert self._wakeup is not None, "run() starts with the server"
        if request.speculative:
            self.check_speculation()
        if self.waiting >= self.max_waiting:
            retry = max(1, round(self._seconds_per_job * (self.waiting + 1)))
            raise ApiError(429, f"The server is busy: {self.waiting} requests are waiting already; try again in "
                           f"{retry} seconds.", "queue_full", headers={"Retry-After": str(retry)})
        for job in (*self._waiting, *self.running):
            # A waiting one gives way too: it would wait behind this request and every later one, and a
            # dictation that ended at its pause may be waiting for its answer (its client then sends it).
            if job.speculative and ((request.client and job.request.client == request.client)
                                    or not request.speculative):
                job.give_way()
        self._drop_cancelled()  # answered now, not when the engine is next free
        job = Job(request, asyncio.get_running_loop())
        self._waiting.append(job)
        self._wakeup.set()
        return job

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()  # before the piece: a request that arrives during it wakes the wait below
                if await loop.run_in_executor(self._executor, self._prepare_one):
                    continue
                await self._wakeup.wait()
            jobs = self._take()
            if not jobs:
                continue
            now = time.monotonic()
            for job in jobs:
                job.queue_ms = round((now - job.received) * 1000.0, 1)
            self.running = jobs
            try:
                outcomes = await loop.run_in_executor(self._executor, self._transcribe_all, jobs)
            finally:
                self.running = []
            if not any(job.given_way for job in jobs):  # a speculative job stopped after a step says nothing
                self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - now) / len(jobs)
            for job, outcome in zip(jobs, outcomes):
                if job.given_way and isinstance(outcome, ApiError) and outcome.code == "cancelled":
                    outcome = _given_way()
                if not job.done.done():
                    job.done.set_result(outcome)
                job.events.put_nowait(None)  # the end of the progress stream

    def _take(self) -> list[Job]:
        """The oldest waiting request and, for an engine that batches, the next ones with the same steps, in
        order. (Speculative requests never wait beside others: any other request ends the waiting ones.)"""
        self._drop_cancelled()
        ordered = list(self._waiting)
        if not ordered:
            return []
        batches = self.max_batch > 1 and hasattr(self.slot.engine, "transcribe_batch")
        jobs = [ordered[0]]
        for job in ordered[1:]:
            if not batches or len(jobs) == self.max_batch or jobs[0].request.spans is not None:
                break
            if job.request.steps == jobs[0].request.steps and job.request.spans is None:  # segments batch their own
                jobs.append(job)
        for job in jobs:
            self._waiting.remove(job)
        return jobs

    def _drop_cancelled(self) -> None:
        """Take the cancelled jobs out of the queue (they are not counted as waiting, and would otherwise
        keep their audio there until the engine is next free); one that gave way is answered 409 now."""
        for job in [job for job in self._waiting if job.cancelled]:
            self._waiting.remove(job)
            if job.given_way:  # never ran: its answer is the same 409 as a stopped one's
                job.done.set_result(_given_way())
                job.events.put_nowait(None)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- on the engine thread ------------------------------------------------------------------

    def _prepare_one(self) -> bool:
        """Start the engine's next speed-up piece: one that may run beside requests (a compile) on a
        thread of its own, any other here, now. True when one ran here; False when none is left (the
        log says when all are done) or one runs beside requests (its end wakes `run`)."""
        if self._beside is not None:
            if self._beside.is_alive():
                return False
            self._beside = None
        piece = self.preparation.next_piece(self.slot.engine)
        if piece is None:
            self.preparation.final()
            return False
        if piece.alongside_jobs:
            self._beside = threading.Thread(target=self._run_beside, args=(piece, self._loop),
                                            name="engine-prepare", daemon=True)
            self._beside.start()
            return False
        self.preparation.run(piece)
        return True

    def _run_beside(self, piece, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.preparation.run(piece)
        finally:
            loop.call_soon_threadsafe(self._wakeup.set)

    def _finish_beside(self) -> None:
        """Wait for a piece running beside requests: before the engine it works on is replaced."""
        if self._beside is not None:
            self._beside.join()
            self._beside = None

    def _transcribe_all(self, jobs: list[Job]) -> list[Transcript | Segmented | ApiError]:
        """Run the jobs (one, or a batch); one transcript or ApiError each, in order (never raise)."""
        if len(jobs) == 1 and jobs[0].request.spans is not None:
            job, req = jobs[0], jobs[0].request
            outcomes = [self._with_engine(job.id, lambda engine: transcribe_segments(
                engine, req.audio, list(req.spans), language=req.language, steps=req.steps,
                vocabulary=req.vocabulary, on_progress=_progress(job), max_batch=self.max_batch, words=req.words))]
        elif len(jobs) == 1:
            job, req = jobs[0], jobs[0].request
            outcomes = [self._with_engine(job.id, lambda engine: engine.transcribe(
                req.audio, language=req.language, steps=req.steps, on_progress=_progress(job), vocabulary=req.vocabulary))]
        else:
            items = [BatchItem(j.request.audio, j.request.language, j.request.vocabulary, _progress(j)) for j in jobs]
            names = ",".join(job.id for job in jobs)
            batch = self._with_engine(names, lambda engine: engine.transcribe_batch(items, steps=jobs[0].request.steps))
            if isinstance(batch, ApiError):
                if batch.status == 400:  # one request's problem: each gets its own answer
                    return [self._transcribe_all([job])[0] for job in jobs]
                return [ApiError(batch.status, batch.message, batch.code, headers=batch.headers) for _ in jobs]
            outcomes = [_cancelled() if t is None else t for t in batch]
        for job, outcome in zip(jobs, outcomes):
            seconds = job.request.seconds
            if isinstance(outcome, ApiError):
                continue
            transcript = outcome.transcript if isinstance(outcome, Segmented) else outcome
            if self._log_text:
                log.info("job %s: %.1f s of audio -> %r", job.id, seconds, transcript.text)
            else:
                log.info("job %s: %.1f s of audio in %.0f ms (batch of %s, %s segments)", job.id, seconds,
                         transcript.timings.get("total", 0.0), transcript.timings.get("batch", 1),
                         transcript.timings.get("segments", 1))
        return outcomes

    def _with_engine(self, names: str, run: Callable[[Engine], T]) -> T | ApiError:
        """`run(engine)` with the worker's recovery; the ApiError to answer with where it fails."""
        try:
            engine = self.slot.get()
            while True:
                try:
                    return run(engine)
                except Exception as exc:
                    oom = as_out_of_memory(exc)
                    if oom is None:
                        raise
                    log.warning("job %s: out of memory (quantization %s)", names, self.slot.mode)
                    self._finish_beside()
                    engine = self.slot.shrink(oom)  # raises when there is nothing smaller to try
        except (_Cancelled, Stopped):
            log.info("job %s: stopped: its client went away (or, speculative, it gave way to a newer request)", names)
            return _cancelled()
        except UserError as exc:
            if exc.code in _MODEL_CODES:
                log.warning("job %s: the model cannot run: %s", names, exc.message)
                return ApiError(503, f"The speech model cannot run on this server: {exc.message}", "model_unavailable",
                                headers={"Retry-After": "30"})
            return ApiError(400, exc.message, exc.code)
        except Exception as exc:
            log.exception("job %s: the engine failed; loading the model again", names)
            self._reload()
            return ApiError(503, f"The speech model failed on this request ({type(exc).__name__}) and is being "
                            "loaded again; send the request again in a few seconds.", "model_failed",
                            headers={"Retry-After": "5"})

    def _reload(self) -> None:
        """After an engine failure the model's state (a CUDA context, caches) cannot be trusted: load it anew."""
        spec = self.slot.spec
        if spec is None:
            return
        self._finish_beside()
        try:
            self.slot.load(spec)
        except UserError as exc:  # remembered by the slot: each later job answers 503 with this sentence
            log.error("reloading the model failed: %s", exc.message)


def _progress(job: Job) -> Callable[[Progress], None]:
    """The engine's progress callback for `job`: drafts to its stream; raises once its client went away."""

    def on_progress(p: Progress) -> None:
        if job.cancelled:
            raise _Cancelled
        job.loop.call_soon_threadsafe(job.events.put_nowait, p)

    return on_progress
