"""Putting the transcript into the focused window: clipboard + paste keystroke, typing, or copy only.

One paste, step by step: look at the focused window (terminals need their own key), save the
clipboard, offer the transcript, send the keystroke (held modifiers lifted first), then wait until
the target has actually read the clipboard and gone quiet for `SETTLE_MS` (a target may read more
than once), and only then put the old contents back, and only if nobody copied something else in
the meantime. On X11 only a read by the focused window's own X client counts (`x11_clipboard.py`):
a clipboard manager reading every new clipboard is not the target pasting.

Terminals get the transcript in PRIMARY too: the xterm family pastes PRIMARY with Shift+Insert and
binds nothing to Ctrl+Shift+V by default; the others take Ctrl+Shift+V. If the target reads nothing
within `FALLBACK_MS`, X11 types the text with XTest instead (and the clipboard is put back), unless the
target is busy, not ignoring the paste (it does not answer a ping: it is waited for); where
that is not possible, or fails, the transcript stays on the clipboard and the user is told to paste
it by hand: restoring then would lose the dictation. `outcome` says which happened.

A dictation that continues the previous one where the cursor still is gets one space in front, and its
first word the case of its place in the sentence (`continuation.py`): "Hello Anna." then "how are you?" is
"Hello Anna. How are you?".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, QTimer, Signal

from app.desktop.clipboard import Clipboard, Offer, QtClipboard, WlClipboard
from app.desktop.continuation import Continuation
from app.desktop.injection import KeyInjector, make_injector
from app.desktop.session import display_server
from app.errors import UserError, first_line

log = logging.getLogger(__name__)

# WM_CLASS class names (lower case) of terminal emulators: they take Ctrl+Shift+V, not Ctrl+V.
TERMINAL_CLASSES = frozenset({
    "xterm", "uxterm", "urxvt", "rxvt", "alacritty", "kitty", "gnome-terminal", "gnome-terminal-server",
    "konsole", "xfce4-terminal", "terminator", "tilix", "st", "st-256color", "foot", "wezterm",
    "org.wezfurlong.wezterm", "lxterminal", "mate-terminal", "qterminal", "terminology", "termite", "guake",
    "tilda", "sakura", "kgx", "com.mitchellh.ghostty", "ghostty", "hyper", "tabby", "cool-retro-term",
    "deepin-terminal", "io.elementary.terminal", "yakuake", "contour", "blackbox", "ptyxis",
})
# Terminals that paste PRIMARY with Shift+Insert and ignore Ctrl+Shift+V unless configured.
XTERM_FAMILY = frozenset({"xterm", "uxterm", "urxvt", "rxvt", "urxvt-unicode"})
# What became of a transcript, for the history.
PASTED, TYPED, ON_CLIPBOARD, FAILED = "pasted", "typed", "clipboard", "failed"


@dataclass
class PasteOptions:
    method: str = "paste"  # paste | type | copy
    keys: str = "auto"  # auto | ctrl+v | ctrl+shift+v | shift+insert
    restore: bool = True
    space_between: bool = True  # join a dictation that continues the previous one: a space, the case


def paste_keys(setting: str, server: str, window_class: str | None) -> str:
    """The keystroke for this target: the user's choice, else by platform and window class."""
    if setting != "auto":
        return setting
    if server == "macos":
        return "cmd+v"
    if window_class and window_class.lower() in XTERM_FAMILY:
        return "shift+insert"
    if is_terminal(window_class):
        return "ctrl+shift+v"
    return "ctrl+v"


def is_terminal(window_class: str | None) -> bool:
    return bool(window_class) and window_class.lower() in TERMINAL_CLASSES


