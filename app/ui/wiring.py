"""The settings window, overlay, history and sound cues attached to the running app, in one call.

`attach_ui(dictation)` takes the `DictationApp` (tray, controller, recorder, worker, paster) and
adds the parts of this package to it through their public attributes and signals. Two hooks the
app does not offer yet are bridged here and marked where they are: the remote "show" command
reaches `dictation.show_settings`, which is replaced on the instance, and the first audio block
of a recording is seen by resetting `recorder.level_db` to NaN, which the next block overwrites.

- Settings: the tray's "Settings…" (and a second launch) opens the settings window; each change is
  saved by the store and applied live by `AppUi.apply`, the model reload included
  (`WorkerClient.configure`, in the background).
- Overlay and sound cues follow the controller's state, read on a timer (the controller has no
  state signal; reading a property 30 times a second while active is cheaper than a signal per
  audio block), the recorder's input level, and the worker's progress and result signals.
- History (`history_wiring.HistoryUi`): each transcript is stored when it arrives and gets its paste
  outcome from the paster (pastes finish in the order the transcripts arrived). "Paste again" uses a
  paster of its own.
- Latency: every diffusion result teaches `LatencyRecord` what a step costs on this machine.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import TYPE_CHECKING

import shiboken6
from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QPushButton

from app import autostart
from app.audio.vad import VadModel
from app.config import Settings, settings_path
from app.controller import State
from app.desktop.keys import parse_combo
from app.desktop.paste import Paster
from app.errors import UserError
from app.history import History
from app.latency import LatencyRecord, spec_key
from app.ui.history_wiring import PASTE_FIELDS, HistoryUi, paste_options
from app.ui.kept import KeptRecordings
from app.ui.overlay import Overlay
from app.ui.settings_store import SettingsStore, changed_fields
from app.ui.sounds import SoundCues
from app.ui.widgets.level_meter import level_from_db

if TYPE_CHECKING:  # the windows are imported when first opened: they cost start-up time otherwise
    from app.ui.history_window import HistoryWindow
    from app.ui.settings_window import SettingsWindow
    from app.ui.widgets.preparation_status import PreparationStatus

log = logging.getLogger(__name__)
_ENGINE_FIELDS = {"engine", "model", "quantization", "device", "server_url", "compile"}
_RECORDER_FIELDS = {"pre_roll_ms", "post_roll_ms", "max_seconds", "skip_silence", "warm_microphone", "auto_stop_s",
                    "early_transcription"}
_ACTIVE_POLL_MS, _IDLE_POLL_MS = 33, 120


class AppUi(QObject):
    """What `attach_ui` returns: the windows, overlay, cues, history and the live-settings store."""

    def __init__(self, dictation, problems: list[str] | None = None, *, cues: SoundCues | None = None,
                 repaster: Paster | None = None) -> None:
        """`cues` and `repaster` replace the real sound output and the "Paste again" paster (tests)."""
        super().__init__(dictation)
        self.app = dictation
        self.store = SettingsStore(dictation.settings, problems, path=settings_path(), parent=self)
        self.latency = LatencyRecord()
        self.overlay = Overlay()
        self.cues = cues or SoundCues(dictation.settings.sound_cues, self)
        self.settings_window: SettingsWindow | None = None
        self._model_problem = ""  # the banner's text about a model that cannot run ("": none shown)
        self.preparation_status: PreparationStatus | None = None  # on the settings window's Model page
        self._pending_microphone: str | None = None
        self._shown_state = State.IDLE
        self._poll = QTimer(self, interval=_IDLE_POLL_MS, timeout=self._follow_state)
        self.transcripts = HistoryUi(dictation, dictation.settings, repaster=repaster, parent=self)
        self.kept = KeptRecordings(dictation, lambda: self.history, self)
        self.kept.entry_changed.connect(lambda _entry: self.transcripts.refresh_window())
        self.transcripts.transcribe_requested.connect(self.kept.transcribe_again)
        self._apply_os_env(dictation.settings)
        if dictation.settings.autostart:  # rewrite the entry: the app may have moved since it was made
            try:
                autostart.set_enabled(True)
            except UserError as exc:
                log.warning("%s", exc)

        worker = dictation.worker
        worker.progress.connect(self._progress)
        dictation.transcribed.connect(self._result)  # the worker's result, through the text pipeline
        worker.failed.connect(self._failed)
        worker.failed.connect(self._show_model_problem)
        worker.state_changed.connect(self._show_model_problem)
        worker.ready.connect(self._show_model_languages)
        dictation.paster.finished.connect(self._pasted)
        dictation.submitted.connect(self.transcripts.remember_audio)
        try:
            dictation.tray.settings_requested.disconnect(dictation.show_settings)
        except (RuntimeError, TypeError):  # not connected to it (any more): nothing to replace
            pass
        dictation.tray.settings_requested.connect(self.show_settings)
        dictation.tray.history_requested.connect(self.transcripts.show)
        # The remote "show" command (a second launch) calls the app's show_settings: route it here too.
        dictation.show_settings = self.show_settings
        self.store.changed.connect(self._settings_changed)
        self.store.failed.connect(self._save_failed)
        self._poll.start()

    # ---- windows -------------------------------------------------------------------------------
    def show_settings(self) -> None:
        if self.settings_window is None:
            from app.ui.settings_window import SettingsWindow

            self.settings_window = SettingsWindow(self.store, self.latency)
            self.settings_window.confirm = lambda name, value: self.transcripts.confirm_retention(
                name, value, self.settings_window)
            self.settings_window.hotkey_capture.connect(self.app.hotkeys.pause)  # keys to the field, no dictation
            self.app.hotkeys.unavailable.connect(self.settings_window.warn)
            button = QPushButton("Show history…")
            button.clicked.connect(self.transcripts.show)
            self.settings_window.add_page_widget("History", button)
            from app.ui.widgets.server_token import ServerTokenEdit

            self.settings_window.add_page_widget("Model", ServerTokenEdit())  # kept outside settings.json
            from app.ui.widgets.preparation_status import PreparationStatus

            self.preparation_status = PreparationStatus()
            self.settings_window.add_page_widget("Model", self.preparation_status, first=True)
            self.app.worker.preparing.connect(self._show_preparation)
            self._show_preparation()
            self.app.hotkeys.ready.connect(self._show_mechanisms)
            self.app.hotkeys.unavailable.connect(self._show_mechanisms)
        if self.app.hotkeys.problem:
            self.settings_window.warn(self.app.hotkeys.problem)
        self._model_problem = ""
        self._show_model_problem()
        self._show_model_languages(self.app.worker.info)
        self._show_mechanisms()
        self.settings_window.present()

    def _show_model_problem(self, *_) -> None:
        """While the model cannot run, the settings window says why, in its banner. The reason came in a tray
        notice that is gone after seconds (and that some trays never show), and the tray's menu sends the user
        here; once the model works, the banner goes."""
        window = self.settings_window
        if window is None:
            return
        problem = self.app.engine_problem
        text = f"The speech model cannot run: {problem}" if problem and self.app.worker.state == "failed" else ""
        if text == self._model_problem:
            return
        if self._model_problem:
            window.unwarn(self._model_problem)
        if text:
            window.warn(text, ("Try the speech model again", lambda: self.app.retry_model(asked=True)))
        self._model_problem = text

    def _show_model_languages(self, info: dict) -> None:
        """Each loaded model (a `hello`, a server's /health) says which languages it knows: the settings
        window warns beside Language when the chosen one is not among them."""
        if self.settings_window is not None:
            self.settings_window.show_model_languages(info.get("languages"))

    def _show_preparation(self, *_) -> None:
        """The worker's speed-up progress on the Model page (dictation never waits for it)."""
        worker = self.app.worker
        self.preparation_status.show_preparation(worker.preparation, worker.info.get("device"))

    def _show_mechanisms(self, *_) -> None:
        hotkey = self.app.hotkeys.mechanism or "not started"
        try:
            paste = getattr(self.app.paster.injector, "mechanism", "the system's")
        except UserError as exc:  # no graphical session at all
            paste = f"none ({exc})"
        if paste == "clipboard":
            paste = "none: the text is left on the clipboard for you to paste"
        text = f"On this desktop — hotkey: {hotkey}. Paste keys: {paste}."
        log.info("settings: %s", text)
        self.settings_window.show_mechanisms(text)

    @property
    def history(self) -> History | None:
        return self.transcripts.history

    @property
    def history_window(self) -> HistoryWindow | None:
        return self.transcripts.window

    def show_history(self) -> None:
        self.transcripts.show()

    # ---- following the dictation ---------------------------------------------------------------
    def _follow_state(self) -> None:
        state = self.app.controller.state
        recorder = self.app.recorder
        if state != self._shown_state:
            previous, self._shown_state = self._shown_state, state
            self._poll.setInterval(_IDLE_POLL_MS if state in (State.IDLE, State.ERROR) else _ACTIVE_POLL_MS)
            if state is State.RECORDING:
                recorder.level_db = math.nan  # the recorder overwrites it with the first block's level
                self.cues.recording_started()
                if self.store.settings.overlay:
                    self.overlay.show_recording(0.0, self._recording_hint())
            elif previous is State.RECORDING:
                self.cues.recording_stopped()
                if state is State.TRANSCRIBING and self.store.settings.overlay:
                    self.overlay.show_progress(0, 0, "")
            if state in (State.IDLE, State.ERROR) and self.overlay.mode in ("recording", "transcribing"):
                self.overlay.hide()  # cancelled, no speech, or nothing to paste: the tray says which
            if state in (State.IDLE, State.ERROR):
                self._apply_pending_microphone()
        if state is State.RECORDING:
            db = recorder.level_db
            if not math.isnan(db):
                self.cues.audio_arrived()
            if self.overlay.mode == "recording":
                self.overlay.set_level(level_from_db(db))

    def _recording_hint(self) -> str:
        s = self.store.settings
        try:
            combo = parse_combo(s.hotkey).label()
            cancel = parse_combo(s.cancel_key).label()
        except UserError:
            return ""
        stop = {"hold": f"Release {combo} to finish", "toggle": f"Press {combo} again to finish",
                "hybrid": f"Release (or tap {combo}) to finish"}.get(s.mode, "")
        if s.auto_stop_s and s.mode != "hold":  # a held key is never ended by a pause
            stop += f", or pause {s.auto_stop_s} s"
        return f"{stop} · {cancel} cancels"

    def _progress(self, job_id: str, step: int, total: int, draft: str) -> None:
        if self.store.settings.overlay and self._shown_state is not State.RECORDING:
            self.overlay.show_progress(step, total, draft)

    def _result(self, job_id: str, transcript: dict) -> None:
        owned = self.kept.owns(job_id)
        self.kept.result(job_id, transcript)
        if owned:
            self.transcripts.forget(job_id)
            return  # a kept recording, transcribed later: it fills in its own history entry
        settings = self.store.settings
        text = str(transcript.get("text", "")).strip(" \t")  # as the controller pastes it: layout breaks kept
        if settings.engine == "diffusion":
            cost = self.latency.add(spec_key(settings.engine_spec()), transcript.get("timings") or {})
            if cost is not None and self.settings_window is not None:
                self.settings_window.refresh_latency()
        if settings.overlay and self._shown_state is not State.RECORDING and text:
            self.overlay.show_result(text)
        self.transcripts.add(job_id, text, transcript, self._target_name())

    def _pasted(self, ok: bool, message: str) -> None:
        self.transcripts.pasted(ok, message, self.app.paster.outcome)

    def _failed(self, job_id: str, code: str, message: str) -> None:
        owned = self.kept.owns(job_id)
        self.kept.failed(job_id, code, message)
        self.transcripts.forget(job_id)
        if not owned and code != "cancelled" and self.store.settings.overlay and self._shown_state is not State.RECORDING:
            self.overlay.show_error(message)

    def _target_name(self) -> str:
        """The focused window's class (e.g. "firefox"), where the platform tells; the paste goes there."""
        try:
            return self.app.paster.injector.window_class() or ""
        except Exception as exc:  # best effort: a history entry without its target is still useful
            log.debug("no window class for the history: %s", exc)
            return ""

    # ---- live settings -------------------------------------------------------------------------
    def _save_failed(self, message: str) -> None:
        self.app.notify(message, error=True)

    def _settings_changed(self, new: Settings, old: Settings) -> None:
        try:
            self.apply(new, old)
        except UserError as exc:
            self.app.notify(str(exc), error=True)

    def apply(self, new: Settings, old: Settings) -> None:
        """Make a settings change real in the running app, part by part, without a restart."""
        app, names = self.app, changed_fields(new, old)
        app.settings = new  # language and steps are read from here at each dictation
        if names & _ENGINE_FIELDS:
            # The worker reloads in the background, jobs waiting for it; between a worker and a speech
            # server the app's SpeechSwitch swaps clients, the old one finishing its jobs first.
            app.worker.configure(new.engine_spec())
        if "idle_unload_min" in names:
            app.worker.set_idle_unload(new.idle_unload_s)
        if names & {"hotkey", "cancel_key"}:
            app.hotkeys.set_combos(parse_combo(new.hotkey), parse_combo(new.cancel_key))
        if names & {"mode", "tap_ms"}:
            app.controller.configure(mode=new.mode, tap_s=new.tap_ms / 1000)
        if names & PASTE_FIELDS:
            app.paster.options = paste_options(new)
        if names & _RECORDER_FIELDS:
            app.recorder.configure(dataclasses.replace(
                app.recorder.options, pre_roll_ms=new.pre_roll_ms, post_roll_ms=new.post_roll_ms,
                max_seconds=new.max_seconds, skip_silence=new.skip_silence, warm=new.warm_microphone,
                auto_stop_s=new.auto_stop_s, early=new.early_transcription))
            if (new.skip_silence or new.auto_stop_s) and VadModel.loaded() is None:  # the check hears nothing unloaded
                threading.Thread(target=VadModel.shared, name="vad-load", daemon=True).start()
        if "microphone" in names:
            self._pending_microphone = new.microphone  # swapped once no recording uses the old one
            if app.controller.state in (State.IDLE, State.ERROR):
                self._apply_pending_microphone()
        if "sound_cues" in names:
            self.cues.enabled = new.sound_cues
        if "overlay" in names and not new.overlay:
            self.overlay.hide()
        self.transcripts.apply(new, names)
        if "autostart" in names:
            autostart.set_enabled(new.autostart)
        if "hub_endpoint" in names:
            self._apply_os_env(new)

    def _apply_os_env(self, s: Settings) -> None:
        """The hub address reaches the worker through its environment (read when it starts)."""
        if s.hub_endpoint:
            os.environ["HF_ENDPOINT"] = s.hub_endpoint
        else:
            os.environ.pop("HF_ENDPOINT", None)

    def _apply_pending_microphone(self) -> None:
        name, self._pending_microphone = self._pending_microphone, None
        if name is None:
            return
        from app.audio.sources import make_source

        recorder = self.app.recorder
        warm = recorder.options.warm
        try:
            if warm:
                recorder.configure(dataclasses.replace(recorder.options, warm=False))
            recorder.source = make_source(name)
            if warm:
                recorder.configure(dataclasses.replace(recorder.options, warm=True))
        except UserError as exc:
            self.app.notify(str(exc), error=True)

    def shutdown(self) -> None:
        """At app exit: stop following the app, delete the windows and close the history database.

        The windows are deleted here, while Python still runs: left to PySide's clean-up at
        interpreter exit, their Python event handlers are called during finalisation and crash.
        """
        self._poll.stop()
        self.kept.keep_unfinished()  # recordings still being transcribed: the next start transcribes them
        worker = self.app.worker
        for signal, slot in ((worker.progress, self._progress), (self.app.transcribed, self._result),
                             (worker.failed, self._failed), (self.app.paster.finished, self._pasted),
                             (worker.failed, self._show_model_problem),
                             (worker.state_changed, self._show_model_problem),
                             (worker.ready, self._show_model_languages)):
            signal.disconnect(slot)  # the worker's last signals (jobs failed by its stop) must not reach us
        if self.preparation_status is not None:  # it lives in the settings window, deleted below
            worker.preparing.disconnect(self._show_preparation)
            self.preparation_status = None
        if self.settings_window is not None:
            self.settings_window.shutdown()
        for window in (self.overlay, self.settings_window, *self.transcripts.close()):
            if window is not None:
                window.close()
                shiboken6.delete(window)
        self.settings_window = None


def attach_ui(dictation, problems: list[str] | None = None) -> AppUi:
    """Attach the settings window, overlay, history and sound cues to a started `DictationApp`;
    `problems` are what loading the settings file had to repair (shown in the settings window)."""
    return AppUi(dictation, problems)
