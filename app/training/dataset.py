"""Synthesise the sentences and cache what the frozen Whisper encoder makes of them.

The encoder is frozen, so its output for a clip never changes: computing it once (in float16, on
disk) turns each training step into a pass over the small trainable parts only. The encoder runs
through the production `WhisperAudioEncoder` (same features, same 30 s padding) so training sees
exactly what inference will.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.engine.diffusion.audio_encoder import WhisperAudioEncoder
from app.training import synth

BATCH = 8


@dataclass
class FrameCache:
    """Encoder frames (clips, 1500, width) in float16, how many of each clip's frames hold its
    speech (the rest is Whisper's padding), and the sentence of each clip."""

    frames: np.ndarray
    frame_counts: list[int]
    texts: list[str]
    voices: list[dict]

    def __len__(self) -> int:
        return len(self.texts)


def build(folder: Path, sentences: list[str], seeds: list[int], encoder_dir: Path, log=print) -> FrameCache:
    """Write `folder`/frames.npy + items.json (skipped when both exist for the same inputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    items_path, frames_path = folder / "items.json", folder / "frames.npy"
    voices = [synth.draw_voice(seed).as_dict() for seed in seeds]
    wanted = {"texts": sentences, "seeds": seeds, "voices": voices, "encoder": str(encoder_dir.resolve())}
    if items_path.is_file() and frames_path.is_file():
        items = json.loads(items_path.read_text())
        if {key: items.get(key) for key in wanted} == wanted and "frame_counts" in items:
            return load(folder)
    items_path.unlink(missing_ok=True)
    audio = WhisperAudioEncoder.load(encoder_dir, torch.device("cpu"), torch.float32)
    frames = np.lib.format.open_memmap(
        frames_path, mode="w+", dtype=np.float16, shape=(len(sentences), audio.frames, audio.width)
    )
    frame_counts = []
    start = time.perf_counter()
    for lo in range(0, len(sentences), BATCH):
        hi = min(lo + BATCH, len(sentences))
        clips = [synth.render(sentences[i], synth.Voice(**voices[i]), seeds[i]) for i in range(lo, hi)]
        frame_counts += [audio.frames_for(len(clip)) for clip in clips]
        with torch.inference_mode():
            out = audio.encode(audio.features(clips))
        frames[lo:hi] = out.numpy().astype(np.float16)
        if (lo // BATCH) % 25 == 0 or hi == len(sentences):
            rate = hi / (time.perf_counter() - start)
            log(f"  {folder.name}: {hi}/{len(sentences)} clips encoded ({rate:.1f} clips/s)")
    frames.flush()
    del frames
    items_path.write_text(json.dumps({**wanted, "frame_counts": frame_counts}), encoding="utf-8")  # written last: marks the cache complete
    return load(folder)


def load(folder: Path) -> FrameCache:
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    return FrameCache(np.load(folder / "frames.npy", mmap_mode="r"), items["frame_counts"], items["texts"], items["voices"])
