"""The logits' softcap in one kernel (app/engine/diffusion/softcap.py), under Triton's interpreter: float32
rounding against torch's four passes (the interpreter's tanh is exp-based; on a GPU, where it is
CUDA's tanhf, benchmarks/gpu_fused_check.py compares the bits)."""

from __future__ import annotations

import pytest
import torch

from app.engine.diffusion import expert_routing, softcap

pytest.importorskip("triton", reason="Triton is installed with the test extras")


def test_the_kernel_computes_transformers_softcap(monkeypatch):
    x = torch.randn(3, 5, 999, generator=torch.Generator().manual_seed(0)) * 40  # past the cap, and a ragged last block
    x[0, 0, :3] = torch.tensor([1e4, -1e4, 0.0])
    expected = torch.tanh(x / 30.0) * 30.0
    monkeypatch.setattr(expert_routing, "use_kernels", lambda device: True)  # as on a GPU
    launched = []
    monkeypatch.setattr(softcap, "_softcap_kernel", type("Counted", (), {"__getitem__": lambda self, grid, kernel=softcap._softcap_kernel:
                                                                          launched.append(grid) or kernel[grid]})())
    out = torch.full_like(x, float("nan"))
    assert softcap.softcap_into(out, x, 30.0) is out and launched == [(8,)]  # 14,985 values, 2,048 a program
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=2e-5)


def test_off_a_gpu_it_is_torchs_four_passes_bit_for_bit():
    x = torch.randn(2, 7, 64, dtype=torch.bfloat16) * 40
    out = torch.empty(x.shape, dtype=torch.float32)
    assert torch.equal(softcap.softcap_into(out, x, 30.0), torch.tanh(x.float() / 30.0) * 30.0)
