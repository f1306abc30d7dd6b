"""The case of a dictation's first word where it goes on from the previous dictation.

An engine writes each dictation as if it were a text of its own, but people dictate a sentence in
pieces, and Whisper often begins a short one in lower case. Measured on espeak-ng pieces with Whisper
base (CTranslate2; benchmarks/sentence_case.py): 10 of 16 second halves of a sentence and 5 of 16 whole
sentences came back starting in lower case, so "It was a long day." then "nobody answered the phone."
was pasted as "It was a long day. nobody answered the phone."; and a piece that ends without a full
stop ("We met with the client on Tuesday and") can be followed by a capital that only the piece's
start put there ("and They agreed"). Where the app knows the text
right before the cursor (it pasted it, and nothing moved the cursor since: app/desktop/continuation.py),
the first word follows it:
- after a full stop, question or exclamation mark (not the dot of an abbreviation, nor an ellipsis)
  or a line break, a word written all in lower case is capitalised;
- after a word or a comma, a capital that only the start of the dictation put there is lowered, for
  the words of a short list per language that are never names (articles, pronouns, conjunctions,
  prepositions): "They" -> "they", but "Anna", "I", "iPhone" and German nouns stay as written.
The trailing full stop of an unfinished piece cannot be taken back this way: whether it ended a
sentence is not known from the next piece's case (the whole sentences above started in lower case
as often as the halves did), and deleting from the user's document on a guess is worse than a stop.
"""

from __future__ import annotations

import re

from app.text.abbreviations import ends_with_abbreviation

# A sentence's end: one full stop, question or exclamation mark (not "..." nor the inner dots of "p.m."),
# then any closing quotes or brackets; or a line break.
_ENDS_SENTENCE = re.compile(r"((?<!\.)(?<!\.\w)[.!?]|[。！？])[\"'”’»)\]]*\s*$|\n\s*$")
# Ends inside a sentence: a word, a number, or a comma or semicolon after one.
_ENDS_INSIDE = re.compile(r"[^\W_][,;]?\s*$")
# The first word, after any opening marks ("¿", quotes, brackets); not an address ("example.org", "a@b").
_FIRST_WORD = re.compile(r"^([\s\"'“‘«(\[¿¡]*)([^\W\d_][\w'’\-]*)(?![\w'’\-]|[@.]\w|://)")
# Words that are never names, lowered where they go on inside a sentence (the engine's start capitalised them).
# Left out on purpose: English "I" and "Will"; German "Sie", "Ihr" and "Du" (the polite and letter forms
# are capitalised); nouns of any kind.
_NEVER_NAMES: dict[str, frozenset[str]] = {
    "en": frozenset("the a an and but or so because then to of in on at for with from by as if that this these "
                    "those it we they he she you my our your their his her its there which who when while where "
                    "not is are was were be would can could should maybe also just about into after before "
                    "until than".split()),
    "de": frozenset("und oder aber denn dass weil wenn als ob der die das den dem des ein eine einen einem einer "
                    "zu mit von für auf bei nach aus um ich wir er es nicht auch noch so dann doch".split()),
    "fr": frozenset("et ou mais donc car que qui le la les un une des du de à au aux en dans pour par avec sur "
                    "je tu il elle nous vous ils elles on ce cette ne pas si quand".split()),
    "es": frozenset("y o pero porque que el la los las un una unos unas de del a al en con por para sin sobre "
                    "yo él ella nosotros ellos ellas se me te lo le no si cuando como muy más".split()),
}


def continue_case(previous: str, text: str, language: str) -> str:
    """`text` with its first word in the case it takes right after `previous` (the text before the cursor)."""
    word = _FIRST_WORD.match(text)
    if not previous or word is None:
        return text
    opening, first = word.group(1), word.group(2)
    end = _ENDS_SENTENCE.search(previous)
    if end is not None:
        if first != first.lower() or (previous[end.start()] == "." and
                                      ends_with_abbreviation(previous[:end.start()], language)):
            return text  # already capitalised or "iPhone"; or "Mr." / "z. B.", after which lower case is right
        return opening + first[0].upper() + first[1:] + text[word.end():]
    capitalised_only = first[0].isupper() and first[1:] == first[1:].lower()  # "They", not "IT" nor "iPhone"
    if _ENDS_INSIDE.search(previous) and capitalised_only and first.casefold() in _NEVER_NAMES.get(language, ()):
        return opening + first.lower() + text[word.end():]
    return text
