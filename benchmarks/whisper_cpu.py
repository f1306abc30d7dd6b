"""Real-time factor of the Whisper engine on this machine (audio seconds / wall seconds).

    .venv/bin/python benchmarks/whisper_cpu.py --json

Uses the test data's real Whisper tiny.en and base weights and its English speech (LibriVox read
speech, the cards clips and espeak sentences); build it first with `python -m tests.data.build`.
Each model transcribes every clip once to warm up, then the timed pass runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import WHISPER_BASE, WHISPER_TINY_EN  # noqa: E402
from tests.speech import clips, wer  # noqa: E402


def measure(model_dir: Path, selection, threads: int) -> dict:
    torch.set_num_threads(threads)
    engine = load_engine(EngineSpec(engine="whisper", model=str(model_dir), device="cpu"))
    audios = [load_audio(c.path) for c in selection]
    engine.transcribe(audios[0], language="en")  # warm-up (first-call allocations)
    texts, wall = [], 0.0
    for audio in audios:
        t0 = time.perf_counter()
        texts.append(engine.transcribe(audio, language="en").text)
        wall += time.perf_counter() - t0
    audio_s = sum(a.shape[0] for a in audios) / 16_000
    return {
        "clips": len(audios),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "rtf": round(audio_s / wall, 2),
        "wer": round(wer([c.text for c in selection], texts), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    selection = [c for c in clips(language="en") if c.source in ("librivox", "cards", "goforward", "espeak") and c.seconds <= 30]
    report = {
        "machine": machine_info(),
        "command": "python benchmarks/whisper_cpu.py --json",
        "threads": args.threads,
        "models": {
            "whisper-tiny.en": measure(WHISPER_TINY_EN, selection, args.threads),
            "whisper-base": measure(WHISPER_BASE, selection, args.threads),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, r in report["models"].items():
            print(f"{name}: real-time factor {r['rtf']} ({r['audio_s']} s audio in {r['wall_s']} s), WER {r['wer']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
