"""The GUI's handle on the speech worker: a QObject that starts, watches and restarts it (torch-free).

The worker runs under a `QProcess`, so its pipes are read by the Qt event loop and every signal is
emitted on the thread that owns the client. Every submitted job ends with exactly one `result` or one
`failed` signal. The audio of a job stays here until its result arrives: if the worker dies (crash,
`kill -9`, out of memory at the driver level) it is restarted with the same model and the unfinished
jobs are sent again, in order, so a dictation is never lost.

Telling a hung worker from a busy one: the worker answers `ping` from its own stdin thread, so a
worker deep in a long job still answers. No frame at all for `hang_after_s` means the process is
wedged; a `pong` that says the current job has not reached a new step for `stall_after_s` (plus
twice the clip's length, for slow CPUs) means the model is wedged; so does one about an early
transcription, or a job cancelled meanwhile, while a job waits behind it. Either way it is killed and
restarted. Three crashes within a minute with no job finished in between end in the `failed` state,
whose message says what to do; `start()` or `configure()` tries again. A recording the worker was
working on at two of its ends (killed as wedged, or crashed) is the likely cause: it is not sent a
third time but fails on its own (`worker_crashed`; the app keeps it in History), so one recording that
breaks the model cannot take every later dictation down with it.

Between jobs the worker runs the engine's speed-up pieces (a long compile among them); it still
answers `ping` from its stdin thread, and its `pong` names the piece instead of a job, so the stall
check, which watches jobs only, never takes a long piece for a wedged model. The `preparing` signal
and the `preparation` property carry the progress for the settings window.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer

from app.engine import EngineSpec
from app.worker.launch import worker_command, worker_environment
from app.worker.speech_client import SpeechClient
from app.worker.protocol import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    audio_payload,
    encode,
    version_mismatch_message,
)

log = logging.getLogger(__name__)
worker_log = logging.getLogger("app.worker.process")

_SAMPLE_RATE = 16_000


@dataclass
class _Job:
    id: str
    payload: bytes
    language: str
    steps: int | None
    vocabulary: tuple[str, ...] = ()
    attempts: int = 0
    crashes: int = 0  # worker ends while this job was the one being worked on

    @property
    def seconds(self) -> float:
        return len(self.payload) / 4 / _SAMPLE_RATE


class CrashHistory:
    """Recent unexpected exits; a finished job clears it, so only a crash loop reaches the limit."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Note a crash at `now`; return how many fell within the window."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()

    @staticmethod
    def backoff_s(count: int) -> float:
        """Wait 0.5 s before the first restart, then 2 s, 8 s, ... (at most 30 s)."""
        return min(0.5 * 4 ** max(count - 1, 0), 30.0)


