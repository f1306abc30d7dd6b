"""Out of GPU memory: with quantization auto the worker steps down bf16 -> fp8 -> int8 -> int4.

A CPU machine cannot run out of GPU memory on purpose, so the engine here is a stand-in whose size
rule is explicit (it fits only in the modes it is given); the worker around it is the real one,
talking over real pipes on a thread of this process.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from app.engine import EngineSpec, Progress, Transcript
from app.errors import UserError
from app.worker.engine_slot import EngineSlot, as_out_of_memory
from app.worker.protocol import FrameDecoder, audio_payload, encode
from app.worker.server import FrameWriter, Server

OOM = "The GPU ran out of memory while loading; choose a smaller quantization."


class SizedEngine:
    """Loads only in `load_fits` modes and transcribes only in `run_fits` modes; `auto` picks bf16."""

    name = "sized"

    def __init__(self, spec: EngineSpec, run_fits: set[str]) -> None:
        self.quantization = "bf16" if spec.quantization == "auto" else spec.quantization
        self._run_fits = run_fits

    def transcribe(self, audio, *, language="auto", steps=None, on_progress=None, vocabulary=()) -> Transcript:
        if self.quantization not in self._run_fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        on_progress(Progress(step=1, total=1, draft="fits"))
        return Transcript(text=f"ran in {self.quantization}", language="en", steps_used=1, timings={"total": 1.0})


def sized_loader(load_fits: set[str], run_fits: set[str] | None = None, unsupported: set[str] = frozenset()):
    tried: list[str] = []

    def load(spec: EngineSpec) -> SizedEngine:
        tried.append(spec.quantization)
        mode = "bf16" if spec.quantization == "auto" else spec.quantization
        if mode in unsupported:
            raise UserError(f"No {mode} here.", code="bad_quantization")
        if mode not in load_fits:
            raise UserError(OOM, code="out_of_memory")
        return SizedEngine(spec, run_fits if run_fits is not None else load_fits)

    return load, tried


def test_auto_steps_down_until_the_model_fits():
    load, tried = sized_loader({"int8", "int4"})
    slot = EngineSlot(load)
    slot.load(EngineSpec(quantization="auto"))
    assert tried == ["auto", "bf16", "fp8", "int8"] and slot.mode == "int8"


def test_modes_the_engine_lacks_are_skipped():
    load, tried = sized_loader({"int4"}, unsupported={"fp8", "int8"})
    slot = EngineSlot(load)
    slot.load(EngineSpec(quantization="auto"))
    assert tried == ["auto", "bf16", "fp8", "int8", "int4"] and slot.mode == "int4"


def test_an_explicit_mode_is_not_second_guessed():
    load, tried = sized_loader({"int4"})
    slot = EngineSlot(load)
    with pytest.raises(UserError) as caught:
        slot.load(EngineSpec(quantization="bf16"))
    assert caught.value.code == "out_of_memory" and tried == ["bf16"]
    with pytest.raises(UserError, match="ran out of memory"):  # and every job hears why
        slot.get()


def test_nothing_fits_reports_the_first_out_of_memory_error():
    load, tried = sized_loader(set())
    with pytest.raises(UserError, match="ran out of memory"):
        EngineSlot(load).load(EngineSpec(quantization="auto"))
    assert tried == ["auto", "bf16", "fp8", "int8", "int4"]


def test_torch_out_of_memory_becomes_a_user_error():
    error = as_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert error.code == "out_of_memory" and "smaller quantization" in error.message
    assert as_out_of_memory(RuntimeError("something else")) is None


def test_a_job_that_runs_out_of_memory_is_retried_in_a_smaller_mode():
    load, tried = sized_loader({"bf16", "fp8", "int8", "int4"}, run_fits={"int8", "int4"})
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    server = Server(to_worker_r, FrameWriter(from_worker_w), EngineSlot(load))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    os.write(to_worker_w, encode("load", id="load-1", spec=EngineSpec(quantization="auto").to_dict()))
    os.write(to_worker_w, encode("transcribe", audio_payload(np.zeros(1600, np.float32)), id="job"))
    decoder, frames = FrameDecoder(), []
    while not frames or frames[-1].type not in ("result", "error"):
        frames += decoder.feed(os.read(from_worker_r, 1 << 16))
    os.write(to_worker_w, encode("shutdown"))
    thread.join(10)
    assert not thread.is_alive()
    hellos = [f for f in frames if f.type == "hello"]
    assert [h["quantization"] for h in hellos] == [None, "bf16", "fp8", "int8"]
    assert "int8" in hellos[-1]["note"]
    assert (frames[-1].type, frames[-1]["text"]) == ("result", "ran in int8")
    assert tried == ["auto", "fp8", "int8"]
    for fd in (to_worker_r, to_worker_w, from_worker_r, from_worker_w):
        os.close(fd)
