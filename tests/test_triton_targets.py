"""The Triton kernels compile for real GPUs: Hopper (H100/H200, sm_90), Ampere (RTX 3090, sm_86), Ada
(RTX 4090, sm_89) and Blackwell (RTX 5090, sm_120).

The other kernel tests run under Triton's interpreter, which never invokes the GPU compiler, so a
kernel can pass them and still fail to build on a GPU, where every int8/int4 dictation would then
fail. (It happened: the int4 nibble helper's two return types ran in the interpreter and were
refused by the compiler, 2026-11-28.) tests/triton_targets.py builds each launch the engine makes
at the real model's shapes down to a cubin with the compiler Triton ships; no GPU is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is installed with the test extras")
ROOT = Path(__file__).resolve().parent.parent


def test_every_kernel_launch_compiles_for_hopper_ampere_ada_and_blackwell():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the real compiler, not the interpreter
    done = subprocess.run([sys.executable, "-m", "tests.triton_targets", "90", "86", "89", "120"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)

    def experts(*modes: str) -> set[str]:
        return {f"{mode}_{product}" for mode in modes for product in ("gate_up", "down_routed")} \
            | {f"{mode}_linear" for mode in modes if mode != "float"}

    fused = {"rms_norm", "layer_after_attention", "layer_route", "layer_end", "layer_end_rows", "layer_end_sorted", "gelu_mul_704",
             "gelu_mul_2112", "softcap", "heads_256", "heads_512", "expert_sort"}
    # bf16 experts ("float") where torch's grouped GEMM has no kernel, or is slower (Hopper); fp8 in Triton where torch has no fp8 grouped GEMM
    assert set(report["sm_86"]) == fused | experts("int8", "int4", "float")
    assert set(report["sm_89"]) == fused | experts("int8", "int4", "fp8", "float")
    sweep = {f"int4_{product}_other_nibbles" for product in ("gate_up", "down_routed", "linear")}
    fp8_rows = {f"fp8_rows_{width}" for width in (704, 2816, 8192)}
    assert set(report["sm_120"]) == fused | experts("int8", "int4", "fp8", "float")
    assert set(report["sm_90"]) == fused | experts("int8", "int4", "float") | sweep | fp8_rows
    failed = {f"{target} {kernel}": result for target, kernels in report.items() for kernel, result in kernels.items()
              if not isinstance(result, int)}
    assert failed == {}
    assert all(size > 1000 for kernels in report.values() for size in kernels.values())  # cubins, not stubs


# Tiles that store registers to local memory on sm_90 and still timed fastest there, where the tiles
# were chosen by timing (H200, 2026-11-29, `expert_tiles.default_tiles`): the check holds for the rest.
SPILL_TIMED_FASTEST_ON_HOPPER = {"int8_gate_up", "int4_gate_up", "int4_linear", "float_gate_up", "float_down_routed"}


@pytest.mark.parametrize("target", ["90", "86", "100", "120"])
def test_no_kernel_launch_reloads_spilled_registers(target):
    """Static property of the compiled code (no timing): no launch the engine makes on an H100
    (sm_90), an RTX 3090 (sm_86), a B200 (sm_100) or an RTX 5090 (sm_120) stores registers to local
    memory and loads them back (the int4 experts did on sm_100 with 4 warps: 117 stores, 80 loads),
    except on sm_90 the tiles that timed fastest there all the same. Where no GPU of a family was at
    hand to time, the tiles are those that hold their registers: the int4 linear's 64 x 128 tiles
    run 8 warps (on 4: ~480 stores, ~300 loads), and so do the int4 experts' 32 x 128 tiles on sm_86
    (134, 94) and sm_100 (`expert_tiles.default_tiles`)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "tests.triton_targets", "--sass", target], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    mix = json.loads(done.stdout)[f"sm_{target}"]
    timed = SPILL_TIMED_FASTEST_ON_HOPPER if target == "90" else set()
    production = {name: counts for name, counts in mix.items() if not name.endswith("_other_nibbles") and name not in timed}
    assert {name: counts.get("LDL", 0) for name, counts in production.items()} == dict.fromkeys(production, 0)
    if target != "90":
        assert production["int4_linear"].get("STL", 0) == 0
