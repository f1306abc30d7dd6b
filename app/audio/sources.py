"""Where recorded audio comes from: the microphone (PortAudio via sounddevice) or, for tests, a file.

Both are `AudioSource`s: `start(on_block, on_lost)` delivers float32 blocks shaped (frames, channels) at
the source's own `rate` from a background thread until `stop()`, or until the source ends by itself (a
microphone unplugged or failing), which it tells through `on_lost`. The recorder does the downmixing,
resampling, buffering and speech check the same way for both, so a test that sets
`DICTATE_TEST_AUDIO` exercises exactly the path the microphone uses, in real-time-sized blocks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Protocol

import numpy as np

from app.engine.base import SAMPLE_RATE
from app.errors import UserError

log = logging.getLogger(__name__)

TEST_AUDIO_ENV = "DICTATE_TEST_AUDIO"  # a file path: the recorder hears this file instead of the microphone
BLOCK_SECONDS = 0.01  # 10 ms blocks: post-roll ends at most this late

BlockCallback = Callable[[np.ndarray], None]
LostCallback = Callable[[], None]


class AudioSource(Protocol):
    rate: int

    def start(self, on_block: BlockCallback, on_lost: LostCallback | None = None) -> None:
        """`on_lost` is called, on the source's thread, when the source ends without `stop()`."""

    def stop(self) -> None: ...


class MicrophoneSource:
    """A PortAudio input stream: 16 kHz mono when the device offers it, else its own rate."""

    def __init__(self, device: str = "") -> None:
        self.device = device
        self.rate = SAMPLE_RATE
        self._stream = None

    def start(self, on_block: BlockCallback, on_lost: LostCallback | None = None) -> None:
        sd = _sounddevice()
        index = _find_device(sd, self.device)
        try:
            sd.check_input_settings(device=index, samplerate=SAMPLE_RATE, channels=1, dtype="float32")
            self.rate = SAMPLE_RATE
        except Exception:  # the device has no 16 kHz mode: record at its own rate, the recorder resamples
            self.rate = int(sd.query_devices(index, "input")["default_samplerate"])

        def callback(indata, frames, when, status):
            on_block(indata.copy())

        def finished() -> None:  # PortAudio ends the stream by itself when the device fails or goes away
            if self._stream is stream and on_lost is not None:  # not our own `stop()`
                on_lost()

        try:
            stream = sd.InputStream(device=index, samplerate=self.rate, channels=1, dtype="float32",
                                    blocksize=int(self.rate * BLOCK_SECONDS), callback=callback,
                                    finished_callback=finished)
            self._stream = stream
            stream.start()
        except Exception as exc:
            self._stream = None
            name = self.device or "the default microphone"
            raise UserError(f"Could not open {name} ({exc}). Check that it is plugged in and not used by "
                            "another program, or choose another microphone in the settings.", code="no_microphone") from exc

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()


class FileSource:
    """Plays a file into the recorder at real-time pace, then silence, like a microphone would.

    The file is re-read at every `start`, so a test can point the path (e.g. a symlink) at another
    clip between dictations; and a path pointed elsewhere once the clip has played is played next while
    the source stays open, as a person speaks again into a microphone that was never closed (a press
    that follows a release within milliseconds finds the recorder's source still open). Reaching the
    end is logged, which lets tests wait for it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.rate = SAMPLE_RATE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._playing: tuple[int, int] | None = None  # the path's inode and time when it was last read

    def start(self, on_block: BlockCallback, on_lost: LostCallback | None = None) -> None:
        data = self._read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._play, args=(data, on_block), name="file-audio", daemon=True)
        self._thread.start()

    def _identity(self) -> tuple[int, int] | None:
        """The path itself (a symlink is not followed): pointed anew, even at the same clip, it changes."""
        try:
            stat = os.lstat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _read(self, playing: bool = False) -> np.ndarray:
        """The clip's samples; `playing`: read for the open source, whose blocks are sized by the rate it has."""
        import soundfile as sf

        self._playing = self._identity()
        try:
            data, rate = sf.read(self.path, dtype="float32", always_2d=True)
        except Exception as exc:
            raise UserError(f"Could not read the test audio {self.path} ({exc}).", code="no_microphone") from exc
        if rate != self.rate and playing:
            raise UserError(f"The test audio {self.path} is at {rate} Hz, not {self.rate}.", code="no_microphone")
        self.rate = rate
        return data

    def _play(self, data: np.ndarray, on_block: BlockCallback) -> None:
        block = int(self.rate * BLOCK_SECONDS)
        silence = np.zeros((block, data.shape[1]), dtype=np.float32)
        next_at = time.monotonic()
        pos = 0
        while not self._stop.is_set():
            if pos >= len(data) and self._identity() not in (self._playing, None):
                try:  # spoken again into the open microphone
                    data, pos = self._read(playing=True), 0
                except UserError as exc:
                    log.warning("test audio source: %s", exc)
                else:
                    silence = np.zeros((block, data.shape[1]), dtype=np.float32)
            next_at += BLOCK_SECONDS
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # deliver each block when it "was spoken"
            if self._stop.is_set():
                break
            if pos < len(data):
                chunk = data[pos:pos + block]
                pos += block
                on_block(np.pad(chunk, ((0, block - len(chunk)), (0, 0))) if len(chunk) < block else chunk)
                if pos >= len(data):
                    log.info("test audio source: end of %s", self.path)
            else:
                on_block(silence)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def make_source(microphone: str) -> AudioSource:
    """The microphone, unless the test hook names a file to hear instead."""
    path = os.environ.get(TEST_AUDIO_ENV)
    return FileSource(path) if path else MicrophoneSource(microphone)


def list_microphones() -> list[str]:
    """Names of the input devices, for the settings form; empty when PortAudio is missing."""
    try:
        sd = _sounddevice()
    except UserError:
        return []
    return [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]


def _sounddevice():
    """sounddevice, imported on first use: loading PortAudio costs start-up time and can fail."""
    try:
        import sounddevice
    except OSError as exc:
        raise UserError(f"The audio library PortAudio is missing ({exc}); on Debian or Ubuntu install it "
                        "with: sudo apt install libportaudio2", code="no_portaudio") from exc
    return sounddevice


def _find_device(sd, name: str) -> int | None:
    if not name:
        return None
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0 and device["name"] == name:
            return index
    raise UserError(f"The microphone '{name}' is not connected; plug it in or choose another one in the settings.",
                    code="no_microphone")
