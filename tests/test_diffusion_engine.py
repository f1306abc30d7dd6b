"""The diffusion engine end to end on a tiny random checkpoint, loaded through the production loader.

The checkpoint is written once per session (`tiny_checkpoint`, shared with the other
test_diffusion_* files); the fp32 CPU engine is loaded once per module.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache

from app.audio.loading import load_audio
from app.engine import EngineSpec, load_engine
from app.engine.base import LANGUAGES, SAMPLE_RATE, Progress
from app.engine.diffusion.chunking import split_at_pauses
from app.engine.diffusion.config import CONFIG_FILE
from app.engine.diffusion.denoising import Denoiser
from app.engine.diffusion.loading import apply_generation_overrides
from app.engine.diffusion.prefill import prefill
from app.engine.diffusion.prompt import embed_prefix
from app.engine.diffusion.tiny import tiny_backbone_config, write_tiny_checkpoint, write_tiny_whisper
from app.errors import UserError
from tests.data import WHISPER_BASE
from tests.speech import clips

SECONDS = 3


@functools.cache
def _build(root: Path) -> Path:
    return write_tiny_checkpoint(root / "tiny-diffusion", seed=0)


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny adapter folder (with ../backbone and ../encoder), written once per test session."""
    return _build(tmp_path_factory.getbasetemp())


def tone(freq: float = 440.0, seconds: float = SECONDS, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = SECONDS, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(adapter):
    return load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32"))


@pytest.fixture
def decoder_calls(engine):
    """Counts real decoder forward passes (and their batch sizes) during a test."""
    batches: list[int] = []
    handle = engine.model.backbone.model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(int(kwargs["decoder_input_ids"].shape[0])), with_kwargs=True
    )
    yield batches
    handle.remove()


def test_exactly_n_decoder_passes_without_early_exit(engine, decoder_calls):
    result = engine.transcribe(tone(), language="en", steps=5, early_exit=False)
    assert result.steps_used == 5
    assert len(decoder_calls) == 5
    assert len(result.timings["steps"]) == 5
    assert set(result.timings) >= {"features", "encoder", "prefill", "steps", "decode", "total"}
    assert result.language == "en" and not result.language_detected


def test_early_exit_stops_before_n_steps(engine, decoder_calls):
    backbone = engine.model.backbone
    saved = copy.deepcopy(backbone.generation_config)
    # Any canvas counts as confident and stable: the stopping criterion fires after the first step.
    apply_generation_overrides(backbone, {"confidence_threshold": 1e9, "stability_threshold": 0})
    try:
        result = engine.transcribe(tone(), language="en", steps=6)
    finally:
        backbone.generation_config = saved
    assert result.steps_used == 1 == len(decoder_calls)
    assert engine.transcribe(tone(), language="en", steps=6).steps_used <= 6


def test_default_steps_is_eight(engine):
    assert engine.transcribe(tone(), language="en", early_exit=False).steps_used == 8


@pytest.mark.parametrize("steps", [0, 49, -1])
def test_steps_outside_1_to_48_are_refused(engine, steps):
    with pytest.raises(UserError) as err:
        engine.transcribe(tone(), language="en", steps=steps)
    assert err.value.code == "bad_steps"


def test_text_only_path_matches_generate(engine):
    """Prefill from embeddings + transformers' denoising step gives the same tokens as generate(whole prompt)."""
    backbone, prompt = engine.model.backbone, engine.model.prompt
    ids = prompt.build("English")
    text_ids = [t for t in ids.prefix if t != engine.model.config.audio_token_id][:12]
    prefix = torch.tensor([text_ids])
    tail = torch.tensor([ids.tail])
    canvas = backbone.config.canvas_length
    with torch.inference_mode():
        ours = Denoiser(backbone)(backbone.get_input_embeddings()(prefix), tail, steps=4, seed=7, early_exit=False)
        torch.manual_seed(7)
        reference = backbone.generate(
            torch.cat([prefix, tail], dim=1),
            max_denoising_steps=4,
            max_new_tokens=canvas,
            stability_threshold=None,
            confidence_threshold=None,
        )
    assert torch.equal(ours.canvases, reference.sequences[:, -canvas:])
    assert ours.steps_used == 4


