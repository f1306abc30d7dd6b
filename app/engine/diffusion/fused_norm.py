"""DiffusionGemma's RMSNorm as one Triton kernel on CUDA GPUs.

transformers' `DiffusionGemmaRMSNorm` runs as six to eight small kernels (cast to float32, square,
mean, add eps, power, multiply, scale, cast back); a layer has eleven of them, so at the real shape
they were the largest share of a denoising step's GPU time after the experts (about a fifth, by the
profile in docs/benchmarks.md). This kernel reads a row once, computes the same float32 formula,
and writes it once. Only the summation order of the mean differs from eager PyTorch.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm

from app.engine.diffusion import expert_kernels

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)

if triton is not None:

    @triton.jit
    def root_mean_square(x, eps, WIDTH: tl.constexpr):
        """A row's (float32, zero past WIDTH) root mean square, eps inside: the norm's divisor."""
        return tl.sqrt(tl.sum(x * x, axis=0) / WIDTH + eps)

    @triton.jit
    def normalized(x, eps, WIDTH: tl.constexpr):
        """A row (float32, zero past WIDTH) over its root mean square: the norm without its scale."""
        return x / root_mean_square(x, eps, WIDTH)

    @triton.jit
    def _rms_norm_kernel(x_ptr, weight_ptr, out_ptr, eps, WIDTH: tl.constexpr, BLOCK: tl.constexpr, SCALED: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < WIDTH
        x = tl.load(x_ptr + row * WIDTH + cols, mask=inside, other=0.0).to(tl.float32)
        y = normalized(x, eps, WIDTH)
        if SCALED:
            y = y * tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * WIDTH + cols, y.to(out_ptr.dtype.element_ty), mask=inside)


def rms_norm(norm: DiffusionGemmaRMSNorm, hidden_states: torch.Tensor) -> torch.Tensor:
    """`norm(hidden_states)` in one kernel: float32 inside, the input's dtype out; or, if the kernel
    that made `hidden_states` computed it already (`ahead`), that."""
    computed = norm.__dict__.pop("computed_ahead", None)
    if computed is not None and computed[0] is hidden_states:
        return computed[1]
    width = hidden_states.shape[-1]
    x = hidden_states.contiguous()
    out = torch.empty_like(x)
    weight = norm.weight if norm.with_scale else x  # unused when not scaled
    _rms_norm_kernel[(x.numel() // width,)](x, weight, out, norm.eps, WIDTH=width, BLOCK=triton.next_power_of_2(width), SCALED=norm.with_scale)
    return out


def takes_ahead(norm: nn.Module | None) -> bool:
    """Whether `norm` is a fused scaled RMSNorm, which takes a result computed ahead (`ahead`)."""
    return isinstance(norm, DiffusionGemmaRMSNorm) and norm.with_scale and getattr(norm.forward, "__func__", None) is rms_norm


def ahead(norm: DiffusionGemmaRMSNorm, of: torch.Tensor, normed: torch.Tensor) -> None:
    """Hand `norm` its result for `of`, computed by the kernel that made `of` (a fused layer's last,
    with the same formula and launch): its next call on that very tensor returns it instead of a
    kernel of its own. Identity, not equality, so nothing else is ever taken for it."""
    norm.__dict__["computed_ahead"] = (of, normed)


def fuse_norms(model: nn.Module, device: torch.device, *, leave: nn.Module | None = None) -> int:
    """Give every DiffusionGemmaRMSNorm of `model` the fused forward where Triton runs; returns how many.

    Norms inside `leave` keep transformers' forward: there torch.compile fuses them itself, together
    with the residual additions and casts around them, which a hand-written kernel would wall off.
    """
    if not expert_kernels.triton_usable(device):
        return 0
    count, left = 0, {id(m) for m in leave.modules()} if leave is not None else set()
    for module in model.modules():
        if isinstance(module, DiffusionGemmaRMSNorm) and id(module) not in left:
            module.forward = types.MethodType(rms_norm, module)
            count += 1
    return count
