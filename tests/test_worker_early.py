"""Transcribing ahead in the worker (`app.worker.early`): a real `python -m app worker` subprocess with
Whisper tiny.en on real speech, driven over its real pipes. A job with exactly the audio and options
of a finished early transcription is answered from it, with the text a plain job gets; anything else
is transcribed as always, and an early transcription nobody can use is given up."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.worker.pipe import WorkerPipe
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
