"""Grouped matrix products that read quantized weights once, inside the GEMM.

A denoising step multiplies 256 canvas tokens x top-8 routed rows by all 128 experts of every layer,
so its cost is reading the expert weights. Dequantizing a layer's experts to bf16 before the GEMM
(the portable path in `quantization.py`) reads the low-bit codes, writes a bf16 copy and reads it
again: slower than bf16 itself. These kernels read the codes straight into the matrix units:

- `fp8` on Hopper: `torch._scaled_grouped_mm` (CUTLASS): fp8 weights with one scale per output
  channel, activations quantized per row on the fly.
- `int8` / `int4`, and `fp8` on other GPUs with fp8 support (Ada, Blackwell: torch has no fp8
  grouped GEMM there): a Triton grouped GEMM that converts each weight tile in registers and
  multiplies the codes, scaling the sums (int8/fp8: once per output at the end; int4: once per
  tile, a tile being one scale group). `TRITON_INTERPRET=1` runs it on the CPU for tests.
- unquantized bf16 experts on GPUs where torch's grouped GEMM has no kernel (A100, RTX 30xx-50xx:
  it loops over the experts after a host sync, which no CUDA graph can hold), and on Hopper, where
  it was slower: the same Triton kernel on the plain weights (`float_grouped_wanted`).

Rows arrive sorted by expert with `ends` (int32, one cumulative end per expert), as transformers'
`grouped_mm` experts path prepares them. Every shape is fixed for a given number of rows, and no
value is read back to the CPU, so the products can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from app.engine.diffusion.expert_tiles import default_tiles, int_block_k

try:  # Triton ships with CUDA builds of torch; CPU installs may lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None



def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (`TRITON_INTERPRET=1`), as the tests do."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton kernel can run on tensors of `device`."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def torch_fp8_grouped(capability: tuple[int, int]) -> bool:
    """Whether torch's fp8 grouped GEMM with per-row scales (`torch._scaled_grouped_mm`) runs on a GPU
    of `capability`: Hopper only. ATen refuses it below 9.0 and above 10.0 ("only supported on CUDA
    devices with compute capability = [9.0, 10.0]"), and its own tests run the row-wise form on 9.x
    alone (`PLATFORM_SUPPORTS_FP8_GROUPED_GEMM`: SM90 or later and not SM100 or later). So an RTX
    50xx (12.0) or a B200 (10.0) takes the Triton kernel instead (`triton_fp8`)."""
    return capability[0] == 9


def triton_fp8(capability: tuple[int, int]) -> bool:
    """Whether Triton converts float8_e4m3fn codes on a GPU of `capability`: 8.9 and newer."""
    return capability >= (8, 9)


def torch_bf16_grouped(capability: tuple[int, int]) -> bool:
    """Whether torch's bf16 grouped GEMM (`torch._grouped_mm`, transformers' `grouped_mm` experts)
    runs its CUTLASS kernel on a GPU of `capability`: 9.x and 10.x only. Elsewhere (A100, RTX
    30xx-50xx) ATen loops over the experts with one product each, after copying the offsets to the
    host: 256 products a layer, and a host sync that no CUDA graph can capture."""
    return capability[0] in (9, 10)


def fp8_grouped_usable(device: torch.device) -> bool:
    """torch's fp8 grouped GEMM on `device` (`torch_fp8_grouped`)."""
    return device.type == "cuda" and hasattr(torch, "_scaled_grouped_mm") and torch_fp8_grouped(torch.cuda.get_device_capability(device))


def triton_fp8_usable(device: torch.device) -> bool:
    """Whether the Triton kernel can read fp8 codes on `device` (`triton_fp8`; the interpreter too)."""
    if not triton_usable(device):
        return False
    return device.type == "cpu" or triton_fp8(torch.cuda.get_device_capability(device))


def triton_bf16_experts(capability: tuple[int, int]) -> bool:
    """Whether unquantized experts run the Triton kernel rather than torch's bf16 grouped GEMM on a
    GPU of `capability`: where torch has no kernel of its own (`torch_bf16_grouped`), and on Hopper,
    where the Triton kernel was the faster (H200, 2026-11-29: gate/up 0.267 ms against 0.331, down
    0.138 against 0.203; a 5 s dictation in 8 steps 207.7 ms against 241.8, benchmarks/gpu_real_shape.py,
    docs/records/gpu_real_shape-h200-2026-11-29b.json). A B200 (10.x) keeps torch's: not timed there."""
    return capability[0] == 9 or not torch_bf16_grouped(capability)


