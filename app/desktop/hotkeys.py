"""Global hotkeys: an X11 grab, or pynput's listener elsewhere, feeding the combo logic of `keys.py`.

On X11 the combination is grabbed (`x11_grab.py`), so the focused window never gets its keys. On
Windows and macOS pynput's listener hears every key and its event filters swallow the hotkey's own
key (`suppress.py`). Wayland has no global hotkeys for ordinary clients: there the desktop's
GlobalShortcuts portal is asked for the key (KDE Plasma 5.27+, GNOME 48+), whose press and release
are the hotkey's; without one the user is told to bind `python -m app toggle` instead. pynput and
Xlib are imported only once started: importing pynput's keyboard module without a display raises. Key events arrive on a helper
thread; each is handed to the GUI thread through a queued signal with the time it happened, and
the grace period for X11 auto-repeat is a QTimer there.
"""

from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

from app.desktop.keys import Combo, ComboTracker
from app.desktop.session import WAYLAND_HOTKEY_HINT, display_server
from app.desktop.suppress import KeySuppressor, pynput_listener
from app.errors import UserError

log = logging.getLogger(__name__)

_ISO_LEVEL3_SHIFT = 0xFE03  # the AltGr keysym on most X11 layouts; pynput has no Key member for it


def key_name(key) -> str:
    """pynput's Key / KeyCode -> the names `keys.py` speaks ("ctrl_r", "space", "d", "vk65027")."""
    name = getattr(key, "name", None)
    if name:
        return name
    if getattr(key, "vk", None) == _ISO_LEVEL3_SHIFT:
        return "alt_gr"
    char = getattr(key, "char", None)
    return char.lower() if char else f"vk{getattr(key, 'vk', '?')}"


