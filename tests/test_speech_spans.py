"""Where the speech is (`app.audio.speech_spans`), for the server's subtitles: real espeak-ng speech and
the real Silero VAD, and the cutting rules on probabilities laid out by hand where speech cannot be made
to pause exactly where a rule needs it."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.audio.speech_spans import MAX_SEGMENT_S, PAD_S, speech_spans
from app.audio.vad import WINDOW
from app.engine.base import Word
from app.engine.segments import Segment
from app.text.subtitles import LINE_CHARS, MAX_CUE_S, cues, lines, spaced, srt, vtt
from tests.speech import clips

RATE = 16_000


@pytest.fixture(scope="module")
def sentences():
    return [load_audio(clip.path) for clip in clips(source="espeak", language="en")[:3]]


def test_sentences_apart_are_segments_that_cover_the_whole_recording(sentences):
    gap = np.zeros(RATE, dtype=np.float32)
    audio = np.concatenate([gap, sentences[0], gap, sentences[1], gap, sentences[2]])
    spans = speech_spans(audio)
    assert len(spans) == 3, spans
    at = 0.0
    for span, sentence in zip(spans, sentences):
        begins, ends = at + 1.0, at + 1.0 + len(sentence) / RATE
        assert begins - PAD_S <= span.start < span.end <= ends + PAD_S, (span, begins, ends)
        at = ends
    # Every sample is in one piece, so a quiet word the VAD missed is still transcribed.
    assert spans[0].audio_start == 0 and spans[-1].audio_end == len(audio)
    assert all(a.audio_end == b.audio_start for a, b in zip(spans, spans[1:]))
    assert all(s.audio_start / RATE <= s.start and s.end <= s.audio_end / RATE for s in spans)


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """The clip without the silence espeak-ng writes before and after the sentence."""
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0]:loud[-1] + 1]


def test_a_pause_shorter_than_half_a_second_is_inside_a_segment(sentences):
    first, second = _trimmed(sentences[0]), _trimmed(sentences[1])
    assert len(speech_spans(np.concatenate([first, np.zeros(int(0.3 * RATE), dtype=np.float32), second]))) == 1
    assert len(speech_spans(np.concatenate([first, np.zeros(int(0.8 * RATE), dtype=np.float32), second]))) == 2


def test_silence_and_a_click_are_no_segments():
    assert speech_spans(np.zeros(3 * RATE, dtype=np.float32)) == []
    click = np.zeros(3 * RATE, dtype=np.float32)
    click[RATE:RATE + 80] = 0.9
    assert speech_spans(click) == []


def test_a_long_run_of_speech_is_cut_at_its_least_speech_like_window():
    """25 s of speech with dips at 7 s and 16 s (no pause long enough to end a segment): cut at the dips."""
    windows = int(25 * RATE / WINDOW)
    probs = np.full(windows, 0.9, dtype=np.float32)
    dips = [int(7 * RATE / WINDOW), int(16 * RATE / WINDOW)]
    probs[dips] = 0.6  # still speech, only less sure
    spans = speech_spans(np.zeros(windows * WINDOW, dtype=np.float32), probs=probs)
    assert [s.audio_start for s in spans[1:]] == [d * WINDOW for d in dips]
    assert all(s.end - s.start <= MAX_SEGMENT_S + 2 * PAD_S for s in spans)


def test_subtitle_files_number_their_cues_and_write_times_their_way():
    segments = (Segment(0.4261, 3.5, "Hello there."), Segment(3661.5, 3662.0, "An hour later."))
    assert srt(segments) == ("1\n00:00:00,426 --> 00:00:03,500\nHello there.\n\n"
                             "2\n01:01:01,500 --> 01:01:02,000\nAn hour later.\n\n")
    assert vtt(segments) == ("WEBVTT\n\n00:00:00.426 --> 00:00:03.500\nHello there.\n\n"
                             "01:01:01.500 --> 01:01:02.000\nAn hour later.\n\n")
    assert vtt(()) == "WEBVTT\n\n" and srt(()) == ""


def timed(text: str, start: float, seconds_a_word: float = 0.4) -> tuple[Word, ...]:
    """`text`'s words said one after another from `start`, each `seconds_a_word` long."""
    return tuple(Word(round(start + i * seconds_a_word, 3), round(start + (i + 1) * seconds_a_word, 3), " " + w)
                 for i, w in enumerate(text.split()))


def test_a_long_segment_with_word_times_becomes_readable_cues():
    """Two lines of at most 42 characters, at most 7 s, cut between words and after a sentence's end; each cue
    shown from its first word's start to its last word's end."""
    said = ("So the plan for next week is simple. We finish the report on Monday, send it to the client on "
            "Tuesday and then wait for their answer before we start anything else")
    words = timed(said, 3.0)
    pieces = cues((Segment(2.9, words[-1].end + 0.1, said, words),), "en")
    assert " ".join(p.text for p in pieces) == said
    assert all(len(p.text) <= LINE_CHARS * 2 and p.end - p.start <= MAX_CUE_S for p in pieces), pieces
    assert pieces[0].text == "So the plan for next week is simple."  # the sentence's end ends the cue
    assert [(p.start, p.end) for p in pieces] == [(p.words[0].start, p.words[-1].end) for p in pieces]
    assert all(len(line) <= LINE_CHARS for p in pieces for line in lines(p.text).split("\n"))
    assert all(len(lines(p.text).split("\n")) <= 2 for p in pieces)


def test_a_segment_without_word_times_stays_one_cue_its_text_wrapped():
    said = "The diffusion engine writes the whole text at once, so no word of it has a time of its own here."
    assert cues((Segment(1.0, 6.0, said),), "en") == (Segment(1.0, 6.0, said),)
    wrapped = lines(said).split("\n")
    assert len(wrapped) == 3 and all(len(line) <= LINE_CHARS for line in wrapped) and " ".join(wrapped) == said


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("Short enough.", "en", "Short enough."),
    ("Please remind me to call the dentist tomorrow morning.", "en",
     "Please remind me to call the\ndentist tomorrow morning."),  # two lines about as long as each other
    ("我们明天早上九点在公司门口见面", "zh", "我们明天早上九点在公司门口见面"),  # 15: one line of at most 16
    ("我们明天早上九点在公司门口见面然后一起去机场接客户", "zh",
     "我们明天早上九点在公司门\n口见面然后一起去机场接客户"),  # two even lines, cut between characters
    ("我们明天早上九点在公司门口见面然后一起去机场接客户再去酒店办理入住手续最后吃饭", "zh",
     "我们明天早上九点在公司门口见面然\n后一起去机场接客户再去酒店办理入\n住手续最后吃饭"),  # no cue this long from words
])
def test_subtitle_lines(text, language, expected):
    assert lines(text, language) == expected


def test_words_from_the_api_get_back_the_spaces_of_their_segments_text():
    """OpenAI's `words` carry no spaces: a subtitle made from them (`transcribe --subtitles --server`) takes each
    word's space from the segment's text, so a word the alignment split stays whole."""
    said = "He was not an ill-disposed young man."
    bare = [Word(float(i), i + 0.5, w) for i, w in enumerate(["He", "was", "not", "an", "ill", "-disposed", "young",
                                                               "man."])]
    words = spaced(bare, said)
    assert "".join(w.text for w in words).strip() == said
    assert [w.text for w in words][:2] == [" He", " was"] and words[5].text == "-disposed"
    assert "".join(w.text for w in spaced([Word(0.0, 0.5, "我们"), Word(0.5, 1.0, "明天")], "我们明天")) == " 我们明天"