def two_pass_cache(backbone, prompt) -> DynamicCache:
    """The KV cache as `denoise_with_generate` fills it: the prefix from its embeddings, then generate()'s
    own encoder pass over the tail on top (its mask from `_prepare_encoder_inputs`)."""
    cache = DynamicCache(config=backbone.config.get_text_config(decoder=True))
    backbone.model.encoder(inputs_embeds=prompt.prefix_embeds, position_ids=prompt.prefix_positions, cache=cache)
    ids, mask = backbone._prepare_encoder_inputs(
        input_ids=prompt.tail_ids, attention_mask=prompt.attention_mask, encoder_position_ids=prompt.tail_positions, cache=cache,
        is_prefill=True, canvas_length=backbone.config.canvas_length, batch_size=prompt.batch)
    backbone.model.encoder(input_ids=ids, attention_mask=mask, cache=cache, position_ids=prompt.tail_positions)
    return cache


@pytest.mark.parametrize("window, first_position", [(256, 0), (24, -40)])
def test_one_prefill_pass_fills_the_cache_of_generates_two(window, first_position):
    """The prefill's one pass over the prefix's embeddings and the tail's ids leaves the KV cache that
    generate()'s two (prefix, then the tail on top) leave, to float32 rounding, and so the first
    step's logits: with a sliding window shorter than the prompt, and a prompt that starts below
    position 0 (trimmed audio). A random model's sampled tokens flip on such differences, so tokens
    are compared on the trained micro model (test_micro_model: the same words both ways)."""
    config = tiny_backbone_config()
    config.text_config.sliding_window = window
    torch.manual_seed(0)
    backbone = DiffusionGemmaForBlockDiffusion(config).eval()
    hidden = config.get_text_config().hidden_size
    prefix = torch.randn(2, 50, hidden) * backbone.get_input_embeddings().weight.std()
    prompt = Denoiser(backbone)._prompt(prefix, torch.randint(3, 200, (2, 7)), first_position)
    with torch.inference_mode():
        ours = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
        reference = two_pass_cache(backbone, prompt)
        for kind, mine, theirs in zip(config.get_text_config().layer_types, ours.layers, reference.layers, strict=True):
            assert mine.keys.shape == theirs.keys.shape
            assert mine.keys.shape[2] == (min(57, window - 1) if kind == "sliding_attention" else 57)
            torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(mine.values, theirs.values, rtol=1e-5, atol=1e-5)
        canvas = torch.randint(3, 200, (2, config.canvas_length))

        def logits(cache: DynamicCache) -> torch.Tensor:
            masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
                config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask)
            return backbone(decoder_input_ids=canvas, decoder_attention_mask=masks, cache=cache,
                            decoder_position_ids=prompt.canvas_positions).logits

        torch.testing.assert_close(logits(ours), logits(reference), rtol=1e-5, atol=1e-5)


def test_same_seed_same_text_other_seed_other_text(engine):
    first = engine.transcribe(tone(), language="en", steps=4, seed=3)
    again = engine.transcribe(tone(), language="en", steps=4, seed=3)
    other = engine.transcribe(tone(), language="en", steps=4, seed=4)
    assert first.text == again.text
    assert first.text != other.text


def test_audio_conditions_the_canvas(engine):
    canvases = []
    backbone = engine.model.backbone
    handle = backbone.lm_head.register_forward_hook(lambda module, args, out: canvases.append(out.argmax(-1)))
    try:
        a = engine.transcribe(tone(), language="en", steps=3, seed=1, early_exit=False)
        b = engine.transcribe(noise(), language="en", steps=3, seed=1, early_exit=False)
    finally:
        handle.remove()
    assert a.text != b.text
    assert not torch.equal(canvases[2], canvases[5])


def test_language_changes_the_prompt(engine):
    en = engine.model.prompt.build(engine.model.config.language_names["en"])
    de = engine.model.prompt.build(engine.model.config.language_names["de"])
    assert en.prefix != de.prefix and en.tail == de.tail


def test_draft_callback_once_per_step_and_last_draft_is_the_text(engine):
    drafts: list[Progress] = []
    result = engine.transcribe(tone(), language="en", steps=4, early_exit=False, on_progress=drafts.append)
    assert [p.step for p in drafts] == [1, 2, 3, 4]
    assert all(p.total == 4 for p in drafts)
    assert drafts[-1].draft == result.text


