"""Abbreviations whose dot ends no sentence: "Mr. and Mrs. Smith", "etc. and", "z. B. mehr", "d. h. wir".

The spacing step capitalises the word after a sentence end, because removing a filler or inserting a
spoken full stop leaves sentence starts in lower case. After an abbreviation's dot the engine's lower
case is right, and capitalising it wrote "Mr. And Mrs. Smith" (Whisper base's "Mr. and Mrs. Smith").
A word of one letter before the dot is an initial or part of an abbreviation written with spaces, as
German writes them ("z. B.", "d. h.", "u. a."; French "p. ex."; "J. K. Rowling"). In German a dot after
a number makes it an ordinal or a date ("am 10. und 11. Mai", as Whisper base writes it, was pasted as
"am 10. Und 11. Mai"; "am 3.10. und"): a sentence that ends with a number is rare, and the engine
capitalises what follows one. Per language, the common abbreviations written in lower case or followed
by a lower-case word; lists, not rules, since a dot after any other word may well end a sentence.
"""

from __future__ import annotations

import re

ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "approx", "cf", "al",
                     "inc", "ltd", "dept", "fig", "vol", "jan", "feb", "aug", "sept", "oct", "nov", "dec"}),
    "de": frozenset({"bzw", "usw", "ca", "vgl", "ggf", "evtl", "etc", "nr", "dr", "prof", "hr", "fr", "str",
                     "inkl", "zzgl", "exkl", "mio", "mrd", "sog", "bspw", "allg", "jh", "tel", "abs", "bzgl",
                     "gem", "insb", "max", "min", "mind", "std", "tsd", "usf"}),
    "fr": frozenset({"mm", "mme", "mmes", "mlle", "dr", "pr", "etc", "cf", "env", "ex", "vol", "av", "bd", "tél"}),
    "es": frozenset({"sr", "sra", "srta", "sres", "dr", "dra", "etc", "ud", "uds", "vd", "vds", "pág", "núm",
                     "aprox", "av", "tel", "ej", "lic", "ing"}),
}
_WORD_BEFORE_DOT = re.compile(r"(?<![\w'’\-])([^\W\d_]+)$")
# Languages that write an ordinal number as the number and a dot: "3. Oktober".
ORDINAL_DOT = ("de",)


def ends_with_abbreviation(before_dot: str, language: str) -> bool:
    """Whether the text before a dot ends with an abbreviation, a one-letter word or (German) an ordinal number:
    then the dot ends no sentence."""
    if language in ORDINAL_DOT and re.search(r"\d$", before_dot):
        return True
    word = _WORD_BEFORE_DOT.search(before_dot)
    if word is None:
        return False
    return len(word.group(1)) == 1 or word.group(1).casefold() in ABBREVIATIONS.get(language, frozenset())
