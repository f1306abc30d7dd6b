"""Speech engines behind one interface; see `base.py` for the contract.

`load_engine(EngineSpec(...))` is the only way the CLI, the worker and the benchmarks build an engine.
The heavy modules (torch, transformers) are imported only here, inside the call, so that importing
`app.engine` from the GUI side stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.engine.base import AUTO, LANGUAGES, SAMPLE_RATE, Engine, Progress, ProgressCallback, Transcript
from app.errors import UserError

# auto: Whisper on CTranslate2 (faster-whisper) without a usable GPU, Whisper on transformers with one.
# server: a speech server (`python -m app serve`) runs the model; the app is its client (app/server/client.py).
ENGINES = ("auto", "faster-whisper", "whisper", "diffusion", "server")
DEFAULT_MODELS = {
    "auto": "openai/whisper-base",
    "faster-whisper": "Systran/faster-whisper-base",
    "whisper": "openai/whisper-base",
    "diffusion": "interfaze-ai/diffusion-gemma-asr-small",
    "server": "",  # the server names its model; the app sends OpenAI's alias
}
QUANTIZATIONS = ("auto", "bf16", "fp8", "int8", "int4", "fp32")


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to load an engine; also what the worker's `load` message carries.

    `model` is a local folder or a Hugging Face Hub id. For the diffusion engine it names the adapter;
    `backbone` and `encoder` override the frozen parts the adapter's config points at. `compile`
    (diffusion only) also compiles the decoder layers with torch.compile (Inductor), as pieces of
    `Engine.preparations`; off by default until it is measured faster (docs/benchmarks.md).
    """

    engine: str = "whisper"
    model: str = "openai/whisper-base"
    backbone: str | None = None
    encoder: str | None = None
    quantization: str = "auto"
    device: str = "auto"
    seed: int = 0
    compile: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_engine(spec: EngineSpec) -> Engine:
    """Load the engine `spec` names; the model stays in memory until the engine is dropped."""
    if spec.engine == "server":
        raise UserError("The 'server' engine runs on a speech server, not in this process: start one with "
                        "`python -m app serve` and choose another engine here.", code="bad_engine")
    _quiet_transformers()
    if spec.engine == "auto":
        spec = resolve_auto(spec)
    if spec.engine == "faster-whisper":
        from app.engine.whisper_ct2 import FasterWhisperEngine

        return FasterWhisperEngine.load(spec)
    if spec.engine == "whisper":
        from app.engine.whisper import WhisperEngine

        return WhisperEngine.load(spec)
    if spec.engine == "diffusion":
        from app.engine.diffusion import DiffusionEngine

        return DiffusionEngine.load(spec)
    raise UserError(f"Unknown engine '{spec.engine}'. Choose one of: {', '.join(ENGINES)}.", code="bad_engine")


def resolve_auto(spec: EngineSpec) -> EngineSpec:
    """What `auto` runs: Whisper on CTranslate2 unless a GPU that torch can use is there and allowed.

    On the CPU, CTranslate2 int8 runs Whisper about 1.5 times as fast as transformers at the same accuracy
    (docs/benchmarks.md); on a GPU the transformers engine stays, as it always was. A folder in
    CTranslate2 layout can only run on CTranslate2, whatever the device. The model is resolved (and
    downloaded) here to see its layout; the spec returned names the local folder.
    """
    import torch

    from app.engine.model_source import resolve_model
    from app.engine.whisper_layout import CT2, layout

    folder = resolve_model(spec.model, what="Whisper model")
    gpu = torch.cuda.is_available() and not (spec.device or "auto").strip().lower().startswith("cpu")
    engine = "whisper" if gpu and layout(folder) != CT2 else "faster-whisper"
    return replace(spec, engine=engine, model=str(folder))


def _quiet_transformers() -> None:
    """transformers' deprecation chatter and weight-loading bars would drown the worker's log."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


__all__ = [
    "AUTO",
    "DEFAULT_MODELS",
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
    "resolve_auto",
]
