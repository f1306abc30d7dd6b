"""The bounded queue in front of the server's one engine, and the thread the engine runs on.

Requests that arrive while the engine is busy wait here, at most `max_waiting` of them; one more is
refused at once with 429 and a `Retry-After` that estimates when a place frees up, because a client
that waits in an unbounded queue on a shared box only learns of the overload from its timeout.

Jobs run one by one on a single engine thread (no engine is thread-safe). Batching several waiting
canvases into one denoising pass needs a batch entry point in the diffusion engine, which it does not
have yet (docs/server.md says so); the queue is the place where it would take them.

A model failure is handled as the worker handles it (`app.worker.engine_slot`): out of GPU memory
with quantization `auto` shrinks the model and runs the job again; any other exception from the
engine (a CUDA error, a bug) answers 503 and loads the model again before the next job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.engine import Progress, Transcript
from app.errors import UserError
from app.server.api_errors import ApiError
from app.server.request_checks import TranscriptionRequest
from app.worker.engine_slot import EngineSlot, as_out_of_memory

log = logging.getLogger("app.server")

# UserError codes from an engine that mean "the model cannot run", not "the request is wrong".
_MODEL_CODES = {"out_of_memory", "load_failed", "not_loaded", "no_model", "model_missing"}


class _Cancelled(Exception):
    """Raised from the progress callback when the client has gone away."""


@dataclass
class Job:
    """One request in the queue; `events` carries progress to a streaming response, `done` the outcome."""

    request: TranscriptionRequest
    loop: asyncio.AbstractEventLoop
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    received: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    done: asyncio.Future = field(init=False)
    cancelled: bool = False
    queue_ms: float = 0.0

    def __post_init__(self) -> None:
        self.done = self.loop.create_future()

    def cancel(self) -> None:
        """The client disconnected: skip the job if it still waits, stop it at its next step if it runs."""
        self.cancelled = True


class EngineQueue:
    """Owns the engine slot; `submit` from request handlers, `run` as one background task."""

    def __init__(self, slot: EngineSlot, *, max_waiting: int = 16, log_text: bool = False) -> None:
        self.slot = slot
        self.max_waiting = max_waiting
        self._log_text = log_text
        self._waiting: asyncio.Queue[Job] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self.running: Job | None = None
        self._seconds_per_job = 2.0  # a running estimate for Retry-After

    @property
    def waiting(self) -> int:
        return self._waiting.qsize() if self._waiting is not None else 0

    def submit(self, request: TranscriptionRequest) -> Job:
        """Queue `request`, or raise 429 when `max_waiting` requests already wait."""
        assert self._waiting is not None, "run() starts with the server"
        job = Job(request, asyncio.get_running_loop())
        try:
            self._waiting.put_nowait(job)
        except asyncio.QueueFull:
            retry = max(1, round(self._seconds_per_job * (self.waiting + 1)))
            raise ApiError(429, f"The server is busy: {self.waiting} requests are waiting already; try again in "
                           f"{retry} seconds.", "queue_full", headers={"Retry-After": str(retry)}) from None
        return job

    async def run(self) -> None:
        self._waiting = asyncio.Queue(self.max_waiting)
        loop = asyncio.get_running_loop()
        while True:
            job = await self._waiting.get()
            if job.cancelled:
                continue
            job.queue_ms = round((time.monotonic() - job.received) * 1000.0, 1)
            self.running = job
            started = time.monotonic()
            try:
                outcome = await loop.run_in_executor(self._executor, self._transcribe, job)
            finally:
                self.running = None
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - started)
            if not job.done.done():
                job.done.set_result(outcome)
            job.events.put_nowait(None)  # the end of the progress stream

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- on the engine thread ------------------------------------------------------------------

    def _transcribe(self, job: Job) -> Transcript | ApiError:
        """Run one job; return its transcript or the ApiError to answer with (never raise)."""
        req = job.request

        def on_progress(p: Progress) -> None:
            if job.cancelled:
                raise _Cancelled
            job.loop.call_soon_threadsafe(job.events.put_nowait, p)

        try:
            engine = self.slot.get()
            while True:
                try:
                    transcript = engine.transcribe(req.audio, language=req.language, steps=req.steps,
                                                   on_progress=on_progress, vocabulary=req.vocabulary)
                    break
                except Exception as exc:
                    oom = as_out_of_memory(exc)
                    if oom is None:
                        raise
                    log.warning("job %s: out of memory (quantization %s)", job.id, self.slot.mode)
                    engine = self.slot.shrink(oom)  # raises when there is nothing smaller to try
        except _Cancelled:
            log.info("job %s: the client went away; stopped", job.id)
            return ApiError(499, "The client closed the connection.", "cancelled")
        except UserError as exc:
            if exc.code in _MODEL_CODES:
                log.warning("job %s: the model cannot run: %s", job.id, exc.message)
                return ApiError(503, f"The speech model cannot run on this server: {exc.message}", "model_unavailable",
                                headers={"Retry-After": "30"})
            return ApiError(400, exc.message, exc.code)
        except Exception as exc:
            log.exception("job %s: the engine failed; loading the model again", job.id)
            self._reload()
            return ApiError(503, f"The speech model failed on this request ({type(exc).__name__}) and is being "
                            "loaded again; send the request again in a few seconds.", "model_failed",
                            headers={"Retry-After": "5"})
        if self._log_text:
            log.info("job %s: %.1f s of audio -> %r", job.id, req.seconds, transcript.text)
        else:
            log.info("job %s: %.1f s of audio in %.0f ms", job.id, req.seconds, transcript.timings.get("total", 0.0))
        return transcript

    def _reload(self) -> None:
        """After an engine failure the model's state (a CUDA context, caches) cannot be trusted: load it anew."""
        spec = self.slot.spec
        if spec is None:
            return
        try:
            self.slot.load(spec)
        except UserError as exc:  # remembered by the slot: each later job answers 503 with this sentence
            log.error("reloading the model failed: %s", exc.message)
