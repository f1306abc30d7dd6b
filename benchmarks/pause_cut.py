"""Does cutting a recording at the pause cost words? The accuracy side of "Transcribe during pauses".

    .venv/bin/python benchmarks/pause_cut.py --json [--model base] [--threads 2] [--languages en,de,fr,es,hi,zh]

With early transcription on, a recording whose speaker stopped before the key was let go ends where
the speech check first heard the stop (`Recorder`, `early`): about 160 ms of silence after the last
speech-like window, instead of everything up to the release. A soft last consonant the check missed
would be cut off. This feeds each English clip of the test data (LibriVox, cards, goforward, espeak;
each followed by a second of silence) through the app's own recorder in 10 ms blocks, as the test
microphone does, with `early` on, takes the samples it hands over at the last pause (what it then
delivers), and transcribes them and the uncut recording (the clip plus 400 ms: the speaker let go
400 ms after stopping) with the app's Whisper engine on CTranslate2, language given. Reported: WER of
both over all clips (Whisper-normalised), the clips whose text differs, and where the cut fell
(`trailing_ms`: relative to the clip file's end; negative inside the file, whose own trailing
silence is part of it).

`--languages` runs the other languages' clips too (espeak-ng, eight a language; multilingual `base`
only): the error rate is WER, and CER for Hindi and Mandarin, whose words Whisper's normaliser does
not split reliably. Soft endings differ by language (French final consonants, Mandarin's tones).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.audio.recorder import Recorder, RecorderOptions  # noqa: E402
from app.audio.vad import VadModel  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import MODELS_DIR  # noqa: E402
from tests.speech import cer, clips, wer  # noqa: E402

RATE, BLOCK = 16_000, 160


class _Push:
    """The recorder's audio source, driven block by block from here."""

    rate, channels = RATE, 1

    def start(self, on_block, on_lost=None) -> None:
        self.on_block = on_block

    def stop(self) -> None:
        pass


def cut_at_pause(audio: np.ndarray, silence_s: float = 1.0) -> np.ndarray | None:
    """What the recorder hands over at the last pause of `audio` followed by silence (None: no pause heard)."""
    source, handed = _Push(), []
    recorder = Recorder(source, lambda result: None, RecorderOptions(skip_silence=True, early=True),
                        on_pause=lambda rec_id, samples: handed.append(samples))
    recorder.begin()
    padded = np.concatenate([audio, np.zeros(int(silence_s * RATE), np.float32)])
    for start in range(0, len(padded), BLOCK):
        source.on_block(padded[start:start + BLOCK, None])
    recorder.close()
    return handed[-1] if handed else None


def error_rate(language: str, refs: list[str], hyps: list[str]) -> float:
    return round((cer if language in ("hi", "zh") else wer)(refs, hyps, language), 4)


def run_language(engine, language: str) -> dict:
    rows, refs, full_hyps, cut_hyps = [], [], [], []
    for clip in [c for c in clips(language=language) if c.seconds <= 30]:
        audio = load_audio(clip.path)
        cut = cut_at_pause(audio)
        if cut is None:
            continue
        full = np.concatenate([audio, np.zeros(int(0.4 * RATE), np.float32)])
        full_text = engine.transcribe(full, language=language).text
        cut_text = engine.transcribe(cut, language=language).text
        refs.append(clip.text)
        full_hyps.append(full_text)
        cut_hyps.append(cut_text)
        rows.append({"clip": clip.id, "trailing_ms": round((len(cut) - len(audio)) / RATE * 1000),
                     "same_text": full_text == cut_text, "uncut": full_text, "cut": cut_text})
    return {
        "metric": "cer" if language in ("hi", "zh") else "wer",
        "clips": len(rows),
        "error_uncut": error_rate(language, refs, full_hyps),
        "error_cut": error_rate(language, refs, cut_hyps),
        "same_text": sum(r["same_text"] for r in rows),
        "trailing_ms_min": min(r["trailing_ms"] for r in rows),
        "trailing_ms_p50": statistics.median(r["trailing_ms"] for r in rows),
        "differing": [r for r in rows if not r["same_text"]],
    }


def run(model: str, threads: int, languages: list[str]) -> dict:
    VadModel.shared()
    engine = load_engine(EngineSpec(engine="faster-whisper", model=str(MODELS_DIR / f"whisper-{model}-ct2"),
                                    device="cpu"))
    per_language = {language: run_language(engine, language) for language in languages}
    english = per_language.get("en")
    flat = {"clips": english["clips"], "wer_uncut": english["error_uncut"], "wer_cut": english["error_cut"],
            "same_text": english["same_text"], "trailing_ms_min": english["trailing_ms_min"],
            "trailing_ms_p50": english["trailing_ms_p50"], "differing": english["differing"]} if english else {}
    return {"model": f"whisper-{model} (CTranslate2 int8)", **flat,  # English at the top, as earlier records
            "languages": per_language, "threads": threads, "machine": machine_info()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny.en", "base"), default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--languages", default="en", help="comma-separated: en,de,fr,es,hi,zh (others need base)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    if args.model == "tiny.en" and languages != ["en"]:
        parser.error("tiny.en is English only; use --model base for other languages")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    result = run(args.model, args.threads, languages)
    print(json.dumps(result, ensure_ascii=False) if args.json else json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
