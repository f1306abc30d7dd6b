"""Transcribing ahead in the worker (`app.worker.early`): a real `python -m app worker` subprocess with
Whisper tiny.en on real speech, driven over its real pipes. A job with exactly the audio and options
of a finished early transcription is answered from it, with the text a plain job gets; anything else
is transcribed as always, and an early transcription nobody can use is given up. The order of events
(a model loaded, a job cancelled, while an early transcription runs) is driven with the real `Server`
on a thread here, its engine a stand-in that waits until the test lets it finish."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec, Progress, Transcript
from app.worker.engine_slot import EngineSlot
from app.worker.pipe import WorkerPipe
from app.worker.protocol import Frame, FrameDecoder, audio_payload, encode
from app.worker.server import FrameWriter, Server
from tests.data import WHISPER_TINY_EN
from tests.speech import clips

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    """Two LibriVox clips of real speech (3 s and 5-7 s)."""
    by_id = {c.id: c for c in clips(source="librivox")}
    return load_audio(by_id["librivox-0880"].path), load_audio(by_id["librivox-0890"].path)


@pytest.fixture(scope="module")
def worker():
    if not WHISPER_TINY_EN.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    with WorkerPipe(env=ONE_THREAD) as w:
        w.load(EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu"))
        yield w


def ran(worker: WorkerPipe, spec_id: str, timeout: float = 120.0) -> None:
    """Wait until the worker has run the early transcription `spec_id` (seen running in a pong, then not)."""
    seen, deadline, seq = False, time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        seq += 1
        worker.send("ping", seq=seq)
        job = worker.expect("pong").get("job")
        if job == spec_id:
            seen = True
        elif seen:
            return
        time.sleep(0.005)
    raise AssertionError(f"{spec_id} was not seen running and ending within {timeout:.0f} s")


def test_the_same_audio_and_options_are_answered_from_the_early_transcription(worker, speech):
    first, _ = speech
    plain = worker.transcribe(first, language="en")
    assert plain["text"].strip() and not plain.get("early")
    ran(worker, worker.speculate(first, language="en"))
    answer = worker.transcribe(first, language="en")
    assert answer.get("early") is True and answer["text"] == plain["text"]
    assert answer["timings"]["total"] > 0  # the engine's own time, spent before the job came
    again = worker.transcribe(first, language="en")  # used once: the next identical job is transcribed anew
    assert not again.get("early") and again["text"] == plain["text"]


@pytest.mark.parametrize("change", ["one sample more", "another language", "a vocabulary"])
def test_a_job_that_differs_in_anything_is_transcribed_anew(worker, speech, change):
    first, _ = speech
    ran(worker, worker.speculate(first, language="en"))
    audio = np.concatenate([first, np.zeros(1, np.float32)]) if change == "one sample more" else first
    language = "auto" if change == "another language" else "en"  # tiny.en knows English only
    vocabulary = ("Kubernetes",) if change == "a vocabulary" else ()
    answer = worker.transcribe(audio, language=language, vocabulary=vocabulary)
    assert not answer.get("early")


def test_an_early_transcription_a_job_cannot_use_is_given_up(worker, speech):
    first, second = speech
    spec_id = worker.speculate(second, language="en")
    seq, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:  # running now
        seq += 1
        worker.send("ping", seq=seq)
        if worker.expect("pong").get("job") == spec_id:
            break
    else:
        raise AssertionError("the early transcription never ran")
    assert not worker.transcribe(first, language="en").get("early")  # the dictation ended otherwise
    assert not worker.transcribe(second, language="en").get("early")  # so nothing of it was kept


def test_a_newer_early_transcription_replaces_the_older(worker, speech):
    first, second = speech
    worker.speculate(first, language="en")
    newer = worker.speculate(second, language="en")
    ran(worker, newer)
    assert not worker.transcribe(first, language="en").get("early")


# -- the worker's order of events, with a stand-in engine on a thread of this process -----------------


class GatedEngine:
    """Transcribes any audio to the name of its model; each transcription waits at its first step until the
    test opens `gate`, so that frames can arrive while it runs."""

    name = "gated"

    def __init__(self, spec: EngineSpec, entered: threading.Event, gate: threading.Event) -> None:
        self.model, self.quantization = spec.model, spec.quantization
        self._entered, self._gate = entered, gate

    def transcribe(self, audio, *, language="auto", steps=None, on_progress=None, vocabulary=()) -> Transcript:
        self._entered.set()
        assert self._gate.wait(30), "the test never opened the gate"
        on_progress(Progress(step=1, total=1, draft=""))
        return Transcript(text=self.model, language="en", steps_used=1, timings={"total": 1.0})


class InProcessWorker:
    """The real `Server` over real pipes, on a thread, with `GatedEngine`s."""

    def __init__(self) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        self._to_r, self._to_w = os.pipe()
        self._from_r, self._from_w = os.pipe()
        server = Server(self._to_r, FrameWriter(self._from_w),
                        EngineSlot(lambda spec: GatedEngine(spec, self.entered, self.gate)))
        self._thread = threading.Thread(target=server.run, daemon=True)
        self._thread.start()
        self._decoder, self._frames = FrameDecoder(), []

    def send(self, type_: str, payload: bytes = b"", **fields) -> None:
        os.write(self._to_w, encode(type_, payload, **fields))

    def answer(self, job_id: str) -> Frame:
        """The `result` or `error` frame of `job_id`."""
        return self._wait(lambda f: f.type in ("result", "error") and f.get("id") == job_id)

    def sync(self) -> None:
        """Return once the worker's reader has handled every frame sent so far (it answers in order)."""
        self.send("ping", seq=-1)
        self._wait(lambda f: f.type == "pong" and f.get("seq") == -1)

    def _wait(self, wanted) -> Frame:
        while True:
            for frame in self._frames:
                if wanted(frame):
                    return frame
            self._frames += self._decoder.feed(os.read(self._from_r, 1 << 16))

    def close(self) -> None:
        self.gate.set()
        self.send("shutdown")
        self._thread.join(10)
        for fd in (self._to_r, self._to_w, self._from_r, self._from_w):
            os.close(fd)


