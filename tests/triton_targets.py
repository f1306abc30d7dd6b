"""Compile the app's Triton kernels for real GPUs, on a machine without one: `python -m tests.triton_targets`.

The CPU tests run the kernels under Triton's interpreter, which executes their Python but not the
compiler that a GPU needs: a kernel the interpreter runs can still fail to compile for an H100 or an
RTX 3090 (and then every int8/int4 dictation there fails). Triton ships the NVIDIA compiler
(`ptxas`) in its wheel, so this builds each launch `expert_kernels.launch` makes at the real
model's shapes (arguments on the meta device: no data, no GPU), and the fused RMSNorm, down to a
cubin for each target. Prints one JSON object: per target and kernel, the cubin's size in bytes or
the error. Run without TRITON_INTERPRET (the test starts it so).

`--sass`: instead, the instruction mix of each kernel's machine code for the first target (by
Triton's `nvdisasm`), e.g. how many integer-to-float conversions (I2F) the int4 unpacking costs, or
whether registers spill to local memory (STL/LDL). Launches are made as on that target's GPU.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from app.engine.diffusion import expert_kernels, expert_routing, fused_attention, fused_layer, fused_mlp, fused_norm, softcap

TYPES = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16", torch.int32: "i32", torch.int64: "i64",
         torch.uint8: "u8", torch.int8: "i8", torch.float8_e4m3fn: "fp8e4nv"}
META = torch.device("meta")


def signature(fn, args: tuple, constexprs: dict) -> tuple[dict, dict]:
    """Triton's signature and constexpr map for calling `fn` with `args` (positional) and `constexprs`."""
    values = dict(zip(fn.arg_names, args)) | constexprs
    types, fixed = {}, {}
    for index, name in enumerate(fn.arg_names):
        value = values[name]
        if fn.params[index].is_constexpr:
            types[name], fixed[(index,)] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            types[name] = "*" + TYPES[value.dtype]
        else:
            types[name] = "fp32" if isinstance(value, float) else "i32"
    return types, fixed


def compile_for(fn, args: tuple, constexprs: dict, options: dict, capability: int, sass: bool = False) -> int | str | dict:
    types, fixed = signature(fn, args, constexprs)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Triton prints a failed build's PTX: keep stdout the report
            compiled = triton.compile(ASTSource(fn=fn, signature=types, constexprs=fixed), target=GPUTarget("cuda", capability, 32),
                                      options=options)
    except Exception as exc:  # noqa: BLE001 - reported per kernel and target
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    return instruction_mix(compiled.asm["cubin"]) if sass else len(compiled.asm["cubin"])


