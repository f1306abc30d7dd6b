"""The CTranslate2 Whisper engine (faster-whisper) on real weights and real speech.

The models are the CTranslate2 originals the test data's transformers folders are converted from, so
both engines run the same Whisper. Accuracy and language identification are tested on both runtimes
in test_whisper_engine.py; this file holds what is the CTranslate2 engine's own.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec, Progress, load_engine, resolve_auto
from app.engine.base import token_budget
from app.errors import UserError
from tests.data import WHISPER_TINY_EN, WHISPER_TINY_EN_CT2
from tests.speech import clips, wer


@pytest.fixture(scope="module")
def ct2_tiny_en():
    return load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu"))


def test_transcript_contract(faster_whisper_base):
    clip = clips(source="librivox")[1]
    audio = load_audio(clip.path)
    seen: list[Progress] = []
    result = faster_whisper_base.transcribe(audio, language="en", on_progress=seen.append)
    assert result.language == "en" and not result.language_detected
    assert {"features", "encoder", "decode", "total"} <= set(result.timings)
    assert result.timings["total"] >= result.timings["decode"] > 0 and result.timings["encoder"] > 0
    # Under 30 s the window is one segment: one report, carrying the whole text and every token.
    assert len(seen) == 1 and seen[-1].draft == result.text and seen[-1].step == result.steps_used > 0
    assert seen[-1].total == token_budget(audio.shape[0])


def test_long_audio_is_transcribed_whole_with_progress_per_segment(ct2_tiny_en):
    clip = next(c for c in clips(source="espeak", language="en") if c.seconds > 30)
    seen: list[Progress] = []
    result = ct2_tiny_en.transcribe(load_audio(clip.path), language="en", on_progress=seen.append)
    assert wer([clip.text], [result.text]) < 0.3, result.text
    assert len(seen) > 1 and seen[-1].draft == result.text
    assert [p.step for p in seen] == sorted(p.step for p in seen)


def test_word_times_leave_the_text_as_it_was_and_follow_the_speech(ct2_tiny_en):
    """An espeak sentence after 2 s of silence: the same text as without word times (faster-whisper's own
    `word_timestamps` option decoded the trailing silence into "Thank you."), every word of it timed, in
    order, about where the speech is (Whisper's alignment puts a first word after silence up to ~0.3 s early;
    the speech server holds it to the VAD's span: app/engine/segments.py)."""
    clip = clips(source="espeak", language="en")[2]
    speech = load_audio(clip.path)
    audio = np.concatenate([np.zeros(32_000, dtype=np.float32), speech, np.zeros(16_000, dtype=np.float32)])
    plain = ct2_tiny_en.transcribe(audio, language="en")
    timed = ct2_tiny_en.transcribe(audio, language="en", words=True)
    assert plain.words is None and timed.text == plain.text, (plain.text, timed.text)
    assert "".join(w.text for w in timed.words).strip() == timed.text
    assert [w.start for w in timed.words] == sorted(w.start for w in timed.words)
    assert all(w.start <= w.end for w in timed.words)
    assert 1.6 <= timed.words[0].start <= 2.4 and 2.0 + len(speech) / 16_000 - 0.8 <= timed.words[-1].end <= \
        2.0 + len(speech) / 16_000 + 0.2, timed.words
    assert ct2_tiny_en.times_words


def test_english_only_model_refuses_german(ct2_tiny_en):
    assert not ct2_tiny_en.multilingual
    with pytest.raises(UserError, match="only understands English"):
        ct2_tiny_en.transcribe(np.zeros(16_000, dtype=np.float32), language="de")


def test_english_only_model_in_auto_transcribes_english(ct2_tiny_en):
    clip = clips(source="librivox")[4]
    result = ct2_tiny_en.transcribe(load_audio(clip.path), language="auto")
    assert result.language == "en" and wer([clip.text], [result.text]) < 0.2, result.text


def test_empty_audio_and_unknown_language(ct2_tiny_en):
    with pytest.raises(UserError, match="empty") as info:
        ct2_tiny_en.transcribe(np.zeros(0, dtype=np.float32), language="en")
    assert info.value.code == "empty_audio"
    with pytest.raises(UserError, match="Unknown language 'xx'"):
        ct2_tiny_en.transcribe(np.zeros(16_000, dtype=np.float32), language="xx")


def test_missing_model_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_engine(EngineSpec(engine="faster-whisper", model=str(tmp_path / "no-such-model")))


def test_folder_without_model_files(tmp_path):
    with pytest.raises(UserError, match="is not a Whisper model") as info:
        load_engine(EngineSpec(engine="faster-whisper", model=str(tmp_path)))
    assert info.value.code == "bad_model"


def _copy(src, dst):
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_ct2_folder_without_tokenizer(tmp_path):
    _copy(WHISPER_TINY_EN_CT2, tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"incomplete \(missing tokenizer.json\)"):
        load_engine(EngineSpec(engine="faster-whisper", model=str(tmp_path), device="cpu"))


def test_corrupt_weights(tmp_path):
    _copy(WHISPER_TINY_EN_CT2, tmp_path)
    weights = tmp_path / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(UserError, match="could not be loaded") as info:
        load_engine(EngineSpec(engine="faster-whisper", model=str(tmp_path), device="cpu"))
    assert info.value.code == "bad_model" and len(str(info.value).splitlines()) == 1


def test_unsupported_quantization_is_a_clear_error():
    with pytest.raises(UserError, match="cannot run quantization 'int4' on the CPU; use auto, int8, fp32"):
        load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu", quantization="int4"))


def test_transformers_folder_is_converted_once(tmp_path, monkeypatch, ct2_tiny_en):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    engine = load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN), device="cpu"))
    converted = list((tmp_path / "cache").rglob("model.bin"))
    assert len(converted) == 1
    clip = clips(source="librivox")[0]
    audio = load_audio(clip.path)
    assert wer([clip.text], [engine.transcribe(audio, language="en").text]) < 0.15
    stamp = converted[0].stat().st_mtime_ns
    load_engine(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN), device="cpu"))
    assert converted[0].stat().st_mtime_ns == stamp and list((tmp_path / "cache").rglob("model.bin")) == converted


