"""The clipboard side of pasting: save what was there, offer the transcript, see it taken, restore.

The restore must wait until the target has read the transcript: restoring after a fixed delay is
the most reported bug of dictation apps (the old clipboard gets pasted). So an `Offer` tells when
a paste target fetched the data:

- Qt (X11, macOS, Windows, Wayland via Qt): the clipboard serves data lazily. When a target asks
  (on X11: its SelectionRequest for UTF8_STRING), Qt calls `QMimeData.retrieveData` on our object,
  on the GUI thread, right before it writes the reply. Overriding it observes the real read.
- Wayland with wl-clipboard: `wl-copy --paste-once` serves exactly one paste and exits, so its
  exit is the observation (and Qt, unfocused, may not be allowed to set the clipboard at all).

The transcript is marked with `x-kde-passwordManagerHint: secret`, which clipboard managers
(Klipper, CopyQ, ...) honour by not recording it: it is transient. On X11 the transcript is served
by `x11_clipboard.py` instead, which also tells the target's reads from everyone else's.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Protocol

from PySide6.QtCore import QMimeData, QObject, QProcess, Signal
from PySide6.QtGui import QClipboard, QGuiApplication

from app.errors import UserError

log = logging.getLogger(__name__)
TRANSIENT_HINT = ("x-kde-passwordManagerHint", b"secret")
# the text types a selection is offered and read as, most preferred first when reading
TEXT_TYPES = ("text/plain;charset=utf-8", "text/plain", "UTF8_STRING", "STRING", "TEXT")
# type name -> value: the "do not keep this" hints of the clipboard managers in use, offered with the
# transcript by our own selection owners (X11 and Wayland's data-control)
TRANSIENT_TARGETS = {
    TRANSIENT_HINT[0]: TRANSIENT_HINT[1],  # Klipper, CopyQ, GPaste, cliphist, wl-clip-persist, KeePassXC
    "application/x-nspasteboard-concealed-type": b"secret",  # nspasteboard.org's concealed type, as a MIME type
    "application/x-nspasteboard-transient-type": b"",  # ... and its transient type
    'application/x-qt-windows-mime;value="Clipboard Viewer Ignore"': b"",  # the Windows convention, as Qt names it
}


# Qt's name for "an image", listed beside the owner's own image/png (or jpeg...): copying it read the image from
# its owner twice (a screenshot: 2-8 MB each time), and holding it made Qt offer twenty image types after the
# restore that the owner never did; the owner's own formats and bytes are what comes back.
QT_IMAGE = "application/x-qt-image"


class Offer(QObject):
    """The transcript as placed on the clipboard; `fetched` fires each time a target reads it."""

    fetched = Signal()

    def keys_sent(self) -> None:
        """Nothing to mark: Qt's and wl-copy's reads cannot be told apart by time (see wayland_clipboard.py)."""


class Clipboard(Protocol):
    """`offer` puts the text on the clipboard (and PRIMARY where asked, on X11). Only X11 tells who read
    it (`x11_clipboard.py`, counting reads by `target_window`'s client); here any read counts."""

    def snapshot(self, primary: bool = False) -> object: ...

    def offer(self, text: str, *, target_window: int = 0, primary: bool = False,
              watch: Callable[[Offer], None] | None = None) -> Offer:
        """Put `text` on offer; `watch(offer)` runs before any reader can see it, which is where its signals
        are connected: a read served on another thread before the connection would be lost."""

    def still_ours(self, offer: Offer) -> bool: ...

    def restore(self, snapshot: object, offer: Offer) -> None: ...


class _ObservedMimeData(QMimeData):
    """QMimeData that reports when its text is read, which Qt does only when a target asks for it."""

    def __init__(self, text: str, offer: Offer) -> None:
        super().__init__()
        self.setText(text)
        self.setData(TRANSIENT_HINT[0], TRANSIENT_HINT[1])
        self._offer = offer

    def retrieveData(self, mimetype, preferred_type):  # noqa: N802 (Qt's name)
        if mimetype.startswith("text/plain"):
            self._offer.fetched.emit()
        return super().retrieveData(mimetype, preferred_type)


class QtClipboard:
    """The system clipboard through Qt; snapshots keep every format the previous owner offered."""

    def __init__(self) -> None:
        self._clipboard: QClipboard = QGuiApplication.clipboard()
        self._mime: _ObservedMimeData | None = None

    def snapshot(self, primary: bool = False, mode: QClipboard.Mode = QClipboard.Mode.Clipboard) -> QMimeData | None:
        """A copy of the current contents (None when empty), taken before we overwrite them."""
        current = self._clipboard.mimeData(mode)
        if current is None or not current.formats():
            return None
        copy = QMimeData()
        formats = current.formats()
        for fmt in formats:
            if "/" not in fmt:  # real MIME types only; X11 also lists pseudo-targets such as TARGETS
                continue
            if fmt == QT_IMAGE and any(f.startswith("image/") for f in formats):
                continue  # Qt's alias of the image: see QT_IMAGE
            copy.setData(fmt, current.data(fmt))
        return copy

    def offer(self, text: str, *, target_window: int = 0, primary: bool = False,
              watch: Callable[[Offer], None] | None = None) -> Offer:
        offer = Offer()
        if watch is not None:
            watch(offer)
        self._mime = _ObservedMimeData(text, offer)
        self._clipboard.setMimeData(self._mime)
        return offer

    def still_ours(self, offer: Offer) -> bool:
        """True while nobody copied anything since our offer (then restoring would destroy their copy)."""
        mime = self._mime
        return (mime is not None and mime._offer is offer and self._clipboard.ownsClipboard()
                and self._clipboard.mimeData() is mime)

    def restore(self, snapshot: QMimeData | None, offer: Offer) -> None:
        self._mime = None
        if snapshot is None:
            self._clipboard.clear()
        else:
            self._clipboard.setMimeData(snapshot)

    def put(self, data: QMimeData, mode: QClipboard.Mode) -> None:
        """Hand saved contents back to the clipboard or (on X11) the PRIMARY selection."""
        self._clipboard.setMimeData(data, mode)


class WlClipboard:
    """wl-copy / wl-paste (the wl-clipboard package), for Wayland where Qt may not own the clipboard."""

    READY_S = 2.0  # how long to wait for wl-copy to hold the selection before the paste key is sent

    def __init__(self) -> None:
        self._process: QProcess | None = None
        self._offers = 0

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("wl-copy") and shutil.which("wl-paste"))

    def snapshot(self, primary: bool = False) -> tuple[str, bytes] | None:
        types = subprocess.run(["wl-paste", "--list-types"], capture_output=True, text=True, timeout=5)
        if types.returncode != 0 or not types.stdout.split():
            return None
        offered = types.stdout.split("\n")
        mime = next((t for t in TEXT_TYPES if t in offered), offered[0])
        data = subprocess.run(["wl-paste", "--no-newline", "--type", mime], capture_output=True, timeout=5)
        return (mime, data.stdout) if data.returncode == 0 else None

    def offer(self, text: str, *, target_window: int = 0, primary: bool = False,
              watch: Callable[[Offer], None] | None = None) -> Offer:
        offer = Offer()
        if watch is not None:
            watch(offer)
        self._offers += 1
        # wl-copy offers any text/* type together with the usual text types, so a type of our own marks
        # this offer: when wl-paste lists it, the compositor holds our selection. Sending the paste key
        # before that pastes the previous clipboard (seen in the sway tests: wl-copy needs ~10-50 ms).
        marker = f"text/x-dictate-{os.getpid()}-{self._offers}"
        # Not parented to the offer: when nobody pastes, the text must stay offered after the paster
        # lets go of the offer. The next offer replaces (and so ends) this process.
        process = QProcess()
        process.finished.connect(offer.fetched)  # --paste-once exits after its one paste
        # --foreground: without it wl-copy forks and its parent exits at once, which would look like a paste
        process.start("wl-copy", ["--foreground", "--paste-once", "--type", marker])
        # wl-copy reads all of stdin before it offers anything; the waits push the text through now,
        # where QProcess would otherwise wait for the event loop this method is blocking
        process.waitForStarted(int(self.READY_S * 1000))
        process.write(text.encode("utf-8"))
        process.waitForBytesWritten(int(self.READY_S * 1000))
        process.closeWriteChannel()
        self._process = process
        deadline = time.monotonic() + self.READY_S
        while marker not in self._types():
            if process.waitForFinished(5):  # wl-copy gave up: nothing is on the clipboard
                error = bytes(process.readAllStandardError().data()).decode(errors="replace").strip()
                self._process = None
                raise UserError(f"The text could not be put on the clipboard (wl-copy: {error or process.exitCode()}).",
                                code="clipboard_failed")
            if time.monotonic() > deadline:
                log.warning("wl-copy did not take the clipboard within %.0f s; pasting anyway", self.READY_S)
                break
        return offer

    @staticmethod
    def _types() -> list[str]:
        done = subprocess.run(["wl-paste", "--list-types"], capture_output=True, text=True, timeout=5)
        return done.stdout.split("\n") if done.returncode == 0 else []

    def keep(self, text: str) -> None:
        """Offer `text` for any number of pastes: it was not pasted, and the user will paste it by hand (a
        one-paste offer would be gone after a single read, by anyone)."""
        if self._process is not None:
            self._process.blockSignals(True)  # its exit is not a paste
            self._process.kill()
            self._process.waitForFinished(1000)
            self._process = None
        subprocess.run(["wl-copy", "--type", "text/plain;charset=utf-8"], input=text.encode("utf-8"), timeout=5,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def still_ours(self, offer: Offer) -> bool:
        """After its one paste wl-copy leaves the clipboard empty; anything there now was copied by someone."""
        return subprocess.run(["wl-paste", "--list-types"], capture_output=True, timeout=5).returncode != 0

    def restore(self, snapshot: tuple[str, bytes] | None, offer: Offer) -> None:
        if snapshot is None:
            subprocess.run(["wl-copy", "--clear"], timeout=5)
        else:
            mime, data = snapshot
            subprocess.run(["wl-copy", "--type", mime], input=data, timeout=5)
