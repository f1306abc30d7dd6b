"""The logits' softcap in one pass over the vocabulary on CUDA GPUs.

DiffusionGemma's logits are `tanh(lm_head(h) / cap) * cap` in float32 (cap 30). transformers writes
that as four passes over a step's logits (the cast, the division, the tanh, the product: 256 x
262,144 float32 values, 256 MiB a batch row, each pass reading and writing them), ~1.8 GB of memory
traffic a step, about half a millisecond at an H100's bandwidth (its bf16 step measured 38 ms before
the fused kernels of 2026-11-28; by the kernel census far less is left around the experts' ~17 ms).
`softcap_into` reads the lm_head's bf16 output once and writes the float32 logits once.

The arithmetic is torch's on a GPU: the division by a Python number is a product with its float32
reciprocal (ATen's `div_true_kernel_cuda`: `a * (1.0f / b)`), the tanh CUDA's `tanhf` (libdevice),
then the product with the cap: the same bits by design (benchmarks/gpu_fused_check.py compares them).
Under Triton's interpreter (the CPU tests), which has no libdevice, tanh comes from exp: the same to
float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from app.engine.diffusion import expert_kernels, expert_routing

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)
BLOCK = 2048  # values a program: 16 a thread on 4 warps

if triton is not None:
    from app.engine.diffusion.fused_mlp import cuda_tanh

    @triton.jit
    def _softcap_kernel(x_ptr, out_ptr, count, inverse, cap, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
        at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = at < count
        x = tl.load(x_ptr + at, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + at, cuda_tanh(x * inverse, LIBDEVICE) * cap, mask=inside)


def softcap_into(out: torch.Tensor, x: torch.Tensor, cap: float) -> torch.Tensor:
    """`out` (float32) = tanh(x / cap) * cap, as transformers computes DiffusionGemma's logits: one
    kernel where the routing kernels run (CUDA GPUs, outside torch.compile), else torch's four passes."""
    if not expert_routing.use_kernels(out.device):
        return out.copy_(x).div_(cap).tanh_().mul_(cap)
    x = x.contiguous()
    inverse = float(np.float32(1.0) / np.float32(cap))  # the float32 reciprocal torch's division multiplies by
    _softcap_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), inverse, float(np.float32(cap)), BLOCK=BLOCK,
                                                      LIBDEVICE=not expert_kernels.interpreting(), num_warps=4)
    return out
