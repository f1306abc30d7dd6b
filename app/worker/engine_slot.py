"""The worker's one warm engine: load it, shrink it when the GPU runs out of memory, unload it when idle.

With quantization `auto` an out-of-memory error is not the end: the engine is loaded again with the
next smaller mode (bf16 -> fp8 -> int8 -> int4) until one fits. Any other setting is the user's
explicit choice and an out-of-memory error is reported as it is, with what to try.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import replace
from typing import Callable

from app.engine import AUTO, Engine, EngineSpec, load_engine
from app.errors import UserError

log = logging.getLogger(__name__)

FALLBACK_ORDER = ("bf16", "fp8", "int8", "int4")
_DTYPE_MODES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def smaller_modes(current: str | None) -> tuple[str, ...]:
    """The modes to try after `current` ran out of memory (all of them when it is unknown or wider)."""
    if current in FALLBACK_ORDER:
        return FALLBACK_ORDER[FALLBACK_ORDER.index(current) + 1 :]
    return FALLBACK_ORDER


def as_out_of_memory(exc: BaseException) -> UserError | None:
    """`exc` as the user-facing out-of-memory error, or None when it is something else."""
    if isinstance(exc, UserError):
        return exc if exc.code == "out_of_memory" else None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return UserError(
            "The GPU ran out of memory. Choose a smaller quantization (int8 or int4), close other programs "
            "that use the GPU, or use the Whisper engine.",
            code="out_of_memory",
        )
    return None


def gpu_memory() -> dict | None:
    """Free and total memory of the current CUDA device in MiB, or None without one (or without torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return {"free_mb": free // 2**20, "total_mb": total // 2**20}


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class EngineSlot:
    """Holds at most one loaded engine and the spec it came from.

    `load` may be any function with `load_engine`'s signature (tests pass one that runs out of memory).
    A failed load is remembered and raised again for each job until the next `load`, so every job
    gets the sentence that says what is wrong with the model.
    """

    def __init__(self, load: Callable[[EngineSpec], Engine] = load_engine) -> None:
        self._load = load
        self.spec: EngineSpec | None = None
        self.engine: Engine | None = None
        self.mode: str | None = None
        self.error: UserError | None = None

    def load(self, spec: EngineSpec) -> Engine:
        """Replace the engine with one for `spec` (the old one goes first, to free its memory)."""
        self.unload()
        self.spec, self.error = spec, None
        candidates = [spec]
        if spec.quantization == AUTO:
            candidates += [replace(spec, quantization=m) for m in FALLBACK_ORDER]
        try:
            return self._load_fitting(candidates)
        except UserError as exc:
            self.error = exc
            raise

    def get(self) -> Engine:
        """The warm engine, loading it again if it was unloaded while idle."""
        if self.engine is not None:
            return self.engine
        if self.error is not None:
            raise self.error
        if self.spec is None:
            raise UserError("No speech model is configured yet; choose one in Settings.", code="not_loaded")
        log.info("loading %s %s again after an idle unload", self.spec.engine, self.spec.model)
        return self.load(self.spec)

    def shrink(self, oom: UserError) -> Engine:
        """After `oom` in a job: with `auto`, the engine in the next smaller mode; otherwise raise `oom`."""
        if self.spec is None or self.spec.quantization != AUTO or not smaller_modes(self.mode):
            raise oom
        modes = smaller_modes(self.mode)
        self.unload()
        try:
            return self._load_fitting([replace(self.spec, quantization=m) for m in modes], first_oom=oom)
        except UserError as exc:
            self.error = exc
            raise

    def unload(self) -> None:
        if self.engine is None:
            return
        self.engine = None
        self.mode = None
        _release_memory()

    def describe(self) -> dict:
        """What the `hello` message tells the GUI about the model: the engine that runs (what `auto` chose)
        while one is loaded, else the one asked for."""
        engine, spec = self.engine, self.spec
        return {
            "engine": getattr(engine, "name", spec.engine) if spec else None,
            "model": spec.model if spec else None,
            "device": str(getattr(engine, "device", spec.device)) if spec else None,
            "quantization": self.mode,
            "languages": list(getattr(engine, "languages", ())) or None,  # the loaded model's; None: none loaded
            "times_words": bool(getattr(engine, "times_words", False)),  # word timestamps (the speech server's)
            "gpu_memory": gpu_memory(),
        }

    def _load_fitting(self, candidates: list[EngineSpec], first_oom: UserError | None = None) -> Engine:
        """Load the first candidate that fits in memory; raise the first out-of-memory error if none does."""
        for spec in candidates:
            try:
                engine = self._load(spec)
            except Exception as exc:
                oom = as_out_of_memory(exc)
                if oom is None:
                    if first_oom is not None and isinstance(exc, UserError) and exc.code == "bad_quantization":
                        continue  # this engine has no such mode: try the next smaller one
                    if isinstance(exc, UserError):
                        raise
                    log.exception("loading %s failed", spec.model)
                    raise UserError(
                        f"The speech model {spec.model} could not be loaded ({type(exc).__name__}: {exc}); "
                        "choose another model in Settings, and see the log for details.",
                        code="load_failed",
                    ) from exc
                log.warning("out of memory loading %s with quantization %s", spec.model, spec.quantization)
                first_oom = first_oom or oom
                _release_memory()
                continue
            self.engine, self.mode = engine, _mode_of(engine, spec)
            return engine
        assert first_oom is not None
        raise first_oom


def _mode_of(engine: Engine, spec: EngineSpec) -> str:
    """The quantization the engine actually runs: its own report, else its dtype, else the spec's."""
    mode = getattr(engine, "quantization", None)
    if isinstance(mode, str) and mode != AUTO:
        return mode
    dtype = str(getattr(engine, "dtype", "")).removeprefix("torch.")
    return _DTYPE_MODES.get(dtype, spec.quantization)