class WorkerClient(SpeechClient):
    """Runs the worker for `spec` and turns its frames into signals. See the module docstring.

    `command` replaces the worker command line (default: `sys.executable -m app worker`, or the frozen
    executable with `worker`); `env` holds extra environment variables for it, layered over ours.
    `idle_unload_s` lets the worker drop the model after that long without a job (it reloads on the
    next one).
    """

    def __init__(
        self,
        spec: EngineSpec,
        parent: QObject | None = None,
        *,
        command: list[str] | None = None,
        env: dict | None = None,
        idle_unload_s: float | None = None,
        heartbeat_s: float = 2.0,
        start_timeout_s: float = 60.0,
        hang_after_s: float = 20.0,
        stall_after_s: float = 300.0,
        max_crashes: int = 3,
        crash_window_s: float = 60.0,
    ) -> None:
        super().__init__(parent)
        self._spec = spec
        self._command = list(command or worker_command())
        self._env = env
        self._idle_unload_s = idle_unload_s
        self._start_timeout_s, self._hang_after_s, self._stall_after_s = start_timeout_s, hang_after_s, stall_after_s
        self._crashes = CrashHistory(max_crashes, crash_window_s)
        self._running: str | None = None  # the job the worker said it works on (progress, pong), until it ends
        self._proc: QProcess | None = None
        self._decoder = FrameDecoder(peer="speech worker")
        self._hello_seen = False
        self._hello: dict = {}
        self._jobs: dict[str, _Job] = {}
        self._load_count = 0
        self._load_id = ""
        self._last_heard = 0.0
        self._ping_seq = 0
        self._kill_reason = ""
        self._failure = ("", "")  # (code, message) while failed
        self._fatal = False  # a version mismatch: restarting cannot help
        self._stderr_tail: deque[str] = deque(maxlen=8)
        self._heartbeat = QTimer(self)
        self._heartbeat.setInterval(int(heartbeat_s * 1000))
        self._heartbeat.timeout.connect(self._on_heartbeat)
        self._restart_timer = QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._launch)

    # -- public API ----------------------------------------------------------------------------

    @property
    def info(self) -> dict:
        """The latest hello from the worker (empty before the first)."""
        return dict(self._hello)

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        if self._proc is None or self._proc.state() == QProcess.ProcessState.NotRunning:
            return None
        return int(self._proc.processId())

    def start(self) -> None:
        """Start the worker and load the model (no-op unless stopped or failed)."""
        if self._state not in ("stopped", "failed") or self._fatal:
            return
        self._crashes.clear()
        if self._proc is not None and self._hello_seen:  # failed to load, but alive: try the load again
            self._send_load()
            return
        self._launch()

    def stop(self) -> None:
        """Shut the worker down (killing it after 3 s); unfinished jobs fail with code `stopped`."""
        self._restart_timer.stop()
        self._heartbeat.stop()
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.blockSignals(True)
            if proc.state() != QProcess.ProcessState.NotRunning:
                proc.write(encode("shutdown"))
                proc.closeWriteChannel()
                if not proc.waitForFinished(3000):
                    proc.kill()
                    proc.waitForFinished(1000)
            _discard(proc)
        jobs, self._jobs = list(self._jobs), {}
        self._set_preparation({})
        self._set_state("stopped")
        for job_id in jobs:
            self.failed.emit(job_id, "stopped", "The speech worker was stopped before this recording was transcribed.")

    def configure(self, spec: EngineSpec) -> None:
        """Switch to `spec`; the worker loads it in the background, queued jobs run on the new model."""
        self._spec = spec
        if self._proc is not None and self._hello_seen:
            self._send_load()
        elif self._state == "failed":
            self.start()
        # starting / restarting / stopped: the new spec goes out with the next hello

    def set_idle_unload(self, seconds: float | None) -> None:
        """Let the worker drop the model after `seconds` without a job (None: keep it); the loaded model stays."""
        self._idle_unload_s = seconds
        if self._proc is not None and self._hello_seen:
            self._send_load()

    def submit(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
               vocabulary: Sequence[str] = ()) -> str:
        """Queue 16 kHz mono float32 audio for transcription; returns the job id the signals carry.

        `vocabulary`: the speaker's words, which the engine conditions on where its model can."""
        job_id = uuid.uuid4().hex[:12]
        audio = np.asarray(audio)
        if audio.ndim != 1:
            self._fail_later(job_id, "bad_audio", "Audio must be mono (one channel); downmix it first.")
            return job_id
        job = _Job(job_id, audio_payload(audio), language, steps, tuple(vocabulary))
        if len(job.payload) > MAX_PAYLOAD_BYTES:
            self._fail_later(job_id, "too_long", "The recording is longer than 30 minutes; split it into shorter parts.")
            return job_id
        if self._state == "failed":
            self._fail_later(job_id, *self._failure)
            return job_id
        if self._state == "stopped":
            self.start()
        self._jobs[job_id] = job
        if self._proc is not None and self._hello_seen:
            self._send_job(job)
        self._settle_state()
        return job_id

    def speculate(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
                  vocabulary: Sequence[str] = ()) -> None:
        """Send `audio` to be transcribed ahead (`SpeechClient.speculate`), while a model is loaded or working."""
        if self._proc is None or not self._hello_seen or self._state not in ("ready", "busy"):
            return
        extra = {"vocabulary": list(vocabulary)} if vocabulary else {}
        self._write("speculate", audio_payload(np.asarray(audio, dtype=np.float32)), id=f"early-{uuid.uuid4().hex[:8]}",
                    language=language, steps=steps, sample_rate=_SAMPLE_RATE, **extra)

    def cancel(self, job_id: str) -> None:
        """Drop a job: it ends with `failed(job_id, "cancelled", ...)` and never with a result."""
        if self._jobs.pop(job_id, None) is None:
            return
        if self._proc is not None and self._hello_seen:
            self._write("cancel", id=job_id)
        self._settle_state()
        self._fail_later(job_id, "cancelled", "The transcription was cancelled.")

    # -- process lifecycle ---------------------------------------------------------------------

    def _launch(self) -> None:
        proc = QProcess(self)
        proc.setProgram(self._command[0])
        proc.setArguments(self._command[1:])
        env = QProcessEnvironment()
        for key, value in worker_environment(self._env).items():
            env.insert(key, value)
        proc.setProcessEnvironment(env)
        # Bound methods, not lambdas: a closure would keep this client alive from inside its own
        # child, and the client could then be destroyed from within the child's destructor.
        # Handlers act on `self._proc`; a process that is let go has its signals blocked first.
        proc.readyReadStandardOutput.connect(self._on_stdout)
        proc.readyReadStandardError.connect(self._on_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self._proc = proc
        self._decoder = FrameDecoder(peer="speech worker")
        self._hello_seen = False
        self._last_heard = time.monotonic()
        self._set_state("starting")
        proc.start()
        self._heartbeat.start()

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if self._proc is not None and error == QProcess.ProcessError.FailedToStart:
            self._give_up(
                "worker_failed",
                f"The speech worker could not be started ({' '.join(self._command)}: {self._proc.errorString()}). "
                "Reinstall the app.",
            )

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        proc = self._proc
        if proc is None:
            return
        self._on_stdout()  # a result written just before the end still counts
        self._on_stderr()
        if self._proc is not proc:  # a handler gave up on it meanwhile
            return
        self._proc = None
        _discard(proc)
        self._heartbeat.stop()
        if self._fatal:
            return
        if self._kill_reason:
            reason = self._kill_reason
        elif status == QProcess.ExitStatus.CrashExit:
            reason = f"it crashed or was killed (signal {exit_code})"
        else:
            reason = f"it exited with status {exit_code}"
        self._kill_reason = ""
        self._set_aside_the_running_job(reason)
        crashes = self._crashes.record(time.monotonic())
        log.warning("speech worker ended unexpectedly (%s); %d job(s) to re-submit", reason, len(self._jobs))
        if crashes >= self._crashes.limit:
            times = f"{crashes} times" if crashes > 1 else "once"
            last = f" Its last log line: {self._stderr_tail[-1]}" if self._stderr_tail else ""
            self._give_up(
                "worker_failed",
                f"The speech worker stopped {times} within {self._crashes.window_s:.0f} seconds (last time {reason}). "
                "Choose a smaller model, a smaller quantization or the Whisper engine in Settings, then try again."
                + last,
            )
            return
        self._set_state("restarting")
        self._restart_timer.start(int(CrashHistory.backoff_s(crashes) * 1000))

    def _set_aside_the_running_job(self, reason: str) -> None:
        """The worker ended while working on a job: count it against that job, and fail the job on its
        own, instead of sending it again, at the second such end (see the module docstring)."""
        job = self._jobs.get(self._running or "")
        self._running = None
        if job is None:
            return
        job.crashes += 1
        if job.crashes < 2:
            return
        del self._jobs[job.id]
        log.warning("job %s: the speech worker ended twice while on it (last time %s); not sent again", job.id, reason)
        self.failed.emit(job.id, "worker_crashed", "The speech worker stopped twice while transcribing this recording, "
                         "so it was set aside and the next dictations go on.")

    def _kill(self, reason: str) -> None:
        if self._proc is None:
            return
        log.warning("killing the speech worker: %s", reason)
        self._kill_reason = reason
        self._proc.kill()

    def _give_up(self, code: str, message: str) -> None:
        """Enter `failed`: stop the process and fail every unfinished job with `message`."""
        self._restart_timer.stop()
        self._heartbeat.stop()
        proc, self._proc = self._proc, None
        if proc is not None:
            _discard(proc)
        self._failure = (code, message)
        jobs, self._jobs = list(self._jobs), {}
        self._set_preparation({})
        self._set_state("failed")
        self.failed.emit("", code, message)
        for job_id in jobs:
            self.failed.emit(job_id, code, message)

    def _on_heartbeat(self) -> None:
        if self._proc is None:
            return
        limit = self._hang_after_s if self._hello_seen else self._start_timeout_s
        silent = time.monotonic() - self._last_heard
        if silent > limit:
            self._kill(f"it did not answer for {silent:.0f} seconds")
            return
        self._ping_seq += 1
        self._write("ping", seq=self._ping_seq)

    # -- frames ----------------------------------------------------------------------------------

    def _write(self, type_: str, payload: bytes = b"", **fields) -> None:
        if self._proc is not None:
            self._proc.write(encode(type_, payload, **fields))

    def _send_load(self) -> None:
        self._load_count += 1
        self._load_id = f"load-{self._load_count}"
        self._write("load", id=self._load_id, spec=self._spec.to_dict(), idle_unload_s=self._idle_unload_s)
        self._set_state("loading")

    def _send_job(self, job: _Job) -> None:
        job.attempts += 1
        extra = {"vocabulary": list(job.vocabulary)} if job.vocabulary else {}
        self._write("transcribe", job.payload, id=job.id, language=job.language, steps=job.steps, sample_rate=_SAMPLE_RATE,
                    **extra)

    def _on_stdout(self) -> None:
        proc = self._proc
        if proc is None:
            return
        for event in self._decoder.feed(proc.readAllStandardOutput().data()):
            if proc is not self._proc:  # a handler gave up on this worker
                return
            self._on_event(event)

    def _on_stderr(self) -> None:
        if self._proc is None:
            return
        for line in self._proc.readAllStandardError().data().decode("utf-8", "replace").splitlines():
            if line.strip():
                self._stderr_tail.append(line.strip())
                worker_log.info("%s", line)

    def _on_event(self, event: Frame | FrameError) -> None:
        self._last_heard = time.monotonic()
        if isinstance(event, FrameError):
            if event.code == "version_mismatch":
                self._fatal = True
                self._give_up("version_mismatch", event.message)
            else:
                log.warning("bad frame from the speech worker: %s", event.message)
            return
        handler = {
            "hello": self._on_hello,
            "progress": self._on_progress,
            "result": self._on_result,
            "error": self._on_error,
            "pong": self._on_pong,
            "preparing": self._on_preparing,
        }.get(event.type)
        if handler is None:
            log.warning("unexpected %r frame from the speech worker", event.type)
            return
        handler(event)

    def _on_hello(self, frame: Frame) -> None:
        if frame.get("protocol") != PROTOCOL_VERSION:
            self._fatal = True
            self._give_up("version_mismatch", version_mismatch_message(frame.get("protocol"), "speech worker"))
            return
        self._hello = {k: v for k, v in frame.header.items() if k != "type"}
        self._set_preparation({})  # a new process or model: its pieces, if any, follow as `preparing` frames
        if not self._hello_seen:  # a fresh process: load the model, then (re-)send the unfinished jobs in order
            self._hello_seen = True
            self._send_load()
            for job in self._jobs.values():
                self._send_job(job)
            return
        if frame.get("loaded"):
            if self._state in ("loading", "failed"):
                self._set_state("busy" if self._jobs else "ready")
            self.ready.emit(self.info)

    def _on_progress(self, frame: Frame) -> None:
        if frame.get("id") in self._jobs:
            self._running = frame["id"]
            self.progress.emit(frame["id"], int(frame.get("step", 0)), int(frame.get("total", 0)), str(frame.get("draft", "")))

    def _on_result(self, frame: Frame) -> None:
        if frame.get("id") == self._running:
            self._running = None
        job = self._jobs.pop(frame.get("id"), None)
        if job is None:  # cancelled meanwhile
            return
        self._crashes.clear()
        transcript = {k: v for k, v in frame.header.items() if k not in ("type", "id")}
        transcript["attempts"] = job.attempts
        self._settle_state()
        self.result.emit(job.id, transcript)

    def _on_error(self, frame: Frame) -> None:
        job_id, code, message = frame.get("id"), str(frame.get("code", "error")), str(frame.get("message", ""))
        if job_id == self._running:
            self._running = None
        if job_id in self._jobs:
            del self._jobs[job_id]
            self._settle_state()
            self.failed.emit(job_id, code, message)
        elif job_id == self._load_id:
            self._failure = (code, message)
            self._set_state("failed")
            self.failed.emit("", code, message)
        elif code == "version_mismatch":
            self._fatal = True
            self._give_up(code, message)
        elif job_id is None:
            log.warning("the speech worker rejected a frame: %s", message)

    def _on_preparing(self, frame: Frame) -> None:
        self._set_preparation({k: v for k, v in frame.header.items() if k != "type"})

    def _on_pong(self, frame: Frame) -> None:
        running, age = frame.get("job"), frame.get("step_age_s")
        if running in self._jobs:
            self._running = running
        if running is None or age is None:
            return
        job = self._jobs.get(running)
        # Not a job of ours: an early transcription (`speculate`), or a job cancelled meanwhile. Wedged, it
        # keeps every job behind it waiting, so it is judged as long as one waits, by the longest of them.
        seconds = job.seconds if job is not None else max((j.seconds for j in self._jobs.values()), default=None)
        if seconds is not None and age > self._stall_after_s + 2 * seconds:
            self._kill(f"job {running} made no progress for {age:.0f} seconds")

    # -- helpers -------------------------------------------------------------------------------



def _discard(proc: QProcess) -> None:
    """Let go of a worker process: no more callbacks from it, killed and reaped if it still runs,
    deleted later. Its signals are blocked first, so nothing it emits from here on reaches the client.
    """
    proc.blockSignals(True)
    if proc.state() != QProcess.ProcessState.NotRunning:
        proc.kill()
        proc.waitForFinished(2000)
    proc.deleteLater()
