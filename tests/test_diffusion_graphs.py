"""The CUDA-graph path of the denoising loop, on the CPU, with graph replay emulated.

Stand-in, named as such: CI has no GPU, so `torch.cuda.CUDAGraph` cannot run here. The emulation
keeps what matters to the code around a graph: a captured call is run once at capture, and a
replay writes its new results *into the tensors the capture returned* (a graph replays into the
same memory), including the prefill's KV cache that the step graphs read. If the loop forgot to
copy an input in, read a stale cache, or handed the wrong graph the self-conditioning logits, the
tokens would differ from the eager loop's. Real graphs are checked on a GPU by
benchmarks/gpu_real_shape.py (`graph_check`: one step's logits bitwise, recorded in docs/records).
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache

from app.engine import EngineSpec, load_engine
from app.engine.base import SAMPLE_RATE, BatchItem
from app.engine.diffusion import denoising, graphs
from tests.test_diffusion_engine import tiny_checkpoint


class EmulatedGraph:
    """Replays by calling `fn` again on the static inputs and copying the results in place.

    A real graph does not keep `fn` alive, nor the tensors it closes over (masks, positions): it
    replays kernels that read their memory, which the allocator hands to other tensors once
    Python frees them. So the emulation holds `fn` weakly, and a replay after the code around the
    graph let it go fails, where a real one would silently read garbage (it did: H100, 2026-11-28).
    """

    def __init__(self, fn, static, output) -> None:
        self.fn, self.static, self.output, self.replays = weakref.ref(fn), static, output, 0

    def replay(self) -> None:
        self.replays += 1
        fn = self.fn()
        assert fn is not None, "a graph replays a call whose tensors nothing keeps alive: a real replay reads freed memory"
        fresh = fn(**self.static)
        if isinstance(self.output, DynamicCache):
            for kept, new in zip(self.output.layers, fresh.layers):
                kept.keys.copy_(new.keys)
                kept.values.copy_(new.values)
                for window, new_window in zip(getattr(kept, "kv_window", ())[:2], getattr(new, "kv_window", ())[:2]):
                    window.copy_(new_window)  # the prefill's copies into the decoder's windows (kv_windows.py)
        elif isinstance(self.output, torch.Tensor):  # the Whisper encoder's frames
            self.output.copy_(fresh)
        else:
            self.output.logits.copy_(fresh.logits)


def emulated_capture(fn, inputs, pool, warmups=2, shared=None):
    static = {name: value.clone() for name, value in inputs.items()} | (shared or {})
    for _ in range(warmups):
        fn(**static)
    output = fn(**static)
    return graphs.Captured(EmulatedGraph(fn, static, output), static, output, fn)


class NoEvent:
    def __init__(self, **_kwargs) -> None:
        pass

    def record(self) -> None:
        pass

    def elapsed_time(self, _other) -> float:
        return 0.0


capture_prompt = graphs.capture_prompt


@pytest.fixture
def emulated_graphs(monkeypatch):
    monkeypatch.setattr(graphs, "capture", emulated_capture)
    monkeypatch.setattr(torch.cuda, "Event", NoEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    # A real prefill graph keeps writing the one cache it captured; the emulation re-runs the prefill,
    # which needs a fresh cache each time.
    made = graphs.empty_cache

    class Fresh(list):
        def pop(self, *args):
            return made(*self.shape)

    def fresh_caches(backbone, dtype, device):
        caches = Fresh()
        caches.shape = (backbone, dtype, device)
        return caches

    monkeypatch.setattr(graphs, "_prefill_caches", fresh_caches)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> object:
    adapter: Path = tiny_checkpoint(tmp_path_factory)
    return load_engine(EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization="fp32"))


def speech_like(seconds: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(3).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


def test_the_whisper_encoder_graph_replays_the_frames_of_each_new_window(engine, emulated_graphs):
    """The encoder's graph (captured when a GPU engine warms up) copies each dictation's features in
    and hands back frames of its own: equal to the eager encoder's for two different windows, and
    not the same tensor twice (the next replay overwrites the graph's output)."""
    audio = engine.model.audio
    windows = [audio.features([speech_like(seconds)]) for seconds in (1.0, 2.5)]
    eager = [audio.encode(window) for window in windows]
    audio.capture(batch=1)
    try:
        graphed = [audio.encode(window) for window in windows]
        assert audio._graphs[1].graph.replays == 2
        pair = audio.encode(audio.features([speech_like(1.0), speech_like(2.0)]))  # a batch of two: eager
        assert audio._graphs[1].graph.replays == 2 and pair.shape[0] == 2
    finally:
        audio._graphs.clear()
    assert not torch.equal(eager[0], eager[1])
    assert all(torch.equal(g, e) for g, e in zip(graphed, eager))
    assert graphed[0].data_ptr() != graphed[1].data_ptr()


def test_an_encoder_graph_that_cannot_be_captured_leaves_the_encoder_eager(engine, emulated_graphs, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(graphs, "capture", no_memory)
    audio = engine.model.audio
    window = audio.features([speech_like(1.0)])
    audio.capture(batch=1)
    assert audio._graphs == {}
    assert torch.equal(audio.encode(window), audio.encoder(window).last_hidden_state)


def test_graphs_are_captured_while_idle_and_replayed_with_the_eager_loops_tokens(engine, emulated_graphs, monkeypatch):
    eager = [engine.transcribe(speech_like(), language="en", steps=5, early_exit=False, seed=s).text for s in (1, 2)]
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    captures = []
    monkeypatch.setattr(graphs, "capture_prompt", lambda *args: captures.append(args[1].shape) or capture_prompt(*args))
    try:
        first = engine.transcribe(speech_like(), language="en", steps=5, early_exit=False, seed=1).text
        assert captures == []  # a dictation of a new shape never waits for a capture: it runs eagerly
        pieces = engine.preparations()
        assert [p.label for p in pieces] == ["GPU graphs for English"]
        pieces[0].run()
        assert engine.preparations() == [] and len(captures) == 1
        graphed = [engine.transcribe(speech_like(), language="en", steps=5, early_exit=False, seed=s).text for s in (1, 2)]
        prompt_graphs = list(engine.denoiser._ready.values())
    finally:
        engine.denoiser = saved
    assert first == eager[0] and graphed == eager
    assert len(prompt_graphs) == 1  # one prompt shape: captured once, replayed by both dictations
    only = prompt_graphs[0]
    assert only.prefill.graph.replays == 3  # the fill after capture, then one per dictation
    assert only.first_step.graph.replays == 2 and only.next_step.graph.replays == 2 * 4


def test_graphs_read_the_windows_each_prefill_fills(tmp_path_factory, emulated_graphs):
    """With the GPU's fused attention (Triton's interpreter here), the step graphs read the keys and
    values the prefill graph copied into the decoder's windows (kv_windows.py) for this dictation:
    other speech in each dictation, so windows left from an earlier one would change the tokens."""
    pytest.importorskip("triton", reason="Triton is installed with the test extras")
    from app.engine.diffusion import kv_windows
    from app.engine.diffusion.fused_attention import fuse_attention
    from tests.test_diffusion_engine import noise, tone

    fused = load_engine(EngineSpec(engine="diffusion", model=str(tiny_checkpoint(tmp_path_factory)), device="cpu", quantization="fp32"))
    backbone = fused.model.backbone
    fuse_attention(backbone, torch.device("cpu"), leave=backbone.model.encoder)  # the decoder's (the interpreter is slow)
    assert kv_windows.wanted(backbone)
    clips = [tone(), noise()]  # the same length, so one prompt shape and one set of graphs
    eager = [fused.transcribe(clip, language="en", steps=3, early_exit=False, seed=1).text for clip in clips]
    fused.denoiser = denoising.Denoiser(fused.model.backbone, use_graphs=True)
    fused.transcribe(clips[0], language="en", steps=3, early_exit=False, seed=1)
    for piece in fused.preparations():
        piece.run()
    graphed = [fused.transcribe(clip, language="en", steps=3, early_exit=False, seed=1).text for clip in clips]
    assert eager[0] != eager[1] and graphed == eager
    assert len(fused.denoiser._ready) == 1


def test_a_failed_capture_falls_back_to_the_eager_loop_and_says_why(engine, emulated_graphs, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "capture_prompt", refuse)
    eager = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=4).text
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        engine.transcribe(speech_like(), language="de", steps=3, early_exit=False, seed=4)
        for piece in engine.preparations():
            piece.run()  # does not raise: the engine keeps the eager loop
        text = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=4).text
        denoiser = engine.denoiser
        left = engine.preparations()
    finally:
        engine.denoiser = saved
    assert text == eager and left == []
    assert not denoiser.use_graphs and denoiser.fast_path == "eager"
    assert denoiser.fast_path_error.startswith("GPU graphs: RuntimeError") and "stream is capturing" in denoiser.fast_path_error


