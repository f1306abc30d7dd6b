"""The `transcribe` command with the diffusion engine, and the CPU smoke mode of the GPU benchmark."""

from __future__ import annotations

import json

import soundfile as sf
import torch

from app.cli import main
from app.engine.base import SAMPLE_RATE
from benchmarks import gpu_real_shape
from tests.test_diffusion_engine import tiny_checkpoint, tone


def test_transcribe_json_with_the_diffusion_engine(tmp_path_factory, tmp_path, capsys):
    adapter = tiny_checkpoint(tmp_path_factory)
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone(), SAMPLE_RATE)
    argv = ["transcribe", str(wav), str(wav), "--engine", "diffusion", "--model", str(adapter), "--steps", "3",
            "--language", "en", "--quantization", "int8", "--seed", "2", "--device", "cpu", "--json",
            "--no-speech-check"]  # a tone, and a random tiny model: the path is tested here, not the words
    assert main(argv) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["file"] == str(wav) and first["language"] == "en" and not first["language_detected"]
    assert 1 <= first["steps_used"] <= 3 and len(first["timings"]["steps"]) == first["steps_used"]
    assert first["text"] == second["text"]  # same seed, same words


def test_transcribe_reports_a_bad_adapter_in_one_line(tmp_path, capsys):
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone(), SAMPLE_RATE)
    assert main(["transcribe", str(wav), "--engine", "diffusion", "--model", str(tmp_path / "missing"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_gpu_benchmark_smoke_mode_on_cpu(tmp_path):
    out = tmp_path / "report.json"
    argv = ["--tiny", "--device", "cpu", "--runs", "1", "--modes", "int4", "--step-counts", "1,2", "--batches", "2",
            "--whisper", "whisper-small", "--out", str(out)]
    report = gpu_real_shape.main(argv)
    peers = report["whisper_peer"]
    for peer in ("whisper-small", "whisper-small+static-compile"):  # the peer eager, and with transformers' static cache compiled
        assert peers[peer]["new_tokens"] == 40 and peers[peer]["whisper_ar_ms_p50"] > 0, peers
    int4 = report["modes"]["int4"]
    assert int4["step_ms_p50"] > 0 and int4["total_ms_p50_2_steps"] > 0 and int4["prefill_ms_p50"] > 0
    assert int4["batch_2"]["requests_per_s"] > 0
    assert json.loads(out.read_text())["modes"]["int4"]["runs"] == 1


def test_gpu_benchmark_runs_a_mode_as_gpus_without_torchs_grouped_kernels_do(monkeypatch):
    """MODE+triton measures the mode with torch's grouped GEMMs out of reach (so an H100 times the
    path of an A100 or an RTX), and gives them back for the next part."""
    from app.engine.diffusion import expert_kernels

    torch_kernels = expert_kernels.fp8_grouped_usable, expert_kernels.torch_runs_bf16_experts
    seen = {}

    def measure(name, device, **kwargs):
        cuda = torch.device("cuda")
        seen[name] = None if expert_kernels.torch_runs_bf16_experts is torch_kernels[1] else \
            (expert_kernels.fp8_grouped_usable(cuda), expert_kernels.torch_runs_bf16_experts(cuda))
        return {}

    monkeypatch.setattr(gpu_real_shape, "measure", measure)
    modes = gpu_real_shape.main(["--tiny", "--device", "cpu", "--parts", "bf16+triton,fp8"])["modes"]
    assert set(modes) == {"bf16+triton", "fp8"}
    assert seen == {"bf16": (False, False), "fp8": None}
    assert (expert_kernels.fp8_grouped_usable, expert_kernels.torch_runs_bf16_experts) == torch_kernels


def test_gpu_benchmark_runs_fp8_with_triton_experts_and_torchs_linears(monkeypatch):
    """fp8+triton-experts: where torch's fp8 products would run, the experts (3-D weights) take the
    Triton kernel and the linears keep torch's; the choice is given back for the next part."""
    from app.engine.diffusion import expert_kernels
    from app.engine.diffusion.quantization import QuantizedWeight

    monkeypatch.setattr(expert_kernels, "fp8_grouped_usable", lambda device: True)  # as on a Hopper GPU
    experts, linear = (QuantizedWeight.quantize(torch.randn(shape), "fp8") for shape in ((2, 32, 64), (32, 64)))
    seen = {}

    def measure(name, device, **kwargs):
        seen[name] = (experts.kernel(device), linear.kernel(device))
        return {}

    monkeypatch.setattr(gpu_real_shape, "measure", measure)
    gpu_real_shape.main(["--tiny", "--device", "cpu", "--parts", "fp8+triton-experts,fp8"])
    assert seen == {"fp8": ("fp8", "fp8")}  # the later part, with torch's products again
    gpu_real_shape.main(["--tiny", "--device", "cpu", "--parts", "fp8+triton-experts"])
    assert seen == {"fp8": ("triton", "fp8")}


def test_gpu_benchmark_compiles_the_layers_and_checks_them_against_eager(tmp_path, monkeypatch):
    """`--compile on` on the CPU: the real Inductor compile as the preparation, and each compiled layer
    within fp32 rounding of the eager one on the same inputs."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    argv = ["--tiny", "--device", "cpu", "--runs", "1", "--modes", "fp32", "--step-counts", "2", "--batches", "",
            "--whisper", "", "--compile", "on"]
    fp32 = gpu_real_shape.main(argv)["modes"]["fp32+compile"]
    assert fp32["fast_path"] == "compiled" and "fast_path_error" not in fp32 and fp32["prepare_s"] > 0
    check = fp32["compile_check"]
    assert check["layers"] >= 2 and check["compiled_calls"] == check["layers"] and check["ok"], check
    assert all(noise > 0 for noise in check["one_ulp_noise_rel_error_by_layer"]), check  # the reference moved the layer


def test_the_forward_census_counts_a_steps_kernels_on_cpu():
    """benchmarks/forward_census.py: the int4 decoder forward (Triton under its interpreter) runs the
    expert kernel twice a layer and a linear kernel per projection, and no LoRA in the decoder; with
    the GPU's fused kernels (`layers`) a layer launches fewer kernels than with fused norms alone."""
    from benchmarks.forward_census import census

    int4, norms_only = census("int4", "layers"), census("int4", "norms")
    assert int4["lora_projections_in_a_decoder_layer"] == 0
    assert int4["triton_launches"] >= int4["layers"] * 2 and int4["total"] > int4["triton_launches"]
    assert 0 < int4["per_layer"] < norms_only["per_layer"] < norms_only["total"]
