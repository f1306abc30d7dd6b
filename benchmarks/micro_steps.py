"""WER and decode time of the micro diffusion model at 1-32 denoising steps, and the CTC ablation.

    .venv/bin/python benchmarks/micro_steps.py --json [--clips 50] [--threads 1] [--steps 8] [--compile] [--quantization int4]

Loads resources/models/diffusion-micro (the committed checkpoint) through the production engine,
with the test data's Whisper tiny.en as its encoder (`python -m tests.data.build`), and transcribes:

- held-out espeak English: sentences never seen in training, rebuilt from heldout.json (the first
  100 served as the training script's validation set, so these are sentences 100 onwards);
- the real LibriVox recordings of the test data (human speech: far from the espeak training data).

For each step count it runs exactly that many steps (early exit off) and reports the corpus WER
(`wer_by_steps`, `wer_real_by_steps`) and the mean milliseconds per held-out clip spent in
denoising, prefill included (`ms_by_steps`). At 8 steps it also splits the held-out words by how
often each occurs in the training sentences (`accuracy_by_training_count`: words, fraction right),
which needs Debian's fortunes (the training text). The CTC ablation is not re-run here (it costs two
trainings): it is read from ablation.json next to the model, where `python -m app.training.micro
--ablation-steps N` wrote it (`wer_with_ctc`, `wer_without_ctc`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from app.engine.base import prepare_all  # noqa: E402
from app.training.evaluate import accuracy_by_training_count, word_error_rate  # noqa: E402
from app.training.micro import ABLATION_RECORD, DEFAULT_OUT, EVAL_CLIPS, RECORD, load_heldout, split_sentences  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.speech import clips  # noqa: E402

STEPS = (1, 2, 4, 8, 16, 32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT / "adapter")
    parser.add_argument("--clips", type=int, default=50, help="held-out espeak clips (from sentence 100 on)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="step counts (default %(default)s)")
    parser.add_argument("--compile", action="store_true", help="decoder layers compiled by Inductor (prepared before timing)")
    parser.add_argument("--quantization", default="auto", help="fp32 (auto on the CPU), int8, int4, ...")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    heldout = load_heldout(args.model)[EVAL_CLIPS : EVAL_CLIPS + args.clips]
    real = [(c.text, load_audio(c.path)) for c in clips(source="librivox")]
    engine = load_engine(EngineSpec(engine="diffusion", model=str(args.model), device="cpu", compile=args.compile,
                                    quantization=args.quantization))
    prepared_s = prepare_all(engine)

    result: dict = {"model": str(args.model), "quantization": engine.quantization, "heldout_clips": len(heldout), "real_clips": len(real),
                    "fast_path": engine.denoiser.fast_path, "prepare_s": round(prepared_s, 2)}
    result["wer_by_steps"], result["ms_by_steps"], result["wer_real_by_steps"] = {}, {}, {}
    hypotheses: dict[int, list[str]] = {}
    for steps in (int(n) for n in args.steps.split(",")):
        texts, ms = [], []
        for _, audio in heldout:
            out = engine.transcribe(audio, language="en", steps=steps, early_exit=False)
            texts.append(out.text)
            ms.append(out.timings["prefill"] + sum(out.timings["steps"]))
        real_texts = [engine.transcribe(a, language="en", steps=steps, early_exit=False).text for _, a in real]
        result["wer_by_steps"][steps] = round(word_error_rate([t for t, _ in heldout], texts), 4)
        result["ms_by_steps"][steps] = round(sum(ms) / len(ms), 1)
        result["wer_real_by_steps"][steps] = round(word_error_rate([t for t, _ in real], real_texts), 4)
        hypotheses[steps] = texts
        if not args.json:
            print(f"{steps:>2} steps: held-out WER {result['wer_by_steps'][steps]:.1%}, "
                  f"{result['ms_by_steps'][steps]:.0f} ms/clip; LibriVox WER {result['wer_real_by_steps'][steps]:.1%}")

    record = json.loads((args.model / RECORD).read_text(encoding="utf-8"))
    training_texts, _ = split_sentences(record["train_clips"])
    if 8 in hypotheses:
        result["accuracy_by_training_count"] = accuracy_by_training_count([t for t, _ in heldout], hypotheses[8], training_texts)
    ablation_file = args.model / ABLATION_RECORD
    ablation = json.loads(ablation_file.read_text(encoding="utf-8")) if ablation_file.is_file() else {}
    result["wer_with_ctc"] = ablation.get("wer_with_ctc")
    result["wer_without_ctc"] = ablation.get("wer_without_ctc")
    result["ablation"] = ablation
    result["training"] = {k: record.get(k) for k in ("command", "listen_steps", "steps", "batch", "threads", "train_minutes",
                                                     "train_clips", "wer_heldout_8_steps", "machine")}
    result["machine"] = machine_info()
    print(json.dumps(result, indent=2) if args.json else
          f"CTC ablation ({ablation.get('steps')} joint steps, equal time): WER with CTC {result['wer_with_ctc']}, "
          f"without {result['wer_without_ctc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
