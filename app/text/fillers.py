"""Filler words ("um", "äh", "euh") out of the transcript, per language.

Only hesitation sounds are listed, never words with a meaning of their own, with one exception:
Spanish "este" is also "this" and "east", so it is removed only where the model marked it as a pause
(followed by a comma or an ellipsis) at the start of a sentence or clause ("Este, no sé", "Bueno, este,
no sé"), never in "este libro", "Vivo en el este, cerca del mar" or "Me gusta este, no aquel". A comma
or ellipsis right after a filler goes with it; the spacing step then tidies what is left ("So, um, yes"
-> "So, yes"). A filler that is a sentence of its own ("Um." "Hmm?" "Uh, um.") goes with its full stop
or question mark, so a dictation of only "Um." pastes nothing and "I see. Um. Yes." does not become
"I see.. Yes.". A filler joined to a word by a hyphen or apostrophe is part of that word ("uh-oh", "uh-huh", "mm-hmm") and stays.
Hindi and Mandarin have no list yet: their transcripts are left as they are.
"""

from __future__ import annotations

import re

FILLERS: dict[str, tuple[str, ...]] = {
    "en": ("um", "umm", "uh", "uhh", "uhm", "er", "erm", "hmm"),
    "de": ("äh", "ähm", "öh", "öhm", "hm"),
    "fr": ("euh", "heu", "bah euh"),
    "es": ("eh", "em", "mmm"),
}
# Fillers that are real words elsewhere: removed only at a sentence or clause start, followed by a pause mark.
PAUSE_ONLY: dict[str, tuple[str, ...]] = {"es": ("este", "pues nada")}
_CLAUSE_START = r"(?:^|(?<=[,;:.!?¿¡…\n]))"
_AFTER = r"(?:\s*(?:,|\.\.\.|…))?"
# At the start of the transcript, of a line or of a sentence: there the filler's own full stop or
# question mark ends a sentence that holds nothing else.
_SENTENCE_START = r"(?:^|(?<=[.!?…\n]))"
_SENTENCE_END = r"\s*[.!?]+"


def remove_fillers(text: str, language: str) -> str:
    fillers, pause_only = FILLERS.get(language, ()), PAUSE_ONLY.get(language, ())
    if fillers:
        filler = _whole_word("|".join(re.escape(f) for f in sorted(fillers, key=len, reverse=True)))
        text = re.sub(rf"{_SENTENCE_START}(?:\s*{filler}{_AFTER})*\s*{filler}{_SENTENCE_END}", "", text,
                      flags=re.IGNORECASE)
        text = re.sub(rf"{filler}{_AFTER}", "", text, flags=re.IGNORECASE)
    if pause_only:
        alternatives = "|".join(re.escape(f) for f in pause_only)
        text = re.sub(rf"{_CLAUSE_START}(\s*)(?:{alternatives})\s*(?:,|\.\.\.|…)", r"\1", text, flags=re.IGNORECASE)
    return text


def _whole_word(alternatives: str) -> str:
    """`alternatives` as a word of its own: not inside a word, nor joined to one by - or ' ("uh-oh")."""
    return rf"(?<!\w)(?<!\w[-'’])(?:{alternatives})(?![-'’]?\w)"
