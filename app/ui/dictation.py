"""The running app's parts wired together: the controller's effects, made real.

Hotkeys, tray menu, remote commands, recorder, worker and paster each talk only to the controller,
through queued Qt connections, so every event is handled on the GUI thread, one at a time and never
re-entrantly. This object implements the controller's `Effects` by calling the parts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication

from app.audio.recorder import Recorder, RecorderOptions
from app.audio.sources import make_source
from app.audio.vad import VadModel
from app.config import Settings, settings_path
from app.controller import Controller, State
from app.desktop.hotkeys import HotkeyListener
from app.desktop.keys import parse_combo
from app.desktop.paste import PasteOptions, Paster
from app.desktop.remote_server import RemoteServer
from app.engine import EngineSpec
from app.errors import UserError
from app.text import TextOptions, finish_transcript
from app.ui.tray import Tray
from app.worker.client import WorkerClient
from app.worker.speech_client import SpeechClient
from app.worker.speech_switch import SpeechSwitch, runs_on_server

log = logging.getLogger("app.dictation")
QUEUED = Qt.ConnectionType.QueuedConnection
_AUTO_RETRY_EVERY_S = 60.0
_WORKER_STATUS = {"stopped": "The speech model is not loaded.", "starting": "Starting the speech worker…",
                  "loading": "Loading the speech model…", "restarting": "The speech worker is restarting…"}


class DictationApp(QObject):
    _recording_done = Signal(object)  # emitted on the audio thread, handled on the GUI thread
    _speech_paused = Signal(int)  # likewise: the hands-free stop's silence was heard (recording id)
    _paused_holding = Signal(int, object)  # likewise: a pause with the key held, and the recording so far
    _job_failed = Signal(str, str)  # job id ("": the model as a whole), message: to the controller, queued
    submitted = Signal(str, object)  # job id, the audio sent to the worker (history keeps it when asked)
    # job id, the worker's result with `text` through the text pipeline and the engine's text as `raw_text`:
    # what the paste, the overlay and the history all take.
    transcribed = Signal(str, object)

    def __init__(self, settings: Settings, *, worker_command: list[str] | None = None,
                 worker_env: dict | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.hotkeys_ok = False
        self.engine_problem: str | None = None  # why the model cannot run, while the worker is failed
        self._retry_after: set[str] = set()  # jobs submitted while the model could not run: a retry follows each
        self._quiet_retry = False  # a retry the user did not ask for: its failure, if the same, is not told again
        self._auto_retried_at = -_AUTO_RETRY_EVERY_S  # when a dictation last tried the model again
        self.tray = Tray(self)
        self.controller = Controller(self, mode=settings.mode, tap_s=settings.tap_ms / 1000)
        self.recorder = Recorder(make_source(settings.microphone), self._recording_done.emit, RecorderOptions(
            pre_roll_ms=settings.pre_roll_ms, post_roll_ms=settings.post_roll_ms, max_seconds=settings.max_seconds,
            skip_silence=settings.skip_silence, auto_stop_s=settings.auto_stop_s, early=settings.early_transcription),
            on_silence=self._speech_paused.emit, on_pause=self._paused_holding.emit)
        self._worker_command, self._worker_env = worker_command, worker_env
        # A worker on this computer or a speech server, switched live when Settings change between them.
        self.worker = SpeechSwitch(settings.engine_spec(), self._speech_client, self)
        self.paster = Paster(PasteOptions(settings.paste_method, settings.paste_keys, settings.restore_clipboard,
                                          settings.space_between), parent=self)
        self.hotkeys = HotkeyListener(parse_combo(settings.hotkey), parse_combo(settings.cancel_key), parent=self)
        self.remote = RemoteServer(self._remote, self)
        self._input_activity = None  # X11: the user's keys and clicks, followed from the warm-up on

        c = self.controller
        self._recording_done.connect(c.recording_finished, QUEUED)
        self._speech_paused.connect(c.speech_paused, QUEUED)
        self._paused_holding.connect(self._transcribe_early, QUEUED)
        self.worker.result.connect(self._finish_text)
        self.transcribed.connect(self._transcribed, QUEUED)
        self._job_failed.connect(c.transcription_failed, QUEUED)
        self.worker.failed.connect(self._worker_failed)
        self.worker.state_changed.connect(self._worker_state)
        self.worker.preparing.connect(self._preparing)
        self.paster.finished.connect(c.paste_finished, QUEUED)
        self.hotkeys.pressed.connect(c.hotkey_pressed, QUEUED)
        self.hotkeys.released.connect(c.hotkey_released, QUEUED)
        self.hotkeys.keyboard_grabbed.connect(c.keyboard_grabbed, QUEUED)
        self.hotkeys.cancel_pressed.connect(c.cancel_key, QUEUED)
        self.hotkeys.ready.connect(self._hotkeys_ready)
        self.hotkeys.unavailable.connect(self._hotkeys_unavailable)
        self.tray.toggle_requested.connect(lambda: c.command("toggle"), QUEUED)
        self.tray.cancel_requested.connect(c.cancel, QUEUED)
        self.tray.settings_requested.connect(self.show_settings)
        self.tray.retry_requested.connect(lambda: self.retry_model(asked=True))
        self.tray.quit_requested.connect(QApplication.quit)

    def _speech_client(self, spec: EngineSpec, parent: QObject) -> SpeechClient:
        """The client `spec` needs, with the app's current options: a speech server's, or a local worker's."""
        if runs_on_server(spec):  # a speech server runs the model; nothing here loads torch
            from app.server.client import ServerClient

            return ServerClient(spec, parent)
        return WorkerClient(spec, parent, command=self._worker_command, env=self._worker_env,
                            idle_unload_s=self.settings.idle_unload_s)

    def start(self) -> bool:
        """Claim the single instance and start everything; False when another instance runs."""
        if not self.remote.listen():
            return False
        self.tray.show()
        if not self.tray.available:
            log.warning("no system tray found: the app runs without an icon; use `python -m app toggle`")
        self.worker.start()  # its own process: the model loads while the rest of us starts
        try:
            self.hotkeys.start()  # in the background; `ready` or `unavailable` follows
        except UserError as exc:
            self.notify(str(exc), error=True)
        if self.settings.warm_microphone:
            try:
                self.recorder.configure(dataclasses.replace(self.recorder.options, warm=True))
            except UserError as exc:
                self.notify(str(exc), error=True)
        QTimer.singleShot(300, lambda: threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start())
        self._worker_state(self.worker.state)
        return True

    def _warm_up(self) -> None:
        """Slow one-time set-up, off the start-up path and before the first dictation needs it."""
        try:
            self.paster.injector.warm_up()
            self._watch_input()
            if self.settings.skip_silence or self.settings.auto_stop_s:
                VadModel.shared()
        except UserError as exc:  # the dictation that needs it will report it
            log.warning("warm-up: %s", exc)

    def _watch_input(self) -> None:
        """X11: follow the user's keys and clicks, so that a dictation continuing the previous one gets its
        space (`app/desktop/continuation.py`); elsewhere nothing follows them, and no space is added."""
        if self.paster.server != "x11":
            return
        from app.desktop.input_activity import InputActivity

        activity = InputActivity(self.hotkeys.grabbed_keys)
        if activity.start():
            self.paster.continuation.activity = activity
            self._input_activity = activity

    def _hotkeys_ready(self) -> None:
        self.hotkeys_ok = True
        self._worker_state(self.worker.state)

    def _hotkeys_unavailable(self, message: str) -> None:
        self.hotkeys_ok = False
        self.notify(message, error=True)
        self._worker_state(self.worker.state)

    def shutdown(self) -> None:
        if self._input_activity is not None:
            self._input_activity.stop()
        self.hotkeys.stop()
        self.recorder.close()
        self.worker.stop()
        self.remote.close()
        self.paster.close()

    def show_settings(self) -> None:
        s = self.settings
        summary = (f"Hotkey: {parse_combo(s.hotkey).label()} ({s.mode}). Engine: {s.engine}, model: "
                   f"{s.engine_spec().model}.")
        self.tray.show_settings(settings_path(), summary)

    # ---- Effects (called by the controller) ----------------------------------------------------
    def start_recording(self) -> int:
        if self.engine_problem and self.settings.unusable_model == "refuse":
            QTimer.singleShot(0, self, self.retry_model)  # a press is also a dictation attempt: the model is tried again
            raise UserError(f"Not recording: {self.engine_problem.rstrip('.')}. The model is being tried again; to fix "
                            "it, see Settings → Model, or choose to keep recordings until it works.",
                            code="engine_unusable")
        return self.recorder.begin()

    def stop_recording(self, rec_id: int, released_at: float) -> None:
        self.recorder.end(rec_id, released_at)

    def discard_recording(self, rec_id: int) -> None:
        self.recorder.discard(rec_id)

    def transcribe(self, audio: np.ndarray) -> str:
        model_failed = self.worker.state == "failed"
        job_id = self.worker.submit(audio, **self._job_options())
        if model_failed:  # it fails at once and is kept; then the model is tried again (`retry_model`)
            self._retry_after.add(job_id)
        self.submitted.emit(job_id, audio)
        self.paster.prefetch_clipboard()  # while the engine works
        return job_id

    def _job_options(self) -> dict:
        """Language, steps and vocabulary of a job; an early transcription must ask for exactly the same."""
        diffusion = self.settings.engine == "diffusion" or self.worker.info.get("engine") == "diffusion"  # or a server's
        return {"language": self.settings.language, "steps": self.settings.steps if diffusion else None,
                "vocabulary": self.settings.vocabulary}

    def _transcribe_early(self, rec_id: int, audio: np.ndarray) -> None:
        """The speaker paused with the key held: the worker transcribes what was said so far, and if the
        recording ends here, its job is answered at once (`app.worker.early`). Only while this recording is
        the one being made, and the settings still want it."""
        if self.settings.early_transcription and self.controller.recording_id == rec_id:
            self.worker.speculate(audio, **self._job_options())

    def cancel_transcription(self, job_id: str) -> None:
        self.worker.cancel(job_id)

    def paste(self, text: str, language: str = "") -> None:
        self.paster.paste(text, language)

    def state_changed(self, state: State) -> None:
        log.info("state: %s", state.value)
        self.hotkeys.arm_cancel(state is State.RECORDING)  # Esc is the focused window's at other times
        self.tray.set_state(state)

    def notify(self, message: str, error: bool = False) -> None:
        (log.warning if error else log.info)("notice: %s", message)
        self.tray.notify(message, error)

    # ---- events from the parts ---------------------------------------------------------------
    def _finish_text(self, job_id: str, transcript: dict) -> None:
        """The user's words, replacements, fillers and punctuation (app/text/), here in the app and not in
        the worker: a shared speech server must never see one user's personal replacements."""
        finished = finish_transcript(transcript, TextOptions.from_settings(self.settings))
        if finished["text"] != finished["raw_text"]:
            log.info("text pipeline job=%s engine text=%r", job_id, finished["raw_text"])
        self.transcribed.emit(job_id, finished)

    def _transcribed(self, job_id: str, transcript: dict) -> None:
        log.info("transcribed job=%s worker_ms=%.1f text=%r", job_id,
                 float(transcript.get("timings", {}).get("total", 0.0)), transcript.get("text", ""))
        self.controller.transcribed(job_id, transcript.get("text", ""), transcript.get("language", ""))

    def retry_model(self, asked: bool = False) -> None:
        """Load the model again after it could not run (a crash loop, out of GPU memory, a missing folder).

        What made it fail is often gone a minute later (another program freed the GPU, a drive was mounted
        again), and nothing in the settings changed that would load it again: so each dictation made
        meanwhile tries once more, after its recording is kept (with "When the model cannot run: refuse", each
        press that is refused), and so does the tray's "Try the speech model again" and the settings window's
        button (`asked`). A retry that fails for the same reason as before
        is not told again unless the user asked for it; their recording's own notice said it moments ago.
        Retries the user did not ask for are at least `_AUTO_RETRY_EVERY_S` apart: loading a large model that
        fails each time (a corrupt file) takes the disk and the GPU for a while.
        The kept recordings are transcribed once it works (`KeptRecordings`)."""
        if self.worker.state != "failed":
            return
        if not asked:
            if time.monotonic() - self._auto_retried_at < _AUTO_RETRY_EVERY_S:
                return  # a model that fails the same way at each load must not be loaded at every dictation
            self._auto_retried_at = time.monotonic()
        log.info("trying the speech model again (%s)", "asked" if asked else "a dictation while it could not run")
        self._quiet_retry = not asked
        self.worker.start()
        if self.worker.state == "failed":  # a failure that no retry mends (another version's worker)
            if asked and self.engine_problem:
                self.notify(self.engine_problem, error=True)
        elif asked:
            self.notify("Trying the speech model again…")

    def _worker_failed(self, job_id: str, code: str, message: str) -> None:
        if not job_id and self.worker.state == "failed":  # the worker as a whole: the model cannot run
            repeated = self._quiet_retry and message == self.engine_problem
            self._quiet_retry = False
            self.engine_problem = message
            if repeated:
                log.info("the speech model still cannot run, for the same reason")
                return
        self._job_failed.emit(job_id, message)
        if job_id in self._retry_after:
            self._retry_after.discard(job_id)
            QTimer.singleShot(0, self, self.retry_model)  # after every part has seen this failure (the kept ones)

    def _worker_state(self, state: str) -> None:
        self.tray.offer_retry(state == "failed")
        if state == "ready" and self.engine_problem:
            self.engine_problem, self._quiet_retry = None, False
            self.controller.clear_error()  # the tray leaves its error state: the model works now
            self.notify("The speech model works now.")
        if state in ("ready", "busy"):
            combo = parse_combo(self.settings.hotkey).label()
            how = {"hold": f"hold {combo}", "toggle": f"press {combo} to start and stop",
                   "hybrid": f"hold {combo}, or tap it to start and stop"}[self.settings.mode]
            text = f"Ready: {how}" if self.hotkeys_ok else "Ready: run `python -m app toggle` to dictate"
            prep = self.worker.preparation
            if prep.get("done", 0) < prep.get("total", 0) and not prep.get("error"):  # dictation works meanwhile
                text += f" · getting faster ({prep['done']} of {prep['total']})"
        else:
            # The notice with the reason is gone after seconds (and some trays show none): Settings keeps it.
            text = _WORKER_STATUS.get(state, "The speech model cannot run: open Settings to see why and fix it.")
        self.tray.set_status(text)

    def _preparing(self, done: int, total: int, label: str) -> None:
        """The model's speed-up pieces (after a load) show in the tray's status line while they run."""
        self._worker_state(self.worker.state)

    def _remote(self, command: str) -> dict:
        if command == "show":
            self.show_settings()
        elif command != "status":
            self.controller.command(command)
        return {"state": self.controller.state.value, "queued": self.controller.queued, "worker": self.worker.state,
                "worker_pid": self.worker.pid, "hotkeys": self.hotkeys_ok, "tray": self.tray.visible,
                "pid": os.getpid()}
