"""The audio loader: every file becomes float32 mono 16 kHz, and bad files give one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from app.audio.loading import load_audio
from app.errors import UserError


def _tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
def test_stereo_44k_becomes_mono_16k_with_pitch_kept(tmp_path, fmt, ext):
    tone = _tone(44_100, 2.0, 1000.0)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, np.stack([tone, tone * 0.5], axis=1), 44_100, format=fmt)

    audio = load_audio(path)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 32_000) <= 160  # 2 s at 16 kHz (codec padding aside)
    spectrum = np.abs(np.fft.rfft(audio[1000:-1000]))
    peak_hz = np.argmax(spectrum) * 16_000 / (audio.shape[0] - 2000)
    assert abs(peak_hz - 1000.0) < 5.0
    # A real resampler keeps the amplitude of a tone well inside the band (mono mix of 0.5 and 0.25).
    assert 0.35 < np.max(np.abs(audio[1000:-1000])) < 0.40


def test_resampler_does_not_alias(tmp_path):
    # 9 kHz is above the 8 kHz Nyquist limit of 16 kHz audio: a proper low-pass removes it; linear interpolation would fold it back to 7 kHz.
    path = tmp_path / "high.wav"
    sf.write(path, _tone(48_000, 1.0, 9_000.0), 48_000)
    audio = load_audio(path)
    assert np.sqrt(np.mean(audio[500:-500] ** 2)) < 0.01


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="No such file"):
        load_audio(tmp_path / "nope.wav")


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not audio\n" * 20)
    with pytest.raises(UserError, match="not a readable audio file") as info:
        load_audio(path)
    assert info.value.code == "not_audio"


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(16_000, 1.0, 440.0), 16_000)
    path.write_bytes(path.read_bytes()[:30])  # header cut in the middle
    with pytest.raises(UserError):
        load_audio(path)


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(UserError, match="no audio samples") as info:
        load_audio(path)
    assert info.value.code == "empty_audio"


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        load_audio(path)


def test_folder_is_not_audio(tmp_path):
    with pytest.raises(UserError, match="folder"):
        load_audio(tmp_path)
