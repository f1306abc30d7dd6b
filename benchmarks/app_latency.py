"""Key release -> text in the target window, under Xvfb with the real app and a Whisper tiny.en worker.

For each of `--runs` dictations (hold-to-talk) in each of two cases: the hotkey goes down, a short
speech clip plays through the recorder's test audio seam, the hotkey goes up (sent with XTest from
this process, so the clock starts at the real release), and the clock stops when the target editor
(another process) logs the changed text, on the same system-wide monotonic clock. The cases:

- speech_ended: the clip ended 400 ms before the release (the speaker had stopped): the recorder's
  speech check has heard the end, so the post-roll is skipped.
- paused_1s: the same, the key let go a second after the speech (a user reading over what they said).
- speech_continues: released at 70% of the clip, the speaker still talking: the recorder goes on
  until the speech check hears the end, at most `post_roll_ms` (300).

The cases run twice, each time in an app of its own: with *Transcribe during pauses* off, then on
(`early_off`, `early_on`). Per case: `e2e_ms` (release -> text: what the user waits), how many jobs
were answered by the early transcription, and, with it off, `release_to_paste_minus_engine_ms_p50`
(release -> text, minus the worker's transcription time as the engine reports it; the post-roll is
included), the post-roll the recorder actually took (from its log), and the app's own share without
it. (With it on, the engine's reported time was mostly spent before the release, so subtracting it
means nothing.) Also: GUI start-up time (process start -> tray shown and answering on its remote
channel), when its global hotkeys went live, its resident memory after the runs, and whether torch
got mapped into the GUI process.

With `--server` the app is a client of a speech server (`python -m app serve`, a subprocess on this
machine, the same Whisper tiny.en with a token) instead of running a worker: release -> text then
includes the upload, the server's queue and the answer over HTTP, and with *Transcribe during
pauses* on, the recording so far goes to the server as a speculative request at each pause.

    .venv/bin/python benchmarks/app_latency.py --json [--runs 10] [--server]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.data import DATA_DIR, MANIFEST, WHISPER_TINY_EN  # noqa: E402
from tests.desktop.harness import PYTHON, App, Target, XSession, wait_for  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

CLIPS = ("cards-001", "cards-003", "cards-004", "goforward", "cards-002")
CASES = {"speech_ended": 0.4, "paused_1s": 1.0, "speech_continues": None}  # seconds held after the speech
POST_ROLL_MS = 300


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Keys:
    """XTest from this process: the release time is known exactly, with no xdotool start-up in it."""

    def __init__(self, display: str) -> None:
        from Xlib import XK
        from Xlib import display as xdisplay

        self.dpy = xdisplay.Display(display)
        self.codes = [self.dpy.keysym_to_keycode(XK.string_to_keysym(n)) for n in ("Control_L", "Shift_L", "space")]

    def down(self) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        for code in self.codes:
            xtest.fake_input(self.dpy, X.KeyPress, code)
        self.dpy.sync()

    def up(self) -> float:
        """Release (space first, see tests/desktop/conftest.py); return when the request went out."""
        from Xlib import X
        from Xlib.ext import xtest

        for code in reversed(self.codes):
            xtest.fake_input(self.dpy, X.KeyRelease, code)
        at = time.monotonic()
        self.dpy.sync()
        return at


def measure(app: App, target: Target, keys: Keys, clips: dict, case: str, runs: int) -> dict:
    """`runs` dictations of one case; release -> paste figures, with and without the engine and post-roll."""
    e2e, worker, post_roll, ok = [], [], [], 0
    early = app.count(_EARLY)
    for i in range(runs):
        clip = clips[CLIPS[i % len(CLIPS)]]
        target.clear()
        app.speak(DATA_DIR / clip["path"])
        played = app.count("test audio source: end of")
        jobs = app.count("transcribed job")
        recordings = app.count(r"recording \d+ finished")
        keys.down()
        if CASES[case] is not None:
            wait_for(lambda: app.count("test audio source: end of") > played, "the clip to play", 120)
            time.sleep(CASES[case])
        else:
            time.sleep(clip["seconds"] * 0.7)
        released = keys.up()
        change = wait_for(lambda: next((c for c in target.changes() if c["t"] > released and c["text"].strip()), None),
                          "the text in the target", 300, interval=0.005)
        app.wait_idle()
        wait_for(lambda: app.count("transcribed job") > jobs, "the transcript in the log")
        entry = re.findall(r"transcribed job=\S+ worker_ms=([\d.]+) text=(.*)", app.log())[-1]
        took = re.findall(r"recording \d+ finished: .* post-roll (\d+) ms", app.log())[recordings:]
        e2e.append((change["t"] - released) * 1000)
        worker.append(float(entry[0]))
        post_roll.append(float(took[0]))
        ok += target.text().strip() == ast.literal_eval(entry[1]).strip()  # the log holds the text's repr
    figures = {
        "pasted_ok": ok,
        "e2e_ms_p50": round(statistics.median(e2e), 1),
        "e2e_ms_p95": round(percentile(e2e, 95), 1),
        "answered_early": app.count(_EARLY) - early,
        "worker_ms_p50": round(statistics.median(worker), 1),
        "post_roll_taken_ms_p50": round(statistics.median(post_roll), 1),
    }
    if figures["answered_early"] == 0:
        minus_engine = [t - w for t, w in zip(e2e, worker)]
        overhead = [m - p for m, p in zip(minus_engine, post_roll)]
        figures.update({
            "release_to_paste_minus_engine_ms_p50": round(statistics.median(minus_engine), 1),
            "release_to_paste_minus_engine_ms_p95": round(percentile(minus_engine, 95), 1),
            "overhead_ms_p50": round(statistics.median(overhead), 1),
            "overhead_ms_p95": round(percentile(overhead, 95), 1),
        })
    return figures


# The worker's log line, and the server client's, for a job answered by the transcription made at a pause.
_EARLY = "answered by the (?:early transcription|transcription ahead)"
_TOKEN = "app-latency-benchmark-token-0123456789"


def start_server(workdir: Path) -> ServerProcess:
    """`app serve` with the benchmark's model on the CPU, behind a token (as a shared server runs)."""
    (workdir / "token").write_text(_TOKEN + "\n")
    threads = str(len(os.sched_getaffinity(0)))  # as many as a worker uses (tests give a server one)
    server = ServerProcess(["--engine", "whisper", "--model", str(WHISPER_TINY_EN), "--device", "cpu",
                            "--token-file", str(workdir / "token")], workdir / "server.log", token=_TOKEN,
                           env={"OMP_NUM_THREADS": threads})
    return server.wait_ready()


