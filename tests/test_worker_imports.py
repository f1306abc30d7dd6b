"""The GUI side never imports torch, transformers or CTranslate2 (start-up time, memory, crash isolation).

Checked in a fresh interpreter, because this test process has torch loaded already. Every module
of the GUI-side packages is imported, including ones added after this test was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

GUI_MODULES = ["app.cli", "app.config", "app.controller", "app.worker.client", "app.worker.pipe", "app.worker.protocol"]
GUI_PACKAGES = ["app.ui", "app.desktop", "app.audio"]

_PROBE = """
import importlib, json, pkgutil, sys
modules, packages = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for package in packages:
    path = importlib.import_module(package).__path__
    modules += [m.name for m in pkgutil.walk_packages(path, package + ".")]
heavy = {}
for name in modules:
    importlib.import_module(name)
    for lib in ("torch", "transformers", "ctranslate2", "faster_whisper"):
        if lib in sys.modules and lib not in heavy:
            heavy[lib] = name
print(json.dumps({"imported": modules, "heavy": heavy}))
"""


def test_gui_side_imports_neither_torch_nor_transformers():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(GUI_MODULES), json.dumps(GUI_PACKAGES)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "app.worker.client" in report["imported"] and any(m.startswith("app.ui.") for m in report["imported"])
    assert report["heavy"] == {}, f"first module to pull them in: {report['heavy']}"
