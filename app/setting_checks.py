"""Checks of single setting values, run beside their field in the settings window and on each value of a
loaded file: each returns the value as it is kept (trimmed, canonical) or raises a `UserError` whose
sentence the form shows under the field. The schema (config.py) names them in its fields' metadata.
"""

import re
from typing import Any
from urllib.parse import urlsplit

from app.desktop.keys import is_modifier, parse_combo
from app.engine.model_source import could_name_a_model
from app.errors import UserError

# Keys that typing and the desktop's own shortcuts never need alone, so they may start dictation by themselves.
_LONE_KEYS = {*(f"f{i}" for i in range(1, 21)), "pause", "scroll_lock", "print_screen", "menu"}
_SIDED_MODIFIERS = {"ctrl_l", "ctrl_r", "alt_l", "alt_r", "alt_gr", "cmd_l", "cmd_r"}  # Shift's sides type capitals
_SHORTCUT_EXAMPLES = {"ctrl": "Ctrl+C", "alt": "Alt+Tab", "cmd": "Super+L"}
_OTHER_CHOICES = "or choose a key that typing does not use, such as F9, Pause or Right Ctrl alone"


def check_key(value: str) -> str:
    """The cancel key: any key will do, since it is taken only while recording."""
    return str(parse_combo(value))


def check_hotkey(value: str) -> str:
    """The start key is taken from every other program all the time (an exclusive grab on X11): a combo that
    typing needs (a bare letter, Esc, Shift+letter) or that every shortcut starts with (Ctrl alone) would
    leave the user unable to type it, or start a dictation at every capital letter and Ctrl+C."""
    combo = parse_combo(value)
    label = combo.label()
    keys = [p for p in combo.parts if not is_modifier(p)]
    modifiers = [p for p in combo.parts if is_modifier(p)]
    if not keys and len(modifiers) == 1 and modifiers[0] not in _SIDED_MODIFIERS:
        base = modifiers[0].split("_")[0]
        why = ("it is held for every capital letter" if base == "shift" else
               f"every {label} shortcut starts with it ({_SHORTCUT_EXAMPLES[base]})")
        raise UserError(f"{label} alone cannot be the hotkey: {why}, and each would start a dictation. Add a key "
                        f"(e.g. Ctrl+Shift+Space), {_OTHER_CHOICES}.", code="bad_hotkey")
    if keys and keys[0] not in _LONE_KEYS and all(m.startswith("shift") for m in modifiers):
        example = parse_combo(f"<ctrl>+<alt>+{combo.parts[-1]}").label()
        raise UserError(f"{label} {'cannot' if modifiers else 'alone cannot'} be the hotkey: the hotkey is kept from "
                        f"every other program, so you could no longer type or use {label} there. Hold Ctrl or Alt "
                        f"with it (e.g. {example}), {_OTHER_CHOICES}.", code="bad_hotkey")
    return str(combo)


def check_vocabulary(value: Any) -> tuple[str, ...]:
    """Words and phrases, one per entry: blank entries and repeats are dropped, anything else kept as typed."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UserError("The vocabulary must be a list of words or phrases (texts).", code="bad_setting")
    return tuple(dict.fromkeys(" ".join(v.split()) for v in value if v.strip()))


def check_device(value: str) -> str:
    """What both runtimes take (torch and CTranslate2), refused here, beside the field, rather than by a worker
    that then cannot load the model at all."""
    value = value.strip().lower() or "auto"
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise UserError(f"The device '{value}' is not one the speech model can run on; use auto, cpu, cuda or "
                        "cuda:N (N the GPU's number, from 0).", code="bad_setting")
    return value


def check_model(value: str) -> str:
    """A name no engine could load ("whisper base") was saved; the model panel said so, but every dictation then
    failed to load it. A folder that is not there now (a drive not mounted) is kept: the panel says it is missing."""
    value = value.strip()
    if value and not could_name_a_model(value):
        raise UserError(f"'{value}' is neither a folder on this computer (give its full path) nor a Hugging Face id "
                        "like openai/whisper-base; check the spelling, or leave it empty for the engine's default.",
                        code="bad_setting")
    return value


def web_address(value: str, what: str, example: str) -> str:
    """`value` without its trailing slash when it is an http(s) address with a host (and a valid port); the
    prefix alone was checked before, so "http://gpu box:8765" was saved and every connection then failed."""
    value = value.strip().rstrip("/")
    if not value:
        return value
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0 \
            and not re.search(r"\s", value)
    except ValueError:  # a port that is not a number from 1 to 65535
        ok = False
    if not ok:
        raise UserError(f"The {what} '{value}' is not a web address: it must start with http:// or https://, then "
                        f"the computer's name (no spaces) and, if needed, :port from 1 to 65535, as in {example}; or "
                        "leave it empty.", code="bad_setting")
    return value


def check_endpoint(value: str) -> str:
    return web_address(value, "model hub address", "https://hf-mirror.com")


def check_server_url(value: str) -> str:
    return web_address(value, "speech server address", "http://gpu-box:8765")
