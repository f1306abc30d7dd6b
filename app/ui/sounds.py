"""Start and stop cues: a short chime once the microphone really delivers audio, another when it stops.

The start cue waits for the first audio block, not the key press: a microphone takes 100-500 ms to
open (Bluetooth more), and a cue played at the key press tells the user to speak before anything
is listening, which is how first words get lost. So the app calls `recording_started()` at the
press, and the recorder (or whoever sees its blocks) calls `audio_arrived()` on the first
non-empty block, from any thread; the cue plays then, once per recording.

PySide6-Essentials has no QtMultimedia, so the cues play through sounddevice (PortAudio), which
the recorder needs anyway. `sounddevice.play` blocks for as long as opening the output device
takes, so each cue plays on a short-lived thread; with no output device the failure is logged
once and the cues go quiet.
"""

from __future__ import annotations

import logging
import threading
import wave
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from app.ui.tray import resources_dir

log = logging.getLogger(__name__)


def load_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file as float32 samples and its rate (stdlib only: no libsndfile at start-up)."""
    with wave.open(str(path), "rb") as fh:
        if fh.getsampwidth() != 2:
            raise ValueError(f"{path} is not 16-bit PCM")
        frames = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float32) / 32768
        channels = fh.getnchannels()
        return frames.reshape(-1, channels), fh.getframerate()


class SoundCues(QObject):
    """Plays `start.wav` / `stop.wav` from resources/sounds when `enabled`."""

    played = Signal(str)  # "start" or "stop", once the cue went to the audio device (tests, logs)
    _arrived = Signal()

    def __init__(self, enabled: bool = True, parent: QObject | None = None, *, folder: Path | None = None,
                 player: Callable[[np.ndarray, int], None] | None = None) -> None:
        super().__init__(parent)
        self.enabled = enabled
        self._folder = folder or resources_dir() / "sounds"
        self._player = player or _sounddevice_play
        self._sounds: dict[str, tuple[np.ndarray, int]] = {}
        self._phase = "idle"  # idle -> armed (pressed) -> sounding (start cue played) -> idle
        self._broken = False
        self._arrived.connect(self._on_arrived, Qt.ConnectionType.QueuedConnection)

    def recording_started(self) -> None:
        """The user pressed the hotkey: the start cue plays with the first audio, not now."""
        self._phase = "armed"

    def audio_arrived(self) -> None:
        """The first non-empty audio block of a recording; safe to call from the audio thread, and often."""
        if self._phase == "armed":
            self._arrived.emit()

    def recording_stopped(self) -> None:
        """Recording ended (released, toggled off or cancelled); the stop cue only follows a start cue."""
        phase, self._phase = self._phase, "idle"
        if phase == "sounding":
            self._play("stop")

    def _on_arrived(self) -> None:
        if self._phase == "armed":
            self._phase = "sounding"
            self._play("start")

    def _play(self, name: str) -> None:
        if not self.enabled or self._broken:
            return
        try:
            if name not in self._sounds:
                self._sounds[name] = load_wav(self._folder / f"{name}.wav")
        except (OSError, ValueError, EOFError, wave.Error) as exc:
            log.warning("the %s cue cannot be read (%s); sound cues are off", name, exc)
            self._broken = True
            return
        data, rate = self._sounds[name]
        threading.Thread(target=self._output, args=(name, data, rate), name=f"cue-{name}", daemon=True).start()

    def _output(self, name: str, data: np.ndarray, rate: int) -> None:
        try:
            self._player(data, rate)
        except Exception as exc:  # no output device, PortAudio missing, device busy: cues are a nicety
            if not self._broken:
                log.warning("sound cues cannot be played (%s); they stay off until the app restarts", exc)
            self._broken = True
            return
        self.played.emit(name)


def _sounddevice_play(data: np.ndarray, rate: int) -> None:
    import sounddevice

    sounddevice.play(data, rate)
