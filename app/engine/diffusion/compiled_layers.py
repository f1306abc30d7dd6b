"""The decoder layers compiled by torch.compile (Inductor), switched on only where a shape is prepared.

A denoising step at the real shape is thousands of small kernels (norms, casts, rotary embedding,
routing): replaying them from a CUDA graph removes the launch cost but not the kernels themselves.
Inductor fuses them. It compiles one layer at a time ("regional" compilation): every decoder layer
of a kind (sliding or full attention) gives the same graph, so Inductor compiles each kind once and
serves the others from its FX graph cache, instead of one 30-layer graph that took transformers'
whole-model compile three minutes (shared/reference/gpu-measured.md).

Compiling happens on the first call at a new shape (until the sizes that vary are symbolic), which
costs seconds to tens of seconds, so it is never left to a dictation: the layers run compiled only
inside `active()`, which the denoiser enters for shapes it has prepared, and which holds for the
calling thread alone, so the compile itself (`Denoiser.prepare`) can run on a thread of its own
while dictations go on eagerly. Inductor's
caches live in the app's cache folder instead of /tmp, so a restarted worker reuses the compiled
kernels (`cache_folder`); Dynamo still traces each layer again (the micro model's 3 layers: 7.4 s
with a warm cache against 30.8 s cold, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

ENV_CACHE = "TORCHINDUCTOR_CACHE_DIR"


def cache_folder() -> Path:
    """Where Inductor keeps compiled kernels between runs: $TORCHINDUCTOR_CACHE_DIR when set, else the
    app's per-user cache folder (so a reboot that clears /tmp does not mean compiling again)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    import platformdirs

    return Path(platformdirs.user_cache_dir("diffusion-dictate", appauthor=False)) / "torch-compile"


class CompiledLayers:
    """Compiled versions of `layers`, used instead of their eager forward inside `active()`.

    Each layer's `_compiled_call_impl` (what `nn.Module.compile()` sets, and `nn.Module.__call__`
    calls when it is set) becomes a dispatcher that runs the compiled code on threads inside
    `active()` and the eager forward elsewhere. Per thread, so a compile can run on one thread while
    a transcription runs eagerly on another with the same modules.
    """

    def __init__(self, layers: nn.ModuleList, shapes: int) -> None:
        os.environ.setdefault(ENV_CACHE, str(cache_folder()))  # read by Inductor when it first compiles
        # Dynamo keeps one compiled entry per (layer, shape) on the layers' shared forward code: allow
        # every layer at the `shapes` the denoiser keeps (and one more), or it would silently fall back to eager.
        wanted = len(layers) * (shapes + 1)
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, wanted)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 2 * wanted)
        self.layers = list(layers)
        self.calls = 0  # layer calls that went through the compiled code outside a CUDA graph (tests read it)
        self._local = threading.local()
        for layer in self.layers:
            # dynamic=None: a layer's first shape compiles static; the next makes the sizes that changed
            # symbolic, so later shapes (other prompt lengths, batch sizes) need no compile at all
            # (tiny model on the CPU: 21.4 s, 17.4 s, then 0.0 s for batches 1-4; static: 22.3, 10.7, 10.2, 8.9 s).
            compiled = torch.compile(layer._call_impl, fullgraph=True, dynamic=None)
            layer._compiled_call_impl = self._dispatcher(layer._call_impl, compiled)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the layers compiled on this thread within this block (the first call at a new shape compiles)."""
        before = getattr(self._local, "on", False)
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = before

    def remove(self) -> None:
        """Give every layer its plain eager forward back (the compiled layers were given up)."""
        for layer in self.layers:
            layer._compiled_call_impl = None

    def _dispatcher(self, eager: Callable, compiled: Callable) -> Callable:
        def call(*args, **kwargs):
            if getattr(self._local, "on", False):
                self.calls += 1
                return compiled(*args, **kwargs)
            return eager(*args, **kwargs)

        return call


def cache_counters() -> dict[str, int]:
    """Inductor's FX-graph cache hits and misses so far in this process: a restart that reuses the
    cache shows hits and no misses."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {"fx_cache_hits": int(inductor["fxgraph_cache_hit"]), "fx_cache_misses": int(inductor["fxgraph_cache_miss"])}
