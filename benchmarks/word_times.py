"""What timing each word costs Whisper on CTranslate2, and that it leaves the text alone.

    .venv/bin/python benchmarks/word_times.py --json [--model tiny.en|base] [--threads 2] [--rounds 3]

Each English clip of the test data up to 30 s is transcribed by the app's faster-whisper engine with and
without `words=True` (faster-whisper's alignment over CTranslate2's cross-attention, run after the
decoding: app/engine/whisper_ct2.py), the two interleaved, each going first in turn. Reported: the median
total time of each and their difference per clip, the median of each clip's extra, and how many texts
came out the same (all of them must: the words are timed after the text is decoded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import MODELS_DIR  # noqa: E402
from tests.speech import clips  # noqa: E402


def run(model: str, threads: int, rounds: int) -> dict:
    engine = load_engine(EngineSpec(engine="faster-whisper", model=str(MODELS_DIR / f"whisper-{model}-ct2"),
                                    device="cpu"))
    audios = [(c.id, load_audio(c.path)) for c in clips(language="en") if c.seconds <= 30]
    engine.transcribe(audios[0][1], language="en", words=True)  # warm-up
    plain_ms: dict[str, list[float]] = {}
    timed_ms: dict[str, list[float]] = {}
    same = 0
    for round_ in range(rounds):
        for n, (name, audio) in enumerate(audios):
            order = (False, True) if (n + round_) % 2 == 0 else (True, False)
            out = {}
            for words in order:
                out[words] = engine.transcribe(audio, language="en", words=words)
                (timed_ms if words else plain_ms).setdefault(name, []).append(out[words].timings["total"])
            same += round_ == 0 and out[True].text == out[False].text
    plain = [statistics.median(v) for v in plain_ms.values()]
    timed = [statistics.median(timed_ms[k]) for k in plain_ms]
    return {
        "model": f"whisper-{model} (CTranslate2 int8)",
        "clips": len(audios),
        "rounds": rounds,
        "total_ms_p50_without_words": round(statistics.median(plain), 1),
        "total_ms_p50_with_words": round(statistics.median(timed), 1),
        "extra_ms_p50": round(statistics.median(t - p for t, p in zip(timed, plain)), 1),
        "extra_ms_max": round(max(t - p for t, p in zip(timed, plain)), 1),
        "same_text": same,
        "threads": threads,
        "machine": machine_info(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny.en", "base"), default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    result = run(args.model, args.threads, args.rounds)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
