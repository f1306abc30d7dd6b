"""The speech worker process (`python -m app worker`): frames in on stdin, frames out on stdout.

The model is loaded once and kept warm; jobs run one at a time, in order, on the main thread. A
second thread reads stdin, so `ping` and `cancel` are answered while a job runs: cancel is honoured
at the next progress callback (each denoising step, each Whisper token). The real stdout is kept
for frames only: fd 1 is pointed at stderr and `sys.stdout` at `sys.stderr`, so a library that
prints cannot corrupt the stream. stdin EOF or `shutdown` ends the worker with status 0; no socket
is ever opened.

The engine's speed-up pieces (`Engine.preparations`: compiled layers, CUDA graphs) run one at a
time, with a `preparing` frame before each and one when all are done. A compile piece runs on a
thread of its own while jobs go on; a capture runs on the main thread only while no job waits (it
records whatever the GPU runs), and the queue is looked at between pieces, so a dictation waits
for one capture at most. Until a shape's pieces have run, jobs of that shape take the engine's
eager path.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import NoReturn

from app.engine import EngineSpec, Progress, Transcript
from app.engine.base import Preparation
from app.errors import UserError
from app.worker.early import Speculations
from app.worker.engine_slot import EngineSlot, as_out_of_memory
from app.worker.preparation import PreparationProgress
from app.worker.protocol import PROTOCOL_VERSION, TO_WORKER, Frame, FrameDecoder, FrameError, encode, payload_audio

log = logging.getLogger("app.worker")
_PIECE_DONE = object()  # put in the job queue when a piece that ran beside jobs ends

_READ_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl: pipe capacity
_AUDIO_PIPE_BYTES = 1 << 20  # the default pipe-max-size; half a minute of audio in one write


class JobCancelled(Exception):
    """Raised from the progress callback to stop a cancelled job between steps."""


class FrameWriter:
    """Writes whole frames to the protocol fd from any thread; reports a reader that has gone away."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.closed = False

    def send(self, type_: str, payload: bytes = b"", **fields) -> bool:
        data = memoryview(encode(type_, payload, **fields))
        with self._lock:
            if self.closed:
                return False
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError:  # BrokenPipeError: the app is gone
                self.closed = True
                return False
        return True