def test_a_compile_that_fails_keeps_the_graphs(engine, emulated_graphs, monkeypatch):
    """Stand-in for a compiler failure on a GPU (CI has neither): the compiled layers' context raises
    as Inductor does when it cannot build a kernel. The graphs must still be captured, without them."""
    eager = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=6).text
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True, compile_layers=True)

    def compiler_fails():
        raise RuntimeError("backend='inductor' raised: CompilationError")

    try:
        monkeypatch.setattr(engine.denoiser.compiled, "active", compiler_fails)
        engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=6)
        pieces = engine.preparations()
        assert [(p.label, p.alongside_jobs) for p in pieces] == [("GPU graphs for English", False)]  # plain graphs first
        pieces[0].run()
        pieces = engine.preparations()
        assert [(p.label, p.alongside_jobs) for p in pieces] == [("compiled layers for English", True)]
        pieces[0].run()
        assert engine.denoiser.fast_path == "graphs" and "compiled layers: RuntimeError" in engine.denoiser.fast_path_error
        assert engine.preparations() == []  # the plain graphs stay: nothing is captured twice
        text = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=6).text
        captured = list(engine.denoiser._ready.values())
    finally:
        engine.denoiser = saved
    assert text == eager and len(captured) == 1 and captured[0].first_step.graph.replays == 1


