"""CUDA graphs of the prefill and of the decoder forward, captured once per prompt shape.

Eager PyTorch launches every small kernel of a forward from Python: at the real model's shape a
denoising step is ~4,600 launches and the GPU idles most of the step waiting for them
(shared/reference/gpu-measured.md). Every step of a dictation has the same shapes (the canvas, a
read-only prompt cache of fixed length), so the decoder forward is captured once and replayed: the
same eager kernels, so the same numbers, without the launch overhead. No compiler is involved,
so a capture costs a few forwards (2-10 s per mode at the real shape on an H200, docs/benchmarks.md)
and nothing has to be persisted across restarts.

One `PromptGraphs` holds, for one (batch, prompt length): the prefill (its KV cache lives in the
graph's memory, so the step graphs read it where the prefill writes it) and two step graphs: the
first step has no self-conditioning input, the later ones do. The sampler between steps stays
transformers' own, eager code.

The logits are vocabulary-sized (batch x 256 x 262,144: 256 MiB in float32 per row), and each
shape's graphs used to keep three such tensors of their own (two step outputs, one
self-conditioning input: 640 MiB a shape, a few GiB with a language per shape, on a card where int4
must fit in 16 GiB). Only one transcription runs at a time, so every step graph of one batch size
writes the same output and reads the same input (`StepBuffers`), and the step computes its logits
in that output (`forward_into`), with no vocabulary-sized float32 temporaries of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaBlockDiffusionOutputWithPast

from app.engine.diffusion.softcap import softcap_into


@dataclass
class Captured:
    """A captured call: copy new inputs into `inputs`, replay `graph`, read `output`.

    `fn` is the call that was captured, kept only so that everything it closes over stays allocated:
    the replayed kernels read the memory of the tensors it used (attention masks, positions, the
    cache), and a graph does not keep Python objects alive. Without it, the masks were freed after
    the capture, their memory went to other tensors, and replays attended through garbage: graph
    and eager forwards parted from the first layer on (benchmarks/gpu_diagnose.py --parity, H100,
    2026-11-28), while random weights still gave the same text.
    """

    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    output: Any
    fn: Callable[..., Any]

    def __call__(self, **inputs: torch.Tensor) -> Any:
        for name, value in inputs.items():
            static = self.inputs[name]
            if static.data_ptr() != value.data_ptr():
                static.copy_(value)
        self.graph.replay()
        return self.output


def capture(fn: Callable[..., Any], inputs: dict[str, torch.Tensor], pool, warmups: int = 2,
            shared: dict[str, torch.Tensor] | None = None) -> Captured:
    """Run `fn` a few times on a side stream (lazy initialisation, cuBLAS workspaces), then capture it.

    The graph reads copies of `inputs`, and reads the tensors in `shared` where they are (buffers
    that several graphs read)."""
    static = {name: value.clone() for name, value in inputs.items()} | (shared or {})
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            fn(**static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = fn(**static)
    return Captured(graph, static, output, fn)


def empty_cache(backbone: DiffusionGemmaForBlockDiffusion, dtype: torch.dtype, device: torch.device) -> DynamicCache:
    """A DynamicCache whose layers are initialised outside any capture (their set-up copies host data)."""
    cache = DynamicCache(config=backbone.config.get_text_config(decoder=True))
    nothing = torch.empty(0, dtype=dtype, device=device)
    for layer in cache.layers:
        layer.lazy_initialization(nothing, nothing)
    return cache


def _prefill_caches(backbone: DiffusionGemmaForBlockDiffusion, dtype: torch.dtype, device: torch.device) -> list[DynamicCache]:
    """One fresh cache for each prefill run by `capture`: two warm-ups and the capture itself."""
    return [empty_cache(backbone, dtype, device) for _ in range(3)]


@dataclass
class StepBuffers:
    """What every step graph of one batch size writes and reads: the logits (float32, as
    transformers' forward returns them) and the self-conditioning input (the compute dtype, as
    `_denoising_step` hands the processed logits back)."""

    logits: torch.Tensor
    self_conditioning: torch.Tensor

    @classmethod
    def make(cls, backbone: DiffusionGemmaForBlockDiffusion, batch: int, dtype: torch.dtype, device: torch.device) -> "StepBuffers":
        shape = (batch, backbone.config.canvas_length, backbone.config.get_text_config().vocab_size)
        return cls(torch.zeros(shape, dtype=torch.float32, device=device), torch.zeros(shape, dtype=dtype, device=device))


@dataclass
class PromptGraphs:
    """Prefill and step graphs for one (batch, prompt shape); see the module docstring."""

    prefill: Captured
    first_step: Captured
    next_step: Captured
    seconds: float = 0.0

    def run_prefill(self, prompt) -> DynamicCache:
        """Replay the prefill on `prompt`'s embeddings, ids and positions; the cache it fills is the graphs' own."""
        return self.prefill(**_prefill_inputs(prompt))

    def decoder_forward(self, *, decoder_input_ids: torch.Tensor, self_conditioning_logits: torch.Tensor | None, **_same):
        """Stands in for `backbone.forward` in transformers' `_denoising_step`.

        The cache, positions and masks it was captured with are the ones this prompt shape always
        has (`_same`: the caller passes equal ones), so only the canvas and the self-conditioning
        logits are copied in.
        """
        if self_conditioning_logits is None:
            return self.first_step(decoder_input_ids=decoder_input_ids)
        return self.next_step(decoder_input_ids=decoder_input_ids, self_conditioning_logits=self_conditioning_logits)


def forward_into(backbone: DiffusionGemmaForBlockDiffusion, logits: torch.Tensor, **inputs) -> DiffusionGemmaBlockDiffusionOutputWithPast:
    """`backbone(**inputs)` for a denoising step, its logits computed in `logits` (float32, the
    step graphs' shared output) instead of in new tensors.

    transformers' forward casts the lm_head's output to float32, divides by the softcap, takes the
    tanh and multiplies back, each into a new vocabulary-sized float32 tensor (256 MiB a row at the
    real shape), which a graph then copied into the shared output. Here the same operations, in the
    same order, run in place in that output: the same numbers bit for bit (a test compares them),
    one 256 MiB pass less a step, and the graphs' memory pool no longer holds two float32 logits
    tensors at the forward's end (on a 16 GB card, int4 has no half GiB to spare). On a GPU the four
    in-place passes are one kernel (`softcap.py`: the same bits by design)."""
    hidden = backbone.model(**inputs)
    softcap_into(logits, backbone.lm_head(hidden.last_hidden_state), backbone.final_logit_softcapping)
    return DiffusionGemmaBlockDiffusionOutputWithPast(logits=logits, cache=hidden.cache,
                                                      encoder_last_hidden_state=hidden.encoder_last_hidden_state)


def _prefill_inputs(prompt) -> dict[str, torch.Tensor]:
    return {
        "prefix_embeds": prompt.prefix_embeds,
        "prefix_positions": prompt.prefix_positions,
        "tail_ids": prompt.tail_ids,
        "tail_positions": prompt.tail_positions,
    }


def capture_prompt(backbone: DiffusionGemmaForBlockDiffusion, prompt, prefill: Callable, mask: dict, pool,
                   buffers: StepBuffers) -> PromptGraphs:
    """Capture `prefill(backbone, prompt, cache, mask)` for this prompt shape, and both kinds of
    denoising step reading the cache it fills and writing their logits into `buffers` (those of
    the prompt's batch size). The mask is computed before, outside the capture (it depends on
    shapes only, and building it copies host data); the capture costs about seven forwards,
    warm-ups included."""
    dtype, device = prompt.prefix_embeds.dtype, prompt.device
    events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    events[0].record()
    caches = _prefill_caches(backbone, dtype, device)

    def run_prefill(**inputs: torch.Tensor) -> DynamicCache:
        return prefill(backbone, dataclasses.replace(prompt, **inputs), caches.pop(), mask)

    prefill_graph = capture(run_prefill, _prefill_inputs(prompt), pool)
    cache = prefill_graph.output
    prefill_graph.graph.replay()  # fill the graphs' cache once, so the step captures read real keys and values
    canvas_ids = torch.zeros_like(prompt.decoder_attention_mask[:, -backbone.config.canvas_length :], dtype=torch.long)
    mask_mapping = backbone.model.decoder.create_diffusion_decoder_attention_mask(
        config=backbone.config, inputs_embeds=canvas_ids.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask
    )

    def step(decoder_input_ids: torch.Tensor, self_conditioning_logits: torch.Tensor | None = None):
        return forward_into(
            backbone,
            buffers.logits,
            decoder_input_ids=decoder_input_ids,
            self_conditioning_logits=self_conditioning_logits,
            decoder_attention_mask=mask_mapping,
            cache=cache,
            decoder_position_ids=prompt.canvas_positions,
        )

    first = capture(step, {"decoder_input_ids": canvas_ids}, pool)
    later = capture(step, {"decoder_input_ids": canvas_ids}, pool, shared={"self_conditioning_logits": buffers.self_conditioning})
    events[1].record()
    torch.cuda.synchronize(device)
    return PromptGraphs(prefill_graph, first, later, seconds=events[0].elapsed_time(events[1]) / 1000.0)