class Server:
    """Dispatches frames: control messages on the reader thread, load/transcribe jobs in order on `run`."""

    def __init__(self, read_fd: int, writer: FrameWriter, slot: EngineSlot | None = None) -> None:
        self._read_fd = read_fd
        self._out = writer
        self._slot = slot or EngineSlot()
        self._jobs: queue.Queue[tuple[Frame, float] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._cancelled: set[str] = set()
        self._speculations = Speculations()
        self._current: str | None = None
        self._last_step = 0.0
        self._idle_unload_s: float | None = None
        self._prep = PreparationProgress()
        self._preparing: str | None = None  # the piece running now, for `pong`
        self._beside: threading.Thread | None = None  # a piece running beside jobs (a compile)

    def run(self) -> int:
        self._hello()
        threading.Thread(target=self._read_loop, name="worker-stdin", daemon=True).start()
        while not self._stopping.is_set():
            if self._jobs.empty() and self._prepare_one():
                continue  # look at the queue again before the next piece
            try:
                item = self._jobs.get(timeout=self._idle_wait())
            except queue.Empty:
                self._unload_idle()
                continue
            if item is None:
                break
            if item is _PIECE_DONE:
                continue  # the next piece, if any, starts at the top
            frame, received = item
            if frame.type == "load":
                self._load(frame)
            elif frame.type == "speculate":
                self._speculate(frame)
            else:
                self._transcribe(frame, received)
            if self._out.closed:
                self._stop()
        log.info("worker exits")
        return 0

    # -- reader thread -------------------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = FrameDecoder(peer="app")
        while not self._stopping.is_set():
            try:
                data = os.read(self._read_fd, _READ_CHUNK)
            except OSError:
                data = b""
            for event in decoder.feed(data) if data else decoder.finish():
                try:
                    self._on_event(event)
                except Exception:  # a bug here must not silence the worker's control channel
                    log.exception("handling a %s frame failed", getattr(event, "type", "bad"))
            if not data:
                log.info("stdin closed")
                break
        self._stop()

    def _on_event(self, event: Frame | FrameError) -> None:
        if isinstance(event, FrameError):
            log.warning("bad frame from the app: %s", event.message)
            self._out.send("error", id=None, code=event.code, message=event.message)
            return
        kind = event.type
        if kind == "ping":
            with self._lock:
                job, age = self._current, (time.monotonic() - self._last_step if self._current else None)
                preparing = self._preparing
            self._out.send("pong", seq=event.get("seq"), job=job, step_age_s=age, loaded=self._slot.engine is not None,
                           preparing=preparing)
        elif kind == "cancel":
            with self._lock:
                job_id = event.get("id")
                if job_id == self._current or job_id in self._queued:
                    self._cancelled.add(job_id)
        elif kind == "shutdown":
            self._stop()
        elif kind in ("load", "transcribe", "speculate"):
            problem = _check_job(event)
            if problem:
                self._out.send("error", id=event.get("id"), code="bad_message", message=problem)
                return
            if kind == "transcribe":
                with self._lock:
                    self._queued.add(event["id"])
                self._cancel_speculation(self._speculations.job_arrived(event))
            elif kind == "speculate":
                self._cancel_speculation(self._speculations.offer(event))
            self._jobs.put((event, time.monotonic()))
        else:
            self._out.send(
                "error", id=event.get("id"), code="unknown_message",
                message=f"Unknown message type '{kind}'; the worker understands {', '.join(TO_WORKER)}.",
            )

    def _cancel_speculation(self, spec_id: str | None) -> None:
        with self._lock:
            if spec_id is not None and spec_id == self._current:  # still running: one that just ended needs nothing
                self._cancelled.add(spec_id)

    def _stop(self) -> None:
        self._stopping.set()
        self._jobs.put(None)

    # -- jobs, on the main thread --------------------------------------------------------------

    def _load(self, frame: Frame) -> None:
        self._idle_unload_s = frame.get("idle_unload_s") or None
        spec = EngineSpec.from_dict(frame["spec"])
        if self._slot.engine is not None and self._slot.spec == spec:  # e.g. only the idle timeout changed
            self._hello(note="already loaded")
            if self._prep.done or self._prep.pending:  # a hello clears the app's progress line: restore it
                self._out.send("preparing", **self._prep.report())
            return
        log.info("loading %s %s (quantization %s, device %s)", spec.engine, spec.model, spec.quantization, spec.device)
        self._finish_beside()
        self._speculations.engine_changed()
        started = time.monotonic()
        try:
            self._slot.load(spec)
        except UserError as exc:
            log.warning("load failed: %s", exc)
            self._out.send("error", id=frame.get("id"), code=exc.code, message=exc.message)
            return
        self._hello(load_ms=round((time.monotonic() - started) * 1000.0, 1))

    def _speculate(self, frame: Frame) -> None:
        """Transcribe what the user said before a pause, unasked and unreported (`app.worker.early`);
        skipped when a newer one came or a dictation waits: those go first."""
        spec_id: str = frame["id"]
        with self._lock:
            if self._queued or not self._speculations.start(frame):
                return
            self._current, self._last_step = spec_id, time.monotonic()
        started, transcript = time.monotonic(), None
        try:
            transcript = self._run(frame, report=False)
        except JobCancelled:
            log.info("early transcription %s given up: the dictation went on", spec_id)
        except Exception as exc:  # the dictation's own job runs it again and reports what fails
            log.warning("early transcription %s failed: %s", spec_id, exc)
        finally:
            ms = (time.monotonic() - started) * 1000.0
            self._speculations.finish(frame, transcript, ms)
            with self._lock:
                self._current = None
                self._cancelled.discard(spec_id)
        if transcript is not None:
            log.info("early transcription %s: %d samples in %.0f ms", spec_id, len(frame.payload) // 4, ms)

    def _transcribe(self, frame: Frame, received: float) -> None:
        job_id: str = frame["id"]
        with self._lock:
            self._queued.discard(job_id)
            self._current, self._last_step = job_id, time.monotonic()
        early = self._speculations.take(frame)  # a cancelled job goes on below, to end as cancelled as always
        if early is not None and not self._is_cancelled(job_id):  # transcribed while the key was held: answered now
            with self._lock:
                self._current = None
                self._cancelled.discard(job_id)
            worker_ms = round((time.monotonic() - received) * 1000.0, 2)
            self._out.send("result", id=job_id, worker_ms=worker_ms, early=True, **early.transcript.to_dict())
            log.info("job %s: answered by the early transcription (%.0f ms of engine time before the release)",
                     job_id, early.ms)
            return
        try:
            transcript = self._run(frame)
            if self._is_cancelled(job_id):
                raise JobCancelled
        except JobCancelled:
            self._out.send("error", id=job_id, code="cancelled", message="The transcription was cancelled.")
        except UserError as exc:
            self._out.send("error", id=job_id, code=exc.code, message=exc.message)
        except Exception as exc:  # a bug in an engine: report it, keep the worker (and its model) alive
            log.exception("job %s failed", job_id)
            self._out.send(
                "error", id=job_id, code="internal_error",
                message=f"The speech engine failed ({type(exc).__name__}: {exc}); try again, and see the log for details.",
            )
        else:
            worker_ms = round((time.monotonic() - received) * 1000.0, 2)
            self._out.send("result", id=job_id, worker_ms=worker_ms, **transcript.to_dict())
            log.info("job %s: %d samples in %.0f ms", job_id, len(frame.payload) // 4, worker_ms)
        finally:
            with self._lock:
                self._current = None
                self._cancelled.discard(job_id)

    def _run(self, frame: Frame, *, report: bool = True) -> Transcript:
        """Transcribe; after an out-of-memory error with quantization auto, shrink the model and retry.
        `report`: send a `progress` frame at each step (not for an early transcription)."""
        job_id = frame["id"]
        if self._is_cancelled(job_id):
            raise JobCancelled
        audio = payload_audio(frame.payload)

        def on_progress(p: Progress) -> None:
            with self._lock:
                self._last_step = time.monotonic()
            if report:
                self._out.send("progress", id=job_id, step=p.step, total=p.total, draft=p.draft)
            if self._is_cancelled(job_id):
                raise JobCancelled

        engine = self._slot.engine
        if engine is None:  # unloaded while idle (or never loaded: `get` says so)
            engine = self._slot.get()
            self._hello()
        while True:
            try:
                return engine.transcribe(audio, language=frame.get("language") or "auto", steps=frame.get("steps"),
                                         on_progress=on_progress, vocabulary=frame.get("vocabulary") or ())
            except Exception as exc:
                oom = as_out_of_memory(exc)
                if oom is None:
                    raise
                log.warning("out of memory in job %s (quantization %s)", job_id, self._slot.mode)
                self._finish_beside()
                engine = self._slot.shrink(oom)
                self._speculations.engine_changed()
                self._hello(note=f"Out of GPU memory: the model now runs with quantization {self._slot.mode}.")

    def _prepare_one(self) -> bool:
        """Start the engine's next speed-up piece, announced by a `preparing` frame. A piece that may run
        beside jobs (a compile) gets a thread of its own and jobs go on; any other runs here, now.
        True when a piece ran here (look at the queue again before the next), False otherwise.

        After the last piece (of those known now) one more frame says so: `done == total`, no label.
        """
        if self._beside is not None:
            if self._beside.is_alive():
                return False  # one piece at a time
            self._beside = None
        piece = self._prep.next_piece(self._slot.engine)
        if piece is None:
            if self._prep.final():
                self._out.send("preparing", **self._prep.report())
            return False
        with self._lock:  # before the frame: a ping that follows it hears of the piece
            self._preparing = piece.label
        self._out.send("preparing", **self._prep.report(piece.label))
        if piece.alongside_jobs:
            self._beside = threading.Thread(target=self._run_piece, args=(piece, True), name="worker-prepare", daemon=True)
            self._beside.start()
            return False
        self._run_piece(piece, False)
        return True

    def _run_piece(self, piece: Preparation, beside: bool) -> None:
        try:
            self._prep.run(piece)
        finally:
            with self._lock:
                self._preparing = None
            if beside:
                self._jobs.put(_PIECE_DONE)  # wake the main loop for the next piece

    def _finish_beside(self) -> None:
        """Wait for a piece running beside jobs: before the engine it works on is replaced or dropped."""
        if self._beside is not None:
            self._beside.join()
            self._beside = None

    def _is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled or self._stopping.is_set()

    def _idle_wait(self) -> float | None:
        return self._idle_unload_s if self._slot.engine is not None and self._idle_unload_s else None

    def _unload_idle(self) -> None:
        log.info("unloading the model after %.1f s idle", self._idle_unload_s or 0)
        self._finish_beside()
        self._slot.unload()
        self._hello()

    def _hello(self, **extra) -> None:
        self._out.send("hello", protocol=PROTOCOL_VERSION, pid=os.getpid(), loaded=self._slot.engine is not None, **self._slot.describe(), **extra)


def _check_job(frame: Frame) -> str | None:
    """Why a load/transcribe/speculate frame cannot be run, as a sentence; None when it is fine."""
    if frame.type == "load":
        return None if isinstance(frame.get("spec"), dict) else 'A "load" message needs a "spec" object (an EngineSpec).'
    if not isinstance(frame.get("id"), str) or not frame.get("id"):
        return f'A "{frame.type}" message needs a string "id".'
    if len(frame.payload) % 4:
        return "The audio payload is not a whole number of float32 samples."
    if frame.get("sample_rate", 16_000) != 16_000:
        return "The audio must be 16 kHz mono float32; resample it first."
    steps = frame.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
        return '"steps" must be a whole number or null.'
    vocabulary = frame.get("vocabulary")
    if vocabulary is not None and (not isinstance(vocabulary, list) or not all(isinstance(v, str) for v in vocabulary)):
        return '"vocabulary" must be a list of texts, or absent.'
    return None


def _claim_stdio() -> tuple[int, int]:
    """Private copies of stdin/stdout for the protocol; fd 0 becomes /dev/null, fd 1 becomes stderr.

    On Linux the stdin pipe is also widened from 64 KiB to 1 MiB, so a recording arrives in one write
    instead of a ping-pong of 64 KiB chunks, each costing a wake-up of both processes.
    """
    read_fd, write_fd = os.dup(0), os.dup(1)
    if sys.platform.startswith("linux"):
        try:
            import fcntl

            fcntl.fcntl(read_fd, _F_SETPIPE_SZ, _AUDIO_PIPE_BYTES)
        except OSError:  # not a pipe, or a lower pipe-max-size: the default works, only slower
            pass
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return read_fd, write_fd


def main() -> NoReturn:
    """Entry of `python -m app worker`; the parent controls the worker through stdin, so Ctrl+C is ignored.

    It ends the process with `os._exit(status)`: tearing down an interpreter that holds torch and a
    model takes seconds, every job has been answered by then, and the app's quit should not wait.
    """
    read_fd, write_fd = _claim_stdio()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="worker %(process)d %(levelname)s %(message)s")
    code = Server(read_fd, FrameWriter(write_fd)).run()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
