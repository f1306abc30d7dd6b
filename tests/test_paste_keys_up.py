"""The paste keystroke waits for the user's modifiers to come up (at most `Paster.KEYS_UP_MS`).

A transcript can be ready before the fingers leave Ctrl and Shift of the hotkey; XTest cannot lift
a key held on the real keyboard, so Ctrl+V sent then would reach the editor as Ctrl+Shift+V. The real
X11 injector answers `modifiers_held` from the X server's key map (the desktop tests run it); here a
stand-in injector's keys come up at a set time and a stand-in clipboard records the offer, so that
the wait itself is what is tested, with the real Paster and Qt timers.
"""

from __future__ import annotations

import os
import time

import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from app.desktop.paste import PASTED, TYPED, PasteOptions, Paster

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class Offer(QObject):
    fetched = Signal()

    def keys_sent(self) -> None:
        pass


class Clipboard:
    """Holds one offer; `read()` is the target reading it."""

    def __init__(self) -> None:
        self.offer_: Offer | None = None

    def snapshot(self, primary: bool = False) -> object:
        return "before"

    def offer(self, text, *, target_window=0, primary=False, watch=None) -> Offer:
        self.offer_ = Offer()
        if watch is not None:
            watch(self.offer_)
        return self.offer_

    def still_ours(self, offer) -> bool:
        return True

    def restore(self, snapshot, offer) -> None:
        pass


class Keys:
    """Modifiers held until `up_at` (monotonic seconds); records when the keystroke or the typing went out."""

    def __init__(self, up_at: float, clipboard: Clipboard) -> None:
        self.up_at, self.clipboard = up_at, clipboard
        self.sent_at: float | None = None
        self.typed: str | None = None

    def warm_up(self) -> None:
        pass

    def focused_window(self) -> int:
        return 7

    def window_class(self) -> str:
        return "Editor"

    def modifiers_held(self) -> bool:
        return time.monotonic() < self.up_at

    def send(self, keys: str) -> None:
        self.sent_at = time.monotonic()
        self.clipboard.offer_.fetched.emit()  # the target reads at once

    def type_text(self, text: str) -> None:
        self.sent_at, self.typed = time.monotonic(), text


@pytest.fixture(scope="module")
def qapp():
    return QApplication.instance() or QApplication([])


def run(qapp, paster: Paster, text: str, timeout: float = 5.0) -> tuple[bool, str]:
    done = []
    paster.finished.connect(lambda ok, message: done.append((ok, message)))
    paster.paste(text)
    deadline = time.monotonic() + timeout
    while not done and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.002)
    assert done, "the paste never finished"
    return done[0]


@pytest.mark.parametrize("method", ["paste", "type"])
def test_the_keys_go_out_once_the_modifiers_are_up(qapp, method):
    clipboard = Clipboard()
    start = time.monotonic()
    keys = Keys(start + 0.25, clipboard)
    paster = Paster(PasteOptions(method=method), server="x11", injector=keys, clipboard=clipboard)
    assert run(qapp, paster, "hello") == (True, "")
    assert paster.outcome == (PASTED if method == "paste" else TYPED)
    assert keys.up_at <= keys.sent_at < keys.up_at + 0.2  # not before the keys were up, and soon after


def test_modifiers_held_longer_than_the_wait_do_not_hold_the_text_back(qapp):
    clipboard = Clipboard()
    start = time.monotonic()
    keys = Keys(start + 60, clipboard)  # a key the user keeps down
    paster = Paster(PasteOptions(), server="x11", injector=keys, clipboard=clipboard)
    assert run(qapp, paster, "hello") == (True, "")
    waited = keys.sent_at - start
    assert Paster.KEYS_UP_MS / 1000 <= waited < Paster.KEYS_UP_MS / 1000 + 0.3


def test_a_read_before_the_keystroke_is_not_the_paste(qapp):
    """A target that reads the clipboard on its own while the keys are held has not pasted yet: the paste
    finishes only after the keystroke and the read it brings."""
    clipboard = Clipboard()
    keys = Keys(time.monotonic() + 0.3, clipboard)
    paster = Paster(PasteOptions(), server="x11", injector=keys, clipboard=clipboard)
    finished = []
    paster.finished.connect(lambda ok, message: finished.append((ok, time.monotonic())))
    paster.paste("hello")
    clipboard.offer_.fetched.emit()
    deadline = time.monotonic() + 5
    while not finished and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.002)
    assert finished and finished[0][0] and paster.outcome == PASTED
    assert keys.sent_at is not None and finished[0][1] >= keys.sent_at