def test_with_compiled_layers_plain_graphs_serve_until_the_compiled_ones_replace_them(engine, emulated_graphs, tmp_path, monkeypatch):
    """Graphs of the eager kernels come first (seconds), the compile (a minute or two on a GPU) runs
    next while they serve dictations, then the graphs are captured again with the compiled layers,
    with a real Inductor compile on the CPU. The text is the eager loop's at every stage (fp32)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=8).text
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True, compile_layers=True)
    texts, labels = [], []
    try:
        engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=8)
        while pieces := engine.preparations():
            labels.append((pieces[0].label, pieces[0].alongside_jobs))
            pieces[0].run()
            texts.append(engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=8).text)
            if len(labels) == 1:
                plain = engine.denoiser._ready[next(iter(engine.denoiser._ready))]
        final = engine.denoiser._ready[next(iter(engine.denoiser._ready))]
        compiled_calls = engine.denoiser.compiled.calls
    finally:
        engine.denoiser.compiled.remove()
        engine.denoiser = saved
    assert labels == [("GPU graphs for English", False), ("compiled layers for English", True),
                      ("GPU graphs with compiled layers for English", False)]
    assert texts == [eager] * 3
    assert plain.first_step.graph.replays == 2  # served the dictations after the first two pieces
    assert final is not plain and final.first_step.graph.replays == 1
    assert compiled_calls > 0  # the compile stage ran the compiled layers


def held_logits(denoiser: denoising.Denoiser) -> dict[int, set[int]]:
    """Per batch size, the distinct vocabulary-sized tensors the kept graphs hold (by memory address)."""
    held: dict[int, set[int]] = {}
    for (batch, _, _), ready in denoiser._ready.items():
        for tensor in (ready.first_step.output.logits, ready.next_step.output.logits, ready.next_step.inputs["self_conditioning_logits"]):
            held.setdefault(batch, set()).add(tensor.data_ptr())
    return held


def test_every_shape_of_a_batch_size_shares_one_pair_of_logits_buffers(engine, emulated_graphs, monkeypatch):
    """The logits are vocabulary-sized (256 MiB a row at the real shape): each shape's graphs kept
    three such tensors, GiBs once a few prompt lengths (languages, the user's words) had their
    shapes. Now the step graphs of one batch size write one output and read one self-conditioning
    input, whatever the prompt length; a batch size whose last shape is dropped frees its pair.
    The text stays the eager loop's."""
    two = [BatchItem(speech_like(), "en")] * 2
    # The tiny tokenizer spells every language's name in two tokens: a longer name makes a longer prompt.
    monkeypatch.setitem(engine.model.config.language_names, "de", "German as spoken in Vienna")
    monkeypatch.setitem(engine.model.config.language_names, "fr", "French as spoken in Montreal")

    def dictate(language: str) -> str:
        return engine.transcribe(speech_like(), language=language, steps=3, early_exit=False, seed=7).text

    eager = {language: dictate(language) for language in ("en", "de")}
    eager_batch = [t.text for t in engine.transcribe_batch(two, steps=3, early_exit=False, seed=7)]
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        for language in eager:
            dictate(language)
        engine.transcribe_batch(two, steps=3, early_exit=False, seed=7)
        for piece in engine.preparations():
            piece.run()
        shapes = list(engine.denoiser._ready)
        held = held_logits(engine.denoiser)
        graphed_batch = [t.text for t in engine.transcribe_batch(two, steps=3, early_exit=False, seed=7)]
        graphed = {language: dictate(language) for language in eager}

        engine.denoiser._max_shapes = 2  # a small card: the batch shape, used least recently, goes
        dictate("fr")
        for piece in engine.preparations():
            piece.run()
        left = held_logits(engine.denoiser)
        buffers = list(engine.denoiser._buffers)
    finally:
        engine.denoiser = saved
    assert graphed == eager and graphed_batch == eager_batch
    assert sorted(key[0] for key in shapes) == [1, 1, 2]  # two prompt lengths at batch 1, and a batch of 2
    assert {batch: len(pointers) for batch, pointers in held.items()} == {1: 2, 2: 2}  # logits out, self-conditioning in
    assert list(left) == [1] and len(left[1]) == 2 and buffers == [1]


def test_the_gpu_parity_diagnosis_compares_layer_by_layer(engine, emulated_graphs):
    """benchmarks/gpu_diagnose.py --parity on the emulated graphs: the same kernels replayed, so every
    prefill cache, layer output and logit must be equal. On an H100 it found the first prefill
    layer and decoder layer 0 apart in every mode: the graphs read masks that had been freed
    (fixed in graphs.Captured; the emulation now fails the same way, see EmulatedGraph)."""
    from benchmarks.gpu_diagnose import graph_parity

    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        report = graph_parity(engine, speech_like())
    finally:
        engine.denoiser = saved
    layers = len(engine.model.backbone.model.decoder.layers)
    assert len(report["layer_output_max_abs_diff"]) == layers == len(report["kv_cache_max_abs_diff_by_layer"])
    assert report["first_decoder_layer_that_differs"] is None and report["first_prefill_layer_that_differs"] is None
    assert report["logits_max_abs_diff"] == 0.0 and report["argmax_agreement"] == 1.0


def captures_short_of_memory(monkeypatch, count: int) -> list[int]:
    """Stand-in for a GPU short of memory: the next `failures[0]` captures raise torch's own
    out-of-memory error, later ones capture. The caller may set `failures[0]` again."""
    failures = [count]

    def short_of_memory(*args):
        if failures[0] > 0:
            failures[0] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return capture_prompt(*args)

    monkeypatch.setattr(graphs, "capture_prompt", short_of_memory)
    return failures


def test_out_of_memory_while_capturing_is_tried_again_then_given_up(engine, emulated_graphs, monkeypatch):
    """Stand-in for a GPU that is short of memory (CI has none): the capture raises torch's own
    out-of-memory error. The first time the shape stays eager and comes back with its next
    dictation; after MEMORY_TRIES failures the graphs are given up, and dictation goes on eagerly."""
    eager = engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=9).text
    failures = captures_short_of_memory(monkeypatch, 1)
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=9)
        engine.preparations()[0].run()
        assert engine.preparations() == [] and engine.denoiser.fast_path == "graphs" and engine.denoiser.fast_path_error is None
        assert engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=9).text == eager
        (again,) = engine.preparations()  # the next dictation brought the shape back
        again.run()
        assert engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=9).text == eager
        assert len(engine.denoiser._ready) == 1  # captured the second time

        # From now on the memory never suffices for a new shape: the first failure makes room by
        # dropping the English shape's graphs (see the next test), the next MEMORY_TRIES count.
        failures[0] = denoising.MEMORY_TRIES + 1
        two = [BatchItem(speech_like(), "en")] * 2  # two requests in one pass: another prompt shape
        for _ in range(denoising.MEMORY_TRIES + 1):
            engine.transcribe_batch(two, steps=3, early_exit=False, seed=9)
            for piece in engine.preparations():
                piece.run()
        denoiser = engine.denoiser
        assert engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=9).text == eager
    finally:
        engine.denoiser = saved
    assert denoiser.fast_path == "eager" and "OutOfMemoryError" in denoiser.fast_path_error


