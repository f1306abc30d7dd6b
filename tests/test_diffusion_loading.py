"""Loading the tiny checkpoint: a checkpoint that does not match must fail with the listed weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from app.engine import EngineSpec, load_engine
from app.engine.diffusion.config import CONFIG_FILE, AdapterConfig
from app.errors import UserError
from tests.test_diffusion_engine import tiny_checkpoint


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


def copy_adapter(adapter: Path, dest: Path, **config_changes) -> Path:
    """A copy of the adapter folder whose config points at the original backbone and encoder."""
    shutil.copytree(adapter, dest)
    config = json.loads((adapter / CONFIG_FILE).read_text())
    config.update(backbone=str((adapter / config["backbone"]).resolve()), encoder=str((adapter / config["encoder"]).resolve()))
    config.update(config_changes)
    (dest / CONFIG_FILE).write_text(json.dumps(config))
    return dest


def edit_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def load_error(adapter: Path, **spec) -> UserError:
    with pytest.raises(UserError) as err:
        load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32", **spec))
    return err.value


def test_renamed_projector_tensor_is_listed(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter")
    edit_tensors(broken / "projector.safetensors", lambda t: t.update({"proj.1.weights": t.pop("proj.1.weight")}))
    error = load_error(broken)
    assert error.code == "bad_model"
    assert "missing: proj.1.weight" in str(error) and "unexpected: proj.1.weights" in str(error)


def test_missing_projector_tensor_is_listed(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter")
    edit_tensors(broken / "projector.safetensors", lambda t: t.pop("conv.2.bias"))
    error = load_error(broken)
    assert "missing: conv.2.bias" in str(error) and "unexpected" not in str(error)


def test_projector_of_another_shape_is_listed(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter", projector={"conv_channels": [48, 32, 32], "linear_hidden": [64]})
    error = load_error(broken)
    assert "wrong shape: conv.0.bias [32] (expected [48])" in str(error)


def test_missing_lora_tensor_is_listed(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter")
    key = "base_model.model.model.decoder.layers.1.self_attn.q_proj.lora_B.weight"
    edit_tensors(broken / "adapter_model.safetensors", lambda t: t.pop(key))
    error = load_error(broken)
    assert error.code == "bad_model"
    assert "LoRA" in str(error) and "missing: model.decoder.layers.1.self_attn.q_proj.lora_B.weight" in str(error)


def test_renamed_lora_tensor_is_listed(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter")
    old = "base_model.model.model.encoder.language_model.layers.0.self_attn.k_proj.lora_A.weight"
    edit_tensors(broken / "adapter_model.safetensors", lambda t: t.update({old.replace("k_proj", "key_proj"): t.pop(old)}))
    error = load_error(broken)
    assert "missing: model.encoder.language_model.layers.0.self_attn.k_proj.lora_A.weight" in str(error)
    assert "unexpected: model.encoder.language_model.layers.0.self_attn.key_proj.lora_A.weight" in str(error)


def test_missing_backbone_tensor_is_listed(adapter, tmp_path):
    backbone = tmp_path / "backbone"
    shutil.copytree((adapter / "../backbone").resolve(), backbone)
    edit_tensors(backbone / "model.safetensors", lambda t: t.pop("model.decoder.layers.1.mlp.up_proj.weight"))
    error = load_error(adapter, backbone=str(backbone))
    assert "DiffusionGemma backbone" in str(error) and "mlp.up_proj.weight" in str(error)


def test_missing_lora_files_say_where_to_look(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter")
    (broken / "adapter_config.json").unlink()
    error = load_error(broken)
    assert "adapter_config.json" in str(error) and "lora_dir" in str(error)


def test_unknown_config_key_is_refused(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter", audio_token=7)
    error = load_error(broken)
    assert "unknown keys: audio_token" in str(error)


def test_merge_lora_must_be_a_boolean(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter", merge_lora="no")
    assert "merge_lora must be true or false, not 'no'" in str(load_error(broken))


def test_audio_slots_must_match_the_projector(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter", audio_slots=100)
    error = load_error(broken)
    assert "188" in str(error) and "audio_slots" in str(error)


def test_missing_adapter_folder_is_a_user_error(tmp_path):
    error = load_error(tmp_path / "nowhere")
    assert error.code == "no_model"


def test_defaults_describe_the_published_model():
    config = AdapterConfig()
    assert config.backbone == "google/diffusiongemma-26B-A4B-it" and config.encoder == "openai/whisper-small"
    assert config.projector.subsampling == 8 and config.default_steps == 8 and config.max_steps == 48
    assert "{audio}" in config.prompt_template and "{language}" in config.prompt_template
    assert AdapterConfig.from_dict(config.to_dict()) == config


def decoder_only_lora(adapter: Path, dest: Path, **config_changes) -> Path:
    """A copy of the adapter whose LoRA targets (and holds tensors for) the decoder layers only."""
    copy = copy_adapter(adapter, dest, **config_changes)
    edit_tensors(copy / "adapter_model.safetensors", lambda t: [t.pop(k) for k in list(t) if ".encoder." in k])
    peft_config = json.loads((copy / "adapter_config.json").read_text())
    peft_config["target_modules"] = r".*decoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    (copy / "adapter_config.json").write_text(json.dumps(peft_config))
    return copy


def test_decoder_only_lora_can_be_shared_with_the_encoder(adapter, tmp_path):
    shared = decoder_only_lora(adapter, tmp_path / "adapter", lora_encoder="shared_with_decoder")
    engine = load_engine(EngineSpec(engine="diffusion", model=str(shared), device="cpu", quantization="int8"))
    backbone = engine.model.backbone
    for decoder_layer, encoder_layer in zip(backbone.model.decoder.layers, backbone.model.encoder.language_model.layers):
        # one LoRA for both, merged into their one (then quantized) weight: see test_diffusion_lora_merge.py
        assert encoder_layer.self_attn.q_proj is decoder_layer.self_attn.q_proj
        assert type(encoder_layer.self_attn.q_proj).__name__ == "QuantizedLinear"


def test_sharing_refuses_a_lora_that_targets_the_encoder_too(adapter, tmp_path):
    broken = copy_adapter(adapter, tmp_path / "adapter", lora_encoder="shared_with_decoder")
    assert "as_targeted" in str(load_error(broken))
