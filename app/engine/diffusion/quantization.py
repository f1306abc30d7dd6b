"""Weight-only quantization of the backbone, experts included, with kernels that read the low-bit weights.

DiffusionGemma keeps its 128 experts per layer in two fused 3-D parameters (~23B of its 25B weights).
bitsandbytes' `load_in_4bit`/`load_in_8bit` only replace `nn.Linear`, so the experts would stay in
bf16 (~46 GB); torchao is not a dependency, and transformers' FP8 path needs a kernel downloaded from
the Hub. So this module stores weights itself, in plain tensors any torch build handles (CPU too):

- `int8`: one scale per output channel (per expert), symmetric, round to nearest.
- `fp8`:  float8_e4m3fn values with one scale per output channel.
- `int4`: two values per byte, one bf16 scale per group of up to 128 inputs (per-channel 4-bit is
  too coarse); a byte holds input j of its group in the low nibble and input j + group/2 in the high
  one, so a kernel reads each half of a group's inputs as one contiguous run. bf16, not float32:
  the scales are ~1 GB of the real model in float32, and on a 16 GB card the half saved counts; a
  bf16 scale is off by at most 0.4%, against a 4-bit step of 1/7 of the group's largest weight.

At run time a layer reads its codes inside the matrix product where a kernel for it exists
(`expert_kernels.py`: torch's fp8 grouped GEMM on Hopper, a Triton grouped GEMM for int8/int4 on
CUDA GPUs and for fp8 on Ada and Blackwell). Elsewhere (CPU, GPUs without Triton) the weights are dequantized to the compute
dtype just before the matmul and freed after it: for the experts, all 128 of one layer at once, and
transformers' own expert kernels do the math. Attention, norms, router, embeddings and the tied
lm_head stay in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts

from app.engine.devices import free_gpu_bytes
from app.engine.diffusion import expert_kernels as kernels
from app.engine.diffusion.expert_routing import SortedRows, sorted_experts, top_k_sum
from app.engine.diffusion.expert_tiles import int_block_k
from app.errors import UserError

MODES = ("fp32", "bf16", "fp8", "int8", "int4")
QUANTIZED_MODES = ("fp8", "int8", "int4")
_BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2 / 128}
# Room for activations (canvas logits over a 262k vocabulary, one layer of dequantized experts),
# the KV cache and the Whisper encoder, on top of the weights.
_RESERVE_BYTES = 4 * 2**30
_INT4_GROUPS = (128, 64, 32, 16)


class QuantizedWeight(nn.Module):
    """A (..., out, in) weight stored as int8/fp8/int4 codes plus scales; `dequantize()` rebuilds it."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, mode: str, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.mode = mode
        self.shape = shape
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)

    @classmethod
    def quantize(cls, weight: torch.Tensor, mode: str) -> "QuantizedWeight":
        """Quantize one expert (or one matrix) at a time, to keep temporaries small on big tensors."""
        rows = weight.reshape(-1, *weight.shape[-2:])
        parts = [_quantize_matrix(matrix, mode) for matrix in rows]
        codes = torch.stack([c for c, _ in parts]).reshape(*weight.shape[:-2], *parts[0][0].shape)
        scale = torch.stack([s for _, s in parts]).reshape(*weight.shape[:-2], *parts[0][1].shape)
        return cls(codes, scale, mode, tuple(weight.shape))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        scale = self.scale.to(dtype)
        if self.mode == "int4":  # each group's first half in the low nibbles, its second half in the high ones
            groups = scale.shape[-1]
            packed = self.codes.reshape(*self.shape[:-1], groups, -1)
            values = torch.cat((packed & 0x0F, packed >> 4), dim=-1).to(dtype) - 8
            return (values * scale.unsqueeze(-1)).reshape(self.shape)
        return self.codes.to(dtype) * scale

    def kernel(self, device: torch.device) -> str:
        """Which product reads these codes on `device`: `fp8` (torch's, Hopper), `triton` (int8,
        int4; fp8 on other GPUs with fp8 support) or `dequantize` (portable)."""
        if self.mode == "fp8" and kernels.fp8_grouped_usable(device) and all(d % 16 == 0 for d in self.shape[-2:]):
            return "fp8"
        groups = self.scale.shape[-1] if self.mode == "int4" else 1
        usable = kernels.triton_fp8_usable(device) if self.mode == "fp8" else kernels.triton_usable(device)
        if usable and int_block_k(self.mode, self.shape[-1], groups):
            return "triton"
        return "dequantize"

    def grouped_mm(self, x: torch.Tensor, ends: torch.Tensor, kernel: str) -> torch.Tensor:
        """x (rows sorted by expert, in) @ each expert's weight.T -> (rows, out); `ends` per expert, int32."""
        if kernel == "fp8":
            return kernels.fp8_grouped_mm(x, self.codes, self.scale, ends)
        return kernels.dequant_grouped_mm(x, self.codes, self.scale, ends, self.mode, self.shape)

    def routed_mm(self, x: torch.Tensor, ends: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The Triton kernel's `grouped_mm` with each row times `weights[order]` (float32) and put
        back at `order` in its epilogue: the experts' last product where the Triton kernel runs it."""
        return kernels.dequant_grouped_mm(x, self.codes, self.scale, ends, self.mode, self.shape, route=(order, weights))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, shape={self.shape}"


class QuantizedLinear(nn.Module):
    """Drop-in for `nn.Linear` (also as the base layer inside a peft LoRA layer)."""

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.qweight = qweight
        self.bias = bias

    @classmethod
    def quantize(cls, linear: nn.Linear, mode: str) -> "QuantizedLinear":
        return cls(QuantizedWeight.quantize(linear.weight.data, mode), linear.bias)

    @classmethod
    def stacked(cls, *parts: "QuantizedLinear") -> "QuantizedLinear":
        """One linear whose outputs are each part's in turn (one product where there were several):
        their codes and scales stacked along the outputs. Every scale belongs to one output row (int8
        and fp8: the row's; int4: a group of the row's inputs), so the codes and scales are the same."""
        weights = [part.qweight for part in parts]
        first = weights[0]
        if any(w.mode != first.mode or w.shape[1] != first.shape[1] or w.scale.shape[1:] != first.scale.shape[1:] for w in weights) \
                or any(part.bias is not None for part in parts):
            raise ValueError(f"cannot stack {[(w.mode, w.shape) for w in weights]} linears")
        stacked = QuantizedWeight(torch.cat([w.codes for w in weights]), torch.cat([w.scale for w in weights]), first.mode,
                                  (sum(w.shape[0] for w in weights), first.shape[1]))
        return cls(stacked, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.qweight.kernel(x.device)
        if kernel == "dequantize":
            return F.linear(x, self.qweight.dequantize(x.dtype), self.bias)
        if kernel == "fp8":
            out = kernels.fp8_mm(x, self.qweight.codes, self.qweight.scale)
        else:  # one weight for every row
            q = self.qweight
            flat = x.reshape(-1, x.shape[-1])
            out = kernels.dequant_grouped_mm(flat, q.codes, q.scale, None, q.mode, q.shape).reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


class QuantizedExperts(nn.Module):
    """Holds a layer's experts quantized; runs them through a kernel that reads the codes, or else
    lends transformers' experts module dequantized weights for one call.

    With a kernel (`routed_rows`), the wrapped `DiffusionGemmaTextExperts` gives its gate and config.
    Without one, it keeps its activation and kernel dispatch; only its two 3-D parameters are
    replaced by plain tensors for the duration of one forward.
    """

    def __init__(self, experts: DiffusionGemmaTextExperts, mode: str) -> None:
        super().__init__()
        self.gate_up = QuantizedWeight.quantize(experts.gate_up_proj.data, mode)
        self.down = QuantizedWeight.quantize(experts.down_proj.data, mode)
        del experts.gate_up_proj, experts.down_proj
        self.experts = experts

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        rows = self.routed_rows(hidden_states, top_k_index, top_k_weights)
        if rows is not None:
            return top_k_sum(rows, hidden_states.dtype)
        self.experts.gate_up_proj = self.gate_up.dequantize(hidden_states.dtype)
        self.experts.down_proj = self.down.dequantize(hidden_states.dtype)
        try:
            return self.experts(hidden_states, top_k_index, top_k_weights)
        finally:
            del self.experts.gate_up_proj, self.experts.down_proj

    def routed_rows(self, hidden: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> SortedRows | torch.Tensor | None:
        """The experts' weighted rows before their top-k sum (`expert_routing.sorted_experts`), by
        transformers' `grouped_mm` path with products that read the quantized codes; None where no
        kernel reads them (the dequantized path runs transformers' experts, which sum themselves)."""
        up_kernel, down_kernel = self.gate_up.kernel(hidden.device), self.down.kernel(hidden.device)
        if "dequantize" in (up_kernel, down_kernel):
            return None

        def up(rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
            return self.gate_up.grouped_mm(rows, ends, up_kernel)

        if down_kernel == "triton":  # weighted and put back in the kernel's epilogue
            return sorted_experts(hidden, top_k_index, top_k_weights, self.experts.num_experts, up, self.experts._apply_gate,
                                  routed_down=self.down.routed_mm)
        return sorted_experts(hidden, top_k_index, top_k_weights, self.experts.num_experts, up, self.experts._apply_gate,
                              down=lambda gated, ends: self.down.grouped_mm(gated, ends, down_kernel))


def quantize_backbone(model: DiffusionGemmaForBlockDiffusion, mode: str, device: torch.device) -> None:
    """Quantize every text layer's experts and linears (router excepted) and move the model to `device`.

    Layers are moved one at a time, each weight quantized on `device` right after it arrives, so a
    backbone loaded on the CPU never needs its bf16 size in GPU memory. Encoder and decoder layers
    share their weights (tied), so each tied pair shares one quantized module.
    """
    if mode not in QUANTIZED_MODES:
        model.to(device)
        return
    done: dict[int, nn.Module] = {}  # id of an original weight -> the quantized module replacing it
    for pair in zip(model.model.decoder.layers, model.model.encoder.language_model.layers):
        for layer in pair:
            for name, module in list(layer.named_modules()):
                if isinstance(module, DiffusionGemmaTextExperts):
                    replacement = _quantized(done, module.gate_up_proj, lambda m=module: QuantizedExperts(m.to(device), mode))
                elif type(module) is nn.Linear and not name.startswith("router") and "lora_" not in name:
                    replacement = _quantized(done, module.weight, lambda m=module: QuantizedLinear.quantize(m.to(device), mode))
                else:
                    continue
                parent, _, child = name.rpartition(".")
                setattr(layer.get_submodule(parent) if parent else layer, child, replacement)
            layer.to(device)
    model.to(device)


def choose_quantization(requested: str, device: torch.device, config: DiffusionGemmaConfig, *, compiled: bool = False) -> str:
    """`auto`: fp32 on the CPU; on a GPU the fastest mode whose weights fit in free memory, in the
    order measured at the real shape (docs/benchmarks.md, H100): bf16, fp8 (Hopper only: elsewhere
    fp8 runs the Triton kernel, never measured, and int8 takes the same memory through the measured
    one), int8, int4; with `compiled` layers fp8 first (27.7 ms a step against bf16's 33.5: Inductor fuses
    the activations' quantization, which is most of fp8's extra cost without it).

    Every mode but fp32 computes in bf16 on a GPU, which GPUs before Ampere (compute capability 8.0)
    cannot: cuBLAS and Triton's products refuse it there, so such a GPU is refused before loading."""
    if device.type == "cuda" and requested != "fp32" and torch.cuda.get_device_capability(device) < (8, 0):
        raise UserError(
            f"The {torch.cuda.get_device_name(device)} cannot compute in bfloat16, which the diffusion model needs on a GPU "
            "(Ampere and newer: RTX 30xx, A100); choose device cpu or the Whisper engine.",
            code="bad_device",
        )
    if requested == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise UserError(
            f"The {name} has no fp8 tensor cores (they start with Ada and Hopper GPUs); choose bf16, int8 or int4.",
            code="bad_quantization",
        )
    if requested in MODES:
        return requested
    if requested != "auto":
        raise UserError(f"Unknown quantization '{requested}'. Choose one of: auto, {', '.join(MODES)}.", code="bad_quantization")
    if device.type != "cuda":
        return "fp32"
    free = free_gpu_bytes(device)
    if not kernels.fp8_grouped_usable(device):
        candidates: tuple[str, ...] = ("bf16", "int8", "int4")
    else:
        candidates = ("fp8", "bf16", "int8", "int4") if compiled else ("bf16", "fp8", "int8", "int4")
    for mode in candidates:
        if estimate_bytes(config, mode) <= free:
            return mode
    need = estimate_bytes(config, "int4") / 2**30
    raise UserError(
        f"The diffusion model needs about {need:.0f} GiB of free GPU memory even with int4, and only "
        f"{free / 2**30:.1f} GiB is free. Close other programs that use the GPU, or use the Whisper engine.",
        code="out_of_memory",
    )


def estimate_bytes(config: DiffusionGemmaConfig, mode: str) -> int:
    """Weights of the backbone in `mode` (vision tower excluded) plus a fixed reserve for activations."""
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    quantizable = other = 0
    for name, param in model.named_parameters():
        if ".vision_tower." in name or ".embed_vision." in name:
            continue
        is_layer_weight = ".layers." in name and ".router." not in name and param.dim() >= 2
        if is_layer_weight:
            quantizable += param.numel()
        else:
            other += param.numel()
    other_bytes = 4 if mode == "fp32" else 2
    return int(quantizable * _BYTES_PER_WEIGHT[mode] + other * other_bytes + _RESERVE_BYTES)


def compute_dtype(mode: str, device: torch.device) -> torch.dtype:
    """The dtype activations and unquantized weights use: fp32 for `fp32` and for quantized modes on CPU."""
    if mode == "fp32" or (device.type == "cpu" and mode in QUANTIZED_MODES):
        return torch.float32
    return torch.bfloat16


def _quantized(done: dict[int, nn.Module], weight: torch.Tensor, build) -> nn.Module:
    key = id(weight)
    if key not in done:
        done[key] = build()
    return done[key]


def _quantize_matrix(weight: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.float()
    if mode == "int4":
        group = next((g for g in _INT4_GROUPS if w.shape[-1] % g == 0), w.shape[-1])
        grouped = w.reshape(w.shape[0], -1, group)
        scale = (grouped.abs().amax(dim=-1).clamp(min=1e-12) / 7).to(torch.bfloat16)
        if group % 2:
            raise ValueError(f"int4 needs an even number of inputs, got {w.shape[-1]}")
        # codes for the stored (rounded) scale, so that codes x scale is the nearest the format holds
        codes = (torch.round(grouped / scale.float().unsqueeze(-1)).clamp(-8, 7) + 8).to(torch.uint8)
        half = group // 2  # byte j of a group: input j (low nibble) and input j + group/2 (high)
        return (codes[..., :half] | (codes[..., half:] << 4)).reshape(w.shape[0], -1), scale
    scale = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
    if mode == "int8":
        scale = scale / 127
        return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale
    if mode == "fp8":
        scale = scale / torch.finfo(torch.float8_e4m3fn).max
        return (w / scale).to(torch.float8_e4m3fn), scale
    raise ValueError(f"not a quantized mode: {mode}")