class HotkeyListener(QObject):
    """Emits `pressed(time)`, `released(time of the real release)` and `cancel_pressed()`; `ready` once
    listening, or `unavailable(message)` (also when another program holds the combination; `problem`
    keeps that sentence for the settings window until a working hotkey replaces it).

    `keyboard_grabbed(bool)` (X11 only) says when the keyboard is ours: from the press that starts a grab
    until its key is up, which can be after `released` (Ctrl let go first, Space still down). Keys sent
    meanwhile, a paste's among them, come to us instead of the focused window."""

    pressed = Signal(float)
    released = Signal(float)
    cancel_pressed = Signal()
    keyboard_grabbed = Signal(bool)
    ready = Signal()
    unavailable = Signal(str)
    _raw = Signal(str, bool, float)
    _held = Signal(object, float, bool)
    _problem = Signal(str)

    def __init__(self, combo: Combo, cancel: Combo, *, grace_s: float = 0.05, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._grace_s = grace_s
        self._tracker = ComboTracker(combo, grace_s)
        self._cancel = ComboTracker(cancel, 0.0)
        self.problem: str | None = None
        self._grab = None  # X11Grab on X11
        self._portal = None  # PortalShortcuts on Wayland
        self.mechanism = ""  # how the hotkey is caught, for the settings window
        self._suppressor: KeySuppressor | None = None  # Windows / macOS
        self._grabbing = False  # X11: the keyboard is grabbed now (a key of the hotkey or the cancel key is down)
        self._listener = None
        self._timer = QTimer(self, singleShot=True, timeout=self._poll)
        self._raw.connect(self._on_raw)
        self._held.connect(self._on_held)
        self._problem.connect(self._report)

    def set_combos(self, combo: Combo, cancel: Combo) -> None:
        changed = combo != self._tracker.combo
        self._tracker = ComboTracker(combo, self._grace_s)
        self._cancel = ComboTracker(cancel, 0.0)
        self.problem = None
        if self._grab is not None:
            self._grab.set_combos(combo, cancel)  # a conflict comes back through `_problem`
        if self._suppressor is not None:
            self._suppressor.combo, self._suppressor.cancel = combo, cancel
        if self._portal is not None and changed:  # Wayland: a new session that suggests the new key
            self._portal.stop()
            self._portal.deleteLater()
            self._portal_start()

    def grabbed_keys(self) -> frozenset[tuple[int, int]]:
        """The X11 grab's (keycode, modifier state) pairs (empty elsewhere): any thread may ask."""
        grab = self._grab
        return grab.grabbed_keys() if grab is not None else frozenset()

    def arm_cancel(self, armed: bool) -> None:
        """Take the cancel key from the focused window while recording, and give it back after."""
        if self._grab is not None:
            self._grab.arm_cancel(armed)
        if self._suppressor is not None:
            self._suppressor.cancel_armed = armed

    def pause(self, paused: bool) -> None:
        """While Settings captures a new hotkey: let the keys through to it, and start no dictation."""
        if paused:
            self._grab_state(False)  # said before the signals are blocked: no paste may wait on a grab unseen
        self.blockSignals(paused)
        if self._grab is not None:
            self._grab.pause(paused)

    def start(self) -> None:
        """Begin listening in the background; `ready` or `unavailable(message)` follows.

        Raises UserError at once where global hotkeys cannot work at all (no display). On Wayland the
        desktop portal is asked (`portal_shortcuts.py`); where it has none, `unavailable` names the
        command to bind instead.
        The X connection (or pynput's import) takes a few hundred milliseconds of pure Python, so it
        runs on a helper thread: the tray and the remote channel answer meanwhile.
        """
        server = display_server()
        if server == "wayland":
            return self._portal_start()
        if server == "none":
            raise UserError("No graphical session was found, so there are no global hotkeys; start the app from "
                            "your desktop.", code="no_hotkeys")
        target = self._grab_x11 if server == "x11" else self._listen
        threading.Thread(target=target, name="hotkeys-start", daemon=True).start()

    def _portal_start(self) -> None:
        """Wayland: ask the desktop's GlobalShortcuts portal for the key; its press and release are the
        hotkey's, so hold-to-talk works as on X11. Where there is none, say which command to bind."""
        from app.desktop.portal_shortcuts import PortalShortcuts

        portal = PortalShortcuts(self._tracker.combo, parent=self)
        portal.activated.connect(self.pressed)
        portal.deactivated.connect(self.released)
        portal.bound.connect(lambda trigger: self._portal_state(f"desktop portal (GlobalShortcuts): {trigger}", ""))
        portal.needs_key.connect(lambda message: self._portal_state("desktop portal (GlobalShortcuts): no key", message))
        portal.failed.connect(lambda message: self._portal_state(
            "none: bind `python -m app toggle`", f"{message.rstrip('.')}. {WAYLAND_HOTKEY_HINT}"))
        self._portal = portal
        self.mechanism = "desktop portal (GlobalShortcuts): asking the desktop…"
        portal.start()

    def _portal_state(self, mechanism: str, problem: str) -> None:
        self.mechanism = mechanism
        log.info("hotkeys: %s%s", mechanism, f" ({problem})" if problem else "")
        self._report(problem)

    def _grab_x11(self) -> None:
        from app.desktop.x11_grab import X11Grab

        try:
            grab = X11Grab(self._held.emit, self._problem.emit)
        except UserError as exc:
            self.unavailable.emit(str(exc))
            return
        self._grab = grab
        if grab.detectable_repeat:  # no fake releases to wait out: a release is reported at once
            self._grace_s = self._tracker.grace_s = 0.0
        self.mechanism = "X11 key grab"
        log.info("hotkeys: X11 grab for %s (cancel: %s; detectable auto-repeat: %s)", self._tracker.combo,
                 self._cancel.combo, grab.detectable_repeat)
        self._problem.emit(grab.start(self._tracker.combo, self._cancel.combo))

    def _listen(self) -> None:
        try:
            from pynput import keyboard

            suppressor = KeySuppressor(self._tracker.combo, self._cancel.combo)
            listener = pynput_listener(keyboard, suppressor, lambda name, down: self._raw.emit(
                name, down, time.monotonic()), key_name)
            listener.start()
            listener.wait()  # returns once the hook is live, so no early press is missed
        except Exception as exc:  # pynput raises various errors when no backend can load
            self.unavailable.emit(f"Global hotkeys are unavailable ({exc}); bind `python -m app toggle` to a "
                                  "shortcut in your desktop's keyboard settings instead.")
            return
        self._listener, self._suppressor = listener, suppressor
        self.mechanism = "pynput keyboard hook"
        log.info("hotkeys: listening for %s (cancel: %s)", self._tracker.combo, self._cancel.combo)
        self.ready.emit()

    def stop(self) -> None:
        if self._portal is not None:
            self._portal.stop()
            self._portal = None
        if self._grab is not None:
            self._grab.stop()
            self._grab = None
            self._grab_state(False)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _report(self, problem: str) -> None:
        """The outcome of a grab: "" when the hotkey works, else the sentence saying why not."""
        self.problem = problem or None
        if problem:
            self.unavailable.emit(problem)
        else:
            self.ready.emit()

    def _on_raw(self, name: str, down: bool, at: float) -> None:
        self._emit(self._tracker.key(name, down, at), self._cancel.key(name, down, at))

    def _on_held(self, held: frozenset[str], at: float, grabbing: bool) -> None:
        if grabbing:  # said before the press it starts with
            self._grab_state(True)
        self._emit(self._tracker.update(held, at), self._cancel.update(held, at))
        if not grabbing:  # and its end after the release
            self._grab_state(False)

    def _grab_state(self, grabbing: bool) -> None:
        if grabbing != self._grabbing:
            self._grabbing = grabbing
            self.keyboard_grabbed.emit(grabbing)

    def _emit(self, hotkey: list[tuple[str, float]], cancel: list[tuple[str, float]]) -> None:
        for kind, when in hotkey:
            (self.pressed if kind == "press" else self.released).emit(when)
        if any(kind == "press" for kind, _ in cancel):
            self.cancel_pressed.emit()
        self._schedule()

    def _poll(self) -> None:
        for _, when in self._tracker.poll(time.monotonic()):
            self.released.emit(when)
        self._schedule()

    def _schedule(self) -> None:
        deadline = self._tracker.deadline
        if deadline is None:
            self._timer.stop()
        else:
            self._timer.start(max(0, int((deadline - time.monotonic()) * 1000) + 1))
