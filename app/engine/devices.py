"""Pick the torch device and dtype for an engine, and turn GPU out-of-memory into a clear error."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from app.errors import UserError


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` means the first CUDA GPU when there is one, else the CPU."""
    if requested in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise UserError(f"Unknown device '{requested}'. Use auto, cpu or cuda.", code="bad_device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("A CUDA GPU was requested but none is available; choose device auto or cpu.", code="no_gpu")
    return device


def free_gpu_bytes(device: torch.device) -> int:
    """Free memory on a CUDA device (0 on the CPU), for choosing a quantization."""
    if device.type != "cuda":
        return 0
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


@contextlib.contextmanager
def out_of_memory_as_user_error(what: str) -> Iterator[None]:
    """Re-raise CUDA OOM as a UserError (code `out_of_memory`) that says what to try."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise UserError(
            f"The GPU ran out of memory while {what}. Choose a smaller quantization (int8 or int4), "
            "close other programs that use the GPU, or use the Whisper engine.",
            code="out_of_memory",
        ) from exc
