"""Word error rate of a saved micro checkpoint, transcribing through the production engine.

Needs jiwer (the `test` extra, which `packaging/setup.sh test` installs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine import EngineSpec, load_engine


@dataclass
class Evaluation:
    wer: float
    hypotheses: list[str]
    ms_per_clip: float


# How often a held-out word occurs in the training text: (label, most occurrences) of each bucket.
FREQUENCY_BUCKETS = (("0", 0), ("1-2", 2), ("3-10", 10), ("11-100", 100), (">100", None))


def _normaliser():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after Whisper's English normaliser (case, punctuation, spelling variants)."""
    import jiwer

    norm = _normaliser()
    return float(jiwer.wer([norm(r) for r in references], [norm(h) or "<empty>" for h in hypotheses]))


def accuracy_by_training_count(references: list[str], hypotheses: list[str], training_texts: list[str]) -> dict[str, dict]:
    """Of the reference words that occur 0, 1-2, 3-10, 11-100 or over 100 times in the training
    text, how many there are and which fraction the hypotheses got right (WER's word alignment).

    Why: a model that learns words from a few thousand sentences cannot write a word it never heard;
    this shows how much of the WER is such words and how much is words it heard often.
    """
    import jiwer

    norm = _normaliser()
    counts = Counter(word for text in training_texts for word in norm(text).split())
    totals: dict[str, list[int]] = {label: [0, 0] for label, _ in FREQUENCY_BUCKETS}
    refs = [norm(r).split() for r in references]
    output = jiwer.process_words([" ".join(r) for r in refs], [norm(h) or "<empty>" for h in hypotheses])
    for words, chunks in zip(refs, output.alignments):
        for chunk in chunks:
            for index in range(chunk.ref_start_idx, chunk.ref_end_idx):
                count = counts[words[index]]
                label = next(label for label, most in FREQUENCY_BUCKETS if most is None or count <= most)
                totals[label][0] += 1
                totals[label][1] += chunk.type == "equal"
    return {label: {"words": n, "correct": round(right / n, 4) if n else None} for label, (n, right) in totals.items()}


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
