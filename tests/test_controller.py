"""The dictation state machine: every trigger mode, queueing, cancel and failures, without X or Qt."""

import numpy as np
import pytest

from app.controller import Controller, RecordingResult, State
from app.errors import UserError

SPEECH = np.full(1600, 0.1, dtype=np.float32)


class FakeEffects:
    """Records what the controller asked for; recordings and jobs get predictable ids."""

    def __init__(self):
        self.calls = []
        self.states = []
        self.messages = []
        self.languages = []  # of each paste, in order
        self.next_rec = 0
        self.mic_error = None

    def start_recording(self):
        if self.mic_error:
            raise UserError(self.mic_error)
        self.next_rec += 1
        self.calls.append(("start", self.next_rec))
        return self.next_rec

    def stop_recording(self, rec_id, released_at):
        self.calls.append(("stop", rec_id, released_at))

    def discard_recording(self, rec_id):
        self.calls.append(("discard", rec_id))

    def transcribe(self, audio):
        job = f"job{sum(c[0] == 'transcribe' for c in self.calls) + 1}"
        self.calls.append(("transcribe", job))
        return job

    def cancel_transcription(self, job_id):
        self.calls.append(("cancel_job", job_id))

    def paste(self, text, language=""):
        self.calls.append(("paste", text))
        self.languages.append(language)

    def state_changed(self, state):
        self.states.append(state)

    def notify(self, message, error=False):
        self.messages.append((message, error))

    def kinds(self):
        return [c[0] for c in self.calls]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def fx():
    return FakeEffects()


def make(fx, mode):
    clock = Clock()
    return Controller(fx, mode=mode, tap_s=0.4, clock=clock), clock


def tap(c):
    """A short press and release of the hotkey."""
    c.hotkey_pressed()
    c.hotkey_released()


def finish_and_paste(c, fx, rec_id, text="hello world"):
    """Drive one stopped recording through worker and paste."""
    c.recording_finished(RecordingResult(rec_id, SPEECH))
    job = fx.calls[-1][1]
    c.transcribed(job, text)
    assert fx.calls[-1] == ("paste", text)
    c.paste_finished(True)


def test_hold_mode_records_while_held_and_pastes(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    assert c.state is State.RECORDING
    c.hotkey_released(100.05)  # a hold shorter than the tap length still stops in hold mode
    assert fx.calls[-1] == ("stop", 1, 100.05) and c.state is State.TRANSCRIBING
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcribed("job1", " hello world ")
    assert c.state is State.PASTING and fx.calls[-1] == ("paste", "hello world")
    c.paste_finished(True)
    assert c.state is State.IDLE
    assert fx.states == [State.RECORDING, State.TRANSCRIBING, State.PASTING, State.IDLE]


def test_toggle_mode_ignores_release_and_stops_on_next_press(fx):
    c, clock = make(fx, "toggle")
    c.hotkey_pressed(100.0)
    c.hotkey_released(102.0)
    assert c.state is State.RECORDING
    c.hotkey_pressed(105.0)
    c.hotkey_released(105.1)
    assert fx.kinds() == ["start", "stop"] and fx.calls[-1][2] == 105.0


def test_hybrid_tap_toggles(fx):
    c, clock = make(fx, "hybrid")
    c.hotkey_pressed(100.0)
    c.hotkey_released(100.2)  # a tap: keep recording
    assert c.state is State.RECORDING
    c.hotkey_pressed(103.0)  # the second tap stops
    assert fx.kinds() == ["start", "stop"]
    c.hotkey_released(103.1)
    assert fx.kinds() == ["start", "stop"]


def test_hybrid_hold_is_push_to_talk(fx):
    c, clock = make(fx, "hybrid")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.5)
    assert fx.kinds() == ["start", "stop"] and c.state is State.TRANSCRIBING


def test_command_line_toggle_start_stop(fx):
    c, clock = make(fx, "hold")
    c.command("stop")  # nothing to stop
    c.command("start")
    c.command("start")  # already recording
    assert fx.kinds() == ["start"]
    clock.now = 104.0
    c.command("toggle")
    assert fx.calls[-1] == ("stop", 1, 104.0)
    c.command("toggle")
    assert fx.calls[-1] == ("start", 2)


def test_hotkey_press_stops_a_recording_started_from_the_command_line(fx):
    c, clock = make(fx, "hold")
    c.command("start")
    c.hotkey_pressed(101.0)
    assert fx.kinds() == ["start", "stop"]