def make_app(session: XSession, workdir: Path, early: bool, server: ServerProcess | None) -> App:
    settings = {"model": str(WHISPER_TINY_EN), "device": "cpu", "language": "en", "mode": "hold",
                "post_roll_ms": POST_ROLL_MS, "early_transcription": early}
    if server is None:
        return App(session, workdir, settings)
    app = App(session, workdir, {**settings, "engine": "server", "server_url": server.url})
    app.env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # the token goes to a 0600 file
    stored = subprocess.run([PYTHON, "-m", "app", "server-token"], input=_TOKEN + "\n", text=True, cwd=ROOT,
                            env={**os.environ, **app.env}, capture_output=True, timeout=60)
    if stored.returncode != 0:
        raise RuntimeError(f"storing the server token failed: {stored.stderr}")
    return app


def run(runs: int, use_server: bool) -> dict:
    clips = {c["id"]: c for c in json.loads(MANIFEST.read_text())["clips"]}
    workdir = Path(tempfile.mkdtemp(prefix="app-latency-"))
    session = XSession(workdir).start()
    server = start_server(workdir) if use_server else None
    result: dict = {"runs": runs, "transcribed_by": "speech server (app serve, this machine)" if server else "worker"}
    try:
        target = Target(session, workdir)
        keys = Keys(session.env["DISPLAY"])
        for early in (False, True):
            app = make_app(session, workdir / f"early-{'on' if early else 'off'}", early, server)
            try:
                gui_start_ms = app.start() * 1000
                wait_for(lambda: app.status()["hotkeys"], "the hotkeys", 60, interval=0.005)
                hotkeys_ready_ms = (time.monotonic() - app.started_at) * 1000
                app.wait_ready()
                result[f"early_{'on' if early else 'off'}"] = {case: measure(app, target, keys, clips, case, runs)
                                                               for case in CASES}
                if not early:
                    result.update({"gui_start_ms": round(gui_start_ms, 1),
                                   "hotkeys_ready_ms": round(hotkeys_ready_ms, 1)})
                result.update({"gui_rss_mb": round(app.rss_mb(), 1), "torch_in_gui": app.maps_torch()})
            finally:
                app.stop()
        return {**result,
                "machine": f"{_cpu_model()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
                "load_avg_1m": round(os.getloadavg()[0], 1)}  # other work on the machine skews every figure
    except BaseException:
        print(f"benchmark failed; logs are in {workdir}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        session.stop()
        if sys.exc_info()[0] is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="dictations per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--server", action="store_true", help="the app as a client of a speech server subprocess")
    args = parser.parse_args()
    result = run(args.runs, args.server)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    pasted = all(result[mode][case]["pasted_ok"] == result["runs"] for mode in ("early_off", "early_on") for case in CASES)
    return 0 if pasted and not result["torch_in_gui"] else 1


if __name__ == "__main__":
    sys.exit(main())
