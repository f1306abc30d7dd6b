"""The decoder's rotary embeddings kept per pinned prompt positions (app/engine/diffusion/rotary_memo.py)."""

from __future__ import annotations

import gc

import torch
from transformers import DiffusionGemmaForBlockDiffusion

from app.engine.diffusion import rotary_memo
from app.engine.diffusion.tiny import tiny_backbone_config


def rotary() -> torch.nn.Module:
    return DiffusionGemmaForBlockDiffusion(tiny_backbone_config()).model.decoder.rotary_emb


def test_pinned_positions_are_computed_once_and_equal_transformers():
    plain, kept = rotary(), rotary()
    rotary_memo.memoize(kept)
    x, positions = torch.zeros(1, 16, 64, dtype=torch.bfloat16), torch.arange(40, 56).unsqueeze(0)
    rotary_memo.pin(positions)
    for layer_type in ("sliding_attention", "full_attention"):  # rope types default and proportional
        first, again = kept(x, positions, layer_type), kept(x, positions, layer_type)
        assert first[0] is again[0] and first[1] is again[1]  # kept, not computed again
        expected = plain(x, positions, layer_type)
        assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[1])
    float_cos, _ = kept(x.float(), positions, "sliding_attention")  # another dtype: its own values
    assert float_cos.dtype == torch.float32


def test_unpinned_positions_are_computed_every_time_and_kept_values_go_with_their_positions():
    kept = rotary()
    rotary_memo.memoize(kept)
    x, positions = torch.zeros(1, 16, 64), torch.arange(16).unsqueeze(0)
    assert kept(x, positions, "sliding_attention")[0] is not kept(x, positions, "sliding_attention")[0]  # e.g. generate()'s
    pinned = len(rotary_memo._pinned)
    fresh = torch.arange(16).unsqueeze(0)
    rotary_memo.pin(fresh)
    kept(x, fresh, "sliding_attention")
    assert len(rotary_memo._pinned) == pinned + 1
    del fresh
    gc.collect()
    assert len(rotary_memo._pinned) == pinned  # a dictation's values go with its prompt


def test_compiled_code_computes_them_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    kept = rotary()
    rotary_memo.memoize(kept)
    x, positions = torch.zeros(1, 16, 64), torch.arange(16).unsqueeze(0)
    rotary_memo.pin(positions)
    compiled = torch.compile(lambda x, p: kept(x, p, "full_attention"), fullgraph=True)
    torch.testing.assert_close(compiled(x, positions)[0], kept(x, positions, "full_attention")[0])
