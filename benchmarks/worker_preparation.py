"""What the engine's speed-up pieces cost in the worker, and what a dictation waits while they run.

    .venv/bin/python benchmarks/worker_preparation.py --json [--model ADAPTER] [--device cpu|cuda]
        [--no-compile] [--steps 4] [--threads 1]

A real worker (`WorkerPipe`) loads the diffusion model (default: the tiny random-weight checkpoint,
written to a temporary folder by `app.engine.diffusion.tiny`), with compile on unless
`--no-compile`. Reported:

- `load_ms`: the worker's `hello` after the load (the engine's load alone, no pieces);
- `pieces`: each piece's label and time, from the `preparing` frames, and `prepared_ms`, their sum;
- `first_dictation_ms`: a 3 s LibriVox clip sent right after the load, submit to result: it waits
  for the piece under way at most, and takes the eager path;
- `prepared_dictation_ms`: the same clip once every piece has run (the prepared path), best of 3;
- `same_text`: whether both gave the same text.

On a GPU the pieces are CUDA graph captures per prompt shape (and compiled layers with compile on);
on the CPU only compile gives pieces. A cold compile is slower than a warm one (Inductor caches its
kernels on disk): `--json` says which cache folder was used; remove it for a cold figure.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec  # noqa: E402
from app.worker.pipe import WorkerPipe  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.speech import clips  # noqa: E402

CLIP = "librivox-0880"


def tiny_model(folder: Path, threads: int) -> str:
    subprocess.run([sys.executable, "-m", "app.engine.diffusion.tiny", str(folder)], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return str(folder / "adapter" if (folder / "adapter").is_dir() else folder)


def measure(spec: EngineSpec, threads: int, steps: int) -> dict:
    audio = load_audio(next(c for c in clips(source="librivox") if c.id == CLIP).path)
    with WorkerPipe(env={"OMP_NUM_THREADS": str(threads)}) as worker:
        hello = worker.load(spec, timeout=1800)
        sent = time.monotonic()
        first = worker.transcribe(audio, language="en", steps=steps, timeout=1800)
        first_ms = (time.monotonic() - sent) * 1000.0
        time.sleep(2.0)  # a worker with pieces has announced the first by now (it runs them right after a job)
        final = worker.wait_prepared(timeout=3600) if worker.preparing else {"ms": 0.0}
        frames = list(worker.preparing)
        prepared = []
        for _ in range(3):
            sent = time.monotonic()
            again = worker.transcribe(audio, language="en", steps=steps, timeout=1800)
            prepared.append((time.monotonic() - sent) * 1000.0)
    # Each frame's ms is the sum of the pieces finished before it: a piece took the difference to the next.
    pieces = [{"label": f["label"], "ms": round(after["ms"] - f["ms"], 1)}
              for f, after in zip(frames, frames[1:]) if f["label"]]
    return {"load_ms": hello.get("load_ms"), "pieces": pieces, "prepared_ms": final["ms"],
            "error": final.get("error"), "first_dictation_ms": round(first_ms, 1),
            "prepared_dictation_ms": round(min(prepared), 1), "same_text": first["text"] == again["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a diffusion adapter folder (default: the tiny test checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp) / "tiny", args.threads)
        spec = EngineSpec(engine="diffusion", model=model, device=args.device, compile=not args.no_compile,
                          quantization="fp32" if args.device == "cpu" else "auto")
        result = measure(spec, args.threads, args.steps)
    result.update(model="tiny (random weights)" if not args.model else args.model, device=args.device,
                  compile=not args.no_compile, steps=args.steps, threads=args.threads,
                  inductor_cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR",
                                                f"{tempfile.gettempdir()}/torchinductor_{getpass.getuser()}"),
                  machine=machine_info())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for piece in result["pieces"]:
            print(f"{piece['ms']:9.0f} ms  {piece['label']}")
        print(f"load {result['load_ms']} ms; pieces {result['prepared_ms']:.0f} ms in all; first dictation "
              f"{result['first_dictation_ms']:.0f} ms, prepared {result['prepared_dictation_ms']:.0f} ms; "
              f"same text: {result['same_text']}")


if __name__ == "__main__":
    main()
