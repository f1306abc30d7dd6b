"""The micro diffusion model trained here (resources/models/diffusion-micro), through the production
engine: real transcripts of held-out speech, the quality-vs-steps claim, the CLI, and the training
code's own parts (corpus split, seeded speech, the decoder never seeing the transcript)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from app.engine import EngineSpec, load_engine
from app.engine.diffusion.denoising import DenoiseResult, denoise_with_generate
from app.training import alignment, corpus, model, synth
from app.training.evaluate import accuracy_by_training_count, word_error_rate
from app.training.micro import DEFAULT_OUT, EVAL_CLIPS, load_heldout
from tests.data import WHISPER_TINY_EN
from tests.torch_threads import one_torch_thread

MICRO = DEFAULT_OUT
ROOT = Path(__file__).resolve().parent.parent
TEST_CLIPS = 30  # held-out sentences 100-129: neither trained on nor used for validation
# Measured on these 30 sentences: 69.6% at 8 steps (16: 70.3%, 32: 72.1%; docs/benchmarks.md has
# sentences 100-149). The bound fails the plain-canvas model this one replaced (84.6%). The issue's
# target is 15%; the model trained within the 90-minute budget does not reach it (docs/diffusion.md).
MAX_WER_8_STEPS = 0.80
STEPS_MARGIN = 0.05


@pytest.fixture(scope="module")
def engine():
    assert WHISPER_TINY_EN.exists(), "test data missing: run `python -m tests.data.build`"
    with one_torch_thread():
        yield load_engine(EngineSpec(engine="diffusion", model=str(MICRO), device="cpu"))


@pytest.fixture(scope="module")
def heldout():
    return load_heldout(MICRO / "adapter")[EVAL_CLIPS : EVAL_CLIPS + TEST_CLIPS]


@pytest.fixture(scope="module")
def wer_by_steps(engine, heldout):
    refs = [text for text, _ in heldout]
    out = {}
    for steps in (8, 16, 32):
        hyps = [engine.transcribe(audio, language="en", steps=steps, early_exit=False).text for _, audio in heldout]
        out[steps] = word_error_rate(refs, hyps)
    return out


def test_micro_model_transcribes_heldout_speech(wer_by_steps):
    assert wer_by_steps[8] <= MAX_WER_8_STEPS, wer_by_steps


def test_more_steps_never_hurt_much_and_8_is_near_the_best(wer_by_steps):
    assert wer_by_steps[16] <= wer_by_steps[8] + STEPS_MARGIN, wer_by_steps
    assert wer_by_steps[32] <= wer_by_steps[8] + STEPS_MARGIN, wer_by_steps
    assert wer_by_steps[8] <= min(wer_by_steps[16], wer_by_steps[32]) + STEPS_MARGIN, wer_by_steps


class GenerateReference:
    """Stands in for the engine's `Denoiser`: the same prompt through transformers' `generate()`."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone

    def __call__(self, prefix_embeds, tail_ids, *, steps, seed, first_position=0, early_exit=True, on_draft=None, label=""):
        canvases = denoise_with_generate(
            self.backbone, prefix_embeds, tail_ids, steps=steps, seed=seed, first_position=first_position, early_exit=early_exit
        )
        return DenoiseResult(canvases=canvases, steps_used=steps, prefill_ms=0.0)


@pytest.mark.parametrize("early_exit", [False, True])
def test_engine_loop_writes_what_generate_writes_on_real_speech(engine, heldout, early_exit):
    """The engine's own loop (transformers' denoising step, prefill from embeddings) and generate()
    give the micro model's held-out clips the same words, token for token."""
    ours = [engine.transcribe(audio, language="en", steps=8, early_exit=early_exit).text for _, audio in heldout[:6]]
    saved, engine.denoiser = engine.denoiser, GenerateReference(engine.model.backbone)
    try:
        reference = [engine.transcribe(audio, language="en", steps=8, early_exit=early_exit).text for _, audio in heldout[:6]]
    finally:
        engine.denoiser = saved
    assert ours == reference
    assert sum(len(text.split()) for text in ours) > 20  # real transcripts, not empty canvases


