"""A synchronous, Qt-free client for the worker: for tests, benchmarks and scripts.

It does no supervision (the Qt `WorkerClient` restarts a dead worker); it starts the process, sends
frames and waits for the ones it expects. A thread drains the worker's stdout into a queue so the
worker can never block on a full pipe. The `preparing` frames (the engine's speed-up pieces, run
between jobs) are also kept in `preparing` as they arrive, whether or not a caller reads them.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import uuid
from typing import Callable, Sequence

import numpy as np

from app.engine import EngineSpec
from app.errors import UserError
from app.worker.launch import worker_command, worker_environment
from app.worker.protocol import PROTOCOL_VERSION, Frame, FrameDecoder, FrameError, audio_payload, encode


class WorkerExited(RuntimeError):
    """The worker process ended while we were waiting for it."""


class WorkerPipe:
    """One worker process. Use as a context manager, or call `close()`."""

    def __init__(self, *, command: list[str] | None = None, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            command or worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(env),
        )
        self._events: queue.Queue[Frame | FrameError | None] = queue.Queue()
        self.preparing: list[dict] = []  # every `preparing` frame's header, in order (appended by the drain thread)
        self._prepared = threading.Condition()
        self._ended = False  # the worker's stdout reached its end
        threading.Thread(target=self._drain, name="worker-stdout", daemon=True).start()
        self.hello: dict = {}

    def __enter__(self) -> "WorkerPipe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def write(self, data: bytes) -> None:
        """Raw bytes to the worker's stdin (tests write garbage this way)."""
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, type_: str, payload: bytes = b"", **fields) -> None:
        self.write(encode(type_, payload, **fields))

    def next(self, timeout: float = 120.0) -> Frame | FrameError:
        """The next frame (or stream error) from the worker; WorkerExited at end of stream."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the worker sent nothing for {timeout:.0f} s") from None
        if event is None:
            self._events.put(None)  # stay at end of stream for later calls
            raise WorkerExited(f"the worker exited with status {self.process.wait()}")
        return event

    def expect(self, *types: str, timeout: float = 120.0) -> Frame:
        """Skip frames until one of `types` arrives; an `error` frame raises UserError with its code."""
        while True:
            event = self.next(timeout)
            if isinstance(event, FrameError):
                raise UserError(event.message, code=event.code)
            if event.type in types:
                return event
            if event.type == "error":
                raise UserError(event.get("message", ""), code=event.get("code", "error"))

    def handshake(self, timeout: float = 60.0) -> dict:
        """Wait for the start-up hello and check the protocol version."""
        self.hello = self.expect("hello", timeout=timeout).header
        if self.hello.get("protocol") != PROTOCOL_VERSION:
            raise UserError(f"worker protocol {self.hello.get('protocol')} != {PROTOCOL_VERSION}", code="version_mismatch")
        return self.hello

    def load(self, spec: EngineSpec, *, idle_unload_s: float | None = None, timeout: float = 300.0) -> dict:
        """Load `spec` (after the handshake, which this does if needed) and return the worker's hello."""
        if not self.hello:
            self.handshake()
        self.send("load", id="load", spec=spec.to_dict(), idle_unload_s=idle_unload_s)
        self.hello = self.expect("hello", timeout=timeout).header
        return self.hello

    def submit(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None, job_id: str | None = None,
               vocabulary: Sequence[str] = ()) -> str:
        job_id = job_id or uuid.uuid4().hex[:12]
        extra = {"vocabulary": list(vocabulary)} if vocabulary else {}
        self.send("transcribe", audio_payload(audio), id=job_id, language=language, steps=steps, sample_rate=16_000, **extra)
        return job_id

    def speculate(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
                  vocabulary: Sequence[str] = ()) -> str:
        """Send `audio` to be transcribed ahead (`app.worker.early`); nothing answers it."""
        spec_id = f"early-{uuid.uuid4().hex[:8]}"
        extra = {"vocabulary": list(vocabulary)} if vocabulary else {}
        self.send("speculate", audio_payload(audio), id=spec_id, language=language, steps=steps, sample_rate=16_000,
                  **extra)
        return spec_id

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str = "auto",
        steps: int | None = None,
        on_progress: Callable[[Frame], None] | None = None,
        timeout: float = 300.0,
        vocabulary: Sequence[str] = (),
    ) -> dict:
        """Submit one job and wait for its result (a dict with text, timings, worker_ms, ...)."""
        job_id = self.submit(audio, language=language, steps=steps, vocabulary=vocabulary)
        while True:
            frame = self.expect("result", "progress", timeout=timeout)
            if frame.get("id") != job_id:
                continue
            if frame.type == "result":
                return frame.header
            if on_progress:
                on_progress(frame)

    def wait_prepared(self, timeout: float = 300.0, *, after: int = 0) -> dict:
        """Wait for a final `preparing` frame (`done == total`, no label) among those after the first `after`
        seen; returns it. TimeoutError if none came."""

        def final() -> dict | None:
            return next((f for f in self.preparing[after:] if f.get("label") is None and f["done"] == f["total"]), None)

        with self._prepared:
            if not self._prepared.wait_for(lambda: final() is not None or self._ended, timeout):
                raise TimeoutError(f"the worker did not finish its speed-up pieces within {timeout:.0f} s")
            found = final()
        if found is None:
            raise WorkerExited(f"the worker exited with status {self.process.wait()}")
        return found

    def close(self, timeout: float = 10.0) -> int:
        """Ask the worker to shut down, and kill it if it does not; returns its exit status."""
        if self.process.poll() is None:
            try:
                self.send("shutdown")
                self.process.stdin.close()
            except (OSError, ValueError):  # already closed, or the worker is gone
                pass
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def _drain(self) -> None:
        decoder = FrameDecoder(peer="worker")
        fd = self.process.stdout.fileno()
        while data := os.read(fd, 1 << 16):
            for event in decoder.feed(data):
                if isinstance(event, Frame) and event.type == "preparing":
                    with self._prepared:
                        self.preparing.append(event.header)
                        self._prepared.notify_all()
                self._events.put(event)
        for event in decoder.finish():
            self._events.put(event)
        self._events.put(None)
        with self._prepared:
            self._ended = True
            self._prepared.notify_all()
