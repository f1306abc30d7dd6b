"""Word error rate of a saved micro checkpoint, transcribing through the production engine.

Needs jiwer (the `test` extra, which `packaging/setup.sh test` installs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine import EngineSpec, load_engine


@dataclass
class Evaluation:
    wer: float
    hypotheses: list[str]
    ms_per_clip: float


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after Whisper's English normaliser (case, punctuation, spelling variants)."""
    import jiwer
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    norm = EnglishTextNormalizer({})
    return float(jiwer.wer([norm(r) for r in references], [norm(h) or "<empty>" for h in hypotheses]))


def evaluate(adapter: Path, clips: list[np.ndarray], texts: list[str], *, steps: int = 8, encoder: Path | None = None) -> Evaluation:
    """Load `adapter` as the app would and transcribe `clips` (English, `steps` steps, early exit on)."""
    engine = load_engine(
        EngineSpec(engine="diffusion", model=str(adapter), encoder=str(encoder) if encoder else None, device="cpu")
    )
    hypotheses, total_ms = [], 0.0
    for audio in clips:
        result = engine.transcribe(audio, language="en", steps=steps)
        hypotheses.append(result.text)
        total_ms += float(result.timings["total"])
    return Evaluation(word_error_rate(texts, hypotheses), hypotheses, total_ms / max(len(clips), 1))
