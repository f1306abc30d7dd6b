"""Subtitle files from timed segments (`app.engine.segments`): SubRip (`srt`) and WebVTT (`vtt`)."""

from __future__ import annotations

from app.engine.segments import Segment


def srt(segments: tuple[Segment, ...]) -> str:
    """SubRip: numbered cues, times as HH:MM:SS,mmm."""
    return "".join(f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n\n"
                   for n, s in enumerate(segments, 1))


def vtt(segments: tuple[Segment, ...]) -> str:
    """WebVTT: the header, then cues with times as HH:MM:SS.mmm."""
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n\n" for s in segments)


def _clock(seconds: float, comma: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{comma}{ms % 1000:03d}"