def test_the_checkpoint_is_small_safetensors_in_the_adapter_layout():
    files = sorted(p for p in MICRO.rglob("*") if p.is_file())
    names = {str(p.relative_to(MICRO)) for p in files}
    for name in ("adapter/asr_config.json", "adapter/projector.safetensors", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/heldout.json", "adapter/training.json", "adapter/ablation.json",
                 "backbone/config.json", "backbone/model.safetensors", "backbone/tokenizer.json"):
        assert name in names, name
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    record = json.loads((MICRO / "adapter" / "training.json").read_text())
    assert record["train_minutes"] <= 90 and record["wer_heldout_8_steps"] <= MAX_WER_8_STEPS


def test_cli_prints_a_real_transcript(tmp_path, heldout):
    text, audio = heldout[-1]
    wav = tmp_path / "heldout.wav"
    sf.write(wav, audio, synth.SAMPLE_RATE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "app", "transcribe", str(wav), "--engine", "diffusion", "--model", str(MICRO),
           "--steps", "8", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr  # no --language: auto, which an English-only encoder answers with en
    printed = out.stdout.strip()
    assert printed and word_error_rate([text], [printed]) < 1.0, (text, printed)


def test_corpus_keeps_speakable_sentences_and_holds_some_out(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.write_text(
        "The early bird gets the worm. Call me at 5 pm today please.\n%\n"
        "NASA said no to the plan again.\n%\nA penny saved is a penny earned, they say.\n"
        "\t\t-- Benjamin Franklin\n%\nWho knows what evil lurks in the hearts of men?\n",
        encoding="utf-8",
    )
    found = corpus.sentences([fortunes])
    assert sorted(found) == ["A penny saved is a penny earned, they say.", "The early bird gets the worm.",
                             "Who knows what evil lurks in the hearts of men?"]
    train, held = corpus.split(found, 1)
    assert len(held) == 1 and not set(held) & set(train) and len(train) == 2


def test_speech_is_seeded_and_varied():
    text = "Who knows what evil lurks in the hearts of men?"
    a = synth.render(text, synth.draw_voice(3), 3)
    assert np.array_equal(a, synth.render(text, synth.draw_voice(3), 3))
    b = synth.render(text, synth.draw_voice(4), 4)
    assert synth.draw_voice(3) != synth.draw_voice(4) and not np.array_equal(a[: len(b)], b[: len(a)])
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0 and 1.0 < len(a) / synth.SAMPLE_RATE < 8.0


def test_the_decoder_sees_the_prompt_but_never_the_transcript():
    """Training runs one causal pass over prompt + transcript and cuts the cache back to the prompt;
    that cache must equal the prompt-only cache the engine builds at inference."""
    from transformers.cache_utils import DynamicCache

    torch.manual_seed(0)
    tokenizer = model.train_tokenizer(["the quick brown fox", "jumps over the lazy dog"], vocab_size=300)
    net = model.MicroASR(tokenizer, encoder_width=16).eval()
    backbone = net.backbone
    prompt = torch.randn(1, 20, model.HIDDEN)
    answer = backbone.get_input_embeddings()(torch.tensor([tokenizer("the lazy fox")["input_ids"]]))
    config = backbone.config.get_text_config(decoder=True)
    with torch.no_grad():
        full, alone = DynamicCache(config=config), DynamicCache(config=config)
        backbone.model.encoder(inputs_embeds=torch.cat([prompt, answer], 1), cache=full)
        backbone.model.encoder(inputs_embeds=prompt, cache=alone)
        full.crop(-answer.shape[1])
    for cut, ref in zip(full.layers, alone.layers):
        torch.testing.assert_close(cut.keys, ref.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cut.values, ref.values, atol=1e-5, rtol=1e-4)


def test_ctc_alone_learns_a_fixed_batch_through_the_projector_and_embeddings():
    """The listening stage: CTC over the projector and the tied embeddings, with each clip's own
    speech length, fits a small batch, and the backbone's layers take no part in it."""
    torch.manual_seed(0)
    texts = ["the quick brown fox", "jumps over the lazy dog", "hold a key and speak"]
    tokenizer = model.train_tokenizer(texts, vocab_size=300)
    net = model.MicroASR(tokenizer, encoder_width=16)
    targets = net.encode_texts(texts)
    counts = [120, 96, 80]  # speech frames; the batch is cut after the longest, as in training
    frames = torch.randn(len(texts), max(counts), 16)
    layers_before = [p.detach().clone() for p in net.backbone.model.encoder.parameters()]
    optimizer = torch.optim.AdamW(net.ctc_parameters(), lr=3e-3)
    first = float(net.ctc_loss(frames, counts, targets))
    for _ in range(60):
        loss = net.ctc_loss(frames, counts, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < first / 3, (first, float(loss))
    assert net.backbone.lm_head.weight is net.backbone.get_input_embeddings().weight  # tied: CTC shapes both
    unchanged = [torch.equal(a, b) for a, b in zip(layers_before, net.backbone.model.encoder.parameters())
                 if a.shape != net.backbone.lm_head.weight.shape]
    assert unchanged and all(unchanged)


def test_the_aligned_canvas_puts_each_token_where_the_ctc_head_hears_it():
    """`--canvas aligned`: the diffusion target holds each token at the slot where the CTC head hears
    it, <pad> between, then <eos>; a clip whose tokens cannot fit its slots keeps the plain layout."""
    torch.manual_seed(0)
    tokenizer = model.train_tokenizer(["hold a key and speak", "the quick brown fox"], vocab_size=300)
    net = model.MicroASR(tokenizer, encoder_width=16, aligned_canvas=True)
    pad, eos, length = tokenizer.pad_token_id, tokenizer.eos_token_id, net.canvas_length
    tokens = net.encode_texts(["hold a key and speak"])[0]
    heard = [1 + 2 * i + (i > 2) for i in range(len(tokens))]  # the slot each token is spoken in
    slots = heard[-1] + 3
    embeddings = net.backbone.lm_head.weight.detach()
    embeddings[pad] = torch.randn(embeddings.shape[1]) * embeddings.std()  # a blank the head can hear

    def sounds_like(token: int) -> torch.Tensor:  # an audio embedding the tied lm_head reads as `token`
        return 20 * embeddings[token] / embeddings[token].norm() ** 2

    audio = torch.stack([sounds_like(pad)] * slots)
    for slot, token in zip(heard, tokens):
        audio[slot] = sounds_like(token)
    frames = [slots * model.PROJECTOR.subsampling]  # the encoder frames that make `slots` slots
    expected = [pad] * (heard[-1] + 1) + [eos] * (length - heard[-1] - 1)
    for slot, token in zip(heard, tokens):
        expected[slot] = token
    assert net.clean_canvas(audio[None], frames, [tokens])[0].tolist() == expected
    plain = tokens + [eos] * (length - len(tokens))
    assert model.MicroASR(tokenizer, encoder_width=16).clean_canvas(audio[None], frames, [tokens])[0].tolist() == plain
    too_few = len(tokens) - 1
    cut = net.clean_canvas(audio[None, :too_few], [too_few * model.PROJECTOR.subsampling], [tokens])
    assert cut[0].tolist() == plain
    # The longest chunk the engine may give such a model fills every position but the last (<eos>).
    longest_frames = round(net.longest_chunk_seconds() * model.WHISPER_FRAMES / 30.0)
    assert net.projector.output_length(longest_frames) == length - 1
    # A repeated token needs a blank between its two emissions.
    repeat = torch.full((3, 4), -9.0)
    repeat[[0, 2], 2] = 0.0
    repeat[1, 0] = 0.0
    assert alignment.first_slots(repeat.numpy(), [2, 2], blank=0) == [0, 2]
    assert alignment.first_slots(repeat[:2].numpy(), [2, 2], blank=0) is None


def test_word_accuracy_is_split_by_how_often_the_training_text_has_each_word():
    training = ["The cat sat on the mat.", "The dog sat.", "A cat ran."]
    references = ["The cat sat on a zebra.", "The dog ran."]
    hypotheses = ["The cat sat in a zebra.", "the hog ran"]
    buckets = accuracy_by_training_count(references, hypotheses, training)
    # "the" occurs 3 times in training (3-10), right twice; cat, sat, on, a, dog, ran 1-2 times, of which
    # on and dog are wrong; zebra never, right all the same.
    assert buckets["0"] == {"words": 1, "correct": 1.0}
    assert buckets["1-2"] == {"words": 6, "correct": round(4 / 6, 4)}
    assert buckets["3-10"] == {"words": 2, "correct": 1.0}
    assert buckets["11-100"] == {"words": 0, "correct": None}
