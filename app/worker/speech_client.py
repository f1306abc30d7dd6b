"""What the app sees of whatever transcribes its dictations: the signals, the states and their rules.

Two clients fill it in: `WorkerClient` (a local worker process) and `ServerClient` (a speech server
over HTTP). The app, the overlay, the history and the kept recordings hold a `SpeechClient` and
cannot tell which one it is, so each rule here (every job ends in exactly one `result` or `failed`,
`failed` is emitted only after the caller holds the job id) is written once.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

STATES = ("stopped", "starting", "loading", "ready", "busy", "restarting", "failed")


class SpeechClient(QObject):
    """The signals and state shared by the worker and the server client; `_jobs` holds unfinished jobs."""

    ready = Signal(dict)  # each time a model is (re)loaded or a server answers: engine, device, quantization, ...
    progress = Signal(str, int, int, str)  # job_id, step, total, draft
    result = Signal(str, dict)  # job_id, transcript: text, language, steps_used, timings, language_detected, ...
    failed = Signal(str, str, str)  # job_id ("" if not job-specific), code, message
    state_changed = Signal(str)  # one of STATES
    # done, total, label: the engine's speed-up pieces (graphs, compiled layers) run between jobs; label is
    # the piece about to run, "" once all are done; total 0 clears the display (a new model, a restart).
    preparing = Signal(int, int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = "stopped"
        self._jobs: dict = {}
        self._preparation: dict = {}

    @property
    def state(self) -> str:
        return self._state

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet ended by `result` or `failed`."""
        return len(self._jobs)

    @property
    def preparation(self) -> dict:
        """The latest speed-up progress: `done`, `total`, `label` (None once all are done), `ms` (their
        time so far), and `error` where a piece failed; empty when nothing is known (no pieces, or a
        server, which does not report them here)."""
        return dict(self._preparation)

    def speculate(self, audio, *, language: str = "auto", steps: int | None = None, vocabulary=()) -> None:
        """Transcribe `audio` ahead, in case the dictation ends with exactly these samples (the user paused
        with the key held): the worker keeps the transcript (`app.worker.early`), the server client keeps
        the speculative request's answer (`app.server.client`). No signal follows; a job with exactly these
        samples and options is answered from it. The base class ignores it."""

    def _set_preparation(self, fields: dict) -> None:
        if fields == self._preparation:
            return
        self._preparation = dict(fields)
        self.preparing.emit(int(fields.get("done", 0)), int(fields.get("total", 0)), str(fields.get("label") or ""))

    def _settle_state(self) -> None:
        """`busy` while jobs are unfinished, `ready` once none are; other states are left alone."""
        if self._state in ("ready", "busy"):
            self._set_state("busy" if self._jobs else "ready")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def _fail_later(self, job_id: str, code: str, message: str) -> None:
        """Emit `failed` from the event loop, after the caller has the job id."""
        QTimer.singleShot(0, self, lambda: self.failed.emit(job_id, code, message))
