"""DiffusionGemma's gated GELU as one Triton kernel on CUDA GPUs, and the dense MLP's gate and up as one product.

Both MLPs of a text layer gate with GELU (tanh form), as does the decoder's self-conditioning MLP:
transformers' dense MLPs run their gate and up products, the GELU and the product of the two (four
kernels), and the experts run the GELU and the product on the halves of their gate/up product (two). At 30 layers a forward that is ~180 of the
small kernels a denoising step is bound by (docs/benchmarks.md, H100 profile). Here:

- `gated`: one kernel reads a row's gate and up halves, computes GELU with torch's CUDA formula
  (`GeluCUDAKernelImpl`: the same constants, the same operations, its one fused multiply-add where
  nvcc contracts it, CUDA's `tanhf` through libdevice), rounds it to the row's dtype as torch's
  kernel does, multiplies by up and rounds again: the two kernels' bits by design
  (benchmarks/gpu_fused_check.py compares them on a GPU). Under Triton's interpreter (the CPU
  tests), which has no libdevice, tanh comes from exp: the same to float32 rounding.
- `fuse_mlps`: the dense MLP's gate and up weights are stacked at load into one linear
  (`stacking.py`), so one product makes both halves: the dense MLP is then three kernels, not five.

Off CUDA GPUs, and inside torch.compile (which fuses the activation itself), `gated` is
transformers' `act_fn(gate) * up`.
"""

from __future__ import annotations

import functools
import types

import torch
from torch import nn
from transformers.activations import GELUTanh
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import (
    DiffusionGemmaSelfConditioning,
    DiffusionGemmaText4MLP,
    DiffusionGemmaTextExperts,
)

from app.engine.diffusion import expert_kernels, expert_routing
from app.engine.diffusion.quantization import QuantizedLinear
from app.engine.diffusion.stacking import stack_linears

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)
BLOCK = 1024  # a program's columns: an expert's 704 in one, the dense MLP's in a few

if triton is not None:
    from triton.language.extra import libdevice

    # torch's constants, as float32 (its kBeta is M_SQRT2 * M_2_SQRTPI * 0.5 in double, then rounded)
    BETA = tl.constexpr(0.7978845608028654)
    KAPPA = tl.constexpr(0.044715)

    @triton.jit
    def cuda_tanh(x, LIBDEVICE: tl.constexpr):
        """CUDA's tanhf, as torch's kernels call it (LIBDEVICE), or under Triton's interpreter an exp form."""
        if LIBDEVICE:
            return libdevice.tanh(x)  # CUDA's tanhf, which torch's GELU kernel calls
        else:  # Triton's interpreter has no libdevice; past 15, tanh is +-1 in float32
            return 1.0 - 2.0 / (tl.exp(2.0 * tl.minimum(tl.maximum(x, -15.0), 15.0)) + 1.0)

    @triton.jit
    def _gelu_tanh_mul_kernel(x_ptr, out_ptr, WIDTH: tl.constexpr, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < WIDTH
        dtype = out_ptr.dtype.element_ty
        gate = tl.load(x_ptr + row * 2 * WIDTH + cols, mask=inside, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + row * 2 * WIDTH + WIDTH + cols, mask=inside, other=0.0).to(tl.float32)
        inner = BETA * tl.fma(KAPPA, gate * gate * gate, gate)
        gelu = ((0.5 * gate) * (1.0 + cuda_tanh(inner, LIBDEVICE))).to(dtype)
        tl.store(out_ptr + row * WIDTH + cols, (gelu.to(tl.float32) * up).to(dtype), mask=inside)


def gelu_tanh_mul(x: torch.Tensor) -> torch.Tensor:
    """GELU (tanh) of `x`'s first half along its last dimension times its second half, in one kernel."""
    x = x.contiguous()
    width = x.shape[-1] // 2
    out = torch.empty(*x.shape[:-1], width, dtype=x.dtype, device=x.device)
    block = min(BLOCK, triton.next_power_of_2(width))
    _gelu_tanh_mul_kernel[(x.numel() // x.shape[-1], triton.cdiv(width, block))](
        x, out, WIDTH=width, BLOCK=block, LIBDEVICE=not expert_kernels.interpreting(), num_warps=4)
    return out


def gated(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`act(gate) * up` for x = [gate | up] along its last dimension: the kernel where the routing
    kernels run (CUDA GPUs, outside torch.compile: `expert_routing.use_kernels`), else torch's."""
    if expert_routing.use_kernels(x.device):
        return gelu_tanh_mul(x)
    gate, up = x.chunk(2, dim=-1)
    return act(gate) * up


def is_gelu_tanh(act: nn.Module) -> bool:
    """Whether `act` is transformers' GELU in torch's tanh form (the kernel's formula)."""
    fn = getattr(act, "act", None)
    return isinstance(act, GELUTanh) and isinstance(fn, functools.partial) and fn.func is nn.functional.gelu \
        and fn.keywords == {"approximate": "tanh"}


def _stacked_forward(self: DiffusionGemmaText4MLP, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(gated(self.act_fn, self.gate_up_proj(x)))


def _stacked_self_conditioning(self: DiffusionGemmaSelfConditioning, inputs_embeds: torch.Tensor,
                               self_conditioning_signal: torch.Tensor) -> torch.Tensor:
    """transformers' `DiffusionGemmaSelfConditioning.forward`, its gate and up one product."""
    signal = self.down_proj(gated(self.act_fn, self.gate_up_proj(self.pre_norm(self_conditioning_signal))))
    return self.post_norm(inputs_embeds + signal)


def _experts_gate(self: DiffusionGemmaTextExperts, gate_up: torch.Tensor) -> torch.Tensor:
    return gated(self.act_fn, gate_up)


def fuse_mlps(model: nn.Module, device: torch.device) -> int:
    """Where Triton runs on `device`: stack every dense MLP's gate and up into one linear (layers that
    share weights, as the tied encoder and decoder do, share the stacked one) and give it the gated
    kernel, the same for the decoder's self-conditioning MLP, and give the experts the kernel as their
    gate; returns how many MLPs were stacked."""
    if not expert_kernels.triton_usable(device):
        return 0
    count, stacked = 0, {}  # gate and up weights' addresses -> (those weights, kept so the addresses stay theirs; the stacked linear)
    for module in model.modules():
        if isinstance(module, DiffusionGemmaTextExperts) and is_gelu_tanh(module.act_fn):
            module._apply_gate = types.MethodType(_experts_gate, module)
        if not isinstance(module, (DiffusionGemmaText4MLP, DiffusionGemmaSelfConditioning)) or not is_gelu_tanh(module.act_fn):
            continue
        parts = (module.gate_proj, module.up_proj)
        if not all(type(part) in (nn.Linear, QuantizedLinear) for part in parts):
            continue  # under a LoRA (which reads its base weight, its tied twin's): its own products, never the twin's stacked one
        # by address, not identity: tied weights may be two parameters over one storage
        weights = tuple(part.qweight.codes if isinstance(part, QuantizedLinear) else part.weight for part in parts)
        key = tuple(weight.data_ptr() for weight in weights)
        if key not in stacked:
            stacked[key] = weights, stack_linears(parts)
        if stacked[key][1] is None:
            continue
        module.gate_up_proj = stacked[key][1]
        del module.gate_proj, module.up_proj
        forward = _stacked_forward if isinstance(module, DiffusionGemmaText4MLP) else _stacked_self_conditioning
        module.forward = types.MethodType(forward, module)
        count += 1
    return count
