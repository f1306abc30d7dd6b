"""DiffusionGemma's rotary position embedding as one Triton kernel on CUDA GPUs.

transformers' `apply_rotary_pos_emb` is five kernels (x * cos, the half rotation's negation and
concatenation, times sin, the sum) on every query and key of every layer: ten kernels a layer, 300
a forward at the real 30 layers (benchmarks/forward_census.py counts a layer's).
This kernel reads a head's row once and rounds where transformers does (each product, then the
sum, to the tensor's dtype), so a bf16 result is the same bit for bit: it has no reduction whose
order could differ.

The function is module-level in transformers (each attention forward looks it up by name), so
`fuse_rope` replaces it there with one that takes this kernel for tensors Triton runs on (CUDA, or
the CPU under Triton's interpreter in the tests) laid out as the attention passes them, and
transformers' own otherwise (CPU, torch.compile, other layouts).
"""

from __future__ import annotations

import functools

import torch
from transformers.models.diffusion_gemma import modeling_diffusion_gemma

from app.engine.diffusion import expert_kernels

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)
transformers_rope = modeling_diffusion_gemma.apply_rotary_pos_emb

if triton is not None:

    @triton.jit
    def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, angles, HEADS: tl.constexpr, DIM: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # one head of one token
        token = (row // HEADS) % angles  # cos/sin rows: one a token, or one a position shared by the batch
        cols = tl.arange(0, DIM)
        half = DIM // 2
        dtype = out_ptr.dtype.element_ty
        x = tl.load(x_ptr + row * DIM + cols).to(tl.float32)
        partner = tl.load(x_ptr + row * DIM + (cols + half) % DIM).to(tl.float32)
        rotated = tl.where(cols < half, -partner, partner)
        cos = tl.load(cos_ptr + token * DIM + cols).to(tl.float32)
        sin = tl.load(sin_ptr + token * DIM + cols).to(tl.float32)
        out = (x * cos).to(dtype).to(tl.float32) + (rotated * sin).to(dtype).to(tl.float32)
        tl.store(out_ptr + row * DIM + cols, out.to(dtype))


def rope_warps(dim: int) -> int:
    """One warp a head of up to 256 values (8 a thread), two for the full attention layers' 512."""
    return 1 if dim <= 256 else 2


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`transformers_rope(x, cos, sin, unsqueeze_dim=2)` for x (batch, tokens, heads, dim) and
    cos/sin (batch or 1, tokens, dim), all contiguous: one program a head of a token."""
    heads, dim = x.shape[-2:]
    out = torch.empty_like(x)
    _rope_kernel[(x.numel() // dim,)](x, cos, sin, out, cos.numel() // dim, HEADS=heads, DIM=dim, num_warps=rope_warps(dim))
    return out


def _fits(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int) -> bool:
    dim = x.shape[-1]
    return (not torch.compiler.is_compiling() and expert_kernels.triton_usable(x.device)
            and unsqueeze_dim == 2 and x.dim() == 4 and dim >= 2 and dim & (dim - 1) == 0  # tl.arange: a power of two
            and cos.shape == sin.shape and cos.shape[0] in (1, x.shape[0]) and cos.shape[1:] == (x.shape[1], dim)
            and cos.dtype == sin.dtype == x.dtype
            and x.is_contiguous() and cos.is_contiguous() and sin.is_contiguous())


@functools.wraps(transformers_rope)
def apply_rotary_pos_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1) -> torch.Tensor:
    if _fits(x, cos, sin, unsqueeze_dim):
        return rope(x, cos, sin)
    return transformers_rope(x, cos, sin, unsqueeze_dim)


def fuse_rope(device: torch.device) -> bool:
    """Let DiffusionGemma's attention take the kernel where Triton runs on `device`; True if it does."""
    if not expert_kernels.triton_usable(device):
        return False
    modeling_diffusion_gemma.apply_rotary_pos_emb = apply_rotary_pos_emb
    return True
