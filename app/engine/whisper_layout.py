"""Tell the two Whisper folder layouts apart, and give CTranslate2 a folder it can load from either.

A CTranslate2 conversion (e.g. Systran/faster-whisper-base) holds `model.bin`, `config.json` and
`tokenizer.json`; a transformers checkpoint (e.g. openai/whisper-base) holds `config.json` and
`model.safetensors` (or `pytorch_model.bin`). The CTranslate2 engine accepts both: a transformers
folder is converted once with CTranslate2's own converter into the cache folder, keyed by the source
files' names, sizes and times, so a changed checkpoint is converted again and an unchanged one never.
No torch or ctranslate2 at module level: `layout()` is also what `auto` uses to choose a backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from app.errors import UserError, first_line

CT2 = "ctranslate2"
TRANSFORMERS = "transformers"
_CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Files the converter copies beside model.bin: faster-whisper reads the tokenizer and the mel settings.
_COPIED = ("tokenizer.json", "preprocessor_config.json")
# Stored in float16 (half the disk of float32); the engine picks int8 or float16 when it loads.
_STORED_AS = "float16"


def layout(folder: Path) -> str | None:
    """`ctranslate2`, `transformers`, or None when the folder is neither."""
    if (folder / "model.bin").is_file():
        return CT2
    if (folder / "config.json").is_file() and any((folder / w).is_file() for w in _HF_WEIGHTS):
        return TRANSFORMERS
    return None


def ct2_folder(folder: Path, cache: Path) -> Path:
    """A folder CTranslate2 can load for the Whisper model in `folder` (either layout)."""
    kind = layout(folder)
    if kind == CT2:
        missing = [name for name in _CT2_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(
                f"The CTranslate2 model folder {folder} is incomplete (missing {', '.join(missing)}); "
                "download it again or choose another model.",
                code="bad_model",
            )
        return folder
    if kind == TRANSFORMERS:
        return _converted(folder, cache)
    raise UserError(
        f"The folder {folder} is not a Whisper model (no model.bin, model.safetensors or pytorch_model.bin); "
        "choose another folder or a Hub id such as Systran/faster-whisper-base.",
        code="bad_model",
    )


def _converted(folder: Path, cache: Path) -> Path:
    target = cache / f"{folder.name}-{_source_key(folder)}"
    if (target / "model.bin").is_file():
        return target
    from ctranslate2.converters import TransformersConverter

    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{folder.name}-"))
    try:
        copied = [name for name in _COPIED if (folder / name).is_file()]
        # Converted into a staging folder and renamed: two workers converting at once never see half a model.
        TransformersConverter(str(folder), copy_files=copied, load_as_float16=True).convert(
            str(staging / "model"), quantization=_STORED_AS, force=True
        )
        try:
            os.replace(staging / "model", target)
        except OSError:
            if not (target / "model.bin").is_file():  # not a lost race with another worker: a real failure
                raise
    except Exception as exc:  # torch, safetensors, transformers and ctranslate2 each fail in their own way
        raise UserError(
            f"The Whisper model in {folder} could not be converted for CTranslate2 ({first_line(exc)}); it may be "
            "incomplete or corrupt: download it again, or choose a CTranslate2 model such as Systran/faster-whisper-base.",
            code="bad_model",
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _source_key(folder: Path) -> str:
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps([str(folder.resolve()), stats]).encode()).hexdigest()[:16]
