"""benchmarks/gpu_fused_check.py, the GPU check of the fused kernels, run here as the CPU can: float32
under Triton's interpreter, small rows. The kernels must equal what they replaced bit for bit (the
router: the same experts, weights to float32 rounding; the gated GELU and the softcap: to float32
rounding, their tanh being exp-based under the interpreter); on a GPU the same script checks bf16 at the
real shape and times both sides (docs/benchmarks.md, "Running the GPU checks")."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is installed with the test extras")


def test_every_fused_kernel_equals_what_it_replaced():
    from benchmarks.gpu_fused_check import check

    with torch.inference_mode():
        report = check(tiny=True)
    assert {name for name, entry in report.items() if "bitwise" in entry} == {"after_attention", "layer_end", "layer_end_rows", "layer_end_sorted",
                                                                           "heads_64", "heads_32", "expert_sort"}
    assert all(entry["bitwise"] for entry in report.values() if "bitwise" in entry), report
    assert report["route"]["same_experts"] == 1.0 and report["route"]["weights_max_rel_diff"] < 1e-6
    # the gated GELU's tanh is exp-based under the interpreter: float32 rounding, not bits, on values of ~10
    assert report["gelu_mul_24"]["max_abs_diff"] < 1e-5 and report["gelu_mul_40"]["max_abs_diff"] < 1e-5
    assert report["softcap"]["max_abs_diff"] < 2e-5  # the same exp-based tanh, on logits up to the cap of 30


def test_a_kernel_that_fails_leaves_the_entries_checked_before_it(monkeypatch):
    """A device session has minutes: one kernel a GPU refuses must not lose the others' results."""
    from app.engine.diffusion import fused_mlp
    from benchmarks.gpu_fused_check import check

    def refused(x):
        raise RuntimeError("refused by this GPU")

    monkeypatch.setattr(fused_mlp, "gelu_tanh_mul", refused)
    report: dict = {}
    with torch.inference_mode(), pytest.raises(RuntimeError):
        check(tiny=True, report=report)
    assert report["after_attention"]["bitwise"] and "layer_end_rows" in report and "gelu_mul_24" not in report
