"""The speaker's vocabulary on real speech: Whisper prompted with it, then the text pipeline's correction.

espeak-ng speaks benchmarks/vocabulary.py's 20 sentences, each with one uncommon name or term; Whisper
base on the app's default CPU engine (faster-whisper) must write more of the terms with the
vocabulary than without, and not lose words elsewhere (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine.vocabulary_prompt import PROMPT_TOKENS, decode_budget, vocabulary_prompt
from app.text import TextOptions, finish
from benchmarks import vocabulary as bench
from tests.speech import clips


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[np.ndarray]:
    return bench.synthesize_sentences(tmp_path_factory.mktemp("espeak"))


@pytest.mark.slow
def test_vocabulary_raises_term_accuracy_without_hurting_the_rest(faster_whisper_base, sentences):
    figures = bench.summarise(bench.measure(faster_whisper_base, sentences))
    assert figures["term_accuracy_with"] > figures["term_accuracy_without"], figures
    assert figures["wer_rest_with"] <= figures["wer_rest_without"] + 0.005, figures


@pytest.mark.slow
def test_transformers_whisper_is_prompted_too(whisper_base, sentences):
    """The transformers runtime gets the same prompt (prompt_ids): terms it misses alone, it writes with it."""
    found = {"without": 0, "with": 0}
    for (term, _), audio in list(zip(bench.SENTENCES, sentences))[:6]:
        found["without"] += bench.term_found(term, whisper_base.transcribe(audio, language="en").text)
        found["with"] += bench.term_found(term, whisper_base.transcribe(audio, language="en", vocabulary=bench.TERMS).text)
    assert found["with"] >= found["without"] + 2, found


def test_prompt_keeps_whole_entries_within_whisper_budget(faster_whisper_base):
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(faster_whisper_base.model.hf_tokenizer, True, task="transcribe", language="en")
    entries = [f"Term{i}word" for i in range(400)]
    tokens = vocabulary_prompt(entries, tokenizer.encode, "en")
    assert 0 < len(tokens) <= PROMPT_TOKENS
    text = tokenizer.decode(tokens)
    kept = text.removeprefix(" The names and terms ").removesuffix(" come up.").split(", ")
    assert kept == entries[:len(kept)]  # the first entries, each whole, in the user's order
    assert len(kept) < len(entries)
    one = len(tokenizer.encode(" The names and terms Kubernetes come up."))
    small = vocabulary_prompt(["Kubernetes", "Nguyen"], tokenizer.encode, "en", budget=one + 1)
    assert tokenizer.decode(small) == " The names and terms Kubernetes come up."  # "Nguyen" does not fit
    assert vocabulary_prompt(["Kubernetes"], tokenizer.encode, "en", budget=one - 1) == []
    assert vocabulary_prompt([" ", ""], tokenizer.encode, "en") == []
    assert decode_budget(440, tokens) + len(tokens) + 5 <= 448
    assert decode_budget(440, []) == 440


@pytest.mark.slow
@pytest.mark.parametrize("engine_fixture", ["faster_whisper_base", "whisper_base"])
def test_a_full_prompt_still_transcribes_a_full_window(engine_fixture, request):
    """A 30 s window's 440-token budget plus a full prompt would pass Whisper's 448 positions: the budget shrinks."""
    engine = request.getfixturevalue(engine_fixture)
    audio = load_audio(next(c for c in clips(source="espeak") if c.id == "espeak-en-long").path)[:30 * 16_000 - 1600]
    text = engine.transcribe(audio, language="en", vocabulary=[f"Term{i}word" for i in range(400)]).text
    assert len(text.split()) > 40


@pytest.mark.slow
def test_correction_never_joins_words_across_a_sentence_end(faster_whisper_base, tmp_path):
    """Whisper, prompted with "Redis", writes "... red. Is that okay?"; the correction made the two words across
    the full stop one entry and pasted "I paint a bit Redis that okay?"."""
    from tests.data.build import synthesize

    audio = synthesize("I painted it red. Is that okay?", "en-us", tmp_path)
    raw = faster_whisper_base.transcribe(audio, language="en", vocabulary=["Redis"]).text
    assert re.search(r"\bred[.?!]\s+is\b", raw, re.IGNORECASE), raw  # what the test is about happened
    final = finish(raw, "en", TextOptions(vocabulary=("Redis",)))
    assert "Redis" not in final and re.search(r"\bred[.?!]\s+Is\b", final, re.IGNORECASE), final


@pytest.mark.slow
def test_a_term_that_starts_with_a_dot_keeps_the_space_before_it(faster_whisper_base, tmp_path):
    """Whisper, prompted with ".NET", writes "I use .NET every day."; the spacing step took the dot for a full
    stop and pasted "I use.NET every day."."""
    from tests.data.build import synthesize

    audio = synthesize("I use dot net every day.", "en-us", tmp_path)
    raw = faster_whisper_base.transcribe(audio, language="en", vocabulary=[".NET"]).text
    assert " .NET" in raw, raw  # what the test is about happened
    assert " .NET" in finish(raw, "en", TextOptions())
    assert " .NET every" in finish(raw, "en", TextOptions(vocabulary=(".NET",)))  # not "..NET": the entry's own dot