def torch_runs_bf16_experts(device: torch.device) -> bool:
    """Whether unquantized experts on `device` run torch's grouped GEMM (`triton_bf16_experts`)."""
    return device.type == "cuda" and not triton_bf16_experts(torch.cuda.get_device_capability(device))


def float_grouped_wanted(weight: torch.Tensor) -> bool:
    """Whether unquantized experts of `weight` ((experts, out, in), bf16/fp16) run the Triton kernel
    on plain weights (`launch` mode `float`) instead of torch's grouped GEMM: on CUDA GPUs where
    `triton_bf16_experts` says so, outside torch.compile, and where a K tile fits."""
    return (weight.device.type == "cuda" and triton is not None and weight.dtype in (torch.bfloat16, torch.float16)
            and not torch_runs_bf16_experts(weight.device) and not torch.compiler.is_compiling()
            and int_block_k("float", weight.shape[-1], 1) is not None)


@functools.cache
def _capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


if triton is not None:

    @triton.jit
    def _nibble_by_float_bits(code):
        """A 4-bit code (0..15, in int32) as the float32 code - 8, without an integer conversion.

        Converting an integer to a float is a slow instruction (a quarter of the rate of bit
        operations on recent GPUs), and an int4 tile converts 2 codes per byte it reads. Here the
        code goes into the mantissa of 128.0 (float32 0x43000000: one unit in the last of its top
        16 bits is 1.0) and 136.0 is subtracted: the same values, by an OR, a shift and a subtraction.
        The experts' products took 26% less time so on an H200 (gate/up 0.217 ms against 0.294, down
        0.119 against 0.153, 2026-11-29), with products equal bit for bit."""
        return ((code.to(tl.uint32) << 16) | 0x43000000).to(tl.float32, bitcast=True) - 136.0

    @triton.jit
    def _expert_tile(tile, ends_ptr, EXPERTS: tl.constexpr, EXPERTS_P2: tl.constexpr, BLOCK: tl.constexpr):
        """The expert of M tile `tile` (-1 past the last tile) and its first row, from the experts'
        cumulative row `ends`: each expert's rows take ceil(rows / BLOCK) tiles, in expert order.

        Every program works this out over the (128) experts for itself, which costs it nothing
        next to its weight tile, where a plan made before the kernel was ~20 small kernels a layer
        (~600 of an int4 forward's ~4,500 on an H100)."""
        e = tl.arange(0, EXPERTS_P2)
        real = e < EXPERTS
        ends = tl.load(ends_ptr + e, mask=real, other=0)
        starts = tl.load(ends_ptr + e - 1, mask=real & (e > 0), other=0)
        tiles = tl.where(real, (ends - starts + BLOCK - 1) // BLOCK, 0)
        tile_ends = tl.cumsum(tiles, 0)
        expert = tl.sum((real & (tile_ends <= tile)).to(tl.int32), 0)  # experts wholly before this tile
        mine = e == expert
        first = tl.sum(tl.where(mine, starts + (tile - (tile_ends - tiles)) * BLOCK, 0), 0)
        return tl.where(expert < EXPERTS, expert, -1), first

    @triton.jit
    def _grouped_dequant_mm_kernel(
        x_ptr,
        codes_ptr,
        scale_ptr,
        out_ptr,
        ends_ptr,
        route_ptr,
        route_weight_ptr,
        M,
        N,
        K: tl.constexpr,
        EXPERTS: tl.constexpr,
        EXPERTS_P2: tl.constexpr,
        GROUPS: tl.constexpr,
        INT4: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK: tl.constexpr,
        DENSE: tl.constexpr,
        ROUTED: tl.constexpr,
        FLOAT_BITS: tl.constexpr,
        ROW_SCALE: tl.constexpr,
    ):
        """out[rows of expert e] = x[rows] @ dequant(codes[e]).T, one (BLOCK x BLOCK_N) tile per program.

        Tile t (program_id 0) is found by `_expert_tile`; DENSE (one weight for all rows: a linear
        layer) tile t is rows t*BLOCK.. of M.
        ROUTED: row r goes to out[route[r]] in float32, times route_weight[route[r]], after rounding
        to x's dtype: what the experts' unrouting did in three kernels after this one.
        FLOAT_BITS (int4): a nibble becomes a float by bit operations, not an integer conversion
        (`_nibble_by_float_bits`): the experts' default; a plain matrix keeps the conversion until
        float bits are timed on one (`default_tiles`).
        Without INT4 the codes are int8, fp8 or already floats (bf16/fp16/fp32), converted to x's
        dtype in registers (exact for int8 and fp8 codes in bf16); ROW_SCALE (int8, fp8) scales each
        output's sum once, at the end.
        """
        tile = tl.program_id(0)
        if DENSE:
            expert = tile * 0
            first = tile * BLOCK
        else:
            expert, first = _expert_tile(tile, ends_ptr, EXPERTS, EXPERTS_P2, BLOCK)
        if expert >= 0:
            if DENSE:
                end = M
            else:
                end = tl.load(ends_ptr + expert)
            rows = first + tl.arange(0, BLOCK)
            row_ok = rows < end
            cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < N
            ks = tl.arange(0, BLOCK_K)
            half = tl.arange(0, BLOCK_K // 2)
            expert64 = expert.to(tl.int64)
            x_rows = x_ptr + rows[:, None].to(tl.int64) * K
            acc = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                if INT4:
                    # The tile is one scale group: its first half of inputs sits in the low nibbles, the
                    # second half in the high ones. Multiply the integer codes, then scale the tile's sum.
                    byte = tl.load(
                        codes_ptr + (expert64 * N + cols[None, :]) * (K // 2) + (k0 // 2 + half)[:, None],
                        mask=col_ok[None, :],
                        other=0,
                    ).to(tl.int32)
                    a_low = tl.load(x_rows + (k0 + half)[None, :], mask=row_ok[:, None], other=0.0)
                    a_high = tl.load(x_rows + (k0 + BLOCK_K // 2 + half)[None, :], mask=row_ok[:, None], other=0.0)
                    if FLOAT_BITS:
                        w_low = _nibble_by_float_bits(byte & 0xF).to(a_low.dtype)
                        w_high = _nibble_by_float_bits(byte >> 4).to(a_high.dtype)
                    else:
                        w_low = ((byte & 0xF) - 8).to(a_low.dtype)  # -8..7: exact in bf16
                        w_high = ((byte >> 4) - 8).to(a_high.dtype)
                    scale = tl.load(scale_ptr + (expert64 * N + cols) * GROUPS + k0 // BLOCK_K, mask=col_ok, other=0.0).to(tl.float32)
                    acc += (tl.dot(a_low, w_low) + tl.dot(a_high, w_high)) * scale[None, :]
                else:
                    a = tl.load(x_rows + (k0 + ks)[None, :], mask=row_ok[:, None], other=0.0)
                    # Columns past N are left unset (no `other`: the interpreter cannot cast it to fp8):
                    # each feeds only its own output column, which is never stored.
                    w = tl.load(codes_ptr + (expert64 * N + cols[None, :]) * K + (k0 + ks)[:, None], mask=col_ok[None, :])
                    w = w.to(a.dtype)  # |code| <= 127, and every fp8 value, is exact in bf16
                    acc += tl.dot(a, w)
            if ROW_SCALE:
                scale = tl.load(scale_ptr + expert64 * N + cols, mask=col_ok, other=0.0).to(tl.float32)
                acc = acc * scale[None, :]
            result = acc.to(x_ptr.dtype.element_ty)
            out_rows = rows.to(tl.int64)
            if ROUTED:
                out_rows = tl.load(route_ptr + rows, mask=row_ok, other=0)
                result = result.to(tl.float32) * tl.load(route_weight_ptr + out_rows, mask=row_ok, other=0.0)[:, None]
            tl.store(
                out_ptr + out_rows[:, None] * N + cols[None, :],
                result.to(out_ptr.dtype.element_ty),
                mask=row_ok[:, None] & col_ok[None, :],
            )


@dataclass
class Launch:
    """One launch of the Triton kernel: its grid, arguments (in the kernel's order), constexprs and
    options, and the output tensor among the arguments. Spelled out so that the tests can compile
    exactly what `dequant_grouped_mm` launches for GPUs the CPU cannot run (tests/triton_targets.py)."""

    grid: tuple[int, int]
    args: tuple
    constexprs: dict
    options: dict
    out: torch.Tensor

    def run(self) -> torch.Tensor:
        _grouped_dequant_mm_kernel[self.grid](*self.args, **self.constexprs, **self.options)
        return self.out


def dequant_grouped_mm(*args, **kwargs) -> torch.Tensor:
    """(rows, K) x experts' (N, K) int8/int4/fp8 (or plain float) weights -> (rows, N): `launch`'s product, computed."""
    return launch(*args, **kwargs).run()


def launch(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor | None,
    ends: torch.Tensor | None,
    mode: str,
    shape: tuple[int, ...],
    tiles: dict | None = None,
    route: tuple[torch.Tensor, torch.Tensor] | None = None,
    capability: tuple[int, int] | None = None,
) -> Launch:
    """The Triton kernel's launch for (rows, K) x experts' (N, K) weights (int8, int4, fp8 or plain) -> (rows, N), rows
    sorted by expert up to `ends`; `dequant_grouped_mm` runs it (here its output is allocated, not computed).

    `codes`/`scale` are a `QuantizedWeight`'s buffers for weights of `shape` (experts, N, K) in `mode`
    int8, int4 or fp8; in mode `float`, `codes` are unquantized weights (bf16/fp16, or fp32 for the
    tests) and `scale` is None. A plain matrix is one expert, and its rows get taller tiles (each M
    tile reads the whole weight again).
    Rows after `ends[-1]` are not written (the experts route every row); a plain matrix takes `ends=None` and multiplies every row (no
    tensor to build for it: on a GPU that was a fill kernel per linear layer and call). `tiles` overrides
    the tile sizes and, for int4, `float_bits` the nibble unpacking (by default float bits for the experts,
    an integer conversion for a plain matrix; the diagnosis sweep, benchmarks/gpu_diagnose.py, times both);
    an int4 tile is always one scale group deep.

    `route` = (order, weights), the experts' last product: sorted row r is the routed slot order[r]
    (a permutation of every row), and the result is float32 in slot order, each row rounded to x's
    dtype and then scaled by weights[slot] (flat, float32), bit for bit what a product, a multiply
    by `weights[order]` and a scatter to `order` give, in one kernel instead of four.

    `capability`: the GPU's, by default that of x's device (the tests give others).
    """
    experts, n, k = (1, *shape) if len(shape) == 2 else shape
    groups = scale.shape[-1] if mode == "int4" else 1
    tiles = tiles or {}
    block_k = int_block_k(mode, k, groups) if mode == "int4" else tiles.get("block_k") or int_block_k(mode, k, groups)
    if block_k is None:
        raise ValueError(f"no Triton tile fits {mode} weights of shape {shape}")
    x = x.contiguous()
    dense = len(shape) == 2
    if capability is None:
        capability = _capability(x.device.index) if x.device.type == "cuda" else (9, 0)
    chosen = default_tiles(mode, dense, x.shape[0], n, block_k, capability)
    block_m, block_n = tiles.get("block_m") or chosen.block_m, tiles.get("block_n") or chosen.block_n
    if dense:
        # A linear layer: its rows share one weight, so taller tiles read it fewer times; every row is
        # written, and tiles map to rows directly.
        out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
        tile_count = triton.cdiv(x.shape[0], block_m)
    else:
        # Rows after ends[-1] are left unwritten: the experts' rows all belong to some expert (a
        # zero fill was a kernel a product, ~60 a forward at the real shape).
        out = torch.empty(x.shape[0], n, dtype=torch.float32 if route is not None else x.dtype, device=x.device)
        tile_count = triton.cdiv(x.shape[0], block_m) + experts  # enough for any split of the rows
    args = (
        x,
        codes,
        x if scale is None else scale.contiguous(),  # read as stored (int4: bf16), in float32 in the kernel; unread in mode float
        out,
        x if dense else ends.to(torch.int32),  # unread by DENSE tiles
        *(route if route is not None else (x, x)),  # unread unless ROUTED
        x.shape[0],
        n,
    )
    constexprs = dict(K=k, EXPERTS=experts, EXPERTS_P2=triton.next_power_of_2(experts), GROUPS=groups, INT4=mode == "int4",
                      BLOCK_N=block_n, BLOCK_K=block_k, BLOCK=block_m, DENSE=dense, ROUTED=route is not None,
                      FLOAT_BITS=mode == "int4" and tiles.get("float_bits", chosen.float_bits), ROW_SCALE=mode in ("int8", "fp8"))
    options = dict(num_warps=tiles.get("num_warps") or chosen.warps, num_stages=tiles.get("num_stages", 3))
    return Launch((tile_count, triton.cdiv(n, block_n)), args, constexprs, options, out)


def fp8_grouped_mm(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(rows, K) bf16 x experts' (N, K) fp8 weights with per-channel scales -> (rows, N) bf16.

    Activations are quantized per row (dynamic scales), the weights are read as stored; the scales
    are applied in the GEMM's epilogue.
    """
    x_fp8, x_scale = quantize_rows_fp8(x)
    weight = codes.transpose(-2, -1)  # (experts, K, N), column-major as the kernel wants it
    w_scale = scale.reshape(codes.shape[0], codes.shape[1]).to(torch.float32)
    return torch._scaled_grouped_mm(x_fp8, weight, x_scale, w_scale, offs=ends.to(torch.int32), out_dtype=x.dtype)


def fp8_mm(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(..., K) x (N, K) fp8 weight with per-channel scales -> (..., N): a linear layer in fp8."""
    flat = x.reshape(-1, x.shape[-1])
    x_fp8, x_scale = quantize_rows_fp8(flat)
    w_scale = scale.reshape(1, -1).to(torch.float32)
    out = torch._scaled_mm(x_fp8, codes.t(), scale_a=x_scale.unsqueeze(-1), scale_b=w_scale, out_dtype=x.dtype)
    return out.reshape(*x.shape[:-1], codes.shape[0])


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn rows and their float32 scales (amax / 448), for the dynamic activation side.

    This runs before every fp8 product (~265 times a forward at the real shape; on the H100 fp8 steps
    ran ~2,000 more kernels than bf16 ones, mostly these). On a GPU it is one Triton kernel that
    reads each row once (`_quantize_rows_fp8_kernel`); inside a compiled layer (where Inductor fuses
    the plain operations with their neighbours), and where Triton is missing, four torch kernels:
    the rows' amax in float32 (exact), clamp, scale, and a division that writes fp8 directly (it
    computes in float32 and rounds on the store, as `.to()` would after it). Both give the
    definition's bits: scale = max|x| / 448, codes = x / scale rounded to nearest.
    """
    codes = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    if not torch.compiler.is_compiling() and triton is not None and x.device.type == "cuda":
        return quantize_rows_fp8_into(x, codes)
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, dtype=torch.float32)
    scale = amax.clamp_(min=1e-12).div_(torch.finfo(torch.float8_e4m3fn).max)
    return torch.div(x, scale.unsqueeze(-1), out=codes), scale


def quantize_rows_fp8_into(x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows_fp8` by the Triton kernel, into `codes` (fp8, or float32 for the tests: the
    interpreter's fp8 rounding is not the GPU's, so they check the quotient the GPU rounds)."""
    width = x.shape[-1]
    rows = x.reshape(-1, width)
    scale = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(width)
    _quantize_rows_fp8_kernel[(rows.shape[0],)](rows.contiguous(), codes, scale, WIDTH=width, BLOCK=block, num_warps=fp8_row_warps(block))
    return codes, scale.reshape(x.shape[:-1])


def fp8_row_warps(block: int) -> int:
    """Warps for a row of `block` values: 8 from 4,096 on, so that a thread holds at most 16 of them."""
    return 8 if block >= 4096 else 4


if triton is not None:

    @triton.jit
    def _quantize_rows_fp8_kernel(x_ptr, codes_ptr, scale_ptr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
        """One row: its amax in float32, scale = max(amax, 1e-12) / 448 and codes = x / scale, both
        divisions rounded as IEEE (and torch) round them, not by the GPU's faster approximate
        division; the fp8 store rounds to nearest."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < WIDTH
        x = tl.load(x_ptr + row * WIDTH + cols, mask=inside, other=0.0).to(tl.float32)
        amax = tl.max(tl.abs(x), axis=0)
        scale = tl.math.div_rn(tl.maximum(amax, 1e-12), 448.0)
        tl.store(scale_ptr + row, scale)
        tl.store(codes_ptr + row * WIDTH + cols, tl.math.div_rn(x, scale).to(codes_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=inside)
