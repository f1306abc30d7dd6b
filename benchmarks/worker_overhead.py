"""What the worker process costs, and whether it loses dictations when it dies.

    .venv/bin/python benchmarks/worker_overhead.py --json [--runs 100] [--jobs 200] [--threads 1]

Both parts drive the real Qt `WorkerClient` (the GUI's path) with Whisper tiny.en from the test data
(`python -m tests.data.build` first) and LibriVox speech.

1. Overhead: a 5.3 s clip, one job at a time. Per job, the round trip the client sees (submit ->
   result signal) minus the transcription time the engine measured inside the worker (`timings.total`),
   split into transport (round trip - worker_ms) and the worker's own bookkeeping (worker_ms - total).
   p50 and p95 over `--runs` jobs, after two warm-up jobs.
2. Soak: `--jobs` jobs over the five LibriVox clips, two in flight at a time; for about one job in ten
   the worker is killed with SIGKILL at a random moment while that job is in flight. Every job must end
   with the text a clean run of its clip gave: `lost` counts jobs that failed or never came back,
   `wrong_text` jobs whose text differs.

`--threads` is the worker's torch thread count (OMP_NUM_THREADS): on a shared machine one thread per
process is fastest, and the overhead does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.engine import EngineSpec  # noqa: E402
from app.worker.client import WorkerClient  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import WHISPER_TINY_EN  # noqa: E402
from tests.speech import clips  # noqa: E402

OVERHEAD_CLIP = "librivox-0890"
KILL_EVERY = 10
IN_FLIGHT = 2


class Bench:
    """A client plus a record of what it emitted, with a way to wait for it."""

    def __init__(self, threads: int) -> None:
        self.app = QCoreApplication.instance() or QCoreApplication([])
        spec = EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu")
        self.client = WorkerClient(spec, env={"OMP_NUM_THREADS": str(threads)})
        self.done_at: dict[str, float] = {}
        self.results: dict[str, dict] = {}
        self.failures: dict[str, tuple[str, str]] = {}
        self.restarts = 0
        self.client.result.connect(self._on_result)
        self.client.failed.connect(self._on_failed)
        self.client.state_changed.connect(lambda s: setattr(self, "restarts", self.restarts + (s == "restarting")))

    def _on_result(self, job_id: str, transcript: dict) -> None:
        self.done_at[job_id] = time.perf_counter()
        self.results[job_id] = transcript

    def _on_failed(self, job_id: str, code: str, message: str) -> None:
        self.done_at[job_id] = time.perf_counter()
        self.failures[job_id] = (code, message)

    def wait(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
        return True

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """One job, alone: its id and the round trip in ms."""
        start = time.perf_counter()
        job = self.client.submit(audio, language="en")
        if not self.wait(lambda: job in self.done_at, 600):
            raise TimeoutError(f"job {job} did not come back in 10 minutes")
        if job in self.failures:
            raise RuntimeError(f"job {job} failed: {self.failures[job]}")
        return job, (self.done_at[job] - start) * 1000.0


def _percentiles(values: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(values, 50)), 2), round(float(np.percentile(values, 95)), 2)


def measure_overhead(bench: Bench, audio: np.ndarray, runs: int) -> dict:
    for _ in range(2):
        bench.transcribe(audio)
    overhead, transport, bookkeeping, transcribe = [], [], [], []
    for _ in range(runs):
        job, rtt = bench.transcribe(audio)
        t = bench.results[job]
        overhead.append(rtt - t["timings"]["total"])
        transport.append(rtt - t["worker_ms"])
        bookkeeping.append(t["worker_ms"] - t["timings"]["total"])
        transcribe.append(t["timings"]["total"])
    p50, p95 = _percentiles(overhead)
    return {
        "overhead_ms_p50": p50,
        "overhead_ms_p95": p95,
        "overhead_ms_max": round(max(overhead), 2),
        "transport_ms_p50": _percentiles(transport)[0],
        "worker_bookkeeping_ms_p50": _percentiles(bookkeeping)[0],
        "transcribe_ms_p50": _percentiles(transcribe)[0],
    }


def soak(bench: Bench, selection: list, references: dict[str, str], jobs: int, job_ms: float, seed: int) -> dict:
    rng = random.Random(seed)
    audios = {c.id: load_audio(c.path) for c in selection}
    clip_of: dict[str, str] = {}
    kills = 0

    def kill() -> None:
        nonlocal kills
        pid = bench.client.pid
        if pid is not None and bench.client.state in ("busy", "loading", "starting"):
            os.kill(pid, signal.SIGKILL)
            kills += 1

    started = time.monotonic()
    submitted = 0
    while submitted < jobs:
        in_flight = [j for j in clip_of if j not in bench.done_at]
        if len(in_flight) >= IN_FLIGHT:
            if not bench.wait(lambda: any(j in bench.done_at for j in in_flight), 600):
                break
            continue
        clip = selection[submitted % len(selection)]
        job = bench.client.submit(audios[clip.id], language="en")
        clip_of[job] = clip.id
        submitted += 1
        if rng.randrange(KILL_EVERY) == 0:
            QTimer.singleShot(int(rng.uniform(0, IN_FLIGHT * job_ms)), kill)
    bench.wait(lambda: all(j in bench.done_at for j in clip_of), 600)
    lost = sum(1 for j in clip_of if j not in bench.results)
    wrong = sum(1 for j, c in clip_of.items() if j in bench.results and bench.results[j]["text"] != references[c])
    return {
        "jobs": len(clip_of),
        "kills": kills,
        "lost": lost,
        "wrong_text": wrong,
        "restarts": bench.restarts,
        "failures": sorted({code for code, _ in bench.failures.values()}),
        "soak_wall_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=100, help="timed jobs for the overhead (default 100)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the kill soak (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the worker (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kills")
    args = parser.parse_args()

    selection = clips(source="librivox")
    bench = Bench(args.threads)
    bench.client.start()
    if not bench.wait(lambda: bench.client.state == "ready", 600):
        raise SystemExit(f"the worker did not become ready: {bench.client.state} {bench.failures}")
    overhead_audio = load_audio(next(c for c in selection if c.id == OVERHEAD_CLIP).path)
    overhead = measure_overhead(bench, overhead_audio, args.runs)
    references = {c.id: bench.results[bench.transcribe(load_audio(c.path))[0]]["text"] for c in selection}
    soaked = soak(bench, selection, references, args.jobs, overhead["transcribe_ms_p50"], args.seed)
    bench.client.stop()

    report = {
        "overhead_ms_p50": overhead["overhead_ms_p50"],
        "overhead_ms_p95": overhead["overhead_ms_p95"],
        "jobs": soaked["jobs"],
        "kills": soaked["kills"],
        "lost": soaked["lost"],
        "wrong_text": soaked["wrong_text"],
        "details": {"overhead_clip": OVERHEAD_CLIP, "runs": args.runs, **overhead, **soaked},
        "model": "whisper-tiny.en",
        "worker_threads": args.threads,
        "machine": machine_info(),
        "command": " ".join(["python", "benchmarks/worker_overhead.py", *sys.argv[1:]]),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"overhead p50 {report['overhead_ms_p50']} ms, p95 {report['overhead_ms_p95']} ms over {args.runs} jobs")
        print(f"soak: {report['jobs']} jobs, {report['kills']} kills, {report['lost']} lost, {report['wrong_text']} wrong")
    return 0 if report["lost"] == 0 and report["wrong_text"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
