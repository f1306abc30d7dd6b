"""Settings schema, validation, atomic save and field-by-field salvage of damaged files."""

import dataclasses
import json

import pytest

from app import config
from app.config import Settings
from app.errors import UserError


def test_every_field_is_described_for_the_settings_form():
    for f in config.schema():
        meta = f.metadata
        assert meta["label"] and meta["help"].endswith(".") and meta["group"], f.name
        assert config.validate(f.name, f.default) == f.default, f.name


def test_missing_file_gives_defaults(tmp_path):
    settings, problems = config.load(tmp_path / "settings.json")
    assert settings == Settings() and problems == []


def test_save_then_load_round_trips_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "settings.json"
    changed = dataclasses.replace(Settings(), mode="toggle", post_roll_ms=500, hotkey="<alt_r>", skip_silence=False)
    config.save(changed, path)
    assert config.load(path) == (changed, [])
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]


@pytest.mark.parametrize(
    "name, value",
    [("mode", "sometimes"), ("post_roll_ms", 99999), ("post_roll_ms", "300"), ("skip_silence", 1),
     ("steps", 2.5), ("hotkey", "<ctrl>+<banana>"), ("language", "xx"), ("nonsense", 1)],
)
def test_invalid_values_are_refused_with_a_sentence(name, value):
    with pytest.raises(UserError) as info:
        config.validate(name, value)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize("combo", ["a", "<esc>", "<space>", "1", "<shift>+a", "<shift>+<space>", "<shift>", "<shift_r>",
                                   "<ctrl>", "<alt>", "<cmd>"])
def test_a_hotkey_that_typing_needs_is_refused_with_what_to_pick(combo):
    """The hotkey is kept from every other program: "a" or Esc saved without a word left the user unable to type
    that letter or to cancel anything; Shift or Ctrl alone started a dictation at every capital or Ctrl+C."""
    with pytest.raises(UserError, match="cannot be the hotkey") as info:
        config.validate("hotkey", combo)
    assert "Right Ctrl alone" in str(info.value) and str(info.value).endswith(".")


@pytest.mark.parametrize("combo", ["<alt_r>", "<ctrl_r>", "<alt_gr>", "<f9>", "<shift>+<f9>", "<pause>", "<ctrl>+a",
                                   "<ctrl>+<shift>+<space>", "<cmd>+<alt>+d"])
def test_hotkeys_that_leave_typing_alone_are_taken(combo):
    assert config.validate("hotkey", combo) == combo


def test_the_cancel_key_may_be_esc_or_a_letter():
    """It is taken only while recording."""
    assert config.validate("cancel_key", "<esc>") == "<esc>" and config.validate("cancel_key", "q") == "q"


def test_hotkey_is_normalised():
    assert config.validate("hotkey", "Ctrl+Shift+Space") == "<ctrl>+<shift>+<space>"
    assert config.validate("hotkey", "<AltGr>") == "<alt_gr>"


def test_bad_values_fall_back_one_by_one_and_the_original_is_kept(tmp_path):
    path = tmp_path / "settings.json"
    original = json.dumps({"mode": "toggle", "post_roll_ms": -5, "language": "de", "future_option": 1})
    path.write_text(original)
    settings, problems = config.load(path)
    assert (settings.mode, settings.language, settings.post_roll_ms) == ("toggle", "de", Settings().post_roll_ms)
    assert len(problems) == 3 and "post_roll_ms" in problems[1]
    assert problems[2] == "'future_option' is not a setting. It is left out."
    assert (tmp_path / "settings.json.broken").read_text() == original
    assert config.load(path) == (settings, [])  # the repaired file was written back


def test_a_misspelt_setting_is_named_with_the_likeliest_one(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"hot_key": "<f9>", "language": "de"}))
    settings, problems = config.load(path)
    assert settings.language == "de" and settings.hotkey == Settings().hotkey
    assert problems[1] == "'hot_key' is not a setting (did you mean 'hotkey'?). It is left out."


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_a_number_json_allows_but_no_setting_can_hold_falls_back(tmp_path, number):
    """Python's json reads Infinity, NaN and 1e400 (inf); loading raised OverflowError, and the app did not start."""
    path = tmp_path / "settings.json"
    path.write_text(f'{{"tap_ms": {number}, "language": "de"}}')
    settings, problems = config.load(path)
    assert (settings.tap_ms, settings.language) == (Settings().tap_ms, "de")
    assert "'tap_ms' must be a whole number" in problems[1]


