"""Is there speech in this recording? Silero VAD, run incrementally while the user speaks.

Speech models invent text for silence ("Thank you."), so a silent recording must never reach the
worker. The check runs on each 32 ms window as the audio arrives (about 0.3 ms of CPU each), so the
answer is ready the moment the recording ends and costs no latency. It also follows where the speech
ends, which lets the recorder skip the post-roll when the speaker had already stopped.

Why not `import silero_vad`: its package imports torch at import time, and the GUI process must stay
torch-free. The same model ships in that wheel as ONNX; we locate the file without importing the
package and run it with onnxruntime (a ~15 MB CPU runtime) using the model's own streaming
interface: 512 new samples plus 64 samples of context, and a recurrent state.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from app.engine.base import SAMPLE_RATE
from app.errors import UserError

WINDOW = 512  # samples per model step at 16 kHz
CONTEXT = 64
THRESHOLD = 0.5  # silero's own default speech probability threshold
MIN_SPEECH_WINDOWS = 6  # ~190 ms of speech-like windows: shorter blips (a click, a breath) do not count
END_WINDOWS = 5  # ~160 ms without speech after speech: the speaker has stopped (ends the post-roll early)


class VadModel:
    """The ONNX session, loaded once and shared by all recordings (onnxruntime's `run` is thread-safe)."""

    _shared: "VadModel | None" = None
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError("The silence check needs onnxruntime; install it with: pip install onnxruntime, "
                            "or turn off 'Skip silent recordings' in the settings.", code="no_vad") from exc
        options = ort.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1  # tiny model: threads only add overhead
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    @classmethod
    def shared(cls) -> "VadModel":
        """Load on first use (from any thread); `preload()` it in the background at start-up."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls(model_path())
            return cls._shared

    @classmethod
    def loaded(cls) -> "VadModel | None":
        """The model if it is already loaded; never blocks."""
        return cls._shared

    def step(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """One window of CONTEXT + WINDOW samples -> (speech probability, next state)."""
        prob, state = self._session.run(None, {"input": window[None, :], "state": state, "sr": self._sr})
        return float(prob[0, 0]), state


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # finds the package without running its torch import
    if spec is None or not spec.submodule_search_locations:
        raise UserError("The silence check's model (package silero-vad) is not installed; install it with: "
                        "pip install silero-vad, or turn off 'Skip silent recordings'.", code="no_vad")
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"


class SpeechDetector:
    """Follows one recording; `speech` turns true once enough speech-like windows were heard, `ended` while
    the newest END_WINDOWS windows after that held none (the speaker stopped, for now)."""

    def __init__(self, model: VadModel | None = None) -> None:
        self._model = model
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._buffer = np.zeros(CONTEXT, dtype=np.float32)  # context followed by samples not yet analysed
        self._speech_windows = 0
        self._silent_run = 0  # windows without speech since the last speech-like one
        self._analysed = 0  # samples analysed so far
        self.speech_end = 0  # the sample where the newest speech-like window ends

    @property
    def speech(self) -> bool:
        return self._speech_windows >= MIN_SPEECH_WINDOWS

    @property
    def ended(self) -> bool:
        return self.speech and self._silent_run >= END_WINDOWS

    @property
    def silent_s(self) -> float:
        """Seconds without speech since the speaker last spoke (0 until speech was heard)."""
        return self._silent_run * WINDOW / SAMPLE_RATE if self.speech else 0.0

    def feed(self, samples: np.ndarray) -> None:
        """Take new 16 kHz samples; analyse them now if the model is loaded (never wait for it here:
        this runs on the audio thread), else keep them for later. Analysis goes on after speech was
        found, to follow where it ends."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        self._model = self._model or VadModel.loaded()
        if self._model is not None:
            self._analyse()

    def finish(self) -> bool:
        """Analyse whatever is left (loading the model if it is still missing) and give the verdict."""
        if not self.speech:
            self._model = self._model or VadModel.shared()
            self._analyse()
        return self.speech

    def _analyse(self) -> None:
        while len(self._buffer) >= CONTEXT + WINDOW:
            prob, self._state = self._model.step(self._buffer[:CONTEXT + WINDOW], self._state)
            self._analysed += WINDOW
            if prob >= THRESHOLD:
                self._speech_windows += 1
                self._silent_run = 0
                self.speech_end = self._analysed
            else:
                self._silent_run += 1
            self._buffer = self._buffer[WINDOW:]


def has_speech(audio: np.ndarray) -> bool:
    """One-shot check of a whole 16 kHz recording. It stops at the first speech found: an hour-long
    file whose speech starts early costs a second's analysis, not the whole hour's (~0.3 ms a window)."""
    detector = SpeechDetector(VadModel.shared())
    for start in range(0, len(audio), SAMPLE_RATE):
        detector.feed(audio[start:start + SAMPLE_RATE])
        if detector.speech:
            return True
    return detector.finish()
