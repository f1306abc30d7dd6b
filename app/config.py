"""User settings: one schema, its defaults and checks (of single values: setting_checks.py), and the JSON
file in the per-OS config folder.

The `Settings` dataclass *is* the schema: every field carries its type, default, label, help text and
allowed choices or range in its metadata, so the settings window can be generated from
`schema()` and nothing is described twice. Loading never fails: a missing file gives the defaults,
and a damaged one is salvaged field by field (a bad value falls back to its default, the rest is
kept) and copied aside, because resetting everything would punish the user for one typo.
"""

import dataclasses
import difflib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.controller import MODES
from app import setting_checks as checks
from app.desktop.keys import parse_combo
from app.desktop.paths import config_dir
from app.engine import DEFAULT_MODELS, ENGINES, QUANTIZATIONS, EngineSpec
from app.engine.base import AUTO, LANGUAGES
from app.errors import UserError
from app.text.replacements import check_replacements

SETTINGS_FILE = "settings.json"
PASTE_METHODS = ("paste", "type", "copy")
PASTE_KEYS = ("auto", "ctrl+v", "ctrl+shift+v", "shift+insert")
UNUSABLE_MODEL = ("keep", "refuse")


def setting(default: Any, label: str, help: str, *, group: str, choices: tuple | None = None,
            range: tuple[int, int] | None = None, check=None, widget: str | None = None) -> Any:
    """Declare one setting; the metadata is what validation and the settings form read.

    `widget` names a custom editor for the settings form ("quality", "hotkey", "microphone", "model",
    "word_list", "replacements");
    without it the form picks one from the type, choices and range.
    """
    meta = {"label": label, "help": help, "group": group, "choices": choices, "range": range, "check": check,
            "widget": widget}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every user setting, defaulted. Frozen: change one with `dataclasses.replace` and save."""

    engine: str = setting("auto", "Engine", "The speech model: auto runs Whisper on CTranslate2 (faster-whisper, "
                          "about 1.5 times as fast on a CPU) unless a GPU is there, where it runs Whisper on transformers; "
                          "faster-whisper and whisper choose one of the two. Diffusion needs a GPU (except the micro "
                          "model in resources/models, a demo that gets most words wrong). server: a speech server "
                          "(`dictate serve`, e.g. on a GPU box) runs the model; set its Server URL and token below.",
                          group="Model", choices=ENGINES)
    model: str = setting("", "Model", "A model folder or Hugging Face id; leave empty for the engine's default.",
                         group="Model", widget="model", check=checks.check_model)
    quantization: str = setting("auto", "Precision", "Weight precision; auto picks by free GPU memory.",
                                group="Model", choices=QUANTIZATIONS)
    device: str = setting("auto", "Device", "Where the model runs: auto, cpu, cuda or cuda:N.", group="Model",
                          check=checks.check_device)
    compile: bool = setting(False, "Compile the model (experimental)", "Diffusion only: after loading, also compile "
                            "the model's layers with torch.compile, on a thread of its own (dictation works meanwhile); "
                            "the first time takes minutes on a GPU, later starts reuse the compiled kernels. Off by "
                            "default until it is measured faster on a GPU; on a CPU it is not.", group="Model")
    unusable_model: str = setting("keep", "When the model cannot run", "keep: record anyway; the recording waits in "
                                  "the history as not transcribed and is transcribed once the model works. refuse: "
                                  "do not start recording, and say why.", group="Model", choices=UNUSABLE_MODEL)
    language: str = setting(AUTO, "Language", "The language you speak, or auto to detect it.",
                            group="Model", choices=(AUTO, *LANGUAGES))
    steps: int = setting(8, "Quality (steps)", "Diffusion only: the most denoising steps; more is slower and better.",
                         group="Model", range=(1, 48), widget="quality")
    hotkey: str = setting("<ctrl>+<shift>+<space>", "Hotkey", "The key combination that starts dictation, "
                          "e.g. <ctrl>+<shift>+<space>, F9, or <alt_r> for Right Alt alone. No other program gets it, so keys "
                          "you type with (a letter, Esc, Shift+a letter) are refused.", group="Keys", check=checks.check_hotkey,
                          widget="hotkey")
    mode: str = setting("hybrid", "Trigger", "hold: speak while the hotkey is held; toggle: tap to start and to stop; "
                        "hybrid: a short tap toggles, a longer press is hold-to-talk.", group="Keys", choices=MODES)
    tap_ms: int = setting(400, "Tap length (ms)", "Hybrid mode: presses shorter than this toggle recording.",
                          group="Keys", range=(100, 2000))
    cancel_key: str = setting("<esc>", "Cancel key", "Discards the recording while you are recording.",
                              group="Keys", check=checks.check_key, widget="hotkey")
    auto_stop_s: int = setting(0, "Stop after silence (s)", "Hands-free: a dictation the hotkey is not holding (a "
                               "tap in toggle or hybrid mode, or `app toggle`) ends by itself once you have been "
                               "silent this many seconds after speaking. 0: only the hotkey ends it.",
                               group="Keys", range=(0, 30))
    microphone: str = setting("", "Microphone", "The input device by name; empty for the system default.",
                              group="Audio", widget="microphone")
    warm_microphone: bool = setting(False, "Keep microphone open", "Keeps the microphone open between dictations so "
                                    "the pre-roll catches the first word; some systems then show a recording indicator "
                                    "and Bluetooth headsets switch to their low-quality call mode.", group="Audio")
    pre_roll_ms: int = setting(300, "Pre-roll (ms)", "With the microphone kept open: audio kept from before the "
                               "hotkey press.", group="Audio", range=(0, 2000))
    post_roll_ms: int = setting(300, "Post-roll (ms)", "Audio still recorded after the hotkey is released, so the "
                                "last word is not cut off.", group="Audio", range=(0, 2000))
    max_seconds: int = setting(120, "Longest recording (s)", "Recording stops by itself after this long.",
                               group="Audio", range=(5, 900))
    skip_silence: bool = setting(True, "Skip silent recordings", "Checks for speech before transcribing, so that "
                                 "silence pastes nothing instead of an invented phrase.", group="Audio")
    early_transcription: bool = setting(True, "Transcribe during pauses", "When you pause with the hotkey still held, "
                                        "what you said so far is transcribed at once; let go without saying more and "
                                        "the text is there without waiting for the model. Go on speaking and that work "
                                        "is dropped. Needs the speech check (Skip silent recordings, or Stop after "
                                        "silence). With a speech server, the recording so far is sent at each pause.",
                                        group="Audio")
    paste_method: str = setting("paste", "Insert text by", "paste: via the clipboard and a paste keystroke; type: "
                                "simulated typing (slow); copy: only put the text on the clipboard.",
                                group="Output", choices=PASTE_METHODS)
    paste_keys: str = setting("auto", "Paste keystroke", "auto: Shift+Insert in xterm and its relatives (they paste "
                              "the primary selection, which gets the text too), Ctrl+Shift+V in other terminals, "
                              "Ctrl+V elsewhere (Cmd+V on macOS).", group="Output", choices=PASTE_KEYS)
    restore_clipboard: bool = setting(True, "Restore clipboard", "Puts back what the clipboard held once the target "
                                      "window has taken the text.", group="Output")
    space_between: bool = setting(True, "Join dictations in a row", "A dictation that goes on where the previous one "
                                  "ended (same window, nothing typed or clicked since) starts with a space, and its "
                                  "first word in the case its place in the sentence wants: \"Hello Anna.\" then "
                                  "\"how are you?\" gives \"Hello Anna. How are you?\". X11 only: elsewhere the "
                                  "cursor cannot be followed, so nothing is added or changed.",
                                  group="Output")

    vocabulary: tuple = setting((), "Vocabulary", "Names and terms you use, one per line (e.g. Kubernetes, Siobhan). "
                                "Whisper is told about them, and words that sound like one are written as it.",
                                group="Words", check=checks.check_vocabulary, widget="word_list")
    replacements: tuple = setting((), "Replacements", "What you say, and what is written instead: whole words, any "
                                  "case, applied from top to bottom (e.g. at sign -> @).", group="Words",
                                  check=check_replacements, widget="replacements")
    remove_fillers: bool = setting(True, "Remove filler words", "Drops um, uh, er (English), äh, ähm (German), euh "
                                   "(French), eh (Spanish) from the transcript.", group="Words")
    spoken_punctuation: bool = setting(False, "Spoken punctuation", "Say comma, period, question mark, new line or "
                                       "new paragraph (also in German, French and Spanish) to write them; the words "
                                       "are then always commands, so a dictated \"period\" becomes a full stop.",
                                       group="Words")

    sound_cues: bool = setting(True, "Sound cues", "A short sound when the microphone is really listening and "
                               "another when recording stops.", group="Feedback")
    overlay: bool = setting(True, "Show overlay", "A small window at the bottom of the screen shows the input level "
                            "and the transcript as it forms; it never takes the keyboard focus.", group="Feedback")
    history: bool = setting(True, "Keep history", "Saves every transcript on this computer, so that one whose "
                            "paste failed can be copied or pasted again.", group="History")
    history_days: int = setting(30, "Keep for (days)", "Transcripts older than this are deleted; 0 keeps them "
                                "forever. A recording still waiting for the model is kept until it is transcribed.",
                                group="History", range=(0, 3650))
    history_max: int = setting(1000, "Keep at most", "Only this many of the newest transcripts are kept; 0 means "
                               "no limit. A recording still waiting for the model is kept until it is transcribed.",
                               group="History", range=(0, 100000))
    history_audio: bool = setting(False, "Keep recordings", "Also saves the audio of each dictation with its "
                                  "transcript (about 2 MB a minute).", group="History")
    autostart: bool = setting(False, "Start at login", "Starts the app when you log in to your desktop.",
                              group="System")
    idle_unload_min: int = setting(0, "Unload model after (min)", "Frees the model's memory after this many idle "
                                   "minutes; the next dictation loads it again. 0 keeps it loaded.",
                                   group="System", range=(0, 1440))
    hub_endpoint: str = setting("", "Model hub address", "Where models are downloaded from, e.g. a mirror of the "
                                "Hugging Face Hub; empty for https://huggingface.co.", group="System",
                                check=checks.check_endpoint)

    # The speech server (engine "server"); its token is kept by app/server/token_store.py, never here.
    server_url: str = setting("", "Server URL", "Engine server only: the address of a speech server started with "
                              "`dictate serve`, e.g. http://gpu-box:8765. Its token goes in the token field at the end of this page "
                              "(or `dictate server-token`), kept in the system keyring or a file only you can read.",
                              group="Model", check=checks.check_server_url)

    def engine_spec(self) -> EngineSpec:
        if self.engine == "server":
            return EngineSpec(engine="server", model=self.server_url)
        return EngineSpec(engine=self.engine, model=self.model or DEFAULT_MODELS[self.engine],
                          quantization=self.quantization, device=self.device, compile=self.compile)

    @property
    def idle_unload_s(self) -> float | None:
        """The worker's idle timeout: None keeps the model loaded."""
        return self.idle_unload_min * 60.0 if self.idle_unload_min else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def schema() -> tuple[dataclasses.Field, ...]:
    """The fields in display order; `f.metadata` holds label, help, group, choices and range."""
    return dataclasses.fields(Settings)


