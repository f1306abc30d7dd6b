"""The frozen Whisper side: log-mel features, the encoder, and (when present) language identification.

The encoder folder is either a full Whisper model (encoder + decoder, e.g. openai/whisper-small) or an
encoder-only save of `WhisperEncoder`. With a full multilingual model the decoder's first step
identifies the language from the same encoder output the projector uses, so `auto` costs one
decoder pass; without a decoder `auto` is refused with a sentence saying what to do.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.engine.base import LANGUAGES, SAMPLE_RATE
from app.engine.diffusion import graphs
from app.engine.diffusion.weights import tensor_shapes
from app.errors import UserError, first_line

log = logging.getLogger(__name__)


class WhisperAudioEncoder:
    """Features -> encoder frames for a batch of <= 30 s chunks; optional language identification."""

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor,
        encoder: WhisperEncoder,
        full_model: WhisperForConditionalGeneration | None,
    ) -> None:
        self.feature_extractor = feature_extractor
        self.encoder = encoder
        self.full_model = full_model
        self._graphs: dict[int, graphs.Captured] = {}  # by batch size (`capture`)

    @classmethod
    def load(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> "WhisperAudioEncoder":
        for name in ("config.json", "preprocessor_config.json"):
            if not (folder / name).is_file():
                raise UserError(
                    f"The Whisper encoder folder {folder} lacks {name}; use a Whisper model in transformers format "
                    "(for example openai/whisper-small).",
                    code="bad_model",
                )
        feature_extractor = WhisperFeatureExtractor.from_pretrained(folder)
        if _has_decoder(folder):
            full = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
            return cls(feature_extractor, full.model.encoder, full)
        encoder = WhisperEncoder.from_pretrained(folder, dtype=dtype).to(device).eval()
        return cls(feature_extractor, encoder, None)

    @property
    def width(self) -> int:
        return int(self.encoder.config.d_model)

    @property
    def frames(self) -> int:
        """Encoder frames per 30 s window (1500 for every Whisper size)."""
        return int(self.encoder.config.max_source_positions)

    def frames_for(self, samples: int) -> int:
        """Encoder frames that hold `samples` of 16 kHz audio (the rest of the window is padding)."""
        per_frame = self.feature_extractor.n_samples / self.frames  # 480,000 samples / 1500 frames
        return min(self.frames, max(1, math.ceil(samples / per_frame)))

    def features(self, chunks: list[np.ndarray]) -> torch.Tensor:
        """Log-mel features, each chunk padded to Whisper's 30 s window: (batch, mels, 3000)."""
        param = next(self.encoder.parameters())
        # On a GPU the STFT runs there (torch), not on the CPU: ~80 ms less per dictation.
        device = str(param.device) if param.device.type == "cuda" else "cpu"
        out = self.feature_extractor(chunks, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=device)
        return out.input_features.to(param.device, param.dtype)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder frames (batch, 1500, width): the captured graph's replay for a batch size `capture` has seen."""
        graph = self._graphs.get(features.shape[0])
        if graph is not None:
            return graph(features=features).clone()  # the graph's output is overwritten by its next replay
        return self.encoder(features).last_hidden_state

    def capture(self, batch: int = 1) -> None:
        """Capture the encoder's forward for `batch` windows as a CUDA graph, which `encode` replays.

        Eager, whisper-small's encoder is a few hundred small kernels launched one by one from
        Python, ~10-12 ms on an H200 (benchmarks/gpu_real_shape.py's `encoder_ms`) for about a
        millisecond of GPU work. Its input is always 30 s windows, so one graph a batch size serves
        every dictation; the engine captures a single window's when it loads, and a server's batches of
        several windows stay eager. Same kernels, so the same frames (the benchmark checks it). A capture
        that fails (out of memory, say) leaves the encoder eager: slower, never broken."""
        param = next(self.encoder.parameters())
        window = (batch, self.encoder.config.num_mel_bins, self.feature_extractor.nb_max_frames)
        try:
            features = torch.zeros(window, dtype=param.dtype, device=param.device)
            self._graphs[batch] = graphs.capture(lambda features: self.encoder(features).last_hidden_state, {"features": features},
                                                 torch.cuda.graph_pool_handle())
        except Exception as exc:  # noqa: BLE001 - the eager encoder still works
            log.warning("the Whisper encoder runs without a GPU graph (%s)", first_line(exc))

    @property
    def english_only(self) -> bool:
        """An English-only Whisper (*.en): it hears English by construction, and nothing else."""
        model = self.full_model
        return model is not None and getattr(model.generation_config, "is_multilingual", None) is False

    def detect_language(self, frames: torch.Tensor) -> str:
        """The most likely of the supported languages, by majority over the chunks."""
        model = self.full_model
        if self.english_only:
            return "en"  # nothing to detect
        lang_to_id = (getattr(model.generation_config, "lang_to_id", None) or {}) if model is not None else {}
        supported = {f"<|{code}|>": lang_to_id[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in lang_to_id}
        if model is None or not supported:
            raise UserError(
                "Detecting the language needs a full multilingual Whisper model as the encoder (for example "
                "openai/whisper-small); this encoder has no usable decoder. Choose the language instead of auto.",
                code="language_detection_unavailable",
            )
        config = copy.copy(model.generation_config)
        config.lang_to_id = supported
        ids = model.detect_language(encoder_outputs=BaseModelOutput(last_hidden_state=frames), generation_config=config)
        by_id = {token_id: token.strip("<|>") for token, token_id in supported.items()}
        votes = [by_id[int(i)] for i in ids.tolist()]
        return max(votes, key=votes.count)


def _has_decoder(folder: Path) -> bool:
    """True when the folder's weights include a Whisper decoder (a full model, not an encoder-only save)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(
            f"The Whisper encoder folder {folder} has no .safetensors weights; convert or download it again.",
            code="bad_model",
        )
    return any(key.startswith("model.decoder.") for path in files for key in tensor_shapes(path))
