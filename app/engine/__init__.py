"""Speech engines behind one interface; see `base.py` for the contract.

`load_engine(EngineSpec(...))` is the only way the CLI, the worker and the benchmarks build an engine.
The heavy modules (torch, transformers) are imported only here, inside the call, so that importing
`app.engine` from the GUI side stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.base import AUTO, LANGUAGES, SAMPLE_RATE, Engine, Progress, ProgressCallback, Transcript
from app.errors import UserError

ENGINES = ("whisper", "diffusion")
QUANTIZATIONS = ("auto", "bf16", "fp8", "int8", "int4", "fp32")


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to load an engine; also what the worker's `load` message carries.

    `model` is a local folder or a Hugging Face Hub id. For the diffusion engine it names the adapter;
    `backbone` and `encoder` override the frozen parts the adapter's config points at.
    """

    engine: str = "whisper"
    model: str = "openai/whisper-base"
    backbone: str | None = None
    encoder: str | None = None
    quantization: str = "auto"
    device: str = "auto"
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_engine(spec: EngineSpec) -> Engine:
    """Load the engine `spec` names; the model stays in memory until the engine is dropped."""
    _quiet_transformers()
    if spec.engine == "whisper":
        from app.engine.whisper import WhisperEngine

        return WhisperEngine.load(spec)
    if spec.engine == "diffusion":
        from app.engine.diffusion import DiffusionEngine

        return DiffusionEngine.load(spec)
    raise UserError(f"Unknown engine '{spec.engine}'. Choose one of: {', '.join(ENGINES)}.", code="bad_engine")


def _quiet_transformers() -> None:
    """transformers' deprecation chatter and weight-loading bars would drown the worker's log."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


__all__ = [
    "AUTO",
    "ENGINES",
    "LANGUAGES",
    "QUANTIZATIONS",
    "SAMPLE_RATE",
    "Engine",
    "EngineSpec",
    "Progress",
    "ProgressCallback",
    "Transcript",
    "load_engine",
]
