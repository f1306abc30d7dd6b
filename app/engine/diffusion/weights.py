"""Read safetensors files and compare their tensors with what a module expects.

A checkpoint that does not match the layout we assume must fail at load time with the names of the
missing, unexpected and mis-shaped tensors: that list is what a user needs to fix the adapter config
(or report a changed checkpoint), and it beats a silent half-random model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.errors import UserError

_MAX_LISTED = 12


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, without loading them."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except FileNotFoundError as exc:
        raise UserError(f"The adapter file {path} is missing; download the adapter again.", code="bad_model") from exc
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path} is not a readable safetensors file ({exc}); download it again.", code="bad_model") from exc


def load_tensors(path: Path, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file (or only `keys` of it) on the CPU."""
    if keys is None:
        return load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in keys}


def check_weights(
    what: str,
    path: Path,
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    hint: str,
) -> None:
    """Raise a UserError naming every missing, unexpected or mis-shaped tensor; pass when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key} {list(found[key])} (expected {list(expected[key])})"
        for key in sorted(set(expected) & set(found))
        if tuple(found[key]) != tuple(expected[key])
    ]
    report_mismatch(what, path, missing, unexpected, mismatched, hint)


def report_mismatch(what: str, path: Path, missing: list[str], unexpected: list[str], mismatched: list[str], hint: str) -> None:
    """The listed-weights error: one sentence naming what is missing, unexpected or mis-shaped."""
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_listing(unexpected)}")
    if mismatched:
        parts.append(f"wrong shape: {_listing(mismatched)}")
    raise UserError(
        f"The {what} in {path} does not match the layout this app expects ({'; '.join(parts)}). {hint}",
        code="bad_model",
    )


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown
