"""The clipboard on Wayland through the data-control protocol, so that every read is seen and served.

`wl-copy --paste-once` served one paste and its exit was taken as the target's read, but a clipboard
manager that reads each new clipboard (cliphist or clipman behind `wl-paste --watch`, Klipper, GPaste)
took that one paste: the target's Ctrl+V found nothing and the history said Pasted. Here the app
serves the selection itself, through `ext_data_control_v1` (the standard, sway 1.11+, KWin 6.2+) or
`zwlr_data_control_manager_v1` (wlroots and KWin before that): every read gets the text, each read
is seen, and a read counts as the paste only after the paste key was sent (`SelectionOffer.keys_sent`).
A manager reads at the moment the selection changes, before the key; Wayland does not say who reads.

The same connection saves what the clipboard held (read in-process, no wl-paste per dictation) and
puts it back. The connection and its events live on a thread of their own (a target waits for its
data, whatever the GUI thread is doing); the GUI thread hears of reads through Qt signals. Desktops
without either protocol (GNOME's Mutter) keep `WlClipboard` (wl-copy).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal
from pywayland.client import Display
from pywayland.protocol import ext_data_control_v1 as ext
from pywayland.protocol.wayland import WlSeat
from pywayland.protocol_core import Interface

from app.desktop.clipboard import TEXT_TYPES, TRANSIENT_TARGETS
from app.errors import UserError

log = logging.getLogger(__name__)
READ_S = 1.0  # how long a saved clipboard may take to arrive from its owner before it is given up
READ_LIMIT = 64 << 20  # a clipboard larger than this (an image, say) is not saved: 64 MiB
UNKNOWN = object()  # a snapshot that could not be taken: the clipboard is then not put back


class ZwlrDataControlManagerV1(Interface):
    """wlroots' data-control manager. `ext_data_control_v1` was standardised from it: the same requests
    and events in the same order, so pywayland's generated ext classes speak it once the manager is
    bound under this name (the only name that goes over the wire; the objects it makes are typed by it)."""

    name = "zwlr_data_control_manager_v1"
    version = 2  # 2 adds the primary selection


ZwlrDataControlManagerV1.requests = ext.ExtDataControlManagerV1.requests
ZwlrDataControlManagerV1.events = ext.ExtDataControlManagerV1.events
ZwlrDataControlManagerV1._gen_c()


class _ZwlrManagerProxy(ext.ExtDataControlManagerV1Proxy):
    interface = ZwlrDataControlManagerV1


ZwlrDataControlManagerV1.proxy_class = _ZwlrManagerProxy
MANAGERS = {"ext_data_control_manager_v1": ext.ExtDataControlManagerV1, ZwlrDataControlManagerV1.name:
            ZwlrDataControlManagerV1}


class SelectionOffer(QObject):
    """One transcript on offer. `fetched` fires for each read of its text after the paste key was sent,
    `read_by_other` (0: Wayland names no reader) for each read before it."""

    fetched = Signal()
    read_by_other = Signal(int)

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.sent = False  # set from the GUI thread, read on the selection thread

    def keys_sent(self) -> None:
        """The paste key goes out now: from here on a read is the target's."""
        self.sent = True


@dataclass(frozen=True)
class Saved:
    """What the clipboard held: its data under each type it was offered as (text aliases share one read)."""

    types: dict[str, bytes]


