"""The trained projector: Whisper encoder frames -> backbone-width audio embeddings.

Strided 1-D convolutions shorten the 1500 Whisper frames of a 30 s window by 8 (to 188), then
linears map the channels to the backbone's hidden size. The exact layers come from the adapter
config (`ProjectorConfig`); the weights are checked name by name and shape by shape at load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.activations import ACT2FN

from app.engine.diffusion.config import ProjectorConfig
from app.engine.diffusion.weights import check_weights, load_tensors, tensor_shapes


class AudioProjector(nn.Module):
    """conv.0 .. conv.N (stride `conv_stride`, activation after each), then proj.0 .. proj.M."""

    def __init__(self, config: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.config = config
        channels = [in_dim, *config.conv_channels]
        self.conv = nn.ModuleList(
            nn.Conv1d(c_in, c_out, config.conv_kernel, stride=config.conv_stride, padding=config.conv_kernel // 2)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        widths = [channels[-1], *config.linear_hidden, out_dim]
        self.proj = nn.ModuleList(nn.Linear(w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.act = ACT2FN[config.activation]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_dim) -> (batch, ceil(frames / subsampling), out_dim)."""
        x = frames.transpose(1, 2)
        for conv in self.conv:
            x = self.act(conv(x))
        x = x.transpose(1, 2)
        for i, linear in enumerate(self.proj):
            x = linear(x)
            if i < len(self.proj) - 1:
                x = self.act(x)
        return x

    def output_length(self, frames: int) -> int:
        """Number of audio embeddings for `frames` encoder frames (the conv length arithmetic)."""
        for conv in self.conv:
            (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
            frames = (frames + 2 * p - k) // s + 1
        return frames


def load_projector(path: Path, config: ProjectorConfig, in_dim: int, out_dim: int) -> AudioProjector:
    """Build the projector the config describes and load its weights, or list what does not match."""
    projector = AudioProjector(config, in_dim, out_dim)
    expected = {config.key_prefix + name: tuple(t.shape) for name, t in projector.state_dict().items()}
    found = {name: shape for name, shape in tensor_shapes(path).items() if name.startswith(config.key_prefix)}
    check_weights(
        "audio projector",
        path,
        expected,
        found,
        hint="Set the `projector` section of asr_config.json (conv_channels, conv_kernel, conv_stride, "
        "linear_hidden, key_prefix) to the adapter's layers, or check that --encoder is the Whisper size "
        "the adapter was trained with.",
    )
    tensors = load_tensors(path, set(expected))
    projector.load_state_dict({name[len(config.key_prefix) :]: t for name, t in tensors.items()})
    return projector.eval()
