"""Helpers shared by tests and benchmarks: the test-data manifest and Whisper-style WER."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jiwer

from tests.data import DATA_DIR, MANIFEST


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    text: str
    language: str | None  # None for silence and noise
    source: str
    seconds: float


@lru_cache(maxsize=1)
def manifest() -> dict:
    if not MANIFEST.is_file():
        raise RuntimeError(f"{MANIFEST} is missing: run `python -m tests.data.build` (the test command does).")
    return json.loads(MANIFEST.read_text())


def clips(*, source: str | None = None, language: str | None = None) -> list[Clip]:
    """Clips of the manifest, filtered by source (librivox, cards, espeak, ...) and language."""
    out = []
    for c in manifest()["clips"]:
        if (source is None or c["source"] == source) and (language is None or c["language"] == language):
            out.append(Clip(c["id"], DATA_DIR / c["path"], c["text"], c["language"], c["source"], float(c["seconds"])))
    return out


@lru_cache(maxsize=1)
def _normalizers():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer({}), BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    """Whisper's own text normalisation (English rules for English, the basic one otherwise)."""
    english, basic = _normalizers()
    return (english if language == "en" else basic)(text)


def wer(references: list[str], hypotheses: list[str], language: str = "en") -> float:
    """Corpus word error rate after Whisper normalisation."""
    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    return jiwer.wer(refs, hyps)


def cer(references: list[str], hypotheses: list[str], language: str) -> float:
    """Corpus character error rate (for Hindi and Mandarin), spaces removed."""
    refs = [normalize(r, language).replace(" ", "") for r in references]
    hyps = [normalize(h, language).replace(" ", "") for h in hypotheses]
    return jiwer.cer(refs, hyps)