@pytest.fixture
def gated():
    w = InProcessWorker()
    w.send("load", id="load-1", spec=EngineSpec(engine="gated", model="model A").to_dict())
    yield w
    w.close()


AUDIO = audio_payload(np.linspace(-0.5, 0.5, 16_000, dtype=np.float32))


def test_an_early_transcript_of_the_previous_model_answers_no_job(gated):
    gated.send("speculate", AUDIO, id="early-1", language="en")
    assert gated.entered.wait(30)  # running on model A
    gated.send("load", id="load-2", spec=EngineSpec(engine="gated", model="model B").to_dict())  # Settings → Model
    gated.send("transcribe", AUDIO, id="job", language="en")
    gated.gate.set()
    answer = gated.answer("job")
    assert (answer.type, answer["text"], answer.get("early")) == ("result", "model B", None)



def test_a_job_cancelled_before_its_turn_ends_cancelled_even_with_its_transcript_ready(gated):
    gated.send("speculate", AUDIO, id="early-1", language="en")
    assert gated.entered.wait(30)
    gated.send("transcribe", AUDIO, id="job", language="en")  # the same request: the speculation goes on
    gated.send("cancel", id="job")
    gated.sync()  # the cancel came before the job's turn
    gated.gate.set()
    assert (gated.answer("job").type, gated.answer("job").get("code")) == ("error", "cancelled")


def test_a_job_of_other_audio_ends_the_kept_early_transcription(worker, speech):
    """The dictation a finished early transcription was made for ended otherwise: it is not held on to."""
    first, second = speech
    ran(worker, worker.speculate(first, language="en"))
    assert not worker.transcribe(second, language="en").get("early")
    assert not worker.transcribe(first, language="en").get("early")