def instruction_mix(cubin: bytes) -> dict:
    """Opcode counts of a cubin's machine code (static: a loop body counts once per unrolled copy)."""
    from triton.backends.nvidia import compiler as nvidia

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([os.path.join(os.path.dirname(nvidia.__file__), "bin", "nvdisasm"), "-c", file.name],
                              capture_output=True, text=True, check=True).stdout
    ops = collections.Counter(m.group(1).split(".")[0] for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", text))
    return {"instructions": sum(ops.values()), **dict(ops.most_common(12))}


def expert_modes(capability: tuple[int, int]) -> list[str]:
    """The weight modes the engine runs through the Triton kernel on a GPU of `capability`: int8 and
    int4 everywhere, fp8 where torch has no fp8 grouped GEMM but the GPU has fp8 (Ada, Blackwell),
    and the unquantized bf16 experts where `triton_bf16_experts` (all but 10.x: torch's grouped GEMM has
    no kernel elsewhere, and on 9.x the Triton kernel timed faster)."""
    fp8 = ["fp8"] if expert_kernels.triton_fp8(capability) and not expert_kernels.torch_fp8_grouped(capability) else []
    return ["int8", "int4", *fp8, *(["float"] if expert_kernels.triton_bf16_experts(capability) else [])]


def expert_launches(other_nibbles: bool, capability: tuple[int, int] = (9, 0)) -> dict:
    """The launches of a real-shape layer (128 experts, hidden 2816, expert width 704; 256 canvas
    tokens x top-8 routed rows; a 4096 x 2816 projection) in each mode of `expert_modes`, as the
    engine makes them (bf16 experts: no projection, bf16 linears are torch's); with `other_nibbles`,
    the int4 launches with the nibble unpacking the engine does not use there (the tile sweep's)."""
    rows, hidden, width, experts = 256 * 8, 2816, 704, 128
    x_in, x_mid, x_linear = (torch.empty(rows, hidden, dtype=torch.bfloat16, device=META),
                             torch.empty(rows, width, dtype=torch.bfloat16, device=META),
                             torch.empty(256, hidden, dtype=torch.bfloat16, device=META))
    ends = torch.empty(experts, dtype=torch.int32, device=META)
    route = (torch.empty(rows, dtype=torch.int64, device=META), torch.empty(rows, dtype=torch.float32, device=META))
    launches = {}
    for mode in expert_modes(capability):
        def weight(shape: tuple[int, ...]) -> tuple:
            k = shape[-1]
            if mode == "int4":
                group = 128 if k % 128 == 0 else 64
                return (torch.empty(*shape[:-1], k // 2, dtype=torch.uint8, device=META),
                        torch.empty(*shape[:-1], k // group, dtype=torch.bfloat16, device=META), shape)
            if mode == "float":
                return torch.empty(shape, dtype=torch.bfloat16, device=META), None, shape
            codes = torch.empty(shape, dtype=torch.int8 if mode == "int8" else torch.float8_e4m3fn, device=META)
            return codes, torch.empty(*shape[:-1], 1, dtype=torch.float32, device=META), shape

        if other_nibbles and mode != "int4":
            continue
        experts_tiles, linear_tiles = ({"float_bits": False}, {"float_bits": True}) if other_nibbles else (None, None)
        suffix = "_other_nibbles" if other_nibbles else ""
        launches[f"{mode}_gate_up{suffix}"] = expert_kernels.launch(x_in, *weight((experts, 2 * width, hidden))[:2], ends, mode,
                                                                    (experts, 2 * width, hidden), experts_tiles, capability=capability)
        launches[f"{mode}_down_routed{suffix}"] = expert_kernels.launch(x_mid, *weight((experts, hidden, width))[:2], ends, mode,
                                                                        (experts, hidden, width), experts_tiles, route, capability=capability)
        if mode != "float":
            launches[f"{mode}_linear{suffix}"] = expert_kernels.launch(x_linear, *weight((4096, hidden))[:2], None, mode, (4096, hidden),
                                                                       linear_tiles, capability=capability)
    return launches


def heads_args(dim: int, kv: int) -> tuple:
    """The attention heads kernel's arguments for 256 tokens: query, key and value heads (16, kv, kv),
    the two norms' weights, cos and sin, the three outputs, eps, the angles' rows, the tokens a batch
    row, the inputs' token strides (the decoder's stacked projection) and the outputs' batch, token
    and head strides (the query contiguous, the keys and values in windows of 220 prompt tokens)."""
    def rows(heads: int) -> torch.Tensor:
        return torch.empty(256, heads, dim, dtype=torch.bfloat16, device=META)

    weight, angles = torch.empty(dim, dtype=torch.bfloat16, device=META), torch.empty(256, dim, dtype=torch.bfloat16, device=META)
    stride, window = (16 + 2 * kv) * dim, 220 + 256
    query_out, window_out = (256 * 16 * dim, 16 * dim, dim), (kv * window * dim, dim, window * dim)
    return (rows(16), rows(kv), rows(kv), weight, weight, angles, angles, rows(16), rows(kv), rows(kv), 1e-6, 256, 256,
            stride, stride, stride, *query_out, *window_out, *window_out)


def layer_kernels(capability: int, sass: bool) -> dict:
    """The fused layer's three kernels at the real shape (256 rows of 2816, 128 experts, top-8; the
    last one given the experts' output, or their top-8 rows and computing the next norm), the experts' counting sort, the gated
    GELU (at the experts' and the dense MLP's widths), the attention heads' (16 query heads; 8 or 2 key and value heads)
    and the logits' softcap."""
    row = torch.empty(256, 2816, dtype=torch.bfloat16, device=META)
    weight = torch.empty(2816, dtype=torch.bfloat16, device=META)
    scores = torch.empty(256, 128, dtype=torch.bfloat16, device=META)
    per_expert = torch.empty(128, dtype=torch.bfloat16, device=META)
    top = (torch.empty(256, 8, dtype=torch.float32, device=META), torch.empty(256, 8, dtype=torch.int64, device=META))
    index, routing = torch.empty(2048, dtype=torch.int64, device=META), torch.empty(2048, dtype=torch.float32, device=META)
    wide = dict(WIDTH=2816, BLOCK=4096)
    options = dict(num_warps=fused_layer.ROW_WARPS)
    return {
        "layer_after_attention": compile_for(fused_layer._after_attention_kernel, (row, row, weight, weight, weight, weight, row, row, row,
                                                                                   row, 1e-6, 2816 ** -0.5), wide, options, capability, sass),
        "layer_route": compile_for(fused_layer._route_kernel, (scores, per_expert, *top), dict(EXPERTS=128, EXPERTS_P2=128, TOP_K=8, TOP_K_P2=8),
                                   dict(num_warps=fused_layer.ROUTE_WARPS), capability, sass),
        **{f"heads_{dim}": compile_for(fused_attention._heads_kernel, heads_args(dim, kv), dict(HQ=16, HK=kv, HV=kv, DIM=dim),
                                       dict(num_warps=fused_attention.HEAD_WARPS), capability, sass)
           for dim, kv in ((256, 8), (512, 2))},  # the sliding and the full attention layers' heads
        "expert_sort": compile_for(expert_routing._sort_by_expert_kernel, (torch.empty(2048, dtype=torch.int64, device=META),
                                                                          *[torch.empty(2048, dtype=torch.int64, device=META)] * 2,
                                                                          torch.empty(128, dtype=torch.int32, device=META),
                                                                          torch.empty(2048, dtype=torch.int64, device=META), 2048, 8),
                                   dict(BLOCK=2048, BLOCKS=1), dict(num_warps=4), capability, sass),
        # the experts' output summed already: `layer_end` passes it for the unread positions and weights too
        "layer_end": compile_for(fused_layer._layer_end_kernel, (row, row, row, row, row, weight, weight, weight, weight[:1], row,
                                                                 1e-6, weight, row, 1e-6),
                                 wide | dict(TOP_K=0, SORTED=False, NEXT=False), options, capability, sass),
        **{f"gelu_mul_{width}": compile_for(fused_mlp._gelu_tanh_mul_kernel, (torch.empty(rows, 2 * width, dtype=torch.bfloat16, device=META),
                                                                           torch.empty(rows, width, dtype=torch.bfloat16, device=META)),
                                            dict(WIDTH=width, BLOCK=1024, LIBDEVICE=True), dict(num_warps=4), capability, sass)
           for rows, width in ((2048, 704), (256, 2112))},  # the experts' rows, the dense MLP's
        "softcap": compile_for(softcap._softcap_kernel, (torch.empty(256, 262_144, dtype=torch.bfloat16, device=META),
                                                        torch.empty(256, 262_144, dtype=torch.float32, device=META), 256 * 262_144,
                                                        1 / 30, 30.0),
                               dict(BLOCK=softcap.BLOCK, LIBDEVICE=True), dict(num_warps=4), capability, sass),
        # as a GPU runs it: the experts' rows summed (int8/int4: weighted in token order; bf16/fp8: in
        # expert order, weighted here) and the next norm computed
        "layer_end_rows": compile_for(fused_layer._layer_end_kernel, (row, torch.empty(2048, 2816, dtype=torch.float32, device=META), index,
                                                                      routing, row, weight, weight, weight, weight[:1], row, 1e-6, weight,
                                                                      row, 1e-6),
                                      wide | dict(TOP_K=8, SORTED=False, NEXT=True), options, capability, sass),
        "layer_end_sorted": compile_for(fused_layer._layer_end_kernel, (row, torch.empty(2048, 2816, dtype=torch.bfloat16, device=META),
                                                                        index, routing, row, weight, weight, weight, weight[:1], row, 1e-6,
                                                                        weight, row, 1e-6),
                                        wide | dict(TOP_K=8, SORTED=True, NEXT=True), options, capability, sass),
    }


def main(capabilities: list[int], sass: bool = False) -> dict:
    report: dict = {}
    for capability in capabilities[:1] if sass else capabilities:
        results = report.setdefault(f"sm_{capability}", {})
        for name, launch in expert_launches(other_nibbles=False, capability=divmod(capability, 10)).items():
            results[name] = compile_for(expert_kernels._grouped_dequant_mm_kernel, launch.args, launch.constexprs, launch.options,
                                        capability, sass)
        if capability // 10 == 9:  # the sweep's variants are timed on the H100/H200 only
            for name, launch in expert_launches(other_nibbles=True, capability=divmod(capability, 10)).items():
                results[name] = compile_for(expert_kernels._grouped_dequant_mm_kernel, launch.args, launch.constexprs, launch.options,
                                            capability, sass)
        if capability // 10 == 9:  # torch's fp8 products, activations quantized by rows, run on Hopper only (`fp8_grouped_usable`)
            for width in (704, 2816, 8192):  # an expert's width, the hidden size, the widest attention output
                x = torch.empty(2048, width, dtype=torch.bfloat16, device=META)
                codes = torch.empty(2048, width, dtype=torch.float8_e4m3fn, device=META)
                scale = torch.empty(2048, dtype=torch.float32, device=META)
                block = triton.next_power_of_2(width)
                results[f"fp8_rows_{width}"] = compile_for(expert_kernels._quantize_rows_fp8_kernel, (x, codes, scale),
                                                           dict(WIDTH=width, BLOCK=block), dict(num_warps=expert_kernels.fp8_row_warps(block)),
                                                           capability, sass)
        x = torch.empty(256, 2816, dtype=torch.bfloat16, device=META)
        results["rms_norm"] = compile_for(fused_norm._rms_norm_kernel, (x, x, x, 1e-6), dict(WIDTH=2816, BLOCK=4096, SCALED=True),
                                          dict(num_warps=4), capability, sass)
        results.update(layer_kernels(capability, sass))
    return report


def each_in_its_own_process(targets: list[int]) -> dict:
    """`main` for several targets, one process each: in one process Triton lowers later targets with
    what it chose for the first (built after sm_90, sm_89's fp8-to-bf16 conversions used an sm_90-only
    instruction and ptxas refused them; built alone, they compile)."""
    report: dict = {}
    for target in targets:
        done = subprocess.run([sys.executable, "-m", "tests.triton_targets", str(target)], capture_output=True, text=True, check=True)
        report.update(json.loads(done.stdout))
    return report


if __name__ == "__main__":
    sass = "--sass" in sys.argv
    targets = [int(arg) for arg in sys.argv[1:] if arg != "--sass"] or [90, 86, 89, 120]
    print(json.dumps(main(targets, sass) if sass or len(targets) == 1 else each_in_its_own_process(targets), indent=2))
