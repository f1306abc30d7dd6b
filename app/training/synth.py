"""Speech for training, made with espeak-ng: several voices, speeds and pitches, then noise and gain.

Every choice is drawn from a generator seeded per clip, so a clip is the same on every run and
machine with the same espeak-ng. The held-out set uses the same distribution with other sentences.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# espeak-ng's own English voices (no mbrola needed), each with a few of its voice variants.
VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
VARIANTS = ("", "+m3", "+f2", "+f4", "+m7")
SPEED_WPM = (130, 190)
PITCH = (30, 70)
SNR_DB = (15.0, 45.0)
GAIN_DB = (-14.0, 0.0)


class SynthError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class Voice:
    """One rendering of a sentence: espeak-ng voice, words per minute, pitch, then noise and gain."""

    voice: str
    speed: int
    pitch: int
    snr_db: float
    gain_db: float

    def as_dict(self) -> dict:
        return asdict(self)


def draw_voice(seed: int) -> Voice:
    rng = np.random.default_rng(seed)
    voice = VOICES[rng.integers(len(VOICES))] + VARIANTS[rng.integers(len(VARIANTS))]
    return Voice(
        voice=voice,
        speed=int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
        pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        snr_db=round(float(rng.uniform(*SNR_DB)), 1),
        gain_db=round(float(rng.uniform(*GAIN_DB)), 1),
    )


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SynthError("espeak-ng is not installed; run `packaging/setup.sh deps` (or apt-get install espeak-ng).")
    return exe


def render(text: str, voice: Voice, seed: int) -> np.ndarray:
    """16 kHz mono float32 speech of `text` in `voice`, with seeded white noise at the voice's SNR."""
    with tempfile.TemporaryDirectory(prefix="micro-tts-") as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = [espeak(), "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", str(wav), text]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.exists():
            raise SynthError(f"espeak-ng failed on {text!r} with voice {voice.voice}: {proc.stderr.strip()}")
        audio, rate = sf.read(str(wav), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.abs(audio).max()) or 1.0
    audio = audio / peak * 0.7
    rng = np.random.default_rng(seed)
    # Some silence around the words, as a hotkey press and release leave it.
    lead, trail = (int(rng.uniform(0.05, 0.6) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)])
    rms = float(np.sqrt(np.mean(audio**2))) or 1e-3
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * rms * 10 ** (-voice.snr_db / 20)
    # Quiet and loud talkers: gain after the noise, clipped like a real input would be.
    return np.clip(audio * 10 ** (voice.gain_db / 20), -1.0, 1.0).astype(np.float32)
