"""The recorder: pre-roll, post-roll counted from the real release, overlap, limit, resampling, the
file seam, and the streaming speech check."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import pytest

from app.audio.loading import load_audio
from app.audio.recorder import Recorder, RecorderOptions
from app.audio.ringbuffer import RingBuffer
from app.audio.sources import FileSource
from app.audio.vad import VadModel, has_speech
from tests.data import DATA_DIR, MANIFEST

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
BLOCK = 160  # 10 ms


def speech_clip() -> tuple[str, str]:
    if not MANIFEST.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    clip = next(c for c in json.loads(MANIFEST.read_text())["clips"] if c["id"] == "librivox-0880")
    return str(DATA_DIR / clip["path"]), clip["text"]


@pytest.fixture(scope="module", autouse=True)
def speech_check_loaded():
    """The app loads the speech check at start-up (its warm-up); until it is loaded, a recording's check waits for
    the recording's end (`SpeechDetector.feed`), so no pause or end of speech is heard while it is recorded.
    Loaded here, so that no test depends on an earlier one (in this worker) having loaded it."""
    VadModel.shared()


class PushSource:
    """A source the test drives by hand: blocks arrive exactly when the test pushes them."""

    def __init__(self, rate=RATE, channels=1):
        self.rate, self.channels = rate, channels
        self.on_block = None
        self.starts = self.stops = 0

    def start(self, on_block, on_lost=None):
        self.on_block, self.on_lost, self.starts = on_block, on_lost, self.starts + 1

    def stop(self):
        self.on_block, self.stops = None, self.stops + 1

    def lose(self):
        """The device goes away: no more blocks, and the source says so, as PortAudio does."""
        on_lost, self.on_block = self.on_lost, None
        on_lost()

    def push(self, value, blocks=1):
        n = int(self.rate * 0.01)
        for _ in range(blocks):
            self.on_block(np.full((n, self.channels), value, dtype=np.float32))


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def make(source, **opts):
    results = []
    done = threading.Event()

    def finished(r):
        results.append(r)
        done.set()

    options = RecorderOptions(**{"skip_silence": False, **opts})
    clock = Clock()
    return Recorder(source, finished, options, clock=clock), results, clock


def test_ring_buffer_keeps_the_newest_samples():
    ring = RingBuffer(5)
    ring.write(np.arange(3, dtype=np.float32))
    assert ring.latest(10).tolist() == [0, 1, 2]
    ring.write(np.arange(3, 7, dtype=np.float32))
    assert ring.latest(5).tolist() == [2, 3, 4, 5, 6] and ring.latest(2).tolist() == [5, 6]
    ring.write(np.arange(10, 22, dtype=np.float32))
    assert ring.latest(5).tolist() == [17, 18, 19, 20, 21]


def test_post_roll_is_counted_from_the_real_release():
    src = PushSource()
    rec, results, clock = make(src, post_roll_ms=300)
    rid = rec.begin()
    src.push(0.5, blocks=10)  # 100 ms of speech
    clock.now = 0.05
    rec.end(rid, released_at=0.0)  # reported 50 ms late (the auto-repeat grace period)
    src.push(0.25, blocks=24)
    assert results == []
    src.push(0.25)
    (r,) = results
    assert len(r.audio) == 100 * 16 + 250 * 16  # 100 ms before + 300 ms post-roll - 50 ms already late
    assert r.audio[0] == 0.5 and r.audio[-1] == 0.25


def test_cold_microphone_opens_per_dictation_and_closes_after():
    src = PushSource()
    rec, results, clock = make(src, post_roll_ms=0)
    rid = rec.begin()
    assert src.starts == 1
    src.push(0.1, blocks=3)
    rec.end(rid)
    src.push(0.1)
    assert len(results) == 1
    for _ in range(200):  # closing happens on a helper thread (never from inside the audio callback)
        if src.stops:
            break
        threading.Event().wait(0.01)
    assert src.stops == 1


def test_warm_microphone_gives_pre_roll_from_before_the_press():
    src = PushSource()
    rec, results, clock = make(src, warm=True, pre_roll_ms=200, post_roll_ms=0)
    assert src.starts == 1  # opened by configure, before any press
    src.push(0.0, blocks=30)
    src.push(0.7, blocks=10)  # the first word, spoken 100 ms before the key went down
    rid = rec.begin()
    src.push(0.3, blocks=5)
    rec.end(rid)
    src.push(0.0)
    audio = results[0].audio
    assert len(audio) == 200 * 16 + 50 * 16
    assert (audio[:1600] == 0.0).all() and (audio[1600:3200] == 0.7).all() and (audio[3200:] == 0.3).all()
    assert src.stops == 0


def test_overlapping_recordings_both_complete():
    src = PushSource()
    rec, results, clock = make(src, post_roll_ms=100)
    first = rec.begin()
    src.push(0.1, blocks=5)
    rec.end(first)
    src.push(0.2, blocks=5)  # the next dictation begins during the first one's post-roll
    second = rec.begin()
    src.push(0.3, blocks=5)
    assert [r.rec_id for r in results] == [first]
    rec.end(second)
    src.push(0.3, blocks=10)
    assert [r.rec_id for r in results] == [first, second]
    assert len(results[0].audio) == len(results[1].audio) == 800 + 1600


def test_discard_delivers_nothing():
    src = PushSource()
    rec, results, clock = make(src)
    rid = rec.begin()
    src.push(0.1, blocks=3)
    rec.discard(rid)
    assert src.on_block is None and results == []


def test_maximum_length_ends_the_recording_by_itself():
    src = PushSource()
    rec, results, clock = make(src, max_seconds=5)
    rec.begin()
    src.push(0.1, blocks=499)
    assert results == []
    src.push(0.1)
    assert results[0].hit_limit and len(results[0].audio) == 5 * RATE


def test_device_rate_and_channels_are_converted_to_16k_mono():
    src = PushSource(rate=48_000, channels=2)
    rec, results, clock = make(src, post_roll_ms=0)
    rid = rec.begin()
    t = np.arange(48_000) / 48_000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    for i in range(0, 48_000, 480):
        src.on_block(np.stack([tone[i:i + 480], tone[i:i + 480]], axis=1))
    rec.end(rid)
    src.push(0.0)
    audio = results[0].audio
    assert abs(len(audio) - RATE) < 400  # the streaming resampler holds back a few ms
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * RATE / 12000 - 440) < 5


def test_silence_check_runs_on_the_stream():
    path, _ = speech_clip()
    speech = load_audio(path)
    noise = (np.random.default_rng(0).standard_normal(3 * RATE) * 0.003).astype(np.float32)
    assert has_speech(speech)
    assert not has_speech(np.zeros(2 * RATE, np.float32)) and not has_speech(noise)

    src = PushSource()
    rec, results, clock = make(src, skip_silence=True, post_roll_ms=0)
    for audio in (speech, noise):
        rid = rec.begin()
        for i in range(0, len(audio), BLOCK):
            src.on_block(audio[i:i + BLOCK, None])
        rec.end(rid)
        src.push(0.0)
    assert [r.speech for r in results] == [True, False]


def test_a_file_is_fed_through_the_microphone_path_in_real_time_blocks():
    path, _ = speech_clip()
    expected = load_audio(path)
    done = threading.Event()
    results = []
    rec = Recorder(FileSource(path), lambda r: (results.append(r), done.set()), RecorderOptions(post_roll_ms=0))
    rid = rec.begin()
    threading.Event().wait(len(expected) / RATE + 0.2)  # let the clip "be spoken"; not an assertion
    rec.end(rid)
    assert done.wait(10)
    audio = results[0].audio
    assert results[0].speech and len(audio) >= len(expected)
    assert np.allclose(audio[:len(expected)], expected, atol=0.02)


def test_the_test_microphone_plays_a_clip_pointed_at_while_it_stays_open(tmp_path):
    """A press right after a release finds the source still open: the next clip the test points the path at
    must be heard then too, as a person speaking again into an open microphone (the stand-in microphone)."""
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    sf.write(first, np.full(1600, 0.25, dtype=np.float32), RATE)
    sf.write(second, np.full(1600, -0.5, dtype=np.float32), RATE)
    link = tmp_path / "speech.wav"
    link.symlink_to(first)
    heard, both = [], threading.Event()
    source = FileSource(str(link))

    def on_block(block):
        heard.append(float(block[0, 0]))
        if -0.5 in heard:
            both.set()

    source.start(on_block)
    try:
        threading.Event().wait(0.3)  # the first clip (0.1 s) is spoken, then silence
        link.unlink()
        link.symlink_to(second)
        assert both.wait(5), "the clip pointed at while the source was open was never played"
    finally:
        source.stop()
    assert heard.index(0.25) < heard.index(0.0) < heard.index(-0.5)


def feed(src, audio):
    """Push `audio` in 10 ms blocks, until the source is closed (its last recording is finished)."""
    for i in range(0, len(audio), BLOCK):
        on_block = src.on_block
        if on_block is None:
            return
        on_block(audio[i:i + BLOCK, None])


def test_post_roll_is_skipped_when_the_speech_ended_before_the_release():
    path, _ = speech_clip()
    speech = load_audio(path)
    src = PushSource()
    rec, results, clock = make(src, skip_silence=True, post_roll_ms=300)
    rid = rec.begin()
    feed(src, speech)
    src.push(0.0, blocks=40)  # the speaker stopped 400 ms before letting go of the key
    rec.end(rid, released_at=0.0)
    src.push(0.0)  # the next 10 ms block ends it: no 300 ms wait
    (r,) = results
    assert r.speech and len(r.audio) == len(speech) + 40 * BLOCK


def test_post_roll_follows_speech_that_goes_on_after_the_release():
    path, _ = speech_clip()
    speech = load_audio(path)
    half = len(speech) // 2 // BLOCK * BLOCK
    src = PushSource()
    rec, results, clock = make(src, skip_silence=True, post_roll_ms=300)
    rid = rec.begin()
    feed(src, speech[:half])
    rec.end(rid, released_at=0.0)  # released mid-sentence
    feed(src, speech[half:half + 10 * BLOCK])
    assert results == [], "the speaker is still talking: keep recording"
    feed(src, speech[half + 10 * BLOCK:])
    (r,) = results
    assert len(r.audio) == half + 300 * 16, "a speaker who goes on is cut at the post-roll's 300 ms"

    rid = rec.begin()
    feed(src, speech[:half])
    rec.end(rid, released_at=0.0)
    feed(src, np.zeros(30 * BLOCK, np.float32))  # the speaker stops at the release: done before the 300 ms
    assert len(results) == 2 and half < len(results[1].audio) < half + 300 * 16


def test_a_microphone_that_goes_away_hands_over_what_was_recorded_and_is_opened_afresh():
    src = PushSource()
    rec, results, _ = make(src, warm=True, post_roll_ms=300)
    rid = rec.begin()
    src.push(0.4, blocks=50)
    src.lose()
    (r,) = results
    assert r.rec_id == rid and r.source_lost and len(r.audio) == 50 * BLOCK and (r.audio == 0.4).all()
    rec.end(rid)  # the key comes up after the loss: nothing more to do
    second = rec.begin()
    assert src.starts == 2, "the next recording must open the microphone again, not wait on the lost one"
    src.push(0.2, blocks=3)
    rec.end(second)
    src.push(0.2, blocks=30)
    assert [r.rec_id for r in results] == [rid, second] and not results[1].source_lost


# Runs in a process of its own: ALSA decides whether PulseAudio is its default device when first loaded.
MIC_LOSS_PROBE = """
import json, sys, threading, time
from app.audio.recorder import Recorder, RecorderOptions
from app.audio.sources import MicrophoneSource
from app.errors import UserError
results, done = [], threading.Event()
rec = Recorder(MicrophoneSource(""), lambda r: (results.append(r), done.set()), RecorderOptions(skip_silence=False))
rid = rec.begin()
while rec.level_db == -100.0:  # until the first block came
    time.sleep(0.01)