class Paster(QObject):
    """Inserts one text at a time; `finished(ok, message)` says how it went (message when not ok), and
    `outcome` (PASTED, TYPED, ON_CLIPBOARD or FAILED) what became of the text, set before `finished`."""

    finished = Signal(bool, str)
    SETTLE_MS = 150
    FALLBACK_MS = 2500
    PING_S = 0.3  # how long a target may take to answer whether it handles its events (`_busy_target`)
    PATIENCE_S = 30.0  # how long a busy target is waited for before its text is typed all the same

    def __init__(self, options: PasteOptions | None = None, *, server: str | None = None,
                 injector: KeyInjector | None = None, clipboard: Clipboard | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.options = options or PasteOptions()
        self.server = server or display_server()
        self._injector = injector
        self.clipboard = clipboard or _clipboard_for(self.server)
        self._offer: Offer | None = None
        self._text = ""
        self._snapshot: object = None
        self.outcome = ""
        self._sent_at = 0.0
        self.continuation = Continuation(None)  # the app gives it an input monitor where there is one (X11)
        self._target = 0  # the window this paste goes to (0: unknown)
        self._settle = QTimer(self, singleShot=True, interval=self.SETTLE_MS, timeout=self._settled)
        self._fallback = QTimer(self, singleShot=True, interval=self.FALLBACK_MS, timeout=self._not_taken)

    @property
    def injector(self) -> KeyInjector:
        if self._injector is None:
            self._injector = make_injector(self.server)
        return self._injector

    def prefetch_clipboard(self) -> None:
        """A recording went to the engine: save the clipboard's contents now, not on the way to the text, where
        the clipboard can say whether they changed since (X11; elsewhere saving costs 1-4 ms and waits for the
        paste). Not while a paste holds the clipboard: its transcript is no user's copy."""
        prefetch = getattr(self.clipboard, "prefetch", None)
        if prefetch is None or self.options.method != "paste" or not self.options.restore or self._offer is not None:
            return
        try:
            prefetch()
        except Exception as exc:  # the paste saves them itself, and reports what fails there
            log.warning("paste: could not save the clipboard early: %s", exc)

    def paste(self, text: str, language: str = "") -> None:
        """Insert `text` (in `language`, which the joining of dictations in a row reads: `continuation.py`)."""
        self.outcome = ""
        self._offer = None
        self._target = 0
        try:
            if self.options.method == "copy":
                self.clipboard.offer(text)
                self._leave(text)
                return self._finish(True, outcome=ON_CLIPBOARD)
            t0 = time.monotonic()
            target = self._target = self.injector.focused_window()
            # the text as it goes in: joined to the last paste where it goes on from it (not if it is left on the
            # clipboard for the user, below)
            sent = self.continuation.join(target, text, language) if self.options.space_between else text
            self.continuation.pasting()
            if self.options.method == "type":
                self.injector.type_text(sent)
                self._text = sent
                return self._finish(True, outcome=TYPED)
            window = self.injector.window_class()
            keys = paste_keys(self.options.keys, self.server, window)
            terminal = is_terminal(window)
            t1 = time.monotonic()
            self._snapshot = self.clipboard.snapshot(primary=terminal) if self.options.restore else None
            self._text = sent
            self._offer = self.clipboard.offer(sent, target_window=target, primary=terminal, watch=self._watch)
            t2 = time.monotonic()
            self._offer.keys_sent()  # reads from here on are the target's (Wayland's data-control tells no reader)
            self.injector.send(keys)
        except UserError as exc:
            if exc.code in ("no_injector", "paste_failed", "no_focus"):
                return self._keys_failed(text, exc)
            return self._finish(False, str(exc), FAILED)
        except Exception as exc:  # what no paste expects (a lost X connection, a bug) must still end the paste:
            log.exception("paste: failed")  # else the app stays "pasting" and no later dictation is pasted
            return self._keys_failed(text, _unexpected(exc))
        self._sent_at = time.monotonic()
        log.info("paste: sent %s to %s (window %.1f ms, clipboard %.1f ms, keys %.1f ms)", keys, window,
                 (t1 - t0) * 1000, (t2 - t1) * 1000, (self._sent_at - t2) * 1000)
        self._fallback.start()

    def _watch(self, offer: Offer) -> None:
        """Listen to an offer before it is published: its reads are served on another thread, and a read
        emitted before these connections would be lost (queued, they arrive once `paste` has returned)."""
        offer.fetched.connect(self._fetched)
        if hasattr(offer, "read_by_other"):
            offer.read_by_other.connect(self._read_by_other)

    def _fetched(self) -> None:
        if self._offer is None:
            return
        if not self._settle.isActive():
            log.info("paste: target read the clipboard after %.1f ms", (time.monotonic() - self._sent_at) * 1000)
        self._fallback.stop()
        self._settle.start()  # restart: wait until the target has stopped reading

    def _read_by_other(self, window: int) -> None:
        if window:
            log.info("paste: window 0x%x (not the target) read the clipboard; not counted as the paste", window)
        else:  # Wayland names no reader: a read before the paste key (a clipboard manager's)
            log.info("paste: the clipboard was read before the paste key was sent; not counted as the paste")

    def _settled(self) -> None:
        self._give_back()
        self._finish(True, outcome=PASTED)

    def _give_back(self) -> None:
        """Put back what the clipboard held, unless someone copied something since our offer."""
        offer, self._offer = self._offer, None
        if self.options.restore and self.clipboard.still_ours(offer):
            self.clipboard.restore(self._snapshot, offer)
        self._snapshot = None

    def _not_taken(self) -> None:
        if self.server == "x11" and self._busy_target():
            log.info("paste: the target has not handled its events yet (busy); waiting for its paste")
            return self._fallback.start()
        if self._read_after_all():
            log.info("paste: the target read the clipboard as it answered; not typing the text")
            return self._fetched()
        if self.server == "x11":  # XTest types into any X11 window that takes keys
            log.info("paste: the target read nothing in %d ms; typing the text instead", self.FALLBACK_MS)
            try:
                self.injector.type_text(self._text)
            except Exception as exc:  # UserError, or what no typing expects: the text stays on the clipboard
                log.warning("paste: typing failed too: %s", exc if isinstance(exc, UserError) else _unexpected(exc))
            else:
                self._give_back()
                return self._finish(True, outcome=TYPED)
        self._offer = self._snapshot = None
        self._leave(self._text)
        self._finish(False, "No window took the text, so it was left on the clipboard: click where it should go "
                            "and paste it yourself.", ON_CLIPBOARD)

    def _read_after_all(self) -> bool:
        """The target read the clipboard just now, as it answered `_busy_target`'s ping: its read came before its
        answer, but on the selection thread's connection, whose news of it (`fetched`) waits behind this call.
        Typing then would put the text in twice. Asked where the clipboard can tell (X11's own selections)."""
        read_by_target = getattr(self.clipboard, "read_by_target", None)
        if read_by_target is None or self._offer is None:
            return False
        try:
            return read_by_target(self._offer)
        except Exception as exc:  # nothing can be told: go on as if unread
            log.warning("paste: could not ask whether the target read the clipboard: %s", exc)
            return False

    def _busy_target(self) -> bool:
        """The target has not got to the paste key yet: it does not answer whether it handles its events (X11's
        _NET_WM_PING). Typing then put the text after the old clipboard, which its late paste read once put back."""
        answers = getattr(self.injector, "answers", None)
        if answers is None or not self._target or time.monotonic() - self._sent_at > self.PATIENCE_S:
            return False
        try:
            return answers(self._target, self.PING_S) is False
        except Exception as exc:  # nothing can be told: type, as for a window that takes no ping
            log.warning("paste: could not ask the target whether it is busy: %s", exc)
            return False

    def _keys_failed(self, text: str, exc: UserError) -> None:
        """No keystroke could be sent (or typed): the text goes, or stays, on the clipboard for the user to
        paste, with a one-line notice that says so; never dropped."""
        try:
            if self._offer is None:  # typing failed, or the keys failed before the offer
                self.clipboard.offer(text)
            self._leave(text)
        except Exception as clipboard:
            reason = clipboard if isinstance(clipboard, UserError) else _unexpected(clipboard)
            return self._finish(False, f"{exc.message} {reason.message}", FAILED)
        finally:
            self._offer = self._snapshot = None
        message = f"{exc.message.rstrip('.')}. The text is on the clipboard: paste it yourself."
        log.warning("paste: %s", message)
        self._finish(False, message, ON_CLIPBOARD)

    def _leave(self, text: str) -> None:
        """The text stays for the user to paste by hand: a one-paste offer (wl-copy) becomes a lasting one."""
        keep = getattr(self.clipboard, "keep", None)
        if keep is not None:
            keep(text)

    def close(self) -> None:
        """At exit: a clipboard this process serves (Wayland's data-control) is handed to one that outlives it, and
        the keycodes typing lent to characters are given back (X11)."""
        close = getattr(self.clipboard, "close", None)
        if close is not None:
            close()
        close = getattr(self._injector, "close", None)
        if close is not None:
            close()

    def _finish(self, ok: bool, message: str = "", outcome: str = PASTED) -> None:
        self.outcome = outcome
        self.continuation.pasted(self._target, self._text if outcome in (PASTED, TYPED) else None,
                                 typed=outcome == TYPED)
        self.finished.emit(ok, message)


def _unexpected(exc: Exception) -> UserError:
    return UserError(f"The text could not be put into the window ({first_line(exc)}).", code="paste_failed")


def _clipboard_for(server: str) -> Clipboard:
    if server == "x11":
        from app.desktop.x11_clipboard import X11Clipboard

        return X11Clipboard()
    if server == "wayland":
        try:
            from app.desktop.wayland_clipboard import DataControlClipboard
        except ImportError as exc:  # pywayland missing (an install without it): wl-copy's path
            log.info("clipboard: no pywayland (%s); using wl-clipboard", exc)
        else:
            if DataControlClipboard.available():
                return DataControlClipboard()
        if WlClipboard.available():
            return WlClipboard()
    return QtClipboard()