def test_out_of_memory_beside_other_shapes_graphs_drops_the_least_recently_used(engine, emulated_graphs, monkeypatch):
    """Stand-in for a small card (CI has no GPU): each shape's graphs hold memory, and the second
    shape's capture runs out. The least recently used shape's graphs make room, the shape is
    captured at once, and from then on only as many shapes are kept as fitted; no fast path is lost."""
    two = [BatchItem(speech_like(), "en")] * 2  # two requests in one pass: a second prompt shape
    eager_batch = [t.text for t in engine.transcribe_batch(two, steps=3, early_exit=False, seed=5)]
    failures = captures_short_of_memory(monkeypatch, 0)
    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        denoiser = engine.denoiser
        engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=5)
        engine.preparations()[0].run()
        english = next(iter(denoiser._ready))
        failures[0] = 1
        engine.transcribe_batch(two, steps=3, early_exit=False, seed=5)
        (piece,) = engine.preparations()
        piece.run()  # out of memory: the English graphs go, the batch shape stays queued
        assert english not in denoiser._ready and denoiser._max_shapes == 1
        (piece,) = engine.preparations()
        piece.run()
        assert list(denoiser._ready) != [english] and len(denoiser._ready) == 1
        graphed = [t.text for t in engine.transcribe_batch(two, steps=3, early_exit=False, seed=5)]
        engine.transcribe(speech_like(), language="en", steps=3, early_exit=False, seed=5)  # eager again, queued
        engine.preparations()[0].run()  # fits by dropping the batch shape: one shape is what fits
        assert list(denoiser._ready) == [english]
    finally:
        engine.denoiser = saved
    assert graphed == eager_batch
    assert denoiser.fast_path == "graphs" and denoiser.fast_path_error is None and denoiser._memory_failures == 0


