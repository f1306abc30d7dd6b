"""The order of the text steps, and their options as the settings give them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.text.fillers import remove_fillers
from app.text.punctuation import spoken_punctuation
from app.text.replacements import Pair, apply_replacements
from app.text.spacing import tidy
from app.text.vocabulary import correct


@dataclass(frozen=True)
class TextOptions:
    vocabulary: tuple[str, ...] = ()
    replacements: tuple[Pair, ...] = ()
    remove_fillers: bool = True
    spoken_punctuation: bool = False

    @classmethod
    def from_settings(cls, settings) -> "TextOptions":
        return cls(tuple(settings.vocabulary), tuple(settings.replacements), settings.remove_fillers,
                   settings.spoken_punctuation)


def finish(text: str, language: str, options: TextOptions) -> str:
    """The engine's raw transcript as the user gets it: vocabulary correction -> replacements -> fillers
    -> spoken punctuation -> spacing and capitalisation. `language` is the transcript's (en, de, ...)."""
    text = text.strip()  # the engine's own spaces and line breaks at either end are never the user's
    first = next((c for c in text if c.isalpha()), "")
    engine_capitalises = first != first.lower()
    text = correct(text, options.vocabulary, language)
    text = apply_replacements(text, options.replacements)
    if options.remove_fillers:
        text = remove_fillers(text, language)
    if options.spoken_punctuation:
        text = spoken_punctuation(text, language)
    head, tail = _edge_breaks(text)
    return head + tidy(text, language, capitalise_start=engine_capitalises) + tail


def _edge_breaks(text: str) -> tuple[str, str]:
    """The line breaks a layout command put at the start and at the end ("New paragraph. Next topic.",
    "... the end. New line."): the user asked for them, so they are pasted; tidying would drop them."""
    if not text.strip():
        return "\n" * text.count("\n"), ""  # only layout commands: "new paragraph" said on its own
    head = re.match(r"\s*", text).group()
    tail = re.search(r"\s*$", text).group()
    return "\n" * head.count("\n"), "\n" * tail.count("\n")


def finish_transcript(transcript: dict, options: TextOptions) -> dict:
    """A worker result with `text` finished and the engine's own text kept as `raw_text`."""
    raw = str(transcript.get("text", ""))
    return {**transcript, "raw_text": raw, "text": finish(raw, str(transcript.get("language") or ""), options)}
