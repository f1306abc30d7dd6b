"""Prefill the backbone's KV cache from embeddings, then denoise the canvas with DiffusionGemma's own step.

Everything that decides tokens is transformers': the random initial canvas, the self-conditioning,
the linear temperature schedule, the entropy-bound sampler and the stable-and-confident early exit
all run inside `DiffusionGemmaForBlockDiffusion._denoising_step`, called here in the same order
`generate()` calls it, so the same seed gives the same tokens (`denoise_with_generate` is kept as the
reference that tests and the GPU benchmark compare with). What this module adds:

- the prompt arrives as embeddings (audio in its slots), which `generate()` cannot prefill: the
  whole prompt is prefilled in one pass (`prefill.py`; `generate()` would take two, the prefix and
  then the text after the audio on top: the same cache to float rounding, one weight read less);
- a fast path per prompt shape, prepared while the caller is idle (`Denoiser.prepare`): on a CUDA GPU
  the prefill and the decoder forward replay CUDA graphs (`graphs.py`), and optionally the decoder
  layers run compiled by Inductor (`compiled_layers.py`);
- the argmax canvas after every step is handed to `on_draft` (the live preview), and every step
  is timed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache

from app.engine.diffusion import graphs, rotary_memo
from app.engine.diffusion.compiled_layers import CompiledLayers
from app.engine.diffusion.prefill import Prompt, prefill, prefill_mask

log = logging.getLogger(__name__)

# Prompt shapes (batch, prefix length, tail length) whose fast path is kept; a dictation over 30 s is
# a batch of several chunks, a speech server's batches are 1, 2, 4 or 8 rows.
MAX_PREPARED_SHAPES = 8
# Preparations that may run out of GPU memory before the fast path is given up: another program may
# hold the memory for a while, so a shape is tried again after its next transcription.
MEMORY_TRIES = 3
@dataclass
class DenoiseResult:
    """The final canvases (batch, canvas_length), steps run, and milliseconds spent."""

    canvases: torch.Tensor
    steps_used: int
    prefill_ms: float
    step_ms: list[float] = field(default_factory=list)


@dataclass
class PendingShape:
    """A prompt shape seen in a transcription and not fully prepared yet: a copy of that prompt, which
    `Denoiser.prepare` runs on, what to call it in the settings window, and which stages are done
    (with graphs and compiled layers: plain graphs first, then the compile, then graphs again)."""

    prompt: Prompt
    label: str
    captured: bool = False  # graphs of the eager kernels, serving while the compile runs
    compiled: bool = False


class Denoiser:
    """Prefill + denoising loop for one backbone, and its fast path per prompt shape.

    The fast path is CUDA graphs of the prefill and the steps (on a CUDA GPU), and with
    `compile_layers` the decoder layers compiled by Inductor (`compiled_layers.py`; inside the graphs
    on a GPU). Both cost time per shape, so a transcription never pays them: a shape not prepared
    yet runs eagerly (the same kernels as transformers') and is queued; `prepare` then does the work
    in stages: `capture` (which must not run beside a transcription: a capture records whatever the
    GPU runs) and `compile` (which may run on another thread while transcriptions go on: it changes
    nothing they use). With both, graphs of the eager kernels come first, since they take seconds
    where a cold compile takes a minute or two (H100: 1-3 s against 48-99 s) and make a dictation
    3-6x faster meanwhile; then the compile; then the graphs are captured again with the compiled layers.
    """

    def __init__(self, backbone: DiffusionGemmaForBlockDiffusion, *, use_graphs: bool | None = None,
                 compile_layers: bool = False) -> None:
        self.backbone = backbone
        rotary_memo.memoize(backbone.model.decoder.rotary_emb)  # a prompt's positions: cos/sin once, not every step
        device = backbone.get_input_embeddings().weight.device
        self.use_graphs = device.type == "cuda" if use_graphs is None else use_graphs
        self.compiled = CompiledLayers(backbone.model.decoder.layers, MAX_PREPARED_SHAPES) if compile_layers else None
        self._ready: OrderedDict[tuple[int, int, int], graphs.PromptGraphs | None] = OrderedDict()  # None: no graphs
        self._pending: OrderedDict[tuple[int, int, int], PendingShape] = OrderedDict()
        self._lock = threading.Lock()  # guards the two above: a compile stage runs beside transcriptions
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._buffers: dict[int, graphs.StepBuffers] = {}  # per batch size: the logits every step graph shares
        self.fast_path_error: str | None = None  # why the fast path was given up, if it was
        self._memory_failures = 0
        self._max_shapes = MAX_PREPARED_SHAPES  # lowered to what fits when GPU memory runs out

    @property
    def fast_path(self) -> str:
        """What a prepared shape runs: `graphs`, `compiled`, `graphs+compiled`, or `eager` (nothing to prepare)."""
        parts = [name for name, on in (("graphs", self.use_graphs), ("compiled", self.compiled is not None)) if on]
        return "+".join(parts) or "eager"

    def pending(self) -> list[tuple[tuple[int, int, int], str, str]]:
        """The shapes waiting for `prepare`, next first (queued order, a shape used again moved ahead):
        (shape, label, stage), stage `capture`, `compile` or `recapture`."""
        with self._lock:
            return [(key, shape.label, self._stage(shape)) for key, shape in self._pending.items()]

    def _stage(self, shape: PendingShape) -> str:
        if shape.compiled:
            return "recapture"  # graphs again, now with the compiled layers (only where both apply)
        if self.compiled is None or (self.use_graphs and not shape.captured):
            return "capture"
        return "compile"

    def prepare(self, key: tuple[int, int, int]) -> None:
        """Run the next stage for one pending shape (seconds; see `pending`).

        `compile` runs one forward at the shape with the compiled layers, on the calling thread only
        (`CompiledLayers.active` is per thread); `capture` records the graphs, `recapture` records them
        again with the compiled layers (the new graphs then replace the plain ones). Out of GPU memory makes
        room by dropping another shape's graphs, or drops this attempt (`_out_of_memory`). Whatever else fails (a
        compile the toolchain refuses, a capture the GPU refuses) gives up that part of the fast path
        for every shape, and the reason goes to `fast_path_error`; the eager loop remains.
        """
        with self._lock:
            shape = self._pending.get(key)
        if shape is None or self.fast_path == "eager":
            return
        stage = self._stage(shape)
        # what a failure gives up: a capture with compiled layers fails on their account
        part = "capture" if stage == "capture" else "compile"
        try:
            if stage == "compile":
                with self.compiled.active():
                    self._forward_once(shape.prompt)
                ready = None
            else:
                with self._compiled_layers(shape.compiled):  # compiled already: the capture records their kernels
                    prompt = shape.prompt
                    ready = graphs.capture_prompt(self.backbone, prompt, prefill, prefill_mask(self.backbone, prompt), self._pool,
                                                  self._step_buffers(prompt))
        except torch.cuda.OutOfMemoryError as exc:
            self._out_of_memory(exc, key, part)
            return
        except Exception as exc:  # noqa: BLE001 - the eager path still works: keep dictating, and say why
            self._give_up(exc, part)
            return
        with self._lock:
            if stage == "compile":
                shape.compiled = True
                if self.use_graphs:
                    return  # its graphs with the compiled layers come next; the plain ones serve meanwhile
                self._pending.pop(key, None)
            elif self.compiled is not None and not shape.compiled:
                shape.captured = True  # the compile comes next
            else:
                self._pending.pop(key, None)
            self._ready[key] = ready
            self._ready.move_to_end(key)
            while len(self._ready) > self._max_shapes:
                self._ready.popitem(last=False)  # the least recently used
            self._drop_unused_buffers()

    def _step_buffers(self, prompt: Prompt) -> graphs.StepBuffers:
        """The logits buffers of `prompt`'s batch size, made by its first capture."""
        if prompt.batch not in self._buffers:
            dtype = self.backbone.get_input_embeddings().weight.dtype
            self._buffers[prompt.batch] = graphs.StepBuffers.make(self.backbone, prompt.batch, dtype, prompt.device)
        return self._buffers[prompt.batch]

    def _drop_unused_buffers(self) -> None:
        """Free the logits buffers of batch sizes no kept graphs use (a server's batch of 8 holds 3 GiB).
        Called with the lock held."""
        batches = {key[0] for key, ready in self._ready.items() if ready is not None}
        self._buffers = {batch: buffers for batch, buffers in self._buffers.items() if batch in batches}

    def _forward_once(self, prompt: Prompt) -> None:
        """The prefill and one decoder forward at `prompt`'s shape, as a denoising step calls it; no
        random numbers are drawn here (Dynamo still sets the random state back after compiling, which can move a
        seeded transcription running meanwhile to another draw: `Preparation`)."""
        backbone = self.backbone
        cache = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
        canvas = torch.zeros(prompt.batch, backbone.config.canvas_length, dtype=torch.long, device=prompt.device)
        masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
            config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask
        )
        backbone(decoder_input_ids=canvas, decoder_attention_mask=masks, cache=cache, decoder_position_ids=prompt.canvas_positions)

    def __call__(
        self,
        prefix_embeds: torch.Tensor,
        tail_ids: torch.Tensor,
        *,
        steps: int,
        seed: int,
        first_position: int = 0,
        early_exit: bool = True,
        on_draft: Callable[[int, torch.Tensor], None] | None = None,
        label: str = "",
    ) -> DenoiseResult:
        """Denoise one canvas per batch row, conditioned on `prefix_embeds` then `tail_ids`.

        The prefix's position ids start at `first_position` (see `PromptIds`); the tail and the
        canvas follow at the positions `generate()` gives them, after the prefix's length. The global
        RNG is seeded with `seed` inside a fork, so results are reproducible and the caller's random
        state is left alone. Without `early_exit` exactly `steps` decoder passes run. A prompt shape
        not prepared yet runs eagerly and is queued for `prepare` under `label`.
        """
        prompt = self._prompt(prefix_embeds, tail_ids, first_position)
        key = prompt.shape
        with self._lock:
            prepared = key in self._ready
            if prepared:
                self._ready.move_to_end(key)
            if key in self._pending:
                self._pending.move_to_end(key, last=False)  # used again: the user's shape goes before the warm-up's others
            elif not prepared and self.fast_path != "eager":
                self._pending[key] = PendingShape(prompt.copy(), label)
            prompt_graphs = self._ready.get(key)
        return self._denoise(prompt, prompt_graphs, steps=steps, seed=seed, early_exit=early_exit,
                             on_draft=on_draft, compiled=prepared)

    def _denoise(self, prompt: Prompt, prompt_graphs: graphs.PromptGraphs | None, *, steps: int, seed: int,
                 early_exit: bool, on_draft: Callable[[int, torch.Tensor], None] | None, compiled: bool) -> DenoiseResult:
        """The loop itself: `prompt_graphs` replayed where given, else eager, with the compiled layers if `compiled`."""
        backbone = self.backbone
        start = time.perf_counter()
        with self._compiled_layers(compiled and prompt_graphs is None):
            if prompt_graphs is not None:
                cache = prompt_graphs.run_prefill(prompt)
                decoder_forward = prompt_graphs.decoder_forward
            else:
                cache = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
                decoder_forward = backbone.forward
            batch, device = prompt.batch, prompt.device
            _sync(device)
            prefill_ms = (time.perf_counter() - start) * 1000.0

            knobs: dict = dict(max_denoising_steps=steps)
            if not early_exit:
                knobs.update(stability_threshold=None, confidence_threshold=None)
            config, _ = backbone._prepare_generation_config(None, **knobs)
            sampler = backbone._prepare_sampler(config)
            processors = backbone._prepare_logits_processor(config)
            stopping = backbone._prepare_diffusion_stopping_criteria(config)
            step_ms: list[float] = []
            with _seeded(device, seed):
                canvas, self_conditioning, mask_mapping, finished = backbone._prepare_denoiser_inputs(
                    decoder_attention_mask=prompt.decoder_attention_mask,
                    cache=cache,
                    sampler=sampler,
                    diffusion_stopping_criteria=stopping,
                    batch_size=batch,
                    device=device,
                    model_kwargs={},
                )
                argmax = canvas
                for step in reversed(range(1, steps + 1)):
                    step_start = time.perf_counter()
                    canvas, argmax, self_conditioning, finished = backbone._denoising_step(
                        decoder_forward=decoder_forward,
                        current_canvas=canvas,
                        argmax_canvas=argmax,
                        input_ids=prompt.tail_ids,
                        decoder_position_ids=prompt.canvas_positions,
                        self_conditioning_logits=self_conditioning,
                        mask_mapping=mask_mapping,
                        cache=cache,
                        finished_denoising=finished,
                        cur_step=step,
                        sampler=sampler,
                        logits_processor=processors,
                        diffusion_stopping_criteria=stopping,
                    )
                    done = bool(finished.all())  # waits for the step's GPU work, so the timing below is the step's
                    step_ms.append((time.perf_counter() - step_start) * 1000.0)
                    if on_draft is not None:
                        on_draft(len(step_ms), argmax.cpu())
                    if done:
                        break
        return DenoiseResult(canvases=argmax, steps_used=len(step_ms), prefill_ms=prefill_ms, step_ms=step_ms)

    def _compiled_layers(self, on: bool) -> contextlib.AbstractContextManager:
        return self.compiled.active() if on and self.compiled is not None else contextlib.nullcontext()

    def _out_of_memory(self, exc: BaseException, key: tuple[int, int, int], stage: str) -> None:
        """Make room, or drop this attempt and free what it took.

        Where other shapes' graphs hold memory (a small card: each shape's graphs keep its KV cache
        and what its capture took beyond the others'), the least recently used shape gives its
        graphs up, the number of shapes kept is lowered to what fits, and this shape is tried again at once. Else the shape comes back
        with its next transcription, and after `MEMORY_TRIES` such failures the memory is taken as
        too small for good (`_give_up`)."""
        with self._lock:
            others = [other for other in self._ready if other != key]
            if others:
                del self._ready[others[0]]
                self._max_shapes = max(1, len(self._ready) + (key not in self._ready))
                self._drop_unused_buffers()
        if others:
            log.warning("out of GPU memory while preparing a shape (%s): the least recently used shape's graphs "
                        "make room; %d shapes kept from now on", stage, self._max_shapes)
            self._release()
            return
        self._memory_failures += 1
        if self._memory_failures >= MEMORY_TRIES:
            self._give_up(exc, stage)
            return
        with self._lock:
            self._pending.pop(key, None)
        log.warning("out of GPU memory while preparing a shape (%s, %d of %d tries); eager until it is tried again",
                    stage, self._memory_failures, MEMORY_TRIES)
        self._release()

    def _release(self) -> None:
        """Hand freed GPU memory back (graphs' pools included) after a failed or dropped preparation."""
        if self._pool is not None:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def _give_up(self, exc: BaseException, stage: str) -> None:
        """Drop the part of the fast path that failed, for good: the compiled layers if the compile
        (or a capture with compiled layers) failed: shapes with plain graphs keep them, the others
        still get theirs; else the graphs, with every prepared shape."""
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        with self._lock:
            if stage == "compile" and self.compiled is not None:
                part, compiled, self.compiled = "compiled layers", self.compiled, None
                compiled.remove()
                for key in [key for key, shape in self._pending.items() if shape.captured or not self.use_graphs]:
                    del self._pending[key]  # their plain graphs (if any) are all they get now
            else:
                part, self.use_graphs = "GPU graphs", False
                self._ready.clear()
                self._pending.clear()
                self._buffers.clear()
            self.fast_path_error = f"{part}: {reason}"
        log.warning("%s given up (%s); left: %s", part, reason, self.fast_path)
        self._release()

    def _prompt(self, prefix_embeds: torch.Tensor, tail_ids: torch.Tensor, first_position: int) -> Prompt:
        """Position ids and masks exactly as `generate()` makes them for a tail on top of a prefix cache."""
        batch, prefix_len = prefix_embeds.shape[:2]
        tail_len, device = tail_ids.shape[1], prefix_embeds.device
        length, canvas = prefix_len + tail_len, self.backbone.config.canvas_length
        attention = torch.ones(batch, length, dtype=torch.bool, device=device)
        return Prompt(
            prefix_embeds=prefix_embeds,
            prefix_positions=torch.arange(prefix_len, device=device).unsqueeze(0) + first_position,
            tail_ids=tail_ids,
            tail_positions=torch.arange(prefix_len, length, dtype=torch.int32, device=device).unsqueeze(0),
            attention_mask=attention,
            decoder_attention_mask=torch.nn.functional.pad(attention, (0, canvas), value=True),
            canvas_positions=torch.arange(length, length + canvas, dtype=torch.int32, device=device).unsqueeze(0),
        )