def test_long_audio_is_chunked_and_denoised_as_one_batch(engine, decoder_calls):
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    speechy = [tone(300 + 50 * i, seconds=6.0) for i in range(11)]
    audio = np.concatenate([part for s in speechy for part in (s, gap)])  # 71.5 s
    result = engine.transcribe(audio, language="en", steps=3, early_exit=False)
    assert decoder_calls == [3, 3, 3]  # three chunks, one batched pass per step
    assert result.steps_used == 3


def test_an_adapter_may_ask_for_shorter_chunks(adapter, tmp_path):
    """`max_chunk_seconds` (an aligned canvas writes one position per slot, so it cannot take 30 s)."""
    config = json.loads((adapter / CONFIG_FILE).read_text())
    config.update(backbone=str((adapter / config["backbone"]).resolve()), encoder=str((adapter / config["encoder"]).resolve()))
    short_dir = tmp_path / "short"
    shutil.copytree(adapter, short_dir)
    (short_dir / CONFIG_FILE).write_text(json.dumps({**config, "max_chunk_seconds": 7.5}))
    short = load_engine(EngineSpec(engine="diffusion", model=str(short_dir), device="cpu", quantization="fp32"))
    batches: list[int] = []
    handle = short.model.backbone.model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(int(kwargs["decoder_input_ids"].shape[0])), with_kwargs=True
    )
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    audio = np.concatenate([part for i in range(4) for part in (tone(300 + 50 * i, seconds=6.0), gap)])  # 26 s
    try:
        short.transcribe(audio, language="en", steps=1, early_exit=False)
    finally:
        handle.remove()
    assert batches == [4]  # one chunk per tone: 30 s chunks would have taken it whole
    (short_dir / CONFIG_FILE).write_text(json.dumps({**config, "max_chunk_seconds": 45}))
    with pytest.raises(UserError) as err:
        load_engine(EngineSpec(engine="diffusion", model=str(short_dir), device="cpu", quantization="fp32"))
    assert err.value.code == "bad_model" and "max_chunk_seconds" in str(err.value)


def test_a_language_the_adapter_was_not_trained_on_is_refused_with_what_to_do(adapter, tmp_path):
    """`languages` in asr_config.json (the micro model: English only): German speech must not come back as
    English-looking words; `auto` is the one language such a model knows."""
    config = json.loads((adapter / CONFIG_FILE).read_text())
    config.update(backbone=str((adapter / config["backbone"]).resolve()), encoder=str((adapter / config["encoder"]).resolve()))
    english_dir = tmp_path / "english"
    shutil.copytree(adapter, english_dir)
    (english_dir / CONFIG_FILE).write_text(json.dumps({**config, "languages": ["en"]}))
    english = load_engine(EngineSpec(engine="diffusion", model=str(english_dir), device="cpu", quantization="fp32"))
    assert english.languages == ("en",)
    with pytest.raises(UserError) as err:
        english.transcribe(tone(), language="de", steps=1)
    assert err.value.code == "bad_language"
    assert str(err.value) == ("This model was trained on English only, not German: set the language to English, or "
                              "choose a model that knows German.")
    assert english.transcribe(tone(), language="auto", steps=1, early_exit=False).language == "en"
    (english_dir / CONFIG_FILE).write_text(json.dumps({**config, "languages": ["en", "xx"]}))
    with pytest.raises(UserError) as err:
        load_engine(EngineSpec(engine="diffusion", model=str(english_dir), device="cpu", quantization="fp32"))
    assert err.value.code == "bad_model" and "languages" in str(err.value)


def test_empty_audio_is_a_user_error(engine):
    with pytest.raises(UserError) as err:
        engine.transcribe(np.zeros(0, dtype=np.float32), language="en")
    assert err.value.code == "empty_audio"


def test_silence_gives_empty_text_without_running_the_model(engine, decoder_calls):
    result = engine.transcribe(np.zeros(SAMPLE_RATE * 2, dtype=np.float32), language="en", steps=4)
    assert result.text == "" and result.steps_used == 0 and decoder_calls == []


def test_auto_language_without_whisper_decoder_is_refused(engine):
    with pytest.raises(UserError) as err:
        engine.transcribe(tone(), language="auto", steps=2)
    assert err.value.code == "language_detection_unavailable"