def test_auto_picks_ctranslate2_on_the_cpu():
    for folder in (WHISPER_TINY_EN_CT2, WHISPER_TINY_EN):
        resolved = resolve_auto(EngineSpec(engine="auto", model=str(folder), device="cpu"))
        assert (resolved.engine, resolved.model) == ("faster-whisper", str(folder.resolve()))


def test_a_worker_subprocess_runs_the_engine_auto_chose():
    """The real worker process loads the engine through `auto` and streams its segment progress."""
    from app.worker.pipe import WorkerPipe

    spec = EngineSpec(engine="auto", model=str(WHISPER_TINY_EN_CT2), device="cpu")
    clip = clips(source="librivox")[0]
    with WorkerPipe(env={"OMP_NUM_THREADS": "1"}) as worker:
        hello = worker.load(spec)
        assert (hello["engine"], hello["quantization"], hello["device"]) == ("faster-whisper", "int8", "cpu")
        progress: list = []
        answer = worker.transcribe(load_audio(clip.path), language="auto", on_progress=progress.append)
    assert answer["language"] == "en" and wer([clip.text], [answer["text"]]) < 0.15, answer["text"]
    assert progress and progress[-1]["draft"] == answer["text"]


def test_corrupt_transformers_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "model").mkdir()
    folder = _copy(WHISPER_TINY_EN, tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(UserError, match="could not be converted for CTranslate2") as info:
        load_engine(EngineSpec(engine="faster-whisper", model=str(folder), device="cpu"))
    assert info.value.code == "bad_model" and len(str(info.value).splitlines()) == 1
    assert not list((tmp_path / "cache").rglob("model.bin"))  # nothing half-converted is left to be loaded later