def test_esc_cancels_only_while_recording(fx):
    c, clock = make(fx, "hold")
    c.cancel_key()
    assert fx.calls == [] and fx.messages == []
    c.hotkey_pressed(100.0)
    c.cancel_key()
    assert fx.calls[-1] == ("discard", 1) and c.state is State.IDLE
    c.hotkey_released(101.0)  # the release after a cancel does nothing
    assert fx.kinds() == ["start", "discard"]


def test_cancel_command_drops_queued_dictations_but_not_the_paste_under_way(fx):
    c, clock = make(fx, "toggle")
    for rec in (1, 2, 3):
        tap(c)
        tap(c)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.recording_finished(RecordingResult(2, SPEECH))
    c.transcribed("job1", "first")
    assert c.state is State.PASTING
    c.command("cancel")
    assert ("cancel_job", "job2") in fx.calls and ("discard", 3) in fx.calls
    c.recording_finished(RecordingResult(3, SPEECH))  # arrives late: ignored
    c.transcribed("job2", "second")  # arrives late: ignored
    c.paste_finished(True)
    assert [c_ for c_ in fx.calls if c_[0] == "paste"] == [("paste", "first")]
    assert c.state is State.IDLE


def test_a_new_dictation_while_transcribing_is_queued_and_pasted_in_order(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(102.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.hotkey_pressed(103.0)  # the first is still transcribing
    assert c.state is State.RECORDING and fx.calls[-1] == ("start", 2)
    c.hotkey_released(105.0)
    c.recording_finished(RecordingResult(2, SPEECH))
    assert c.queued == 2
    c.transcribed("job2", "zweite", "de")  # out of order: must wait for the first
    assert "paste" not in fx.kinds()
    c.transcribed("job1", "first", "en")
    assert fx.calls[-1] == ("paste", "first")
    c.paste_finished(True)
    assert fx.calls[-1] == ("paste", "zweite")
    c.paste_finished(True)
    assert c.state is State.IDLE and c.queued == 0
    assert fx.languages == ["en", "de"]  # each text goes with its own language (how it joins the one before)


def test_recording_during_a_paste_shows_recording(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcribed("job1", "one")
    c.hotkey_pressed(102.0)
    assert c.state is State.RECORDING
    c.paste_finished(True)
    assert c.state is State.RECORDING
    c.hotkey_released(103.0)
    finish_and_paste(c, fx, 2, "two")
    assert c.state is State.IDLE


def test_silence_pastes_nothing_and_says_so(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, np.zeros(1600, np.float32), speech=False))
    assert "transcribe" not in fx.kinds() and c.state is State.IDLE
    assert "No speech" in fx.messages[-1][0] and not fx.messages[-1][1]


def test_empty_transcript_pastes_nothing(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcribed("job1", "   ")
    assert "paste" not in fx.kinds() and c.state is State.IDLE


def test_maximum_length_stops_the_recording(fx):
    c, clock = make(fx, "toggle")
    c.hotkey_pressed(100.0)
    c.recording_finished(RecordingResult(1, SPEECH, hit_limit=True))
    assert c.state is State.TRANSCRIBING and fx.calls[-1] == ("transcribe", "job1")
    assert "maximum length" in fx.messages[-1][0]
    c.hotkey_pressed(200.0)  # the next press starts a new dictation
    assert fx.calls[-1] == ("start", 2)


def test_worker_failure_shows_error_until_next_dictation(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcription_failed("job1", "The model could not be loaded.")
    assert c.state is State.ERROR and fx.messages[-1] == ("The model could not be loaded.", True)
    c.hotkey_pressed(102.0)
    assert c.state is State.RECORDING
    c.hotkey_released(103.0)
    finish_and_paste(c, fx, 2)
    assert c.state is State.IDLE


def test_failure_of_a_cancelled_job_is_not_reported(fx):
    c, clock = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.command("cancel")
    c.transcription_failed("job1", "cancelled")
    assert c.state is State.IDLE and not any(err for _, err in fx.messages)


def test_failed_paste_is_an_error_and_the_queue_moves_on(fx):
    c, clock = make(fx, "toggle")
    for _ in range(2):
        tap(c)
        tap(c)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.recording_finished(RecordingResult(2, SPEECH))
    c.transcribed("job1", "one")
    c.transcribed("job2", "two")
    c.paste_finished(False, "No window took the text; it is on the clipboard.")
    assert fx.calls[-1] == ("paste", "two") and fx.messages[-1][1]
    c.paste_finished(True)
    assert c.state is State.ERROR  # the failure stays visible until the next dictation


def test_microphone_failure_is_an_error_not_a_recording(fx):
    c, clock = make(fx, "hold")
    fx.mic_error = "Could not open the microphone."
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    assert c.state is State.ERROR and fx.kinds() == []


def test_an_error_clears_once_what_failed_is_fixed(fx):
    c, _ = make(fx, "hold")
    c.hotkey_pressed()
    c.hotkey_released()
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcription_failed("job1", "The model folder /gone does not exist.")
    assert c.state is State.ERROR and c.queued == 0
    c.clear_error()  # the model loads now (the app calls this when the worker becomes ready)
    assert c.state is State.IDLE and fx.states[-1] is State.IDLE


def test_a_layout_commands_line_break_at_either_end_is_pasted(fx):
    """"New paragraph. Next topic." with spoken punctuation: the break the user asked for reaches the window."""
    c, clock = make(fx, "toggle")
    c.hotkey_pressed()
    c.hotkey_released()
    c.hotkey_pressed()
    c.hotkey_released()
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcribed(fx.calls[-1][1], "\n\nNext topic. ")
    assert fx.calls[-1] == ("paste", "\n\nNext topic.")


def test_a_transcript_waits_while_the_hotkey_is_held(fx):
    """The held hotkey owns the keyboard (X11 grab): a paste then would go to us, not the target."""
    c, _ = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.hotkey_pressed(102.0)  # the next dictation starts before the first is transcribed
    c.transcribed("job1", "first")
    assert "paste" not in fx.kinds() and c.state is State.RECORDING
    c.hotkey_released(104.0)
    assert fx.calls[-1] == ("paste", "first") and fx.calls[-2] == ("stop", 2, 104.0)


def test_a_transcript_waits_until_the_grab_gives_the_keyboard_back(fx):
    """X11: Ctrl let go first ends the dictation, but Space still down keeps the keyboard grabbed; a paste
    sent then would come to the app itself. The transcript goes out once the grab ends."""
    c, _ = make(fx, "hold")
    c.keyboard_grabbed(True)
    c.hotkey_pressed(100.0)
    c.hotkey_released(101.0)
    c.recording_finished(RecordingResult(1, SPEECH))
    c.transcribed("job1", "ready before Space is up")
    assert "paste" not in fx.kinds() and c.state is State.TRANSCRIBING
    c.keyboard_grabbed(False)
    assert fx.calls[-1] == ("paste", "ready before Space is up") and c.state is State.PASTING


def test_a_recording_cut_short_by_a_lost_microphone_is_transcribed_and_the_user_told(fx):
    c, _ = make(fx, "hold")
    c.hotkey_pressed(100.0)
    c.recording_finished(RecordingResult(1, SPEECH, source_lost=True))
    assert fx.calls[-1] == ("transcribe", "job1") and "microphone" in fx.messages[-1][0] and fx.messages[-1][1]
    c.hotkey_released(103.0)  # the key comes up after the loss: nothing more to stop
    c.transcribed("job1", "what was said")
    assert fx.calls[-1] == ("paste", "what was said")
    c.paste_finished(True)
    assert c.state is State.ERROR  # the lost microphone stays visible until the next dictation


def test_the_hands_free_silence_stops_only_a_recording_no_key_holds(fx):
    c, clock = make(fx, "hybrid")
    c.hotkey_pressed(100.0)
    c.hotkey_released(100.2)  # a tap: hands-free
    clock.now = 106.0
    c.speech_paused(1)
    assert fx.calls[-1] == ("stop", 1, 106.0) and c.state is State.TRANSCRIBING
    finish_and_paste(c, fx, 1)
    c.speech_paused(1)  # late news of a recording already stopped: nothing happens
    assert fx.kinds().count("stop") == 1

    c.hotkey_pressed(110.0)  # held: hold-to-talk ends at the release, however long the pause
    c.speech_paused(2)
    assert c.state is State.RECORDING and fx.kinds().count("stop") == 1
    c.hotkey_released(115.0)
    assert fx.calls[-1] == ("stop", 2, 115.0)

    c.command("start")  # `app toggle`/`start` from a desktop shortcut: hands-free too
    c.speech_paused(3)
    assert fx.calls[-1][:2] == ("stop", 3)
