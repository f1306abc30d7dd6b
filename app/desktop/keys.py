"""Hotkey combos as text ("<ctrl>+<shift>+space", "<alt_r>") and the logic that follows held keys.

Pure Python with no pynput import, so the settings schema can validate a combo and the tests can
drive the combo logic without a display. `hotkeys.py` (pynput's key objects) and `x11_grab.py` (X
keysyms, sides included) turn keys into the names used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import UserError

# Modifier families: a generic name matches every side, a sided name matches that side only.
# On X11 pynput reports the left keys under the generic name (Key.ctrl_l is an alias of Key.ctrl),
# so the left-sided names also accept the generic one. Right Alt is AltGr on many layouts, so
# "alt_r" accepts both.
_MODIFIER_MATCHES = {
    "ctrl": {"ctrl", "ctrl_l", "ctrl_r"},
    "ctrl_l": {"ctrl", "ctrl_l"},
    "ctrl_r": {"ctrl_r"},
    "shift": {"shift", "shift_l", "shift_r"},
    "shift_l": {"shift", "shift_l"},
    "shift_r": {"shift_r"},
    "alt": {"alt", "alt_l", "alt_r"},
    "alt_l": {"alt", "alt_l"},
    "alt_r": {"alt_r", "alt_gr"},
    "alt_gr": {"alt_gr"},
    "cmd": {"cmd", "cmd_l", "cmd_r"},
    "cmd_l": {"cmd", "cmd_l"},
    "cmd_r": {"cmd_r"},
}
_NAMED_KEYS = {
    "space", "enter", "tab", "esc", "backspace", "delete", "insert", "home", "end", "page_up",
    "page_down", "up", "down", "left", "right", "caps_lock", "num_lock", "scroll_lock", "pause",
    "print_screen", "menu", *(f"f{i}" for i in range(1, 21)),
}
_ALIASES = {"control": "ctrl", "escape": "esc", "return": "enter", "super": "cmd", "win": "cmd", "meta": "cmd",
            "option": "alt", "altgr": "alt_gr", "super_r": "cmd_r", "super_l": "cmd_l"}


def is_modifier(name: str) -> bool:
    return name in _MODIFIER_MATCHES


@dataclass(frozen=True)
class Combo:
    """A parsed hotkey: every part must be held at once. `parts` are canonical key names."""

    parts: tuple[str, ...]

    def matches(self, held: set[str]) -> bool:
        return all(held & _MODIFIER_MATCHES.get(part, {part}) for part in self.parts)

    def __str__(self) -> str:
        return "+".join(p if len(p) == 1 else f"<{p}>" for p in self.parts)

    def label(self) -> str:
        """A human form for menus: "Ctrl+Shift+Space", "Right Alt"."""
        words = {"ctrl": "Ctrl", "shift": "Shift", "alt": "Alt", "cmd": "Super", "esc": "Esc", "alt_gr": "AltGr"}
        out = []
        for part in self.parts:
            base, _, side = part.partition("_")
            if base in words and side in ("l", "r"):
                out.append(f"{'Left' if side == 'l' else 'Right'} {words[base]}")
            else:
                out.append(words.get(part, part.replace("_", " ").title() if len(part) > 1 else part.upper()))
        return "+".join(out)


def parse_combo(text: str) -> Combo:
    """Parse "<ctrl>+<alt>+d", "ctrl+alt+d" or "<alt_r>"; raise a UserError naming the bad part."""
    raw = (text or "").strip().lower()
    if not raw:
        raise UserError("The hotkey is empty: choose a key combination such as <ctrl>+<shift>+<space>.", code="bad_hotkey")
    tokens = raw.split("+")
    if raw.endswith("++"):  # "ctrl++" means Ctrl and the plus key
        tokens = [*raw[:-2].split("+"), "+"]
    parts: list[str] = []
    for token in tokens:
        name = token.strip().strip("<>").strip()
        name = _ALIASES.get(name, name)
        if not (name in _MODIFIER_MATCHES or name in _NAMED_KEYS or len(name) == 1):
            raise UserError(
                f"'{token.strip()}' in the hotkey '{text}' is not a key name; use names like <ctrl>, <shift>, "
                "<alt_r>, <cmd>, space, f9 or a single character, joined with '+'.",
                code="bad_hotkey",
            )
        if name not in parts:
            parts.append(name)
    return Combo(tuple(parts))


@dataclass
class ComboTracker:
    """Turns raw key downs/ups into combo press/release events, debouncing X11 auto-repeat.

    X11 auto-repeat (where the server cannot send repeats as presses only) releases and re-presses a
    held key within a few milliseconds. A release is therefore only reported once the combo has stayed
    released for `grace_s`; it carries the time of the real release, so that the recorder can count
    its post-roll from there and the grace period costs no latency.
    """

    combo: Combo
    grace_s: float = 0.05
    held: set[str] = field(default_factory=set)
    active: bool = False
    released_at: float | None = None  # a release waiting out the grace period

    def key(self, name: str, down: bool, now: float) -> list[tuple[str, float]]:
        """Feed one raw key event; return the combo events it completes: ("press"|"release", time)."""
        if down:
            self.held.add(name)
        else:
            self.held.discard(name)
        return self.update(self.held, now)

    def update(self, held: set[str] | frozenset[str], now: float) -> list[tuple[str, float]]:
        """Replace the set of held keys at once (the X11 grab reports every key held, sides included)."""
        self.held = set(held)
        events = self.poll(now)
        matched = self.combo.matches(self.held)
        if matched and not self.active:
            self.active = True
            events.append(("press", now))
        elif matched and self.released_at is not None:
            self.released_at = None  # re-pressed within the grace period: auto-repeat, not a release
        elif not matched and self.active and self.released_at is None:
            self.released_at = now
        return events

    def poll(self, now: float) -> list[tuple[str, float]]:
        """Report a release whose grace period has passed."""
        if self.released_at is not None and now - self.released_at >= self.grace_s:
            at, self.released_at, self.active = self.released_at, None, False
            return [("release", at)]
        return []

    @property
    def deadline(self) -> float | None:
        """When `poll` should next be called, or None when nothing is pending."""
        return None if self.released_at is None else self.released_at + self.grace_s
