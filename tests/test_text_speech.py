"""The text pipeline (app/text/) on what Whisper really writes for speech in each language.

espeak-ng speaks (the test data's clips, or a sentence synthesised here), Whisper base on the app's
default CPU engine (faster-whisper) transcribes, and the pipeline finishes its text. Each test first
checks that Whisper wrote what the test is about, so a different model's output cannot pass it unseen.
"""

from __future__ import annotations

import re

import pytest

from app.audio.loading import load_audio
from app.text import TextOptions, finish
from tests.speech import clips

_HAN = r"[\u4e00-\u9fff]"


def _clip_audio(clip_id: str):
    return load_audio(next(c for c in clips(source="espeak") if c.id == clip_id).path)


@pytest.mark.slow
def test_mandarin_gets_full_width_marks(faster_whisper_base):
    """Whisper base writes "你能怕犯作的報告發給我嗎?" and "建建其恒毫,我们是外面之物犯法。": ASCII marks in Chinese
    text, even beside a full-width full stop; they were pasted so."""
    for clip_id in ("espeak-zh-03", "espeak-zh-04"):
        raw = faster_whisper_base.transcribe(_clip_audio(clip_id), language="zh").text
        assert re.search(rf"{_HAN}[,?]", raw), raw  # what the test is about happened
        final = finish(raw, "zh", TextOptions())
        assert not re.search(rf"{_HAN}[,.?!:;]|[,?!:;]{_HAN}", final), final
        assert re.search(rf"{_HAN}[，？]", final), final


@pytest.mark.slow
def test_spanish_este_that_means_east_stays(faster_whisper_base, tmp_path):
    """Whisper base writes "Vivo en el este, cerca del mal."; the filler step took "este," for the hesitation
    "este" and pasted "Vivo en el cerca del mal."."""
    from tests.data.build import synthesize

    audio = synthesize("Vivo en el este, cerca del mar.", "es", tmp_path)
    raw = faster_whisper_base.transcribe(audio, language="es").text
    assert re.search(r"\bel este,", raw), raw  # what the test is about happened
    assert "el este, cerca" in finish(raw, "es", TextOptions())


@pytest.mark.slow
def test_german_punkt_after_a_determiner_is_the_noun(faster_whisper_base, tmp_path):
    """Whisper base writes "Das ist ein wichtiger Punkt für uns."; with spoken punctuation on, "Punkt" (point) was
    taken for the full stop and "Das ist ein wichtiger. Für uns." pasted."""
    from tests.data.build import synthesize

    audio = synthesize("Das ist ein wichtiger Punkt für uns.", "de", tmp_path)
    raw = faster_whisper_base.transcribe(audio, language="de").text
    assert "ein wichtiger Punkt" in raw, raw  # what the test is about happened
    assert "ein wichtiger Punkt für uns" in finish(raw, "de", TextOptions(spoken_punctuation=True))


@pytest.mark.slow
def test_an_abbreviation_dot_starts_no_sentence(faster_whisper_base, tmp_path):
    """Whisper base writes "Mr. and Mrs. Smith are coming to dinner." and "We need pens, paper, etc. and a
    stapler."; the spacing step took each abbreviation's dot for a full stop: "Mr. And Mrs.", "etc. And"."""
    from tests.data.build import synthesize

    for said, written in [("Mister and Missus Smith are coming to dinner.", "Mr. and Mrs. Smith"),
                          ("We need pens, paper, et cetera and a stapler.", "etc. and a stapler")]:
        raw = faster_whisper_base.transcribe(synthesize(said, "en-us", tmp_path), language="en").text
        assert written in raw, raw  # what the test is about happened
        assert written in finish(raw, "en", TextOptions())


@pytest.mark.slow
def test_a_german_ordinal_dot_starts_no_sentence(faster_whisper_base, tmp_path):
    """Whisper base writes "... am 10. und 11. Mai." for "am zehnten und elften Mai"; the spacing step took the
    ordinal's dot for a full stop and pasted "am 10. Und 11. Mai"."""
    from tests.data.build import synthesize

    audio = synthesize("Das Treffen ist am zehnten und elften Mai.", "de", tmp_path)
    raw = faster_whisper_base.transcribe(audio, language="de").text
    assert "10. und 11." in raw, raw  # what the test is about happened
    assert "10. und 11. Mai" in finish(raw, "de", TextOptions())
