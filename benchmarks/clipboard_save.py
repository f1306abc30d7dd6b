"""What saving the user's clipboard costs on the way to the text (X11), and what it costs after an early save.

Before a paste the app saves what the clipboard holds, to put it back afterwards. On X11 that means
asking the owner (another program) for every format it offers; a screenshot's PNG is megabytes. The
app now saves it while the engine works (`X11Clipboard.prefetch`) and the paste only checks that the
clipboard has not changed hands since (`snapshot`). For each content, a Qt program in another
process owns the clipboard (as a screenshot tool or an editor would), and this process, the app's
side, times: `live_ms`, the save as the paste made it before (`snapshot()` with no early copy);
`early_save_ms`, the early save (off the path to the text); `at_paste_ms`, the save as the paste
makes it now. Runs under its own Xvfb. p50 over `--runs`.

    .venv/bin/python benchmarks/clipboard_save.py --json [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_info  # noqa: E402
from tests.desktop.harness import XSession  # noqa: E402

CONTENTS = {"text_1kb": 1_000, "png_2mb": 2_000_000, "png_8mb": 8_000_000}

# The owner: a Qt program holding the content (Qt serves large data in INCR chunks, as real programs do).
OWNER = """
import sys
from PySide6.QtCore import QMimeData
from PySide6.QtWidgets import QApplication
from tests.desktop.image_owner import image_bytes
app = QApplication([])
kind, size = sys.argv[1], int(sys.argv[2])
data = QMimeData()
if kind.startswith("text"):
    data.setText("x" * size)
else:
    data.setData("image/png", image_bytes(size))
app.clipboard().setMimeData(data)
print("owned", flush=True)
app.exec()
"""


def measure(env: dict, runs: int) -> dict:
    """In a child on the test display: this function's figures for each content, as JSON on stdout."""
    code = f"""
import json, statistics, subprocess, sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.desktop.x11_clipboard import X11Clipboard
figures = {{}}
for name, size in {CONTENTS!r}.items():
    owner = subprocess.Popen([sys.executable, "-c", {OWNER!r}, name, str(size)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "owned"
    time.sleep(0.3)
    app.processEvents()
    clipboard = X11Clipboard()
    live, early, at_paste = [], [], []
    for _ in range({runs}):
        t = time.monotonic(); saved = clipboard.snapshot(); live.append((time.monotonic() - t) * 1000)
        t = time.monotonic(); clipboard.prefetch(); early.append((time.monotonic() - t) * 1000)
        t = time.monotonic(); saved = clipboard.snapshot(); at_paste.append((time.monotonic() - t) * 1000)
    data = saved["CLIPBOARD"]
    held = sum(len(data.data(f)) for f in data.formats()) if data is not None else 0
    figures[name] = {{"bytes_saved": held, "live_ms_p50": round(statistics.median(live), 2),
                      "early_save_ms_p50": round(statistics.median(early), 2),
                      "at_paste_ms_p50": round(statistics.median(at_paste), 2)}}
    owner.kill()
    owner.wait()
print(json.dumps(figures))
"""
    done = subprocess.run([sys.executable, "-c", code], env={**env, "QT_QPA_PLATFORM": "xcb"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        session = XSession(Path(workdir)).start()
        try:
            figures = measure(session.env, args.runs)
        finally:
            session.stop()
    report = {"machine": machine_info(), "command": " ".join(["benchmarks/clipboard_save.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d"), "contents": figures}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, row in figures.items():
            print(f"{name}: live {row['live_ms_p50']} ms, early save {row['early_save_ms_p50']} ms, "
                  f"at the paste {row['at_paste_ms_p50']} ms ({row['bytes_saved']} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
