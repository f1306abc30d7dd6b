"""Subtitle files from timed segments (`app.engine.segments`): SubRip (`srt`) and WebVTT (`vtt`).

A segment is a stretch of speech up to 10 s long, too much for one subtitle: readers need a cue of at
most two lines of about 42 characters, shown for at most about 7 s (the common broadcast and streaming
guidelines; 16 characters a line in Chinese, whose characters are twice as wide). Where the engine
timed each word (`Segment.words`), a segment becomes a cue per sentence, and a sentence too long for one
becomes cues of about equal length cut between words, after a clause's end where one is near; each cue
is shown while its words are said (`cues`). Without word times a segment stays one cue (no time inside
it is known). `srt` and `vtt` write cues as they are given, each text wrapped into lines. Mandarin is
written without spaces, so its lines are cut between characters.
"""

from __future__ import annotations

from app.engine.base import Word
from app.engine.segments import Segment
from app.text.abbreviations import ends_with_abbreviation

LINE_CHARS = 42
LINE_CHARS_ZH = 16
MAX_LINES = 2
MAX_CUE_S = 7.0
MIN_CUE_S = 0.2  # a word the alignment gave no length still shows
# A cue ends after a sentence's end; where a sentence takes several cues, after a clause's end near the cut.
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "।")
_CLAUSE_END = (",", ";", ":", "，", "；", "：")


def cues(segments: tuple[Segment, ...], language: str = "") -> tuple[Segment, ...]:
    """The segments as subtitle cues: the long ones with word times cut into readable pieces."""
    out: list[Segment] = []
    for segment in segments:
        if not segment.words:
            out.append(segment)
            continue
        for sentence in _sentences(segment.words, language):
            out += [Segment(group[0].start, max(group[-1].end, group[0].start + MIN_CUE_S), _text(group), tuple(group))
                    for group in _balanced(sentence, language)]
    return tuple(out)


def spaced(words: list[Word], text: str) -> tuple[Word, ...]:
    """Words as an API gives them (OpenAI's `words`: no spaces) with the space before each that `text`, the
    segment's text, has: "ill" "-disposed" in "an ill-disposed man" stay one word when joined."""
    out, at = [], 0
    for word in words:
        bare = word.text.strip()
        found = text.find(bare, at) if bare else -1
        space = found <= 0 or text[found - 1].isspace()  # a word the text starts with, or cannot place: a new one
        at = found + len(bare) if found >= 0 else at
        out.append(Word(word.start, word.end, (" " if space else "") + bare))
    return tuple(out)


def line_chars(language: str) -> int:
    return LINE_CHARS_ZH if language == "zh" else LINE_CHARS


def _sentences(words: tuple[Word, ...], language: str) -> list[list[Word]]:
    """The words cut after each sentence's end (not after an abbreviation's dot: "Mr. Dashwood")."""
    sentences: list[list[Word]] = [[]]
    for word in words:
        sentences[-1].append(word)
        text = word.text.strip()
        if text.endswith(_SENTENCE_END) and not (text.endswith(".") and
                                                 ends_with_abbreviation(_text(sentences[-1])[:-1], language)):
            sentences.append([])
    return [s for s in sentences if s]


def _balanced(sentence: list[Word], language: str) -> list[list[Word]]:
    """A sentence in as few cues as its length and duration allow, each about as long as the others, cut after
    a clause's end where one is near."""
    budget = line_chars(language) * MAX_LINES
    duration = sentence[-1].end - sentence[0].start
    count = max(-(-len(_text(sentence)) // budget), -(-int(duration * 1000) // int(MAX_CUE_S * 1000)), 1)
    target = len(_text(sentence)) / count
    groups: list[list[Word]] = [[]]
    for word in sentence:
        group = groups[-1]
        if group and (len(_text(group + [word])) > budget or word.end - group[0].start > MAX_CUE_S or
                      (len(groups) < count and len(_text(group)) >= target)):
            groups.append([])
        groups[-1].append(word)
        clause = word.text.strip().endswith(_CLAUSE_END)
        if clause and len(groups) < count and len(_text(groups[-1])) >= 0.6 * target:
            groups.append([])
    return [g for g in groups if g]


def _text(words: list[Word]) -> str:
    """The words as written: each word's text carries the space before it, if any (none inside "ill-disposed",
    none between Mandarin words)."""
    return "".join(w.text for w in words).strip()


def lines(text: str, language: str = "") -> str:
    """`text` as subtitle lines of at most `line_chars(language)` where it can be cut: two lines of about equal
    length when it fits in two, else as many full lines as it takes."""
    width = line_chars(language)
    if len(text) <= width:
        return text
    spaced = language != "zh"
    if len(text) <= width * MAX_LINES:
        cuts = [i for i, c in enumerate(text) if c == " "] if spaced else list(range(1, len(text)))
        fitting = [i for i in cuts if i <= width and len(text) - i - spaced <= width]
        if fitting:
            at = min(fitting, key=lambda i: abs(len(text) - 2 * i))
            return text[:at] + "\n" + text[at + spaced:]
    if not spaced:
        return "\n".join(text[i:i + width] for i in range(0, len(text), width))
    rows, row = [], ""
    for word in text.split():
        if row and len(row) + 1 + len(word) > width:
            rows.append(row)
            row = word
        else:
            row = f"{row} {word}" if row else word
    return "\n".join(rows + [row])


def srt(cues: tuple[Segment, ...], language: str = "") -> str:
    """SubRip: numbered cues, times as HH:MM:SS,mmm."""
    return "".join(f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{lines(s.text, language)}\n\n"
                   for n, s in enumerate(cues, 1))


def vtt(cues: tuple[Segment, ...], language: str = "") -> str:
    """WebVTT: the header, then cues with times as HH:MM:SS.mmm."""
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{lines(s.text, language)}\n\n"
                                  for s in cues)


def _clock(seconds: float, comma: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{comma}{ms % 1000:03d}"
