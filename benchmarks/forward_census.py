"""How many operations one denoising forward launches, counted on the CPU.

    .venv/bin/python benchmarks/forward_census.py --json [--modes bf16,int8,int4] [--out census.json]

On a GPU a denoising step at the real shape is bound by its thousands of small kernels, not by
their arithmetic (docs/benchmarks.md, H100 profile). Their number can be counted without a GPU:
every tensor operation that is not a view or an allocation is a kernel there, and so is every launch of the
Triton expert kernel. This runs one dictation through the production engine built by
`gpu_real_shape.build_engine` at the tiny shape (2 layers with the real model's layer structure,
LoRA included) and counts, in the decoder forward of the second step (the one with
self-conditioning, as every later step): the tensor operations (`aten_ops`), Triton launches
(`triton_launches`), their total, and what one decoder layer takes (`per_layer`, by the first
layer's modules), its LoRA'd projections included.

int8/int4 run the Triton kernel under its interpreter (`TRITON_INTERPRET=1`, as the tests do), so
their path is the GPU's. Not counted as on a GPU: the RMSNorms (about 9 operations each here, one
fused kernel on a GPU: `fused_norm.py`), and fp8 (its kernels need a GPU: on the CPU it
dequantizes), so fp8 is not offered.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # read when Triton is first imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from app.engine.diffusion import expert_kernels  # noqa: E402
from benchmarks.gpu_real_shape import build_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402

# Operations that launch no kernel on a GPU: views of their input, and allocations.
NO_KERNEL = {
    "aten.view", "aten.reshape", "aten.unsqueeze", "aten.squeeze", "aten.transpose", "aten.t", "aten.permute",
    "aten.slice", "aten.select", "aten.chunk", "aten.split", "aten.unbind", "aten.expand", "aten._unsafe_view",
    "aten.alias", "aten.detach", "aten.as_strided", "aten.empty", "aten.empty_like", "aten.empty_strided",
}


class Census(TorchDispatchMode):
    """Counts the non-view operations, and how many of them the watched layer ran; not those the
    Triton interpreter runs to emulate a kernel (`kernel.busy`)."""

    def __init__(self, where: list[str], kernel: "CountedKernel | None") -> None:
        super().__init__()
        self.where, self.kernel = where, kernel
        self.ops: collections.Counter = collections.Counter()
        self.in_layer = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.kernel is not None and self.kernel.busy:
            return out
        name = str(func.overloadpacket)
        same = name in ("aten._to_copy", "aten.to") and isinstance(out, torch.Tensor) and out.data_ptr() == args[0].data_ptr()
        if name not in NO_KERNEL and not same:
            self.ops[name] += 1
            self.in_layer += bool(self.where)
        return out


class CountedKernel:
    """The Triton expert kernel, counting its launches (`kernel[grid](...)`)."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches, self.in_layer, self.where, self.busy = kernel, 0, 0, [], False

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            self.in_layer += bool(self.where)
            self.busy = True
            try:
                return self.kernel[grid](*args, **kwargs)
            finally:
                self.busy = False

        return launch


def census(mode: str) -> dict:
    engine = build_engine(mode, torch.device("cpu"), tiny=True)
    backbone = engine.model.backbone
    where: list[str] = []  # the first decoder layer's modules being run, innermost last
    layer = backbone.model.decoder.layers[0]
    layer.register_forward_pre_hook(lambda module, args: where.append("layer"))
    layer.register_forward_hook(lambda module, args, out: where.pop() and None)
    lora = sum(type(m).__name__ == "Linear" and hasattr(m, "lora_A") for m in layer.modules())
    triton_kernel = getattr(expert_kernels, "_grouped_dequant_mm_kernel", None)
    counted = CountedKernel(triton_kernel) if triton_kernel is not None else None
    if counted is not None:
        counted.where = where
        expert_kernels._grouped_dequant_mm_kernel = counted
    forward, results = backbone.forward, []

    def watched(*args, **kwargs):
        if kwargs.get("self_conditioning_logits") is None or results:
            return forward(*args, **kwargs)
        launches = counted.launches if counted else 0
        with Census(where, counted) as ops:
            out = forward(*args, **kwargs)
        results.append((ops, (counted.launches - launches) if counted else 0, counted.in_layer if counted else 0))
        return out

    backbone.forward = watched
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    try:
        with torch.inference_mode():
            engine.transcribe(audio, language="en", steps=3, early_exit=False)
    finally:
        if counted is not None:
            expert_kernels._grouped_dequant_mm_kernel = triton_kernel
    ops, launches, layer_launches = results[0]
    aten = sum(ops.ops.values())
    return {
        "layers": len(backbone.model.decoder.layers),
        "aten_ops": aten,
        "triton_launches": launches,
        "total": aten + launches,
        "per_layer": ops.in_layer + layer_launches,
        "lora_projections_in_a_decoder_layer": lora,
        "top_ops": dict(ops.ops.most_common(12)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="bf16,int8,int4")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"machine": machine_info(), "shape": "tiny (2 layers, real layer structure), CPU",
              "modes": {mode: census(mode) for mode in args.modes.split(",")}}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text if args.json else "\n".join(f"{m}: {r['total']} per forward, {r['per_layer']} per layer" for m, r in report["modes"].items()))


if __name__ == "__main__":
    main()
