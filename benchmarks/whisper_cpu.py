"""The two Whisper engines on the CPU, interleaved clip by clip in one process, against plain faster-whisper.

    .venv/bin/python benchmarks/whisper_cpu.py --json [--threads 2] [--rounds 1]

For each of the test data's Whisper models (tiny.en and base, the same weights in both layouts), three
runners transcribe every English clip of 30 s or less (LibriVox read speech, the cards clips,
goforward and the espeak sentences), language given, greedy:

  transformers    the app's `whisper` engine (fp32)
  ctranslate2     the app's `faster-whisper` engine (int8)
  faster-whisper  plain `WhisperModel.transcribe(beam_size=1, temperature=0, without_timestamps=True)`
                  on the same CTranslate2 folder: what the app's wrapper must not be slower than

Two passes per model, each interleaved clip by clip (each runner going first in turn, so a burst of
load on this shared machine hits both alike, after one warm-up call each): transformers against
ctranslate2, then ctranslate2 against plain faster-whisper (see `compare` for why not all three at
once). Reported per runner: WER, real-time factor (audio s / wall s), p50 wall time of the clips
under 6 s; per model `speed_ratio_ct2_to_transformers` and `wrapper_cost` (app CT2 wall / plain
faster-whisper wall - 1);
and, for the 2-6 s clips, where the time goes in both engines (median features, encoder and decode
ms from the engines' own timings). Whisper encodes a fixed 30 s window whatever the clip's length, so
features + encoder is a floor no short dictation gets under; decoding is what grows with the words.
Last, the app's CTranslate2 engine with tiny.en on a ~5 s clip, `--threads` threads, ten times.
Build the test data first: `python -m tests.data.build`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import WHISPER_BASE, WHISPER_BASE_CT2, WHISPER_TINY_EN, WHISPER_TINY_EN_CT2  # noqa: E402
from tests.speech import clips, wer  # noqa: E402

MODELS = {"whisper-tiny.en": (WHISPER_TINY_EN, WHISPER_TINY_EN_CT2), "whisper-base": (WHISPER_BASE, WHISPER_BASE_CT2)}
SHORT_S = 6.0
SAMPLE_RATE = 16_000


class PlainFasterWhisper:
    """faster-whisper as its README uses it, with the app's decoding choices (greedy, no timestamps)."""

    def __init__(self, folder: Path, threads: int) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(self, audio, language: str):
        segments, _info = self.model.transcribe(audio, language=language, beam_size=1, temperature=0.0,
                                                without_timestamps=True)
        return "".join(s.text for s in segments).strip(), None


class AppEngine:
    def __init__(self, engine: str, folder: Path) -> None:
        self.engine = load_engine(EngineSpec(engine=engine, model=str(folder), device="cpu"))

    def transcribe(self, audio, language: str):
        result = self.engine.transcribe(audio, language=language)
        return result.text, result.timings


def interleaved(runners: dict, selection, audios, rounds: int) -> dict:
    """Time `runners` clip by clip, each going first in turn, after one warm-up call each."""
    for runner in runners.values():
        runner.transcribe(audios[0], "en")  # warm-up: first-call allocations
    names = list(runners)
    walls = {n: [0.0] * len(audios) for n in names}
    texts = {n: [""] * len(audios) for n in names}
    timings = {n: [] for n in names}
    for r in range(rounds):
        for i, audio in enumerate(audios):
            for k in range(len(names)):
                n = names[(i + r + k) % len(names)]
                t0 = time.perf_counter()
                texts[n][i], timing = runners[n].transcribe(audio, "en")
                walls[n][i] += (time.perf_counter() - t0) / rounds
                if timing and 2.0 <= selection[i].seconds <= SHORT_S:
                    timings[n].append(timing)
    audio_s = sum(a.shape[0] for a in audios) / SAMPLE_RATE
    refs = [c.text for c in selection]
    report = {}
    for n in names:
        short = [w for w, c in zip(walls[n], selection) if c.seconds < SHORT_S]
        report[n] = {
            "wer": round(wer(refs, texts[n]), 4),
            "wall_s": round(sum(walls[n]), 2),
            "rtf": round(audio_s / sum(walls[n]), 2),
            "p50_short_ms": round(1000 * statistics.median(short), 1),
            "short_clips": len(short),
        }
        if timings[n]:
            report[n]["breakdown_2_6s_ms"] = {
                part: round(statistics.median(t[part] for t in timings[n]), 1) for part in ("features", "encoder", "decode", "total")
            }
    return report