def test_a_shape_used_again_is_prepared_before_the_others(engine, emulated_graphs):
    """The warm-up queues a shape per language; the one the user dictates in goes first."""
    denoiser = denoising.Denoiser(engine.model.backbone, use_graphs=True)
    saved, engine.denoiser = engine.denoiser, denoiser
    try:
        engine.transcribe_batch([BatchItem(speech_like(), "en")] * 2, steps=1, early_exit=False)
        engine.transcribe(speech_like(), language="en", steps=1, early_exit=False)
        assert [p.label for p in engine.preparations()] == ["GPU graphs for English, 2 at once", "GPU graphs for English"]
        first_queued = [key for key, _, _ in denoiser.pending()]
        engine.transcribe(speech_like(), language="en", steps=1, early_exit=False)
        assert [key for key, _, _ in denoiser.pending()] == first_queued[::-1]
    finally:
        engine.denoiser = saved


def test_the_gpu_benchmark_checks_graphs_by_one_steps_logits(engine, emulated_graphs):
    """benchmarks/gpu_real_shape.py's `graph_check` on the emulated graphs: one step's logits bitwise
    equal to the eager forward's (text alone missed the freed masks on the H100)."""
    from app.engine.base import prepare_all
    from benchmarks.gpu_real_shape import graph_check

    saved, engine.denoiser = engine.denoiser, denoising.Denoiser(engine.model.backbone, use_graphs=True)
    try:
        engine.transcribe(speech_like(), language="en", steps=1, early_exit=False)
        prepare_all(engine)
        report = graph_check(engine, speech_like(), runs=1)
    finally:
        engine.denoiser = saved
    assert report["first_step_logits_identical"] and report["first_step_logits_rel_error"] == 0.0, report
    assert report["identical_text"] and report["eager_total_ms_p50_8_steps"] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_step_computes_its_logits_in_the_shared_buffer_bit_for_bit(engine, dtype):
    """The step graphs compute the softcapped float32 logits in place in the shared output
    (`graphs.forward_into`), not in transformers' chain of new vocabulary-sized tensors: the same
    numbers bit for bit, with and without self-conditioning, in float32 and in bf16 (where the
    lm_head's output is cast to float32 first, as transformers does)."""
    backbone = copy.deepcopy(engine.model.backbone).to(dtype)  # the module's engine stays float32
    prompt = engine.denoiser._prompt(torch.randn(1, 5, backbone.config.text_config.hidden_size, dtype=dtype),
                                     torch.tensor([[2, 3, 4]]), 0)
    cache = denoising.prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
    canvas = torch.randint(0, backbone.config.text_config.vocab_size, (1, backbone.config.canvas_length))
    masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
        config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask)
    buffers = graphs.StepBuffers.make(backbone, 1, dtype, torch.device("cpu"))
    for self_conditioning in (None, torch.randn(buffers.self_conditioning.shape).mul(4).to(dtype)):
        inputs = dict(decoder_input_ids=canvas, self_conditioning_logits=self_conditioning, decoder_attention_mask=masks,
                      cache=cache, decoder_position_ids=prompt.canvas_positions)
        with torch.inference_mode():
            expected = backbone(**inputs).logits
            out = graphs.forward_into(backbone, buffers.logits, **inputs)
        assert out.logits is buffers.logits and out.logits.dtype == torch.float32
        assert torch.equal(out.logits, expected)
        assert expected.abs().max() > 1.0  # softcapped logits, not a constant