print("recording", flush=True)
sys.stdin.readline()  # the audio server is gone now
done.wait(30)
report = {"results": [[r.rec_id == rid, r.source_lost, len(r.audio)] for r in results]}
try:
    rec.begin()
except UserError as exc:
    report["next"] = str(exc)
print(json.dumps(report), flush=True)
"""


def test_a_real_microphone_that_goes_away_mid_recording(tmp_path):
    """PortAudio through PulseAudio's ALSA plugin; the audio server dies as a USB microphone is pulled."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed (Debian: apt install pulseaudio pulseaudio-utils libasound2-plugins)")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)}
    server = subprocess.Popen(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n",
                               "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=mic"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if (tmp_path / "pulse" / "native").exists():
                break
            time.sleep(0.02)
        probe = subprocess.Popen([sys.executable, "-c", MIC_LOSS_PROBE], env=env, cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert probe.stdout.readline().strip() == "recording"
        server.kill()
        server.wait(10)
        out, _ = probe.communicate("\n", timeout=60)
    finally:
        server.kill()
    report = json.loads(out)
    ((ours, lost, samples),) = report["results"]
    assert ours and lost and samples > 0, "the recording must be handed over, not wait for blocks forever"
    assert "microphone" in report["next"], "the next recording must try the microphone again and say why not"


def test_a_hands_free_recording_says_when_the_speaker_went_silent_and_drops_that_silence():
    """auto_stop_s: after speech, that long without it is reported once (the controller then stops the
    recording), and the recording is cut at the end of the speech plus the post-roll."""
    path, _ = speech_clip()
    speech = load_audio(path)
    src = PushSource()
    silences: list[int] = []
    results = []
    rec = Recorder(src, results.append, RecorderOptions(skip_silence=False, auto_stop_s=1.5, post_roll_ms=300),
                   on_silence=silences.append)
    rid = rec.begin()
    feed(src, speech)
    assert silences == [], "no report while the speaker talks"
    feed(src, np.zeros(RATE, np.float32))  # one second of silence: not yet
    assert silences == []
    feed(src, np.zeros(RATE, np.float32))  # past 1.5 s
    assert silences == [rid]
    rec.end(rid, released_at=None)  # what the controller does on the report
    src.push(0.0)
    (r,) = results
    assert r.speech, "the silence check itself stays off: every recording counts as speech"
    trailing = len(r.audio) - len(speech)
    assert -0.4 * RATE < trailing <= 0.3 * RATE, "cut at the speech's end plus the 300 ms post-roll"
    assert np.array_equal(r.audio[:len(speech) - int(0.4 * RATE)], speech[:len(speech) - int(0.4 * RATE)])

    rid = rec.begin()  # with the option off, silence is never reported
    rec.configure(RecorderOptions(skip_silence=False, auto_stop_s=0, post_roll_ms=300))
    feed(src, speech)
    feed(src, np.zeros(3 * RATE, np.float32))
    assert silences == [1]


def test_a_pause_with_the_key_held_hands_over_the_recording_so_far_and_the_end_is_cut_to_it():
    """`early`: at the pause the recording so far goes to `on_pause` (the worker transcribes it then); if
    nothing more is said, the finished recording is exactly those samples, so the job finds it done."""
    path, _ = speech_clip()
    speech = load_audio(path)
    src = PushSource()
    paused: list[tuple[int, np.ndarray]] = []
    results = []
    rec = Recorder(src, results.append, RecorderOptions(skip_silence=True, post_roll_ms=300, early=True),
                   on_pause=lambda rid, audio: paused.append((rid, audio)))
    rid = rec.begin()
    feed(src, speech)
    src.push(0.0, blocks=40)  # the speaker stopped; the key is still held
    (pause_id, early), = paused
    assert pause_id == rid and np.array_equal(early[:len(speech)], speech)
    assert len(speech) < len(early) < len(speech) + 40 * BLOCK, "handed over at the pause, not at the release"
    src.push(0.0, blocks=30)  # the user lets go a while later
    rec.end(rid, released_at=0.0)
    src.push(0.0)
    (r,) = results
    assert r.speech and np.array_equal(r.audio, early), "the same samples, so the same transcript"
    assert len(paused) == 1, "one pause, one hand-over"


def test_speech_after_the_pause_is_kept_and_the_next_pause_hands_over_again():
    path, _ = speech_clip()
    speech = load_audio(path)
    src = PushSource()
    paused: list[np.ndarray] = []
    results = []
    rec = Recorder(src, results.append, RecorderOptions(skip_silence=True, post_roll_ms=300, early=True),
                   on_pause=lambda rid, audio: paused.append(audio))
    rid = rec.begin()
    feed(src, speech)
    src.push(0.0, blocks=40)
    feed(src, speech)  # the speaker goes on
    rec.end(rid, released_at=0.0)  # and lets go while still talking: the post-roll follows the speech
    feed(src, np.zeros(40 * BLOCK, np.float32))
    (r,) = results
    said = np.concatenate([speech, np.zeros(40 * BLOCK, np.float32), speech])
    assert len(paused) == 1 and np.array_equal(r.audio[:len(said)], said), "the second part is kept"

    rid = rec.begin()
    feed(src, speech)
    src.push(0.0, blocks=40)
    feed(src, speech)
    src.push(0.0, blocks=40)  # a second pause: the longer recording is handed over
    rec.end(rid, released_at=0.0)
    src.push(0.0)
    assert len(paused) == 3 and len(paused[2]) > len(paused[1]) + len(speech)
    assert np.array_equal(results[1].audio, paused[2])


def test_without_early_transcription_nothing_is_handed_over_and_the_recording_is_whole():
    path, _ = speech_clip()
    speech = load_audio(path)
    src = PushSource()
    paused, results = [], []
    rec = Recorder(src, results.append, RecorderOptions(skip_silence=True, post_roll_ms=300),
                   on_pause=lambda rid, audio: paused.append(audio))
    rid = rec.begin()
    feed(src, speech)
    src.push(0.0, blocks=70)
    rec.end(rid, released_at=0.0)
    src.push(0.0)
    assert paused == [] and len(results[0].audio) == len(speech) + 70 * BLOCK


def test_a_recording_begun_as_the_last_one_closes_the_source_keeps_it_open(monkeypatch):
    """A press right after a recording ended: the close that recording's delivery set off (`_close_if_idle`, on
    a thread of its own) found no recording and stopped the source between `begin` finding it open and
    registering the new recording, which then got no audio at all, and its release waited for a post-roll that
    never came. The close now waits for `begin`, and then sees the new recording."""
    from app.audio import recorder as recorder_module

    source = PushSource()
    rec, results, _ = make(source, post_roll_ms=0, skip_silence=True)
    first = rec.begin()
    source.push(0.1, 5)
    rec.end(first)
    monkeypatch.setattr(rec, "_close_if_idle", lambda: None)  # hold back the close the delivery sets off...
    source.push(0.1)
    assert len(results) == 1 and source.stops == 0
    monkeypatch.undo()

    class CloseMeanwhile(recorder_module.SpeechDetector):
        def __init__(self):  # ...to run it here, in `begin`, after the source was found open
            closing = threading.Thread(target=rec._close_if_idle)
            closing.start()
            closing.join(0.5)  # before the fix it stopped the source here; now it waits for `begin`
            super().__init__()

    monkeypatch.setattr(recorder_module, "SpeechDetector", CloseMeanwhile)
    second = rec.begin()
    time.sleep(0.6)
    assert source.stops == 0 and source.on_block is not None, "the source was closed under the new recording"
    source.push(0.1, 5)
    rec.end(second)
    source.push(0.1)
    assert len(results) == 2 and len(results[1].audio) >= 5 * BLOCK