def validate(name: str, value: Any) -> Any:
    """Return `value` checked and normalised for setting `name`, or raise a UserError that says why."""
    fields = {f.name: f for f in schema()}
    if name not in fields:  # a typo, or a setting of another version: name the likeliest, not all of them
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.7)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"'{name}' is not a setting{hint}.", code="bad_setting")
    f = fields[name]
    meta, kind = f.metadata, type(f.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"Setting '{name}' must be true or false, not {value!r}.", code="bad_setting")
    elif kind is int:
        # A float must be whole before int(): JSON's Infinity and NaN (and 1e400) make int() raise.
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not value.is_integer())):
            raise UserError(f"Setting '{name}' must be a whole number, not {value!r}.", code="bad_setting")
        value = int(value)
        low, high = meta["range"]
        if not low <= value <= high:
            raise UserError(f"Setting '{name}' must be between {low} and {high}, not {value}.", code="bad_setting")
    elif kind is tuple:
        pass  # lists: their `check` validates and converts them
    elif not isinstance(value, str):
        raise UserError(f"Setting '{name}' must be text, not {value!r}.", code="bad_setting")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise UserError(f"Setting '{name}' must be one of {', '.join(meta['choices'])}, not {value!r}.",
                        code="bad_setting")
    if meta["check"] is not None:
        value = meta["check"](value)
    return value


