"""How many operations one denoising forward launches, counted on the CPU.

    .venv/bin/python benchmarks/forward_census.py --json [--modes bf16,int8,int4] [--fusions layers] [--out census.json]

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
their path is the GPU's, and so do the fused kernels a GPU gets (`--fusions`: `layers`, the default,
as on a GPU: the fused RMSNorms of `fused_norm.py`, the fused layer of `fused_layer.py`, the
attention heads' norms and rotary embedding of `fused_attention.py`, the gated GELU and stacked dense MLP of `fused_mlp.py`, and
the experts' sort of `expert_routing.py`;
`norms`: the norms only, as before those; `none`: transformers' forward, about 9 operations a norm). fp8 is not offered: its kernels need a GPU (on the CPU it dequantizes).
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


from app.engine.diffusion import expert_kernels, expert_routing, fused_attention, fused_layer, fused_mlp, fused_norm  # noqa: E402
from app.engine.diffusion.fused_attention import fuse_attention  # noqa: E402
from app.engine.diffusion.fused_layer import fuse_layers  # noqa: E402
from app.engine.diffusion.fused_mlp import fuse_mlps  # noqa: E402
from app.engine.diffusion.fused_norm import fuse_norms  # noqa: E402
from benchmarks.gpu_real_shape import build_engine  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402

# Operations that launch no kernel on a GPU: views of their input, and allocations.
NO_KERNEL = {
    "aten.view", "aten.reshape", "aten.unsqueeze", "aten.squeeze", "aten.transpose", "aten.t", "aten.permute",
    "aten.slice", "aten.select", "aten.chunk", "aten.split", "aten.split_with_sizes", "aten.unbind", "aten.expand", "aten._unsafe_view",
    "aten.alias", "aten.detach", "aten.as_strided", "aten.empty", "aten.empty_like", "aten.empty_strided",
}


class Census(TorchDispatchMode):
    """Counts the non-view operations, and how many of them the watched layer ran; not those the
    Triton interpreter runs to emulate a kernel (`kernels.busy`)."""

    def __init__(self, where: list[str], kernels: Launches) -> None:
        super().__init__()
        self.where, self.kernels = where, kernels
        self.ops: collections.Counter = collections.Counter()
        self.in_layer = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.kernels.busy:
            return out
        name = str(func.overloadpacket)
        same = name in ("aten._to_copy", "aten.to") and isinstance(out, torch.Tensor) and out.data_ptr() == args[0].data_ptr()
        if name not in NO_KERNEL and not same:
            self.ops[name] += 1
            self.in_layer += bool(self.where)
        return out


class Launches:
    """Counts the launches of the app's Triton kernels (`kernel[grid](...)`), each wrapped by `watch`."""

    def __init__(self) -> None:
        self.launches, self.in_layer, self.where, self.busy = 0, 0, [], False

    def watch(self, kernel):
        counter = self

        class Counted:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    counter.launches += 1
                    counter.in_layer += bool(counter.where)
                    counter.busy = True
                    try:
                        return kernel[grid](*args, **kwargs)
                    finally:
                        counter.busy = False

                return launch

        return Counted()


# The app's Triton kernels, by module and name: each launch is a kernel on a GPU.
KERNELS = [(expert_kernels, "_grouped_dequant_mm_kernel"), (expert_routing, "_sort_by_expert_kernel"), (fused_norm, "_rms_norm_kernel"),
           (fused_layer, "_after_attention_kernel"), (fused_layer, "_route_kernel"), (fused_layer, "_layer_end_kernel"),
           (fused_attention, "_heads_kernel"), (fused_mlp, "_gelu_tanh_mul_kernel")]


def census(mode: str, fusions: str) -> dict:
    engine = build_engine(mode, torch.device("cpu"), tiny=True)
    backbone = engine.model.backbone
    if fusions in ("norms", "layers"):  # what DiffusionEngine does on a GPU
        fuse_norms(backbone, torch.device("cpu"))
    use_kernels = expert_routing.use_kernels
    if fusions == "layers":
        fuse_layers(backbone, torch.device("cpu"))
        fuse_mlps(backbone, torch.device("cpu"))
        fuse_attention(backbone, torch.device("cpu"))
        expert_routing.use_kernels = lambda device: True  # the experts' sort and routing kernels, as on a GPU
    where: list[str] = []  # the first decoder layer's modules being run, innermost last
    layer = backbone.model.decoder.layers[0]
    layer.register_forward_pre_hook(lambda module, args: where.append("layer"))
    layer.register_forward_hook(lambda module, args, out: where.pop() and None)
    lora = sum(type(m).__name__ == "Linear" and hasattr(m, "lora_A") for m in layer.modules())
    counted = Launches()
    counted.where = where
    originals = [(module, name, getattr(module, name)) for module, name in KERNELS]
    for module, name, kernel in originals:
        setattr(module, name, counted.watch(kernel))
    forward, results = backbone.forward, []

    def watched(*args, **kwargs):
        if kwargs.get("self_conditioning_logits") is None or results:
            return forward(*args, **kwargs)
        launches, in_layer = counted.launches, counted.in_layer
        with Census(where, counted) as ops:
            out = forward(*args, **kwargs)
        results.append((ops, counted.launches - launches, counted.in_layer - in_layer))
        return out

    backbone.forward = watched
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    try:
        with torch.inference_mode():
            engine.transcribe(audio, language="en", steps=3, early_exit=False)
    finally:
        for module, name, kernel in originals:
            setattr(module, name, kernel)
        expert_routing.use_kernels = use_kernels
    ops, launches, layer_launches = results[0]
    aten = sum(ops.ops.values())
    return {
        "layers": len(backbone.model.decoder.layers),
        "fusions": fusions,
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
    parser.add_argument("--fusions", choices=("layers", "norms", "none"), default="layers")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"machine": machine_info(), "shape": "tiny (2 layers, real layer structure), CPU",
              "modes": {mode: census(mode, args.fusions) for mode in args.modes.split(",")}}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text if args.json else "\n".join(f"{m}: {r['total']} per forward, {r['per_layer']} per layer" for m, r in report["modes"].items()))


if __name__ == "__main__":
    main()
