"""Many dictations at once on one speech server: is anything lost or changed, and what does it cost?

    .venv/bin/python benchmarks/server_load.py --json [--clients 8] [--requests 25] [--engine E --model M]
    .venv/bin/python benchmarks/server_load.py --json --engine diffusion --model resources/models/diffusion-micro
    .venv/bin/python benchmarks/server_load.py --json --speculative

Starts a real server subprocess (`python -m app serve`, default Whisper tiny.en on CTranslate2 from the
test data: `python -m tests.data.build` first) on 127.0.0.1 and sends it eight short English clips
over HTTP, as the app does (multipart upload, JSON answer): the espeak-ng clips for Whisper, and the
micro diffusion model's own held-out sentences for a diffusion model (espeak is not its voice):

1. reference: each clip once, alone; its text is what every later answer must say;
2. one client sending `--requests` requests one after another;
3. `--clients` clients at once, each sending `--requests` requests one after another.

For each phase: `lost` (requests that failed or never came back), `wrong_text` (answers whose text
differs from the clip's reference), latency p50/p95 in ms (upload to answer, queueing included),
requests per second, `wer` against the clips' scripts, `mean_batch` (how many requests shared each
answer's denoising pass) and `throughput_ratio_8_to_1` (phase 3's rps over phase 2's). Whisper runs
one request at a time, so on a CPU its ratio is about 1: concurrency queues requests, it does not add
compute. The diffusion engine denoises waiting requests as one batch; a batched request's text is
another draw of the sampler than alone (DiffusionEngine.transcribe_batch), so for diffusion
`wrong_text` counts texts that differ from the single-request draw and `wer` is what tells whether
batching costs accuracy.

With `--speculative`, phase 3 runs a second time as the app does with *Transcribe during pauses* when
the speaker pauses and then goes on: before each dictation, the client sends the first 60% of the clip
as a speculative request (on a connection of its own, without waiting for it), 200 ms later the whole
clip as the dictation, with the same `client` id. What it measures is what speculation costs the
dictations of a busy shared server (their latency with and without it, in the same run) and what
becomes of the speculative requests (`answered`, `superseded`, `refused` while others waited).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from tests.data import WHISPER_TINY_EN_CT2  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402
from tests.speech import Clip, clips, wer  # noqa: E402


def send(http: httpx2.Client, url: str, clip, **fields: str) -> tuple[float, str | None, int]:
    """(latency ms, text or None when the request was lost, requests in its denoising pass)."""
    started = time.perf_counter()
    text, batch = None, 1
    try:
        with open(clip.path, "rb") as fh:
            answer = http.post(url + "/v1/audio/transcriptions", files={"file": fh},
                               data={"model": "whisper-1", "language": "en", **fields})
        if answer.status_code == 200:
            text, batch = answer.json()["text"], int(answer.json()["timings"].get("batch", 1))
    except (httpx2.HTTPError, ValueError, KeyError):
        text = None
    return (time.perf_counter() - started) * 1000.0, text, batch


def heldout_clips(folder: Path, model: Path) -> list[Clip]:
    """The micro diffusion model's first eight test sentences, as WAV files in `folder`, each followed by
    silence up to the longest: the micro model reads only the speech's frames (`trim_audio`), so only
    requests of one length share a pass; the real model reads the whole window, any lengths batch."""
    import numpy as np
    import soundfile as sf

    from app.training.micro import EVAL_CLIPS, load_heldout

    heldout = load_heldout(model / "adapter")[EVAL_CLIPS : EVAL_CLIPS + 8]
    longest = max(len(audio) for _, audio in heldout)
    out = []
    for k, (text, audio) in enumerate(heldout):
        path = folder / f"heldout-{k}.wav"
        audio = np.pad(audio, (0, longest - len(audio)))
        sf.write(path, audio, 16_000)
        out.append(Clip(f"heldout-{k}", path, text, "en", "micro-heldout", len(audio) / 16_000))
    return out


def prefixes(folder: Path, speech: list[Clip]) -> dict[str, Path]:
    """The first 60% of each clip, as WAV files: what a speculative request at a pause would send."""
    import soundfile as sf

    out = {}
    for clip in speech:
        audio, rate = sf.read(clip.path, dtype="float32")
        out[clip.id] = folder / f"ahead-{clip.id}.wav"
        sf.write(out[clip.id], audio[: int(len(audio) * 0.6)], rate)
    return out


def speculate(url: str, path: Path, client_id: str) -> int:
    """A speculative request, as the app sends one at a pause; its status (0: no answer)."""
    try:
        with httpx2.Client(timeout=600) as http, open(path, "rb") as fh:
            return http.post(url + "/v1/audio/transcriptions", files={"file": fh},
                             data={"model": "whisper-1", "language": "en", "speculative": "true",
                                   "client": client_id}).status_code
    except httpx2.HTTPError:
        return 0


def phase(url: str, speech: list, reference: dict, clients: int, requests: int,
          ahead: dict[str, Path] | None = None) -> dict:
    statuses: list = []

    def client(index: int) -> list[tuple[float, str | None, int, object]]:
        """One user: a connection of its own (as the app keeps one), requests one after another."""
        out = []
        with httpx2.Client(timeout=600) as http, ThreadPoolExecutor(1) as early:
            for k in range(requests):
                clip = speech[(index + k) % len(speech)]
                fields = {}
                if ahead is not None:  # a pause 60% into the dictation, then the speaker went on
                    statuses.append(early.submit(speculate, url, ahead[clip.id], f"user-{index}"))
                    time.sleep(0.2)
                    fields = {"client": f"user-{index}"}
                out.append((*send(http, url, clip, **fields), clip))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    codes = [future.result() for future in statuses]
    latencies = sorted(ms for ms, text, _, _ in results if text is not None)
    answered = [(text, batch, clip) for _, text, batch, clip in results if text is not None]
    return {
        "clients": clients, "requests": len(results),
        "lost": len(results) - len(answered),
        "wrong_text": sum(text != reference[clip.id] for text, _, clip in answered),
        "wer": round(wer([clip.text for _, _, clip in answered], [text for text, _, _ in answered]), 4),
        "mean_batch": round(statistics.mean(batch for _, batch, _ in answered), 2) if answered else None,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 1) if latencies else None,
        "rps": round(len(latencies) / wall, 3), "wall_s": round(wall, 1),
        **({"speculative": {"sent": len(codes), "answered": codes.count(200), "superseded": codes.count(409),
                            "refused": codes.count(429), "other": len(codes) - sum(codes.count(c) for c in
                                                                                   (200, 409, 429))}}
           if ahead is not None else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--engine", default="faster-whisper")
    ap.add_argument("--model", default=str(WHISPER_TINY_EN_CT2))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (diffusion)")
    ap.add_argument("--speculative", action="store_true",
                    help="run the many-clients phase again with a speculative request before each dictation")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="server-load-"))
    log = folder / "server.log"
    speech = heldout_clips(folder, Path(args.model)) if args.engine == "diffusion" else clips(source="espeak", language="en")[:8]
    server = ServerProcess(["--engine", args.engine, "--model", args.model, "--device", args.device,
                            "--queue-size", str(max(16, 2 * args.clients)), "--max-batch", str(args.max_batch)], log,
                           env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)}).wait_ready(timeout_s=600)
    try:
        health = httpx2.get(server.url + "/health").json()
        reference = {}
        load_before = os.getloadavg()[0]
        for clip in speech:
            with httpx2.Client(timeout=600) as http:
                _, text, _ = send(http, server.url, clip)
            assert text is not None, f"the reference request for {clip.id} failed; see {log}"
            reference[clip.id] = text
        one = phase(server.url, speech, reference, 1, args.requests)
        many = phase(server.url, speech, reference, args.clients, args.requests)
        ahead = (phase(server.url, speech, reference, args.clients, args.requests, prefixes(folder, speech))
                 if args.speculative else None)
    finally:
        server.stop()
    report = {
        "machine": machine_info(), "engine": health["engine"], "model": health["model"], "device": health["device"],
        "quantization": health["quantization"], "max_batch": health["max_batch"], "clips": [c.id for c in speech],
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before / after: a shared machine
        "one_client": one, f"{args.clients}_clients": many,
        f"throughput_ratio_{args.clients}_to_1": round(many["rps"] / one["rps"], 3) if one["rps"] else None,
        **({f"{args.clients}_clients_with_speculation": ahead} if ahead is not None else {}),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name in ("one_client", f"{args.clients}_clients", f"{args.clients}_clients_with_speculation"):
            if name in report:
                print(name, report[name])
        print("throughput ratio", report[f"throughput_ratio_{args.clients}_to_1"])


if __name__ == "__main__":
    main()