def compare(hf_folder: Path, ct2_folder: Path, selection, threads: int, rounds: int) -> dict:
    """Two interleaved passes: the app's two engines, then the app's CTranslate2 engine and plain faster-whisper.

    Separate passes because torch and CTranslate2 each bring an OpenMP runtime whose threads keep
    spinning for a while after a call: in a three-way rotation the runner that most often follows
    transformers pays for it, which would be charged to the wrapper. In the app one engine runs per worker.
    """
    audios = [load_audio(c.path) for c in selection]
    ct2 = AppEngine("faster-whisper", ct2_folder)
    engines = interleaved({"transformers": AppEngine("whisper", hf_folder), "ctranslate2": ct2}, selection, audios, rounds)
    wrapper = interleaved({"ctranslate2": ct2, "faster-whisper": PlainFasterWhisper(ct2_folder, threads)},
                          selection, audios, rounds)
    return {
        "clips": len(audios),
        "audio_s": round(sum(a.shape[0] for a in audios) / SAMPLE_RATE, 2),
        "engines": engines,
        "speed_ratio_ct2_to_transformers": round(engines["ctranslate2"]["rtf"] / engines["transformers"]["rtf"], 2),
        "wrapper": wrapper,
        "wrapper_cost": round(wrapper["ctranslate2"]["wall_s"] / wrapper["faster-whisper"]["wall_s"] - 1, 3),
    }


def tiny_five_seconds(selection, threads: int, repeats: int = 10) -> dict:
    clip = min(selection, key=lambda c: abs(c.seconds - 5.0))
    engine = load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu"))
    audio = load_audio(clip.path)
    engine.transcribe(audio, language="en")
    totals = [engine.transcribe(audio, language="en").timings["total"] for _ in range(repeats)]
    return {"clip": clip.id, "seconds": clip.seconds, "threads": threads, "repeats": repeats,
            "p50_engine_ms": round(statistics.median(totals), 1), "max_engine_ms": round(max(totals), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="timed passes over the clips (times are averaged)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the CTranslate2 engine follows torch's thread count
    selection = [c for c in clips(language="en") if c.source in ("librivox", "cards", "goforward", "espeak") and c.seconds <= 30]
    load_before = os.getloadavg()
    report = {
        "machine": machine_info(),
        "versions": {p: importlib.metadata.version(p) for p in ("ctranslate2", "faster-whisper", "transformers", "torch")},
        "command": f"python benchmarks/whisper_cpu.py --json --threads {args.threads} --rounds {args.rounds}",
        "threads": args.threads,
        "models": {name: compare(hf, ct2, selection, args.threads, args.rounds) for name, (hf, ct2) in MODELS.items()},
        "tiny_en_5s": tiny_five_seconds(selection, args.threads),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, m in report["models"].items():
            for runner, r in m["engines"].items():
                print(f"{name} {runner}: RTF {r['rtf']}, WER {r['wer']:.1%}, p50 <{SHORT_S:g} s {r['p50_short_ms']} ms")
            print(f"{name}: CTranslate2 / transformers speed {m['speed_ratio_ct2_to_transformers']}x, "
                  f"wrapper cost {m['wrapper_cost']:+.1%} against plain faster-whisper")
        t = report["tiny_en_5s"]
        print(f"tiny.en, {t['seconds']} s clip, {t['threads']} threads: p50 {t['p50_engine_ms']} ms engine time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