def denoise_with_generate(
    backbone: DiffusionGemmaForBlockDiffusion,
    prefix_embeds: torch.Tensor,
    tail_ids: torch.Tensor,
    *,
    steps: int,
    seed: int,
    first_position: int = 0,
    early_exit: bool = True,
) -> torch.Tensor:
    """The reference: prefill the prefix, then transformers' `generate()` encodes the tail and denoises.

    Returns the canvases. `Denoiser` prefills prefix and tail in one pass, the same cache to float
    rounding, so it gives the same tokens for the same seed where the model is confident (the
    micro model's tests, on the CPU; on a GPU the benchmark compares graphs with the eager
    `Denoiser`, which share its code).
    """
    device = prefix_embeds.device
    batch, prefix_len = prefix_embeds.shape[:2]
    canvas_length = backbone.config.canvas_length
    cache = DynamicCache(config=backbone.config.get_text_config(decoder=True))
    positions = torch.arange(prefix_len, device=device).unsqueeze(0) + first_position
    backbone.model.encoder(inputs_embeds=prefix_embeds, position_ids=positions, cache=cache)
    knobs = {} if early_exit else dict(stability_threshold=None, confidence_threshold=None)
    attention_mask = torch.ones(batch, prefix_len + tail_ids.shape[1], dtype=torch.long, device=device)
    with _seeded(device, seed):
        out = backbone.generate(
            tail_ids,
            cache=cache,
            attention_mask=attention_mask,
            max_denoising_steps=steps,
            max_new_tokens=canvas_length,
            max_length=None,
            **knobs,
        )
    return out.sequences[:, -canvas_length:]


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """The global RNGs (CPU and this GPU) seeded with `seed`, and restored afterwards."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
