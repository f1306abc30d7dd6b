"""Writes the start and stop cues (start.wav, stop.wav) beside this file: `python resources/sounds/generate.py`.

Two soft bell-like notes each: rising for "listening now", falling for "stopped". Sine partials with
a 4 ms attack and an exponential decay, so nothing clicks; quiet (peak -9 dBFS), because the cue
plays right as the user starts to speak; about 26 KB each as 16-bit mono WAV.
"""

import wave
from pathlib import Path

import numpy as np

RATE = 44_100
HERE = Path(__file__).resolve().parent


def note(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    tone = np.sin(2 * np.pi * freq * t) + 0.25 * np.sin(2 * np.pi * 2 * freq * t) + 0.08 * np.sin(2 * np.pi * 3 * freq * t)
    envelope = np.minimum(1.0, t / 0.004) * np.exp(-t / (seconds / 3.5))
    return tone * envelope


def cue(freqs: tuple[float, float]) -> np.ndarray:
    first, second = note(freqs[0], 0.16), note(freqs[1], 0.22)
    out = np.zeros(int(RATE * 0.075) + len(second))
    out[:len(first)] += first
    out[int(RATE * 0.075):] += second
    return out / np.abs(out).max() * 10 ** (-9 / 20)


def write(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(RATE)
        fh.writeframes((samples * 32767).astype("<i2").tobytes())


if __name__ == "__main__":
    write(HERE / "start.wav", cue((783.99, 1046.50)))  # G5 -> C6
    write(HERE / "stop.wav", cue((1046.50, 783.99)))  # C6 -> G5