def test_auto_language_with_full_whisper(adapter, tmp_path_factory):
    full_whisper = tmp_path_factory.mktemp("full-whisper")
    write_tiny_whisper(full_whisper, full=True)
    engine = load_engine(
        EngineSpec(engine="diffusion", model=str(adapter), encoder=str(full_whisper), device="cpu", quantization="fp32")
    )
    result = engine.transcribe(tone(), language="auto", steps=2)
    assert result.language_detected and result.language in LANGUAGES
    assert "language_id" in result.timings


needs_test_data = pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason="run `python -m tests.data.build` first")


@pytest.mark.slow
@needs_test_data
def test_auto_language_with_real_whisper_base(tmp_path_factory):
    """Real language identification: the adapter's encoder is the test data's multilingual Whisper base."""
    adapter = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-on-whisper-base"), encoder=WHISPER_BASE)
    engine = load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32"))
    clip = clips(source="espeak", language="de")[0]
    result = engine.transcribe(load_audio(clip.path), language="auto", steps=1)
    assert result.language == "de" and result.language_detected


@needs_test_data
def test_real_long_speech_is_cut_in_pauses():
    clip = next(c for c in clips(language="en") if c.seconds > 30)
    audio = load_audio(clip.path)
    chunks = split_at_pauses(audio)
    assert len(chunks) == 2 and all(c.shape[0] <= 30 * SAMPLE_RATE for c in chunks)
    assert sum(c.shape[0] for c in chunks) == audio.shape[0]
    frame = SAMPLE_RATE // 50
    energy = [float(np.mean(audio[i : i + frame] ** 2)) for i in range(0, audio.shape[0] - frame, frame)]
    cut = chunks[0].shape[0]
    assert np.mean(audio[cut - frame // 2 : cut + frame // 2] ** 2) <= np.percentile(energy, 10)


def test_trim_audio_gives_the_backbone_only_the_speech(adapter, tmp_path):
    """With `trim_audio` the prompt holds audio slots for the speech only (the micro model is trained
    so); without it, all of the 30 s window's slots, padding included."""
    config = json.loads((adapter / CONFIG_FILE).read_text())
    config.update(backbone=str((adapter / config["backbone"]).resolve()), encoder=str((adapter / config["encoder"]).resolve()))
    trimmed_dir = tmp_path / "trimmed"
    shutil.copytree(adapter, trimmed_dir)
    (trimmed_dir / CONFIG_FILE).write_text(json.dumps({**config, "trim_audio": True}))
    full = load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32"))
    trimmed = load_engine(EngineSpec(engine="diffusion", model=str(trimmed_dir), device="cpu", quantization="fp32"))

    def prefill(engine, audio) -> tuple[int, int]:
        """Length and first position id of the prefill (the one encoder pass over the prompt's embeddings)."""
        seen: list[tuple[int, int]] = []

        def record(module, args, kwargs) -> None:
            if kwargs.get("inputs_embeds") is not None:
                seen.append((int(kwargs["inputs_embeds"].shape[1]), int(kwargs["position_ids"][0, 0])))

        handle = engine.model.backbone.model.encoder.register_forward_pre_hook(record, with_kwargs=True)
        try:
            text = engine.transcribe(audio, language="en", steps=2, early_exit=False).text
        finally:
            handle.remove()
        assert isinstance(text, str)
        return seen[0]

    m = trimmed.model
    ids = m.prompt.build(m.config.language_names["en"], audio_slots=0)
    text_tokens = len(ids.prefix) + len(ids.tail)
    window_slots = m.projector.output_length(m.audio.frames)
    assert prefill(full, tone(seconds=3.0)) == (text_tokens + window_slots, 0)
    for seconds in (1.0, 3.0):
        speech_slots = m.projector.output_length(m.audio.frames_for(int(seconds * SAMPLE_RATE)))
        assert speech_slots < window_slots / 5
        # The prompt starts earlier by the slots it dropped, so the tail keeps its distance to the speech.
        assert prefill(trimmed, tone(seconds=seconds)) == (text_tokens + speech_slots, speech_slots - window_slots)


def test_trimmed_prompt_reads_like_the_full_window_without_its_padding_slots(engine):
    """The decoder's logits for a canvas are the same whether the padding slots are dropped from a
    trimmed prompt (the engine's positions: the prefix starts below zero) or the full window's
    positions are kept with those slots simply absent: dropping them moves no token."""
    m = engine.model
    backbone, config = m.backbone, m.backbone.config.get_text_config(decoder=True)
    window_slots, speech_slots = m.prompt.audio_slots, 20
    ids = m.prompt.build("English", audio_slots=speech_slots)
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(1, speech_slots, config.hidden_size, generator=generator)
    prefix = embed_prefix(backbone.get_input_embeddings(), torch.tensor([ids.prefix]), audio, m.config.audio_token_id)
    tail = torch.tensor([ids.tail])
    canvas = torch.randint(0, config.vocab_size, (1, backbone.config.canvas_length), generator=generator)
    kept, after = len(ids.prefix), len(ids.prefix) + window_slots - speech_slots  # where the tail sits in the full window

    def logits(prefix_positions, tail_positions, canvas_positions) -> torch.Tensor:
        cache = DynamicCache(config=config)
        with torch.inference_mode():
            backbone.model.encoder(inputs_embeds=prefix, position_ids=prefix_positions, cache=cache)
            backbone.model.encoder(input_ids=tail, position_ids=tail_positions, cache=cache)
            out = backbone.model.decoder(decoder_input_ids=canvas, cache=cache, decoder_position_ids=canvas_positions)
        return backbone.lm_head(out.last_hidden_state)

    def span(start: int, length: int) -> torch.Tensor:
        return torch.arange(start, start + length)[None]

    engine_way = logits(torch.tensor([ids.prefix_positions()]), None, None)  # tail and canvas follow the cache
    full_window = logits(span(0, kept), span(after, tail.shape[1]), span(after + tail.shape[1], canvas.shape[1]))
    assert ids.first_position == speech_slots - window_slots
    torch.testing.assert_close(engine_way, full_window, rtol=1e-4, atol=1e-4)
    shifted_nowhere = logits(span(0, kept), None, None)  # the same slots without the shift: a different reading
    assert not torch.allclose(engine_way, shifted_nowhere, atol=1e-3)


def test_vocabulary_goes_into_the_context_slot_only_where_the_adapter_has_one(adapter, engine, tmp_path):
    """Issue 18: the vocabulary conditions a diffusion adapter only when its config declares a context slot."""
    from app.engine.diffusion.config import DEFAULT_PROMPT_TEMPLATE

    plain = engine.model.prompt.build("English")
    assert engine.model.prompt.build("English", vocabulary=["alpha", "beta"]) == plain  # no slot: unchanged

    config = json.loads((adapter / CONFIG_FILE).read_text())
    config.update(backbone=str((adapter / config["backbone"]).resolve()), encoder=str((adapter / config["encoder"]).resolve()))
    slot_dir = tmp_path / "context"
    shutil.copytree(adapter, slot_dir)
    template = DEFAULT_PROMPT_TEMPLATE.replace("Transcribe", "{context}Transcribe")
    (slot_dir / CONFIG_FILE).write_text(json.dumps({**config, "prompt_template": template,
                                                    "context_template": "Words: {vocabulary}.\n"}))
    slotted = load_engine(EngineSpec(engine="diffusion", model=str(slot_dir), device="cpu", quantization="fp32"))
    prompt = slotted.model.prompt
    assert prompt.build("English") == plain  # an empty vocabulary leaves the slot empty
    with_words = prompt.build("English", vocabulary=["alpha", " ", "beta", "alpha"])
    assert len(with_words.prefix) > len(plain.prefix) and with_words.tail == plain.tail
    assert "Words: alpha, beta." in slotted.model.tokenizer.decode(with_words.prefix)
    lengths: list[int] = []
    handle = slotted.model.backbone.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: lengths.append(int(args[0].shape[-1])))
    try:
        slotted.transcribe(tone(), language="en", steps=1, early_exit=False, vocabulary=["alpha", "beta"])
    finally:
        handle.remove()
    assert len(with_words.prefix) in lengths  # the prefill embedded the prompt with the vocabulary in it

    (slot_dir / CONFIG_FILE).write_text(json.dumps({**config, "context_template": "Words: {vocabulary}."}))
    with pytest.raises(UserError, match=r"\{context\}"):  # a context wording, but no slot in the template
        load_engine(EngineSpec(engine="diffusion", model=str(slot_dir), device="cpu", quantization="fp32"))
    (slot_dir / CONFIG_FILE).write_text(json.dumps({**config, "prompt_template": template, "context_template": "Words."}))
    with pytest.raises(UserError, match=r"\{vocabulary\}"):
        load_engine(EngineSpec(engine="diffusion", model=str(slot_dir), device="cpu", quantization="fp32"))