def test_a_file_saved_with_a_byte_order_mark_is_read_as_it_is(tmp_path):
    """Windows Notepad writes one: the file was called "not valid JSON", copied aside and rewritten."""
    path = tmp_path / "settings.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"language": "de"}).encode())
    assert config.load(path) == (Settings(language="de"), [])
    assert not (tmp_path / "settings.json.broken").exists()


def test_truncated_json_is_salvaged_field_by_field(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"mode": "hold", "language": "fr", "hotkey": "<alt_r>", "post_roll_ms": 45')
    settings, problems = config.load(path)
    assert (settings.mode, settings.language, settings.hotkey, settings.post_roll_ms) == ("hold", "fr", "<alt_r>", 45)
    assert "not valid JSON" in problems[0]


def test_engine_spec_uses_the_engines_default_model():
    assert Settings().engine_spec().model == config.DEFAULT_MODELS["whisper"]
    assert Settings(model="/models/x").engine_spec().model == "/models/x"
    assert Settings(engine="faster-whisper").engine_spec().model == "Systran/faster-whisper-base"


def test_engine_defaults_to_auto_and_both_whisper_runtimes_stay_selectable():
    assert Settings().engine == "auto"
    for engine in ("auto", "faster-whisper", "whisper", "diffusion"):
        assert config.validate("engine", engine) == engine
    with pytest.raises(UserError, match="must be one of auto, faster-whisper, whisper, diffusion"):
        config.validate("engine", "ctranslate2")


def test_binary_garbage_is_copied_aside_byte_for_byte(tmp_path):
    path = tmp_path / "settings.json"
    garbage = bytes(range(256)) * 4 + b'\xff\xfe"mode": "toggle"\x00\x81'
    path.write_bytes(garbage)
    settings, problems = config.load(path)
    assert (tmp_path / "settings.json.broken").read_bytes() == garbage
    assert settings.mode == "toggle", "what could be read is kept"
    assert "not valid JSON" in problems[0] and "settings.json.broken" in problems[0]
    assert config.load(path) == (settings, [])  # a clean file was written back


def test_valid_json_that_is_not_an_object_is_not_called_invalid_json(tmp_path):
    """A list (or a bare string) is valid JSON: the user was told it was not, and went looking for a typo."""
    path = tmp_path / "settings.json"
    path.write_text('[{"mode": "toggle"}]')
    settings, problems = config.load(path)
    assert "not valid JSON" not in problems[0] and "not an object of settings" in problems[0], problems
    assert (tmp_path / "settings.json.broken").read_text() == '[{"mode": "toggle"}]'


def test_a_damaged_file_that_cannot_be_copied_aside_is_not_said_to_be(tmp_path):
    """A read-only settings folder (here: a folder in the copy's way, which refuses root too): the notice said
    "The original was copied to settings.json.broken." though nothing was copied."""
    path = tmp_path / "settings.json"
    path.write_text('{"language": "de", "mode": "sometimes"}')
    (tmp_path / "settings.json.broken").mkdir()
    settings, problems = config.load(path)
    assert settings.language == "de"
    assert "copied to settings.json.broken." not in problems[0]
    assert "could not be copied to settings.json.broken" in problems[0] and problems[0].endswith("by hand.")
    assert path.read_text() == '{"language": "de", "mode": "sometimes"}'  # left as it is, for the user to fix


def test_a_file_whose_cancel_key_is_its_hotkey_keeps_the_hotkey_and_says_so(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"hotkey": "<f9>", "cancel_key": "<f9>", "language": "fr"}')
    settings, problems = config.load(path)
    assert (settings.hotkey, settings.cancel_key, settings.language) == ("<f9>", "<esc>", "fr")
    assert "had invalid values" in problems[0], "the file is copied aside first, as for any invalid value"
    assert "F9 is the hotkey, so it cannot also be the cancel key" in problems[1]
    assert problems[1].endswith("The cancel key Esc is used instead.")
