"""Spoken punctuation and layout: "comma", "question mark", "new line" become the characters.

Off by default (Settings): with it on, the words are always commands, as in macOS Dictation, so
"the trial period ended" loses its "period"; the setting is there for people who dictate that way.
The model often writes its own punctuation around a spoken command ("Hello, comma, how are you?"),
so punctuation touching a punctuation command is absorbed into it; a layout command ("new line")
keeps what comes before it and absorbs what follows. Spanish opening marks (¿ ¡) are not inserted.
A command joined to another word by a hyphen is part of that word: "comma-separated" stays. Nor is a
command right after a determiner one: "ein wichtiger Punkt für uns", "a new line of code", "le point"
name the thing (a dictated command ends a clause, which never ends with an article); in German, where
only nouns are capitalised, a lower-case adjective may stand between them ("ein wichtiger Punkt").
"""

from __future__ import annotations

import re

# Per language: spoken phrase -> what it becomes. Longer phrases are tried first ("point virgule"
# before "point"), so a phrase that contains another is never split.
PUNCTUATION: dict[str, dict[str, str]] = {
    "en": {"comma": ",", "period": ".", "full stop": ".", "question mark": "?", "exclamation mark": "!",
           "exclamation point": "!", "colon": ":", "semicolon": ";"},
    "de": {"Komma": ",", "Punkt": ".", "Fragezeichen": "?", "Ausrufezeichen": "!", "Doppelpunkt": ":",
           "Semikolon": ";", "Strichpunkt": ";"},
    "fr": {"virgule": ",", "point final": ".", "point": ".", "point d'interrogation": "?",
           "point d'exclamation": "!", "deux-points": ":", "deux points": ":", "point-virgule": ";",
           "point virgule": ";"},
    "es": {"coma": ",", "punto final": ".", "punto": ".", "signo de interrogación": "?",
           "signo de exclamación": "!", "dos puntos": ":", "punto y coma": ";"},
}
LAYOUT: dict[str, dict[str, str]] = {
    "en": {"new line": "\n", "newline": "\n", "new paragraph": "\n\n"},
    "de": {"neue Zeile": "\n", "neuer Absatz": "\n\n"},
    "fr": {"nouvelle ligne": "\n", "à la ligne": "\n", "nouveau paragraphe": "\n\n"},
    "es": {"nueva línea": "\n", "nuevo párrafo": "\n\n", "punto y aparte": ".\n"},
}
_MARKS = r"[,.;:!?¿¡…]"
# Determiners: a command right after one is the noun it names. Only words that cannot end a clause: not
# "that", "her", "each" ("two dollars each"), German "das", "die", "jeder", "keine", "diese", "meine" (pronouns
# too: "Das weiß jeder"), "am" ("am besten"), Spanish "este" ("this one"). German "ein" ends many clauses as a
# verb's particle ("Ich kaufe ein"): it counts only with an adjective after it ("ein wichtiger Punkt") or at a
# clause's start ("Ein Komma fehlt"), where no particle stands.
DETERMINERS: dict[str, tuple[str, ...]] = {
    "en": ("a", "an", "the", "my", "your", "our", "their", "its", "every"),
    "de": ("der", "den", "dem", "des", "eine", "einen", "einem", "kein", "keinen", "keinem", "mein", "meinen",
           "meinem", "dein", "deinen", "deinem", "unseren", "unserem", "diesem", "jedem", "zum", "zur", "im", "beim",
           "vom", "ins"),
    "fr": ("le", "la", "un", "une", "ce", "cet", "cette", "du", "au", "chaque", "mon", "ton", "son", "notre",
           "votre", "leur"),
    "es": ("el", "la", "un", "una", "del", "al", "cada", "mi", "tu", "su", "nuestro", "nuestra"),
}
# German articles that count only with an adjective between them and the command (see above).
WITH_ADJECTIVE: dict[str, tuple[str, ...]] = {"de": ("ein",)}


def spoken_punctuation(text: str, language: str) -> str:
    marks, layout = PUNCTUATION.get(language, {}), LAYOUT.get(language, {})
    commands = {**{k: (v, True) for k, v in marks.items()}, **{k: (v, False) for k, v in layout.items()}}
    if not commands:
        return text
    by_phrase = {_key(k): v for k, v in commands.items()}
    alternatives = "|".join(_phrase(k) for k in sorted(commands, key=len, reverse=True))
    # Not inside a word, nor joined to one by a hyphen or apostrophe ("comma-separated", "Punkt-zu-Punkt").
    pattern = re.compile(rf"(\s*{_MARKS}*)\s*(?<!\w)(?<!\w[-'’])({alternatives})(?![-'’]?\w){_MARKS}*",
                         re.IGNORECASE)

    names_a_thing = _after_determiner(language)

    def command(match: re.Match[str]) -> str:
        if not match.group(1).strip() and names_a_thing and names_a_thing.search(text, 0, match.start()):
            return match.group(0)
        written, absorbs_before = by_phrase[_key(match.group(2))]
        before = "" if absorbs_before else match.group(1).strip()
        return before + written

    return pattern.sub(command, text)


def _phrase(spoken: str) -> str:
    """A spoken command as a pattern: its words with any spaces or hyphens between them."""
    return r"[\s\-]+".join(re.escape(part) for part in re.split(r"[\s\-]+", spoken))


def _key(spoken: str) -> str:
    return " ".join(re.split(r"[\s\-]+", spoken.casefold()))


def _after_determiner(language: str) -> re.Pattern[str] | None:
    """Text that ends with a determiner (in German, or an article and a lower-case adjective), then spaces."""
    if language not in DETERMINERS:
        return None
    start = r"(?<![\w'’\-])"
    determiner = rf"{start}(?i:{'|'.join(DETERMINERS[language])})"
    if language != "de":
        return re.compile(rf"{determiner}\s*$")
    # "ein bisschen", "ein wenig" end a clause as "a little": no adjective there
    article = "|".join(DETERMINERS[language] + WITH_ADJECTIVE[language])
    adjective = r"(?!(?:bisschen|bißchen|wenig)\b)[a-zäöüß]\w*"
    opening = rf"(?:^|(?<=[,;:.!?])\s*)(?i:{'|'.join(WITH_ADJECTIVE[language])})"  # a particle never opens a clause
    return re.compile(rf"(?:{determiner}|{opening}|{start}(?i:{article})\s+{adjective})\s*$")