class DataControl:
    """One Wayland connection, its data-control device and the thread that serves our selection.

    One at a time per process: pywayland gives an object the compositor creates (an offer) the
    connection of the first live registry it knows, whichever connection the object came on. With two
    connections, one's offers were freed by the other's thread (a crash, seen in the suite)."""

    def __init__(self) -> None:
        self._display = Display()
        self._display.connect()
        globals_: dict[str, tuple[int, int]] = {}

        def announced(_registry, name: int, interface: str, version: int) -> None:  # a handler returns None
            globals_.setdefault(interface, (name, version))

        registry = self._display.get_registry()
        registry.dispatcher["global"] = announced
        self._display.roundtrip()
        kind = next((k for k in MANAGERS if k in globals_), None)
        if kind is None or "wl_seat" not in globals_:
            self._display.disconnect()
            raise OSError("this compositor offers no data-control protocol")
        name, version = globals_[kind]
        manager = registry.bind(name, MANAGERS[kind], min(version, MANAGERS[kind].version))
        seat = registry.bind(globals_["wl_seat"][0], WlSeat, 1)
        self.protocol = kind
        # pywayland finds the connection of the objects an event brings (the offers) through a live
        # registry, so the registry must outlive this method
        self._registry, self._seat = registry, seat
        self._device = manager.get_data_device(seat)
        self._manager = manager
        self._selection: tuple[object, list[str]] | None = None  # the current offer and its types
        self._pending: dict[object, list[str]] = {}
        self._device.dispatcher["data_offer"] = self._data_offer
        self._device.dispatcher["selection"] = self._selection_changed
        self._device.dispatcher["primary_selection"] = self._primary_changed
        self._primary = None
        self._source = None  # ours, while it is the selection
        self._serving: SelectionOffer | Saved | None = None
        self._display.roundtrip()  # the first selection event arrives with the device
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self.lost: str = ""  # why the connection ended (the compositor went away), once it has
        threading.Thread(target=self._run, name="wayland-selection", daemon=True).start()

    # ---- the GUI thread -----------------------------------------------------------------------
    def call(self, function: Callable, *args):
        """Run `function(*args)` on the selection thread and return its result (or raise its error)."""
        if self.lost:
            raise OSError(self.lost)
        done, box = threading.Event(), {}
        self._commands.put((function, args, done, box))
        os.write(self._wake_w, b"x")
        if not done.wait(5):
            raise TimeoutError("the Wayland selection thread did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    # ---- the selection thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # the compositor closed the connection: nothing to serve any more
            self.lost = f"the Wayland connection was lost ({exc})"
            log.warning("clipboard: %s", self.lost)
        finally:
            # Freed here, in order: pywayland frees each object and the connection when Python collects
            # them, and collected together (they form cycles) an object could be freed after its
            # connection: a crash, seen in the suite once a compositor had gone away. The objects are then
            # let go, the registry above all (see the class docstring).
            self._display.disconnect()
            self._registry = self._seat = self._device = self._manager = None
            self._selection, self._primary, self._pending = None, None, {}
            self._source = self._serving = None

    def _serve(self) -> None:
        fd = self._display.get_fd()
        while True:
            self._display.dispatch(block=False)
            self._display.flush()
            ready, _, _ = select.select([fd, self._wake_r], [], [], 1.0)
            if fd in ready:
                self._display.read()
                self._display.dispatch(block=False)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            while not self._commands.empty():
                function, args, done, box = self._commands.get()
                try:
                    box["value"] = function(*args)
                except Exception as exc:  # handed to the caller on the GUI thread
                    box["error"] = exc
                self._display.flush()
                done.set()

    def _data_offer(self, _device, offer) -> None:
        types: list[str] = []
        self._pending[offer] = types
        offer.dispatcher["offer"] = lambda _o, mime: types.append(mime)

    def _selection_changed(self, _device, offer) -> None:
        if self._selection is not None:
            self._selection[0].destroy()
        self._selection = (offer, self._pending.pop(offer, [])) if offer is not None else None

    def _primary_changed(self, _device, offer) -> None:
        """The primary selection is not used (Wayland terminals paste the clipboard), but each of its
        offers must be let go when the next one comes."""
        self._pending.pop(offer, None)
        if self._primary is not None:
            self._primary.destroy()
        self._primary = offer

    def offer(self, serving: SelectionOffer | Saved) -> None:
        """Make `serving` the clipboard; returns once the compositor holds it."""
        source = self._manager.create_data_source()
        types = (*TEXT_TYPES, *TRANSIENT_TARGETS) if isinstance(serving, SelectionOffer) else tuple(serving.types)
        for mime in types:
            source.offer(mime)
        source.dispatcher["send"] = lambda s, mime, fd: self._send(s, serving, mime, fd)
        source.dispatcher["cancelled"] = self._cancelled
        self._device.set_selection(source)
        self._source, self._serving = source, serving
        self._display.roundtrip()  # set_selection is taken in order: after this the selection is ours

    def clear(self) -> None:
        self._device.set_selection(None)
        self._display.roundtrip()

    def owns(self, serving: SelectionOffer | Saved) -> bool:
        return self._source is not None and self._serving is serving

    def held(self) -> Saved | str | None:
        """What we serve as the clipboard now (a transcript's text, or saved data put back), else None."""
        serving = self._serving if self._source is not None else None
        return serving.text if isinstance(serving, SelectionOffer) else serving

    def current(self) -> Saved | str | None:
        """The clipboard as it is: our own transcript's text, another program's data, or None when empty."""
        if self._source is not None:
            return self.held()
        if self._selection is None or not self._selection[1]:
            return None
        offer, offered = self._selection
        text = next((t for t in TEXT_TYPES if t in offered), None)
        if text is None:  # no text (an image, say): the first type, as its owner prefers it
            data = self._receive(offer, offered[0])
            return Saved({offered[0]: data}) if data is not None else None
        data = self._receive(offer, text)
        if data is None:
            return None
        kept = {mime: data for mime in offered if mime in TEXT_TYPES}
        kept.update({mime: self._receive(offer, mime) or b"" for mime in offered if mime in TRANSIENT_TARGETS})
        return Saved(kept)

    def _receive(self, offer, mime: str) -> bytes | None:
        read, write = os.pipe()
        try:
            offer.receive(mime, write)
            self._display.flush()
        finally:
            os.close(write)  # libwayland sent a copy; EOF comes when the owner closes its end
        chunks, size, deadline = [], 0, time.monotonic() + READ_S
        try:
            while (left := deadline - time.monotonic()) > 0 and select.select([read], [], [], left)[0]:
                chunk = os.read(read, 1 << 16)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > READ_LIMIT:
                    break
                chunks.append(chunk)
        finally:
            os.close(read)
        log.warning("clipboard: the %s on the clipboard could not be saved (too large, or its owner did not send it)",
                    mime)
        return None

    def _send(self, source, serving: SelectionOffer | Saved, mime: str, fd: int) -> None:
        if isinstance(serving, Saved):
            data = serving.types.get(mime, b"")
        elif mime in TRANSIENT_TARGETS:
            data = TRANSIENT_TARGETS[mime]
        else:
            data = serving.text.encode("latin-1", "replace") if mime in ("STRING", "TEXT") else serving.text.encode()
        threading.Thread(target=_write_all, args=(fd, data), name="wayland-selection-send", daemon=True).start()
        if isinstance(serving, SelectionOffer) and mime in TEXT_TYPES:
            if serving.sent:
                serving.fetched.emit()
            else:
                serving.read_by_other.emit(0)

    def _cancelled(self, source) -> None:
        """Another program took the clipboard (or we replaced our own offer)."""
        if source is self._source:
            self._source = self._serving = None
        source.destroy()


def _write_all(fd: int, data: bytes) -> None:
    """Write on a thread of its own: a reader that takes its time must not hold up the others."""
    try:
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:  # the reader went away
        log.debug("clipboard: a read was not served: %s", exc)
    finally:
        os.close(fd)


class ClipboardUnreachable(Exception):
    """The compositor cannot be reached through data-control (gone, or not answering)."""


class DataControlClipboard:
    """The `Clipboard` of paste.py on Wayland compositors with a data-control protocol."""

    _shared: DataControl | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.connection()

    @classmethod
    def connection(cls) -> DataControl:
        """One connection per process (the dictation's paster and "Paste again" share it), made anew once
        the compositor has closed it (a compositor restarted under a running app)."""
        with cls._lock:
            if cls._shared is None or cls._shared.lost:
                cls._shared = DataControl()
            return cls._shared

    @classmethod
    def available(cls) -> bool:
        try:
            cls.connection()
        except Exception as exc:  # no compositor, or none with the protocol: wl-copy's path stays
            log.info("clipboard: no Wayland data-control (%s); using wl-clipboard", exc)
            return False
        return True

    def _call(self, method: str, *args):
        """`DataControl.<method>(*args)` on its thread; ClipboardUnreachable when the compositor is not there."""
        try:
            control = self.connection()
            return control.call(getattr(control, method), *args)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:  # pywayland: ValueError, RuntimeError
            raise ClipboardUnreachable(str(exc)) from exc

    def snapshot(self, primary: bool = False) -> Saved | str | None | object:
        """What the clipboard holds; UNKNOWN when it could not be read, and then nothing is put back."""
        try:
            return self._call("current")
        except ClipboardUnreachable as exc:
            log.warning("clipboard: could not save the clipboard: %s", exc)
            return UNKNOWN

    def offer(self, text: str, *, target_window: int = 0, primary: bool = False,
              watch: Callable[[SelectionOffer], None] | None = None) -> SelectionOffer:
        offer = SelectionOffer(text)
        if watch is not None:
            watch(offer)  # before the Wayland thread can serve a read of it
        try:
            self._call("offer", offer)
        except ClipboardUnreachable as exc:
            raise UserError(f"The text could not be put on the clipboard ({exc}).", code="clipboard_failed") from None
        return offer

    def keep(self, text: str) -> None:
        """The text stays for the user to paste by hand: ours serves every read, so only a selection that
        someone else took meanwhile needs offering again."""
        try:
            held = self._call("held")
        except ClipboardUnreachable:
            held = None  # offer() then says what went wrong
        if held != text:
            self.offer(text)

    def still_ours(self, offer: SelectionOffer) -> bool:
        try:
            return self._call("owns", offer)
        except ClipboardUnreachable:
            return False  # nothing is put back over what we can no longer see

    def restore(self, snapshot: Saved | str | None | object, offer: SelectionOffer) -> None:
        if snapshot is UNKNOWN:
            return
        saved = Saved({mime: snapshot.encode() for mime in TEXT_TYPES}) if isinstance(snapshot, str) else snapshot
        try:
            if saved is None:
                self._call("clear")
            else:
                self._call("offer", saved)
        except ClipboardUnreachable as exc:
            log.warning("clipboard: could not put the clipboard back: %s", exc)

    def close(self) -> None:
        """At exit: what we serve would be gone with us, so wl-copy (a process of its own) takes it over."""
        try:
            held = self._call("held")
        except ClipboardUnreachable:
            return
        if held is None or not shutil.which("wl-copy"):
            return
        mime, data = ("text/plain;charset=utf-8", held.encode()) if isinstance(held, str) else next(iter(held.types.items()))
        subprocess.run(["wl-copy", "--type", mime], input=data, timeout=5, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
