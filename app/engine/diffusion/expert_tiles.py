"""The Triton grouped GEMM's tile shapes (`expert_kernels.launch`): which K, M and N tiles, warps and
int4 nibble unpacking a launch takes on which GPU. Timed on Hopper; elsewhere chosen by the compiled
code's register use (tests/triton_targets.py). Plain Python: `quantization.py` asks `int_block_k`
whether a weight suits the kernel at all, with or without Triton installed."""

from __future__ import annotations

from dataclasses import dataclass


def int_block_k(mode: str, in_features: int, groups: int) -> int | None:
    """The K tile for the Triton kernel, or None when the shape does not suit it (then dequantize).

    int4: exactly one scale group per tile (its two halves are the low and high nibbles, and the
    group's scale is applied once per tile, after the dot), and a half of at least 16 inputs for
    `tl.dot`. int8: the largest tile that divides the inputs (the fastest at the real shapes,
    benchmarks/gpu_diagnose.py, H200).
    """
    if mode == "int4":
        group = in_features // groups
        return group if group in (32, 64, 128) else None
    return next((block for block in (128, 64, 32, 16) if in_features % block == 0), None)


@dataclass(frozen=True)
class Tiles:
    """A launch's tile shape: rows (M) and outputs (N) per program, warps, and for int4 how nibbles
    become floats (`expert_kernels._nibble_by_float_bits` or an integer conversion)."""

    block_m: int
    block_n: int
    warps: int
    float_bits: bool


def default_tiles(mode: str, dense: bool, rows: int, n: int, block_k: int, capability: tuple[int, int]) -> Tiles:
    """The tiles `launch` uses unless told otherwise.

    Hopper (9.x), where they were timed (benchmarks/gpu_diagnose.py on an H200, 2026-11-29,
    docs/records/gpu_kernels-h200-2026-11-29.json): the experts' rows (~16 an expert: 2048 over 128)
    in 32 x 128 tiles on 4 warps, the fastest for int8 (gate/up 0.172 ms against 0.209 with 16 x 64,
    down 0.110 against 0.124) and int4 (0.217 against 0.356 with 64 rows); a plain matrix's 256 rows
    in 64 x 64 tiles on 4 warps (an int4 attention projection 0.039 ms against 0.057 with 64 x 128 on
    8 warps). Some of these store registers to local memory on sm_90 (tests/triton_targets.py
    --sass), and still timed fastest.

    Elsewhere (not timed): tiles that hold their registers by the compiled code. 16-row expert tiles
    64 wide (int4: 32 x 128), a plain matrix 64 x 64 (int4: 64 x 128), and for int4 8 warps where 4
    spill: an int4 linear's 64 x 128 tiles everywhere, the experts' 32 x 128 tiles 128 inputs deep on
    sm_86/sm_89 (RTX 30xx/40xx: 134 stores, 94 loads) and sm_100 (B200: 117, 80); sm_120 spills
    with either.

    int4 experts unpack nibbles by float bits (26% faster on the H200, equal products); a plain
    int4 matrix converts them until float bits are timed there (the linear sweep of
    benchmarks/gpu_diagnose.py times both since 2026-11-29)."""
    int4 = mode == "int4"
    if capability[0] == 9:
        if dense:
            return Tiles(64 if rows >= 64 else 16, _narrow(64, n), 4, False)
        return Tiles(32, _narrow(128, n), 4, int4)
    if dense:
        block_m, block_n = (64 if rows >= 64 else 16), _narrow(128 if int4 else 64, n)
        return Tiles(block_m, block_n, 8 if int4 and block_m * block_n >= 64 * 128 else 4, False)
    block_n = _narrow(128 if int4 else 64, n)
    return Tiles(32 if int4 else 16, block_n, 8 if int4 and block_n >= 128 and block_k >= 128 else 4, int4)


def _narrow(block_n: int, n: int) -> int:
    """`block_n`, or the smallest power of two (16 at least) that covers `n` outputs when fewer."""
    return min(block_n, max(16, 1 << (n - 1).bit_length()))
