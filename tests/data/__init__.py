"""Test data: built by `python -m tests.data.build` into the ignored folder tests/.data/."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / ".data"
MODELS_DIR = DATA_DIR / "models"
SPEECH_DIR = DATA_DIR / "speech"
MANIFEST = DATA_DIR / "manifest.json"
WHISPER_TINY_EN = MODELS_DIR / "whisper-tiny.en"
WHISPER_BASE = MODELS_DIR / "whisper-base"
