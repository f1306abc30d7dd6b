"""The app as a client of a speech server: `ServerClient`, the `WorkerClient` twin that talks HTTP.

It has the same signals and methods as `app.worker.client.WorkerClient`, so the app, the overlay,
the history and the kept recordings cannot tell which one they have. No model and no torch here:
HTTP calls run one at a time on a thread of their own (dictations are pasted in order anyway), and
their outcomes come back to the GUI thread through a queued signal before anything else sees them.

An unreachable server or a refused token puts the client in the `failed` state *before* the job's
`failed` signal, exactly as a worker whose model cannot run: the recording is then kept in the
history and sent again when the server answers, which the client checks every few seconds. A server
whose queue is full (429) is asked again every few seconds for the same job, which is then pasted as
usual; only after minutes of that is it treated as a server that is gone.

Transcribing ahead (`speculate`, the speaker paused with the key held) sends the recording so far at
once, on a thread of its own, as a speculative request: the server takes it only while no other
request waits or runs, and stops it for any other request. A dictation that ends with exactly those samples and asks
for the same language, steps and vocabulary is not uploaded again: it takes that request's answer,
already there or on its way. Anything else ends the speculative request (the server drops it when
this client's next request arrives) and is sent as usual.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal

from app.engine import EngineSpec
from app.errors import UserError
from app.worker.speech_client import SpeechClient

log = logging.getLogger(__name__)

_CONNECTION_CODES = {"server_unreachable", "server_token", "model_unavailable", "queue_full"}
# The server failed on this request (its model raised, and it loads it anew; the answer broke off) while it
# answers /health: the request is sent once more after `_AGAIN_AFTER_S`, and a second failure is this
# recording's, kept in History, not the server's: the client stays ready for the next dictation. As a
# connection failure, it sent the recording again at every /health check (each 5 s), and a recording
# that makes the model fail had the shared server reload its model every 5 s.
_FAILED_ON_THIS = {"model_failed", "server_failed"}
_AGAIN_AFTER_S = 5.0  # the Retry-After a server sends with model_failed
_MAX_SECONDS = 30 * 60
_BUSY_RETRY_S = 2.0  # a server whose queue is full (429) is asked again this often ...
_BUSY_GIVE_UP_S = 300.0  # ... for this long; then the recording is kept, as when the server is gone


@dataclass
class _Job:
    id: str
    audio: np.ndarray
    language: str
    steps: int | None
    vocabulary: tuple[str, ...] = ()
    cancelled: bool = False
    early: _Early | None = None  # the speculative request whose answer is this job's


@dataclass
class _Early:
    """A speculative request: the recording as it was at a pause, sent while the key is still held."""

    audio: np.ndarray
    language: str
    steps: int | None
    vocabulary: tuple[str, ...]
    cancelled: bool = False
    job: _Job | None = None  # the dictation that takes its answer: the drafts go to it
    transcript: dict | None = None  # its answer; None until `finished`, and after a failure
    finished: threading.Event = field(default_factory=threading.Event)

    def answers(self, job: _Job) -> bool:
        """True when `job` would ask the server for exactly this request again."""
        return ((job.language, job.steps, job.vocabulary) == (self.language, self.steps, self.vocabulary)
                and np.array_equal(job.audio, self.audio))


class ServerClient(SpeechClient):
    """Sends dictations to the server at `spec.model` (its URL); see the module docstring.

    `token` is read through `token_loader` before each request (the settings window may change it);
    `retry_s` is how often a failed client asks the server's /health again.
    """

    _event = Signal(object)  # from the HTTP thread: a callable to run on the GUI thread

    def __init__(self, spec: EngineSpec, parent: QObject | None = None, *, token_loader=None,
                 retry_s: float = 5.0, **_worker_options) -> None:
        """`_worker_options` (command, env, idle_unload_s, ...) are the WorkerClient's and mean nothing here."""
        super().__init__(parent)
        if token_loader is None:
            from app.server.token_store import load_token as token_loader
        self._spec = spec
        self._token_loader = token_loader
        self._info: dict = {}
        self._tasks: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failure = ("", "")
        self._early: _Early | None = None  # the latest speculative request, until a job takes or ends it
        self._id = uuid.uuid4().hex  # the `client` of its requests: a newer one ends its older speculative ones
        self._token_lock = threading.Lock()
        self._event.connect(self._run_on_gui, Qt.ConnectionType.QueuedConnection)
        self._retry = QTimer(self, singleShot=True, interval=int(retry_s * 1000), timeout=self._check)

    # -- the WorkerClient interface ------------------------------------------------------------

    @property
    def info(self) -> dict:
        """The server's /health (engine, model, device, quantization, queue length) once it answered."""
        return dict(self._info)

    @property
    def pid(self) -> None:
        """No local process: the model runs on the server."""
        return None

    def start(self) -> None:
        if self._state not in ("stopped", "failed"):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="speech-server-client", daemon=True)
            self._thread.start()
        self._set_state("starting")
        self._check()

    def stop(self) -> None:
        self._retry.stop()
        self._drop_early()
        if self._thread is not None:
            self._tasks.put(None)
            self._thread = None
            self._tasks = queue.Queue()  # the old thread drains its own queue and ends
        jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.cancelled = True
        self._set_state("stopped")
        for job in jobs:
            self.failed.emit(job.id, "stopped", "The app stopped before this recording was transcribed.")

    def configure(self, spec: EngineSpec) -> None:
        """Another server URL: asked at once; waiting jobs go to the new one."""
        self._spec = spec
        self._drop_early()
        if self._state != "stopped":
            self._set_state("starting")
            self._check()

    def set_idle_unload(self, seconds: float | None) -> None:
        """The server decides when its model is in memory; nothing to do here."""

    def submit(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
               vocabulary: Sequence[str] = ()) -> str:
        """As `WorkerClient.submit`; the vocabulary goes to the server as the request's prompt."""
        job_id = uuid.uuid4().hex[:12]
        audio = np.asarray(audio, dtype=np.float32)
        early, self._early = self._early, None  # taken by this job, or of no use to any later one
        try:
            return self._submit(job_id, audio, language, steps, tuple(vocabulary), early)
        finally:
            if early is not None and early.job is None:
                early.cancelled = True

    def _submit(self, job_id: str, audio: np.ndarray, language: str, steps: int | None,
                vocabulary: tuple[str, ...], early: _Early | None) -> str:
        if audio.ndim != 1:
            self._fail_later(job_id, "bad_audio", "Audio must be mono (one channel); downmix it first.")
            return job_id
        if audio.size > _MAX_SECONDS * 16_000:
            self._fail_later(job_id, "too_long", "The recording is longer than 30 minutes; split it into shorter parts.")
            return job_id
        if self._state == "stopped":
            self.start()
        if self._state == "failed":  # the server was not there a moment ago: the recording is kept, and why
            self._fail_later(job_id, *self._failure)
            return job_id
        job = _Job(job_id, audio, language, steps, vocabulary)
        if early is not None and early.answers(job):
            job.early, early.job = early, job
        self._jobs[job_id] = job
        self._tasks.put(job)
        self._settle_state()
        return job_id

    def speculate(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
                  vocabulary: Sequence[str] = ()) -> None:
        """Send `audio` as a speculative request now (`SpeechClient.speculate`; the module docstring).

        Not while a dictation of ours is unfinished (`busy`): the server is busy with it, so it would be
        refused, or that dictation waits for our earlier speculative request, which this one would end.
        Nor to a server of an earlier version (its /health has no `speculative`): it would run the request
        as a dictation, in everyone's way."""
        if self._state != "ready" or "speculative" not in self._info:
            return
        self._drop_early()
        early = self._early = _Early(np.asarray(audio, dtype=np.float32), language, steps, tuple(vocabulary))
        threading.Thread(target=self._send_early, args=(early,), name="speech-server-early", daemon=True).start()

    def _drop_early(self) -> None:
        """The latest speculative request is of no use any more: its connection closes at its next event."""
        if self._early is not None:
            self._early.cancelled = True
            self._early = None

    def cancel(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        job.cancelled = True  # the HTTP thread closes the connection at the next event; the server stops it
        if job.early is not None:
            job.early.cancelled = True
        self._settle_state()
        self._fail_later(job_id, "cancelled", "The transcription was cancelled.")

    # -- the HTTP thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        tasks = self._tasks
        while True:
            task = tasks.get()
            if task is None:
                return
            if callable(task):
                task()
            elif not task.cancelled:
                self._send(task)

    def _connection(self):
        """A connection with the token as stored now; one thread at a time reads it (the HTTP thread and a
        transcription ahead can ask together, and a keyring over D-Bus is not known to be thread-safe)."""
        from app.server.http import ServerConnection

        with self._token_lock:
            token = self._token_loader()
        return ServerConnection(self._spec.model, token)

    def _check(self) -> None:
        """Ask /health (on the HTTP thread, after any job already queued)."""
        url = self._spec.model

        def check() -> None:
            try:
                if not url:
                    raise UserError("No speech server is set: enter its address in Settings → Model → Server URL.",
                                    code="server_unreachable")
                conn = self._connection()
                try:
                    health = conn.health()
                finally:
                    conn.close()
                if health.get("status") != "ok":  # up, but its model failed to load again after an error
                    raise UserError(f"The speech server at {url} cannot run its model right now; its administrator "
                                    "can see why in its log.", code="model_unavailable")
            except UserError as exc:
                self._post(self._server_failed, exc.code, exc.message)
                return
            self._post(self._server_ready, health)

        self._tasks.put(check)

    def _send_early(self, early: _Early) -> None:
        """Run one speculative request (on a thread of its own); a failure only means the job is sent itself."""
        def on_draft(step: int, total: int, draft: str) -> None:
            if early.job is not None:
                self._post(self._drafted, early.job, step, total, draft)

        try:
            conn = self._connection()
            try:
                early.transcript = conn.transcribe(early.audio, language=early.language, steps=early.steps,
                                                   vocabulary=early.vocabulary, on_draft=on_draft,
                                                   should_stop=lambda: early.cancelled, speculative=True,
                                                   client=self._id)
            finally:
                conn.close()
            log.info("transcription ahead: %d samples done on the server", early.audio.size)
        except UserError as exc:
            log.info("the transcription ahead was not finished (%s): %s", exc.code, exc.message)
        finally:
            early.finished.set()

    def _send(self, job: _Job) -> None:
        def on_draft(step: int, total: int, draft: str) -> None:
            self._post(self._drafted, job, step, total, draft)

        if job.early is not None:  # the same request is on its way already: its answer is this job's
            while not job.early.finished.wait(0.05):
                if job.cancelled:
                    job.early.cancelled = True
                    return
            if job.early.transcript is not None:
                log.info("job %s: answered by the transcription ahead, not uploaded again", job.id)
                self._post(self._job_done, job, {**job.early.transcript, "early": True, "attempts": 1})
                return

        give_up = time.monotonic() + _BUSY_GIVE_UP_S
        failed_before = False
        while True:
            try:
                conn = self._connection()
                try:
                    transcript = conn.transcribe(job.audio, language=job.language, steps=job.steps,
                                                 vocabulary=job.vocabulary, on_draft=on_draft,
                                                 should_stop=lambda: job.cancelled, client=self._id)
                finally:
                    conn.close()
            except UserError as exc:
                # A shared server with a full queue (429) is busy, not broken: the dictation waits and is
                # pasted when its turn comes, as behind a busy local worker, instead of being dropped.
                if exc.code == "queue_full" and time.monotonic() < give_up and self._wait(job, _BUSY_RETRY_S):
                    continue
                if exc.code in _FAILED_ON_THIS and not failed_before:
                    failed_before = True
                    log.warning("job %s: the server failed on it (%s); sending it once more", job.id, exc.code)
                    if self._wait(job, _AGAIN_AFTER_S):
                        continue
                    return
                message = exc.message
                if exc.code in _FAILED_ON_THIS:
                    message = ("The speech server failed twice on this recording; tell its administrator if this "
                               f"keeps happening. Its answer: {exc.message}")
                self._post(self._job_failed, job, exc.code, message)
                return
            self._post(self._job_done, job, {**transcript, "attempts": 2 if failed_before else 1})
            return

    @staticmethod
    def _wait(job: _Job, seconds: float) -> bool:
        """Sleep `seconds` unless the job is cancelled (or the client stopped) meanwhile; True: ask again."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if job.cancelled:
                return False
            time.sleep(0.1)
        return not job.cancelled

    def _post(self, fn, *args) -> None:
        self._event.emit(lambda: fn(*args))

    # -- back on the GUI thread ----------------------------------------------------------------

    def _run_on_gui(self, fn) -> None:
        fn()

    def _server_ready(self, health: dict) -> None:
        self._info = {**health, "server": self._spec.model}
        self._failure = ("", "")
        self._set_state("ready")
        self._settle_state()
        self.ready.emit(self.info)

    def _server_failed(self, code: str, message: str) -> None:
        if self._state == "stopped":
            return
        self._failure = (code, message)
        first = self._state != "failed"
        self._set_state("failed")
        if first:
            self.failed.emit("", code, message)
        self._retry.start()

    def _drafted(self, job: _Job, step: int, total: int, draft: str) -> None:
        if job.id in self._jobs:
            self.progress.emit(job.id, step, total, draft)

    def _job_done(self, job: _Job, transcript: dict) -> None:
        if self._jobs.pop(job.id, None) is None:
            return
        self._settle_state()
        self.result.emit(job.id, transcript)

    def _job_failed(self, job: _Job, code: str, message: str) -> None:
        if job.id not in self._jobs:
            return
        if code in _CONNECTION_CODES:
            self._server_failed(code, message)  # first: a job failing while `failed` is kept for later
        self._fail_job(job, code, message)

    def _fail_job(self, job: _Job, code: str, message: str) -> None:
        self._jobs.pop(job.id, None)
        self._settle_state()
        self.failed.emit(job.id, code, message)

