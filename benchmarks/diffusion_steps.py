"""Does diffusion decoding cost grow with steps and stay flat with transcript length? (CPU, tiny model)

    .venv/bin/python benchmarks/diffusion_steps.py --json

Loads a tiny random diffusion checkpoint (written to a temporary folder, canvas 256 like the real
model) through the production loader, and the test data's real Whisper tiny.en. Times, in one run:

- diffusion denoising (the sum of the per-step timings) for 1, 2, 4, 8, 16 and 32 steps, early exit
  off so N steps really run;
- diffusion (8 steps) and Whisper's autoregressive decode on a short clip (~1-2 s, a few words) and a
  long one (~28 s of speech joined from the test clips, one 30 s window, a long transcript).

Measurements are interleaved round-robin over `--rounds` rounds and the best (minimum) is kept, as
timeit does: on a shared machine noise only ever adds time, and interleaving slows every
configuration alike. One thread by default: on a busy 2-core machine two threads per process
oversubscribe the cores and the timings scatter by 5x. Needs `python -m tests.data.build`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from app.engine.base import SAMPLE_RATE  # noqa: E402
from app.engine.diffusion.tiny import write_tiny_checkpoint  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import WHISPER_TINY_EN  # noqa: E402
from tests.speech import clips  # noqa: E402

STEPS = (1, 2, 4, 8, 16, 32)
TRANSCRIPT_STEPS = 8
CANVAS = 256
LONG_SECONDS = 28.0


def short_and_long_audio() -> tuple[np.ndarray, np.ndarray]:
    """The shortest English clip, and English clips joined (0.3 s gaps) up to LONG_SECONDS."""
    english = sorted((c for c in clips(language="en") if c.seconds <= 10), key=lambda c: c.seconds)
    short = load_audio(english[0].path)
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for clip in reversed(english):
        audio = load_audio(clip.path)
        if sum(p.shape[0] for p in parts) + audio.shape[0] + gap.shape[0] <= LONG_SECONDS * SAMPLE_RATE:
            parts += [audio, gap]
    return short, np.concatenate(parts)


def run(threads: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    short, long = short_and_long_audio()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = write_tiny_checkpoint(Path(tmp), canvas_length=CANVAS)
        diffusion = load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32"))
    whisper = load_engine(EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu"))

    def denoising_ms(audio: np.ndarray, steps: int) -> Callable[[], tuple[float, int]]:
        def measure() -> tuple[float, int]:
            result = diffusion.transcribe(audio, language="en", steps=steps, early_exit=False)
            assert result.steps_used == steps
            return sum(result.timings["steps"]), CANVAS

        return measure

    def whisper_ms(audio: np.ndarray) -> Callable[[], tuple[float, int]]:
        def measure() -> tuple[float, int]:
            result = whisper.transcribe(audio, language="en")
            return float(result.timings["decode"]), result.steps_used

        return measure

    jobs = {f"steps_{n}": denoising_ms(short, n) for n in STEPS}
    jobs |= {
        "diffusion_short": denoising_ms(short, TRANSCRIPT_STEPS),
        "diffusion_long": denoising_ms(long, TRANSCRIPT_STEPS),
        "whisper_short": whisper_ms(short),
        "whisper_long": whisper_ms(long),
    }
    for measure in jobs.values():  # warm-up: first-call allocations, lazy imports
        measure()
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    tokens: dict[str, int] = {}
    for _ in range(rounds):
        for name, measure in jobs.items():
            ms, tokens[name] = measure()
            samples[name].append(ms)
    best = {name: round(min(values), 1) for name, values in samples.items()}
    by_steps = {str(n): best[f"steps_{n}"] for n in STEPS}
    return {
        "diffusion_ms_by_steps": by_steps,
        "diffusion_ms_short": best["diffusion_short"],
        "diffusion_ms_long": best["diffusion_long"],
        "whisper_ms_short": best["whisper_short"],
        "whisper_ms_long": best["whisper_long"],
        "whisper_tokens_short": tokens["whisper_short"],
        "whisper_tokens_long": tokens["whisper_long"],
        "diffusion_canvas_tokens": CANVAS,
        "diffusion_transcript_steps": TRANSCRIPT_STEPS,
        "audio_seconds_short": round(short.shape[0] / SAMPLE_RATE, 2),
        "audio_seconds_long": round(long.shape[0] / SAMPLE_RATE, 2),
        "ratio_16_to_4_steps": round(by_steps["16"] / by_steps["4"], 2),
        "ratio_long_to_short_diffusion": round(best["diffusion_long"] / best["diffusion_short"], 2),
        "ratio_long_to_short_whisper": round(best["whisper_long"] / best["whisper_short"], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (the minimum is kept)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    measured = run(args.threads, args.rounds)
    report = {
        "machine": machine_info(),  # after run(): it records the thread count in use
        "command": "python benchmarks/diffusion_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": args.threads,
        "rounds": args.rounds,
        **measured,
    }
    report["done_when"] = {
        "16_steps_at_least_2.5x_4_steps": report["ratio_16_to_4_steps"] >= 2.5,
        "long_at_most_1.3x_short_diffusion": report["ratio_long_to_short_diffusion"] <= 1.3,
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else f"16/4 steps: {report['ratio_16_to_4_steps']}x, long/short: {report['ratio_long_to_short_diffusion']}x")
    return report


if __name__ == "__main__":
    main()
