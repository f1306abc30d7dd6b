"""The text pipeline after the engine: the speaker's own words, fillers out, spoken punctuation in.

Pure Python (no torch, no Qt): it runs in the GUI process on the engine's raw transcript, so the
overlay, the paste and the history all get the same final text, and a shared remote engine never
sees the user's personal replacements. `finish()` runs the steps in a fixed order, each a pure
function with its own module and tests.
"""

from app.text.pipeline import TextOptions, finish, finish_transcript

__all__ = ["TextOptions", "finish", "finish_transcript"]
