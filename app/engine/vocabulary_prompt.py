"""The speaker's vocabulary as Whisper's prompt (the "initial prompt" technique), for both Whisper engines.

Whisper reads the tokens after `<|startofprev|>` as the text that came before this window, and
spells what it hears the way that text does: a prompt "Kubernetes, Nguyen, PostgreSQL" makes those
spellings likely. The prompt gets at most half of Whisper's 448 decoder positions, less one (223
tokens, OpenAI's own limit for previous text), so the transcript keeps the other half; entries are
kept in the user's order and dropped whole from the end, never cut inside a word. Only the first
30 s window is prompted (as the previous text is in OpenAI's `initial_prompt`): later windows of a
long recording decode as before.

The entries sit in a short sentence in the spoken language rather than as a bare list: Whisper
continues the style of its previous text, and after a bare comma list it wrote the transcript as a
list too ("PowerMobile, Talks to the Server"), which cost the rest of the sentence words. Measured
with benchmarks/vocabulary.py (docs/benchmarks.md): with the sentence, the rest's WER does not rise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

MAX_POSITIONS = 448
PROMPT_TOKENS = MAX_POSITIONS // 2 - 1
# <|startofprev|>, then <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|> after the prompt.
FRAMING_TOKENS = 5
# The prompt sentence per language; "{}" is the comma-separated entries. Other languages get the bare list.
TEMPLATES = {
    "en": "The names and terms {} come up.",
    "de": "Die Namen und Begriffe {} kommen vor.",
    "fr": "Les noms et les termes {} reviennent.",
    "es": "Los nombres y términos {} aparecen.",
}


def vocabulary_prompt(vocabulary: Sequence[str], encode: Callable[[str], list[int]], language: str,
                      budget: int = PROMPT_TOKENS) -> list[int]:
    """The prompt's text tokens (without `<|startofprev|>`), empty without a vocabulary.

    `encode` is the model tokenizer's encoder without special tokens; the text starts with a space,
    as Whisper's previous text does.
    """
    entries = list(dict.fromkeys(e.strip() for e in vocabulary if e and e.strip()))
    template = TEMPLATES.get(language, "{}")
    tokens: list[int] = []
    for count in range(1, len(entries) + 1):
        candidate = encode(" " + template.format(", ".join(entries[:count])))
        if len(candidate) > budget:
            break
        tokens = candidate
    return tokens


def decode_budget(budget: int, prompt: Sequence[int]) -> int:
    """The new-token budget that still fits Whisper's positions after a prompt of `prompt` tokens."""
    if not prompt:
        return budget
    return max(1, min(budget, MAX_POSITIONS - len(prompt) - FRAMING_TOKENS))