def check_together(settings: Settings, changed: str) -> None:
    """The rules between settings, checked after `changed` took its new value: raises a UserError about it.

    One key cannot both start and cancel: while recording its press would stop the dictation and throw
    it away at once (which of the two wins depends on the order the key events arrive in)."""
    if settings.hotkey == settings.cancel_key:
        label = parse_combo(settings.hotkey).label()
        if changed == "cancel_key":
            raise UserError(f"{label} is the hotkey, so it cannot also be the cancel key: pressing it to stop a "
                            "dictation would throw the dictation away. Choose another cancel key, such as Esc.",
                            code="bad_setting")
        raise UserError(f"{label} is the cancel key, so it cannot also be the hotkey: pressing it to stop a dictation "
                        "would throw the dictation away. Choose another hotkey, or another cancel key first.",
                        code="bad_setting")


def from_dict(data: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Build Settings from raw values, keeping every valid one; return them and the problems found."""
    values, problems = {}, []
    for name, value in data.items():
        try:
            values[name] = validate(name, value)
        except UserError as exc:
            known = name in Settings.__dataclass_fields__
            problems.append(f"{exc} {'The default is used instead.' if known else 'It is left out.'}")
    settings = Settings(**values)
    try:
        check_together(settings, "cancel_key")
    except UserError as exc:  # the file's hotkey stays, its cancel key goes back to Esc (never a hotkey)
        settings = dataclasses.replace(settings, cancel_key=Settings().cancel_key)
        problems.append(f"{exc} The cancel key {parse_combo(settings.cancel_key).label()} is used instead.")
    return settings, problems


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def _salvage(text: str) -> dict[str, Any]:
    """Recover `"name": value` pairs from text that is no longer valid JSON (truncated, a stray comma)."""
    found = {}
    decoder = json.JSONDecoder()
    for name in Settings.__dataclass_fields__:
        match = re.search(rf'"{name}"\s*:\s*', text)
        if match:
            try:
                found[name], _ = decoder.raw_decode(text, match.end())
            except json.JSONDecodeError:
                pass
    return found


def load(path: Path | None = None) -> tuple[Settings, list[str]]:
    """Read the settings file; return the settings and sentences about anything that had to be fixed.

    A damaged file of any kind (bad JSON, bad values, not text at all) is copied byte for byte to
    `settings.json.broken` before the salvaged settings are written back, so the user's edits are
    never silently lost.
    """
    path = path or settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(), []
    except OSError as exc:
        return Settings(), [f"Could not read {path} ({exc}); the default settings are used."]
    text = raw.decode("utf-8", errors="replace")  # binary garbage still yields what text it holds
    not_json = False
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # -sig: Windows Notepad starts the file with a byte-order mark
        broken = not isinstance(data, dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        data, broken, not_json = None, True, True
    if broken:
        data = _salvage(text)
    settings, problems = from_dict(data)
    if broken or problems:
        if not broken:
            what = "had invalid values"
        elif not_json:
            what = "is not valid JSON; the settings that could be read were kept"
        else:
            what = "holds JSON but not an object of settings ({...}); the settings that could be read were kept"
        problems.insert(0, f"The settings file {path} {what}. {_set_aside(raw, settings, path)}")
    return settings, problems


def _set_aside(raw: bytes, settings: Settings, path: Path) -> str:
    """Copy the damaged file to `settings.json.broken` and write the repaired settings in its place; return
    the sentence that says what happened, so the user is never told of a copy that a read-only folder refused."""
    backup = path.with_name(path.name + ".broken")
    try:
        backup.write_bytes(raw)
    except OSError as exc:
        return (f"It could not be copied to {backup.name} ({exc}), so it was left as it is: make its folder "
                "writable, or correct the file by hand.")
    try:
        save(settings, path)
    except OSError as exc:
        return (f"The original was copied to {backup.name}, but the repaired settings could not be written "
                f"({exc}): make the folder writable, or correct the file by hand.")
    return f"The original was copied to {backup.name}."


def save(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings atomically (temporary file + rename), so a crash never leaves half a file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({f.name: getattr(settings, f.name) for f in schema()}, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["Settings", "schema", "validate", "from_dict", "load", "save", "config_dir", "settings_path"]
