"""Train the micro diffusion ASR model on a CPU and save it in the adapter layout the app loads.

    python -m app.training.micro [--out resources/models/diffusion-micro] [--listen-steps 1000] [--steps 2400]
    python -m app.training.micro --ablation-steps 600    # the CTC ablation, into OUT/adapter/ablation.json
    python -m app.training.micro --canvas plain          # the transcript from the canvas's first position

Stages, each printed as it runs:
1. sentences from Debian's fortunes, split into held-out and training sentences (never both);
2. espeak-ng speech of each sentence in a seeded random voice, and the frozen Whisper tiny.en
   encoder's frames for it, cached under --work (dataset.py);
3. a BPE tokenizer on the training text, then the model (model.py): first --listen-steps of CTC
   alone, which teach the projector to put each word's embedding where its sound is, at an eighth
   of the cost per clip of a full step; then --steps of the three losses together, the diffusion
   target being the aligned canvas (each token at its audio slot) unless --canvas plain;
4. OUT/backbone (DiffusionGemma + tokenizer) and OUT/adapter (asr_config.json, projector, LoRA,
   heldout.json with the held-out sentences and their voice seeds), then the held-out WER at 8 steps
   through the production engine, written to OUT/adapter/training.json.

Deterministic for a seed at a given thread count: data, batch order, noise and initial weights are
all drawn from seeded generators. Needs espeak-ng, the `fortunes` packages, the test data's Whisper
tiny.en (`python -m tests.data.build`) and jiwer (`packaging/setup.sh test` installs all of them).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from app.engine.diffusion.saving import write_adapter
from app.training import corpus, dataset, model, synth
from app.training.evaluate import evaluate

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "resources" / "models" / "diffusion-micro"
DEFAULT_ENCODER = REPO / "tests" / ".data" / "models" / "whisper-tiny.en"
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffusion-dictate" / "micro-training"
RECORD = "training.json"
ABLATION_RECORD = "ablation.json"
HELDOUT_FILE = "heldout.json"
HELDOUT, TRAIN_CLIPS, EVAL_CLIPS = 200, 4000, 100
BATCH = 16
LISTEN_BATCH = 32
LISTEN_STEPS, JOINT_STEPS = 1000, 2400
# Time of one CTC-only step (32 clips) over one joint step (16 clips), measured on the 2-core CPU.
LISTEN_STEP_COST = 0.27
LISTENED_LR = 0.25
LEARNING_RATE = 2e-3
LOSS_WEIGHTS = {"diffusion": 1.0, "ar": 0.5, "ctc": 1.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the micro diffusion ASR model (CPU).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint folder (backbone/ + adapter/)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache for speech features")
    parser.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER, help="Whisper tiny.en folder")
    parser.add_argument("--listen-steps", type=int, default=LISTEN_STEPS, help="CTC-only steps before the joint stage")
    parser.add_argument("--steps", type=int, default=JOINT_STEPS, help="joint steps (three losses)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the record holds the value used)")
    parser.add_argument("--train-clips", type=int, default=TRAIN_CLIPS)
    parser.add_argument("--eval-clips", type=int, default=EVAL_CLIPS, help="held-out clips for the WER")
    parser.add_argument("--resume", type=Path, help="continue training this checkpoint folder for --steps more steps")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE, help="peak learning rate")
    parser.add_argument("--canvas", choices=("plain", "aligned"), default="aligned",
                        help="diffusion target: each token at the audio slot where the CTC head hears it (aligned; "
                             "see model.MicroASR.clean_canvas), or the transcript from the first position (plain)")
    parser.add_argument("--ablation-steps", type=int, default=0,
                        help="only run the CTC ablation: this many joint steps, after --listen-steps with CTC; "
                             "without CTC the same time goes to more joint steps, on the plain canvas (only the "
                             "CTC head can place an aligned canvas's tokens)")
    args = parser.parse_args(argv)
    aligned = args.canvas == "aligned"
    torch.set_num_threads(args.threads)

    train_texts, heldout_texts = split_sentences(args.train_clips)
    log(f"fortune sentences: {len(train_texts)} for training, {HELDOUT} held out")
    data_start = time.perf_counter()
    train = dataset.build(args.work / "train", train_texts, list(range(HELDOUT, HELDOUT + len(train_texts))), args.encoder, log)
    data_minutes = round((time.perf_counter() - data_start) / 60, 1)  # ~0 when the cache was already there
    tokenizer = model.train_tokenizer(train_texts)
    eval_texts = heldout_texts[: args.eval_clips]
    eval_clips = [synth.render(t, synth.draw_voice(i), i) for i, t in enumerate(eval_texts)]

    if args.ablation_steps:
        results = {}
        for use_ctc in (True, False):
            name = "with_ctc" if use_ctc else "without_ctc"
            # Equal budgets: the CTC-only listening steps' time goes to joint steps in the run without CTC.
            steps = args.ablation_steps if use_ctc else args.ablation_steps + round(args.listen_steps * LISTEN_STEP_COST)
            log(f"ablation: {name}, {steps} joint steps")
            trained, history = train_model(tokenizer, train, steps, args.seed, use_ctc, listen_steps=args.listen_steps,
                                           aligned_canvas=aligned and use_ctc)
            folder = args.work / f"ablation-{name}"
            save(trained, folder, args.encoder)
            result = evaluate(folder / "adapter", eval_clips, eval_texts, steps=8)
            results[f"wer_{name}"] = round(result.wer, 4)
            results[f"final_losses_{name}"] = history[-1]
            log(f"ablation: WER {name} at 8 steps = {result.wer:.1%}")
        record = {**results, "canvas_with_ctc": args.canvas, "canvas_without_ctc": "plain",
                  "steps": args.ablation_steps, "listen_steps": args.listen_steps, "listen_step_cost": LISTEN_STEP_COST, "batch": BATCH, "listen_batch": LISTEN_BATCH, "seed": args.seed, "threads": args.threads,
                  "eval_clips": len(eval_texts), "command": _command(argv)}
        update_record(args.out / "adapter", record, ABLATION_RECORD)
        return 0

    start = time.perf_counter()
    previous = None
    if args.resume:
        net = model.MicroASR.from_checkpoint(args.resume, train.frames.shape[-1], aligned_canvas=aligned)
        previous = json.loads((args.resume / "adapter" / RECORD).read_text(encoding="utf-8"))
        log(f"continuing {args.resume} (trained {previous.get('steps')} steps) with a fresh optimizer")
    else:
        net = None
    listen_steps = 0 if args.resume else args.listen_steps
    trained, history = train_model(tokenizer, train, args.steps, args.seed, use_ctc=True, net=net, lr=args.lr,
                                   listen_steps=listen_steps, aligned_canvas=aligned)
    train_minutes = (time.perf_counter() - start) / 60
    save(trained, args.out, args.encoder)
    write_heldout(args.out / "adapter", heldout_texts)
    result = evaluate(args.out / "adapter", eval_clips, eval_texts, steps=8)
    log(f"held-out WER at 8 steps: {result.wer:.1%} over {len(eval_texts)} clips ({result.ms_per_clip:.0f} ms per clip)")
    for ref, hyp in list(zip(eval_texts, result.hypotheses))[:5]:
        log(f"  ref: {ref}\n  hyp: {hyp}")
    update_record(args.out / "adapter", {
        "command": _command(argv),
        "seed": args.seed, "steps": args.steps, "batch": BATCH, "listen_steps": listen_steps,
        "listen_batch": LISTEN_BATCH, "threads": args.threads, "data_minutes": data_minutes,
        "train_clips": len(train), "heldout_sentences": HELDOUT, "eval_clips": len(eval_texts),
        "loss_weights": LOSS_WEIGHTS, "train_minutes": round(train_minutes, 1),
        "wer_heldout_8_steps": round(result.wer, 4), "history": history,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "lr": args.lr, "canvas": args.canvas, "continues": previous,
    })
    return 0


def split_sentences(train_clips: int) -> tuple[list[str], list[str]]:
    """(training, held out): the first `train_clips` sentences after the `HELDOUT` held-out ones.
    The benchmark uses it too, to count how often training heard each test word."""
    train, heldout = corpus.split(corpus.sentences(), HELDOUT)
    return train[:train_clips], heldout


def train_model(tokenizer, train: dataset.FrameCache, steps: int, seed: int, use_ctc: bool,
                net: model.MicroASR | None = None, lr: float = LEARNING_RATE, listen_steps: int = 0,
                aligned_canvas: bool = False):
    """`listen_steps` of CTC alone (when `use_ctc`), then `steps` of the three losses, each stage
    with AdamW, warm-up and cosine decay; returns the model and a loss record every 50 steps."""
    torch.manual_seed(seed)
    net = (net or model.MicroASR(tokenizer, train.frames.shape[-1], aligned_canvas=aligned_canvas)).train()
    targets = net.encode_texts(train.texts)
    usable = [i for i, t in enumerate(targets) if 0 < len(t) < net.canvas_length]
    batches = _Batches(train, targets, usable, seed)
    history: list[dict] = []
    if use_ctc and listen_steps:
        log(f"listening: {listen_steps} steps of CTC alone, {LISTEN_BATCH} clips each")
        _run_stage([{"params": net.ctc_parameters(), "lr": lr}], listen_steps, LISTEN_BATCH, batches, lambda *b: {"ctc": net.ctc_loss(*b)},
                   {"ctc": 1.0}, history, "listen")
    log(f"joint: {steps} steps of the three losses, {BATCH} clips each" if use_ctc else f"joint: {steps} steps without CTC")
    listened = {id(p) for p in net.ctc_parameters()} if use_ctc and listen_steps else set()
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in listened]
    # What listening learnt moves slower, so the backbone's first noisy gradients do not undo it.
    groups = [{"params": rest, "lr": lr}, {"params": [p for p in net.parameters() if id(p) in listened], "lr": lr * LISTENED_LR}]
    _run_stage(groups, steps, BATCH, batches, lambda *b: net.losses(*b, use_ctc=use_ctc), LOSS_WEIGHTS, history, "joint")
    return net.eval(), history


class _Batches:
    """Seeded epochs over the usable clips; `take(n)` gives the next n as (frames cut after the
    longest clip's speech, speech frames per clip, token ids)."""

    def __init__(self, train: dataset.FrameCache, targets: list[list[int]], usable: list[int], seed: int) -> None:
        self.train, self.targets, self.usable = train, targets, usable
        self.order = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []

    def take(self, size: int) -> tuple[torch.Tensor, list[int], list[list[int]]]:
        while len(self.queue) < size:
            self.queue += [self.usable[i] for i in torch.randperm(len(self.usable), generator=self.order).tolist()]
        batch, self.queue = sorted(self.queue[:size]), self.queue[size:]
        counts = [self.train.frame_counts[i] for i in batch]
        frames = torch.from_numpy(np.asarray(self.train.frames[batch, : max(counts)], dtype=np.float32))
        return frames, counts, [self.targets[i] for i in batch]


def _run_stage(groups: list[dict], steps: int, batch_size: int, batches: _Batches, compute, weights: dict[str, float],
               history: list[dict], stage: str) -> None:
    """AdamW over parameter `groups` (each with its peak lr), linear warm-up then cosine decay to 10%."""
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = min(150, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    running, start = {}, time.perf_counter()
    for step in range(1, steps + 1):
        losses = compute(*batches.take(batch_size))
        total = sum(weights[k] * v for k, v in losses.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % 50 == 0 or step == steps:
            count = 50 if step % 50 == 0 else step % 50
            means = {k: round(v / count, 4) for k, v in running.items()}
            history.append({"stage": stage, "step": step, **means})
            running = {}
            elapsed = time.perf_counter() - start
            eta = elapsed / step * (steps - step)
            log(f"  {stage} {step}/{steps}  " + "  ".join(f"{k} {v:.3f}" for k, v in means.items())
                + f"  lr {schedule.get_last_lr()[0]:.2e}  {elapsed / 60:.1f} min, {eta / 60:.1f} min left")


def save(net: model.MicroASR, out: Path, encoder: Path) -> None:
    """OUT/backbone: the trained DiffusionGemma without LoRA + tokenizer. OUT/adapter: the rest."""
    backbone_dir, adapter_dir = out / "backbone", out / "adapter"
    write_adapter(
        adapter_dir,
        lora_model=net.peft,
        projector=net.projector,
        projector_config=model.PROJECTOR,
        encoder=os.path.relpath(encoder.resolve(), adapter_dir.resolve()),
        audio_token_id=net.audio_token_id,
        trim_audio=True,  # trained on the speech frames only (model.MicroASR.losses)
        languages=["en"],  # trained on English speech only (synth.py)
        **({"max_chunk_seconds": net.longest_chunk_seconds()} if net.aligned_canvas else {}),
    )
    plain = copy.deepcopy(net.peft).unload()
    plain.save_pretrained(backbone_dir)
    net.tokenizer.save_pretrained(backbone_dir)


def write_heldout(adapter_dir: Path, texts: list[str]) -> None:
    """The held-out sentences and the seed of each one's voice: tests and benchmarks rebuild the
    same speech with `synth.render(text, synth.draw_voice(seed), seed)`, without the fortunes."""
    rows = [{"text": text, "seed": seed} for seed, text in enumerate(texts)]
    (adapter_dir / HELDOUT_FILE).write_text(json.dumps(rows, indent=0) + "\n", encoding="utf-8")


def load_heldout(adapter_dir: Path) -> list[tuple[str, np.ndarray]]:
    """(sentence, speech) for every held-out sentence recorded next to a checkpoint."""
    rows = json.loads((adapter_dir / HELDOUT_FILE).read_text(encoding="utf-8"))
    return [(r["text"], synth.render(r["text"], synth.draw_voice(r["seed"]), r["seed"])) for r in rows]


def update_record(adapter_dir: Path, values: dict, name: str = RECORD) -> None:
    adapter_dir.mkdir(parents=True, exist_ok=True)
    path = adapter_dir / name
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record.update(values)
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _command(argv: list[str] | None) -> str:
    return "python -m app.training.micro " + " ".join(argv if argv is not None else sys.argv[1:])


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
