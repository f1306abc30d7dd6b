"""Test data: built by `python -m tests.data.build` into the ignored folder tests/.data/."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / ".data"
MODELS_DIR = DATA_DIR / "models"
SPEECH_DIR = DATA_DIR / "speech"
MANIFEST = DATA_DIR / "manifest.json"
WHISPER_TINY_EN = MODELS_DIR / "whisper-tiny.en"
WHISPER_BASE = MODELS_DIR / "whisper-base"
# The CTranslate2 originals the two above are converted from (the faster-whisper engine reads these).
WHISPER_TINY_EN_CT2 = MODELS_DIR / "whisper-tiny.en-ct2"
WHISPER_BASE_CT2 = MODELS_DIR / "whisper-base-ct2"
