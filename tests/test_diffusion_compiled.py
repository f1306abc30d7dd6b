"""The decoder layers compiled by torch.compile (Inductor), for real, on the CPU with the tiny checkpoint.

What is checked: compiling is a preparation piece that no dictation waits for; a prepared shape runs
the compiled layers and gives the eager loop's text without compiling again; Inductor's cache in the
folder it is given is reused by a new process (hits, no misses); and a compiler that fails leaves the
eager loop working. On a GPU the same layers run inside the CUDA graphs (benchmarks/gpu_real_shape.py
`--compile` measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import sys
from pathlib import Path

import numpy as np
import torch

from app.engine import EngineSpec, load_engine
from app.engine.base import SAMPLE_RATE
from tests.test_diffusion_engine import tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def speech_like(seconds: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(5).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


def load_compiled(adapter: Path):
    return load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32", compile=True))


def test_compiled_layers_are_prepared_while_idle_and_give_the_eager_text(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    engine = load_compiled(tiny_checkpoint(tmp_path_factory))
    compiled = engine.denoiser.compiled
    eager = [engine.transcribe(speech_like(), language=lang, steps=4, early_exit=False, seed=2).text for lang in ("en", "fr")]
    assert compiled.calls == 0  # nothing compiled yet: the dictations ran eagerly

    pieces = engine.preparations()
    assert [p.label for p in pieces] == ["compiled layers for English"]  # the tiny prompts share one shape
    pieces[0].run()
    assert engine.denoiser.fast_path_error is None and engine.preparations() == []

    with torch._dynamo.config.patch(error_on_recompile=True):  # a prepared shape must not compile again
        prepared = [engine.transcribe(speech_like(), language=lang, steps=4, early_exit=False, seed=2).text for lang in ("en", "fr")]
    assert prepared == eager
    layers = len(engine.model.backbone.model.decoder.layers)
    assert compiled.calls >= 2 * 4 * layers  # the preparation's calls, then every layer of every step ran compiled


PROBE = """
import json, sys
import numpy as np
from app.engine import EngineSpec, load_engine
from app.engine.base import prepare_all
from app.engine.diffusion.compiled_layers import cache_counters
engine = load_engine(EngineSpec(engine="diffusion", model=sys.argv[1], device="cpu", quantization="fp32", compile=True))
prepare_all(engine)
print(json.dumps({**cache_counters(), "error": engine.denoiser.fast_path_error, "fast_path": engine.denoiser.fast_path,
                  "pending": len(engine.preparations())}))
"""


def test_a_new_process_reuses_the_compiled_kernels(tmp_path_factory, tmp_path):
    """Two worker-like processes on one cache folder: the first compiles (misses), the second finds
    every compiled graph in the folder (hits, no misses). Processes of their own, because one process
    also keeps compiled code in memory."""
    adapter = tiny_checkpoint(tmp_path_factory)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "PYTHONPATH": str(ROOT)}
    counters = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", PROBE, str(adapter)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        counters.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, warm = counters
    assert cold["error"] is None and warm["error"] is None
    assert cold["fx_cache_misses"] >= 1
    assert warm["fx_cache_hits"] >= 1 and warm["fx_cache_misses"] == 0


def test_a_compiler_that_fails_leaves_the_eager_loop(tmp_path_factory, tmp_path):
    """A machine without a working C++ compiler (Inductor's CPU code needs one): the preparation gives
    up the compiled layers with the reason, and the engine goes on transcribing eagerly."""
    adapter = tiny_checkpoint(tmp_path_factory)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "empty"), "PYTHONPATH": str(ROOT),
           "CXX": str(tmp_path / "no-such-compiler")}
    probe = PROBE.replace("print(", "text = engine.transcribe(np.zeros(16000, np.float32) + 0.01, language='en', steps=2).text\nprint(")
    done = subprocess.run([sys.executable, "-c", probe, str(adapter)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["fast_path"] == "eager" and outcome["pending"] == 0
    assert "no-such-compiler" in outcome["error"] or "CppCompileError" in outcome["error"], outcome["error"]


def test_a_compile_runs_on_its_own_thread_while_dictations_go_on_eagerly(tmp_path_factory, tmp_path, monkeypatch):
    """The worker runs a compile piece beside jobs (`alongside_jobs`): dictations meanwhile are transcribed
    (eagerly), and the compiled layers serve only once the piece is done, with the seeded text.
    Their texts meanwhile are not compared with it: Dynamo saves the process's random state when it starts
    compiling a frame and sets it back when done, which moves a seeded draw running on another thread to
    another (equally likely) draw; seen here under load, one text in three. How long the compile takes
    depends on what this process compiled before (Dynamo keeps compiled code in memory), so the overlap
    itself is asserted in a fresh worker process, with a cold cache, by tests/test_worker_preparation.py."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cold"))
    engine = load_compiled(tiny_checkpoint(tmp_path_factory))
    eager = engine.transcribe(speech_like(), language="de", steps=3, early_exit=False, seed=8)
    (piece,) = engine.preparations()
    assert piece.alongside_jobs
    compiling = threading.Thread(target=piece.run)
    compiling.start()
    meanwhile = [engine.transcribe(speech_like(), language="de", steps=3, early_exit=False, seed=8)]
    while compiling.is_alive():
        meanwhile.append(engine.transcribe(speech_like(), language="de", steps=3, early_exit=False, seed=8))
    compiling.join()
    assert all(t.steps_used == 3 and len(t.text) > 0 for t in meanwhile)
    assert engine.denoiser.fast_path_error is None and engine.preparations() == []
    before = engine.denoiser.compiled.calls
    assert engine.transcribe(speech_like(), language="de", steps=3, early_exit=False, seed=8).text == eager.text
    assert engine.denoiser.compiled.calls > before
