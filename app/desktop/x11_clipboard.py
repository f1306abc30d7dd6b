"""The transcript's selections on X11, owned through Xlib, so that we see who reads them.

Qt's clipboard says that someone read the data, not who. A clipboard manager reads every new
clipboard at once, as does an `xclip -o` typed by hand: counted as "the target pasted", the
clipboard was restored before the target had it and the history said Pasted for a paste that never
happened. Owning the selection ourselves, each SelectionRequest names its requestor window, and a
read counts as the paste only when that window belongs to the focused window's X client: the same
client id (the resource-id base the server gave that connection: `window & ~resource_id_mask`),
or the same `_NET_WM_PID`. Reads by anyone else are served and not counted.

Terminals of the xterm family paste PRIMARY (Shift+Insert), so the transcript is offered in both
CLIPBOARD and PRIMARY when asked. Besides the text, each selection carries the conventions that
tell clipboard managers the content is transient (`TRANSIENT_TARGETS`); managers that honour none
of them still store it, which is why a read is never trusted without its requestor.

The selections are served on this class's own thread and X connection (a target waits for the
reply, whatever the GUI thread is doing); the GUI thread hears of reads through Qt signals.

What the clipboard held is saved while the engine works (`X11Clipboard.prefetch`), not on the way
to the text: Qt reads each format from its owner, and a screenshot's image cost 8 ms (2 MB) to
25 ms (8 MB) there (docs/benchmarks.md, "Saving the clipboard"). The early copy serves only if the clipboard has not changed hands since, which the
XFixes extension tells: the server reports every new owner of CLIPBOARD (ours included) to the
selection thread, and a round trip before the paste makes sure a change made before it is counted.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
from collections.abc import Callable

from PySide6.QtCore import QMimeData, QObject, Signal
from PySide6.QtGui import QClipboard
from Xlib import X, Xatom, display, error  # this module is imported on X11 only
from Xlib.ext import xfixes
from Xlib.protocol import event as xevent
from Xlib.protocol import request as xrequest

from app.desktop.clipboard import TRANSIENT_TARGETS, QtClipboard

log = logging.getLogger(__name__)

_MODE = {"CLIPBOARD": QClipboard.Mode.Clipboard, "PRIMARY": QClipboard.Mode.Selection}
_TEXT_TARGETS = ("UTF8_STRING", "text/plain;charset=utf-8", "text/plain", "STRING", "TEXT")


class SelectionOffer(QObject):
    """One transcript on offer. `fetched` fires for each read by the target window's client, `read_by_other`
    (with the reader's window id) for each read by anyone else."""

    fetched = Signal()
    read_by_other = Signal(int)

    def __init__(self, text: str, target_window: int, selections: tuple[str, ...]) -> None:
        super().__init__()
        self.text, self.target_window, self.selections = text, target_window, selections
        self.target_reads = 0  # counted on the selection thread as each read is served, before `fetched` is queued

    def keys_sent(self) -> None:
        """Nothing to mark: on X11 each read names its reader (the paster calls this on every offer)."""


class X11Selections:
    """Owns CLIPBOARD / PRIMARY with one offer at a time and serves every request for them."""

    def __init__(self) -> None:
        self._dpy = display.Display()
        self._window = self._dpy.screen().root.create_window(0, 0, 1, 1, 0, 0, X.InputOnly, X.CopyFromParent,
                                                            event_mask=X.PropertyChangeMask)
        self._atoms: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._client_mask = self._dpy.display.info.resource_id_mask
        self._offer: SelectionOffer | None = None
        self._target_client = 0
        self._target_pid: int | None = None
        self._owned: dict[int, int] = {}  # selection atom -> the timestamp we took it at
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._done = threading.Event()
        for name in ("CLIPBOARD", "PRIMARY"):  # interned before the thread starts: `owns` reads them
            self._atom(name)
        self._changes = 0  # how often CLIPBOARD changed hands (ours included), counted by the thread
        self._change_event = self._watch_clipboard()
        threading.Thread(target=self._run, name="x11-selections", daemon=True).start()

    # ---- the GUI thread -----------------------------------------------------------------------
    def offer(self, offer: SelectionOffer) -> None:
        """Take the selections for `offer`; returns once we own them (or another program kept them)."""
        self._call("offer", offer)

    def held_text(self, name: str) -> str | None:
        """The text we serve in selection `name` ("CLIPBOARD", "PRIMARY"), or None when another program owns it."""
        offer = self._offer
        return offer.text if offer is not None and self._atoms[name] in self._owned else None

    def owns(self, offer: SelectionOffer) -> bool:
        """True while `offer` is on the CLIPBOARD: nobody has copied anything since.

        Asked after a round trip through the selection thread (`_sync`): a copy the server has already
        seen is then known even when the thread had not yet handled the server's news of it (busy
        serving a large read, say). Without it, a copy made as the paster gave the clipboard back was
        taken for ours, and the restore tried to put the old clipboard over it."""
        if self._offer is not offer:
            return False
        self._call("sync", None)
        return self._offer is offer and self._atoms["CLIPBOARD"] in self._owned

    def read_by_target(self, offer: SelectionOffer) -> bool:
        """Whether the target has read `offer`, counting every read the server had passed on before this call
        (a round trip through the selection thread): `fetched` is queued to the GUI thread, which may be busy
        deciding what to do about a target that has read nothing yet."""
        self._call("sync", None)
        return offer.target_reads > 0

    def disown(self, offer: SelectionOffer, selections: tuple[str, ...]) -> None:
        """Leave these selections empty (what was there before the transcript was nothing)."""
        if self._offer is offer:
            self._call("disown", selections)

    def changes(self) -> int | None:
        """How often CLIPBOARD has changed hands since this connection began watching, any change made before
        this call included (it waits for a round trip to the X server: the server sends the change's event
        before its reply); None where the server has no XFixes to tell."""
        if self._change_event is None:
            return None
        self._call("sync", None)
        return self._changes

    def _watch_clipboard(self) -> int | None:
        """Ask the server for an event at each change of CLIPBOARD's owner; the event's type, or None."""
        if not self._dpy.has_extension("XFIXES"):
            return None
        self._dpy.xfixes_query_version()  # the protocol wants it first
        mask = (xfixes.XFixesSetSelectionOwnerNotifyMask | xfixes.XFixesSelectionWindowDestroyNotifyMask
                | xfixes.XFixesSelectionClientCloseNotifyMask)
        self._dpy.xfixes_select_selection_input(self._window, self._atoms["CLIPBOARD"], mask)
        return self._dpy.query_extension("XFIXES").first_event + xfixes.XFixesSelectionNotify

    def _call(self, command: str, value) -> None:
        self._done.clear()
        self._commands.put((command, value))
        os.write(self._wake_w, b"x")
        self._done.wait(5)

    # ---- the selection thread -----------------------------------------------------------------
    def _run(self) -> None:
        fd = self._dpy.fileno()
        while True:
            while self._dpy.pending_events():
                self._event(self._dpy.next_event())
            ready, _, _ = select.select([fd, self._wake_r], [], [], 1.0)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            while not self._commands.empty():
                command, value = self._commands.get()
                try:
                    {"offer": self._take, "disown": self._release, "sync": self._sync}[command](value)
                except Exception:  # the paste then finds the selection not ours and says so
                    log.exception("clipboard: could not %s the selections", command)
                self._done.set()

    def _take(self, offer: SelectionOffer) -> None:
        self._release(tuple(name for name in ("CLIPBOARD", "PRIMARY") if name not in offer.selections))
        self._offer = offer
        self._target_client = offer.target_window & ~self._client_mask
        self._target_pid = self._pid(offer.target_window) if offer.target_window else None
        now = self._server_time()
        for name in offer.selections:
            atom = self._atom(name)
            self._window.set_selection_owner(atom, now)
            if self._dpy.get_selection_owner(atom) == self._window:
                self._owned[atom] = now
            else:
                self._owned.pop(atom, None)
                log.warning("clipboard: another program kept the %s selection", name)
        self._dpy.flush()

    def _release(self, selections: tuple[str, ...]) -> None:
        for atom in [self._atom(name) for name in selections if self._atom(name) in self._owned]:
            xrequest.SetSelectionOwner(display=self._dpy.display, window=X.NONE, selection=atom,
                                       time=self._owned.pop(atom))
        self._dpy.flush()

    def _sync(self, _: None) -> None:
        """A round trip, then the events it brought in (a change of CLIPBOARD's owner among them)."""
        self._dpy.sync()
        while self._dpy.pending_events():
            self._event(self._dpy.next_event())

    def _server_time(self) -> int:
        """A real timestamp for SetSelectionOwner (ICCCM): the time of a property change on our window."""
        atom = self._atom("DICTATE_TIMESTAMP")
        self._window.change_property(atom, atom, 8, b"")
        while True:
            event = self._dpy.next_event()
            if event.type == X.PropertyNotify and event.window == self._window and event.atom == atom:
                return event.time
            self._event(event)

    def _event(self, event) -> None:
        try:
            if event.type == X.SelectionRequest:
                self._serve(event)
            elif event.type == X.SelectionClear:
                self._owned.pop(event.atom, None)
            elif event.type == self._change_event and event.selection == self._atoms["CLIPBOARD"]:
                self._changes += 1
        except Exception:  # one bad request must not stop the serving of the others
            log.exception("clipboard: could not handle %s", event.__class__.__name__)

    def _serve(self, request) -> None:
        """Answer one SelectionRequest (ICCCM 2.2): write the property on the requestor, then notify it."""
        offer = self._offer
        prop = request.property or request.target  # obsolete clients leave the property None
        target = self._name(request.target)
        requestor = request.requestor  # a Window object
        owned_since = self._owned.get(request.selection)
        gone = error.CatchError(error.BadWindow)  # a requestor that went away meanwhile
        refuse = offer is None or owned_since is None or (request.time != X.CurrentTime and request.time < owned_since)
        try:
            if refuse:
                prop = X.NONE
            elif target == "TARGETS":
                names = ("TARGETS", "TIMESTAMP", *_TEXT_TARGETS, *TRANSIENT_TARGETS)
                requestor.change_property(prop, Xatom.ATOM, 32, [self._atom(n) for n in names], onerror=gone)
            elif target == "TIMESTAMP":
                requestor.change_property(prop, Xatom.INTEGER, 32, [owned_since], onerror=gone)
            elif target in _TEXT_TARGETS:
                latin = target in ("STRING", "TEXT")
                data = offer.text.encode("latin-1", "replace") if latin else offer.text.encode("utf-8")
                kind = Xatom.STRING if latin else request.target
                requestor.change_property(prop, kind, 8, data, onerror=gone)
            elif target in TRANSIENT_TARGETS:
                requestor.change_property(prop, request.target, 8, TRANSIENT_TARGETS[target], onerror=gone)
            else:
                prop = X.NONE
            requestor.send_event(xevent.SelectionNotify(time=request.time, requestor=requestor,
                                                        selection=request.selection, target=request.target,
                                                        property=prop), event_mask=0, onerror=gone)
            self._dpy.flush()
        except Exception as exc:  # the requestor went away meanwhile: nothing to serve
            log.debug("clipboard: request from 0x%x not served: %s", requestor.id, exc)
            return
        if prop != X.NONE and target in _TEXT_TARGETS:
            if self._by_target(requestor.id):
                offer.target_reads += 1
                offer.fetched.emit()
            else:
                offer.read_by_other.emit(requestor.id)

    def _by_target(self, window: int) -> bool:
        if not self._target_client:
            return False
        if window & ~self._client_mask == self._target_client:
            return True
        return self._target_pid is not None and self._pid(window) == self._target_pid

    def _pid(self, window: int) -> int | None:
        try:
            prop = self._dpy.create_resource_object("window", window).get_full_property(
                self._atom("_NET_WM_PID"), X.AnyPropertyType)
        except Exception:  # a window that is gone has no pid
            return None
        return int(prop.value[0]) if prop is not None and len(prop.value) else None

    def _atom(self, name: str) -> int:
        if name not in self._atoms:
            self._atoms[name] = self._dpy.intern_atom(name)
            self._names[self._atoms[name]] = name
        return self._atoms[name]

    def _name(self, atom: int) -> str:
        if atom not in self._names:
            self._names[atom] = self._dpy.get_atom_name(atom)
            self._atoms[self._names[atom]] = atom
        return self._names[atom]


class X11Clipboard:
    """The `Clipboard` of paste.py on X11: our own selection owner for the transcript, Qt for saving and
    putting back what was there before (every format its owner offered)."""

    def __init__(self) -> None:
        self._qt = QtClipboard()
        self._selections: X11Selections | None = None
        self._early: tuple[int, QMimeData | None] | None = None  # (changes when saved, CLIPBOARD's contents)

    def prefetch(self) -> None:
        """Save what CLIPBOARD holds now, while the engine works, for the next `snapshot` (module docstring)."""
        changes = self._open().changes()
        self._early = None if changes is None else (changes, self._saved("CLIPBOARD"))

    def snapshot(self, primary: bool = False) -> dict[str, object]:
        """What each selection holds now: CLIPBOARD's early copy if nothing changed hands since it was taken."""
        early, self._early = self._early, None
        names = ("CLIPBOARD", "PRIMARY") if primary else ("CLIPBOARD",)
        if early is not None and early[0] == self._open().changes():
            return {name: early[1] if name == "CLIPBOARD" else self._saved(name) for name in names}
        return {name: self._saved(name) for name in names}

    def _saved(self, name: str) -> QMimeData | None:
        """A copy of selection `name`. Our own earlier offer (a transcript left on the clipboard) is copied without
        asking X: Qt would ask our selection thread while holding the GIL that thread needs to answer, and wait
        out its 5 s timeout."""
        return self._own_text(name) or self._qt.snapshot(mode=_MODE[name])

    def _open(self) -> X11Selections:
        if self._selections is None:
            self._selections = X11Selections()
        return self._selections

    def _own_text(self, name: str) -> QMimeData | None:
        text = self._selections.held_text(name) if self._selections is not None else None
        if text is None:
            return None
        data = QMimeData()
        data.setText(text)
        return data

    def offer(self, text: str, *, target_window: int = 0, primary: bool = False,
              watch: Callable[[SelectionOffer], None] | None = None) -> SelectionOffer:
        offer = SelectionOffer(text, target_window, ("CLIPBOARD", "PRIMARY") if primary else ("CLIPBOARD",))
        if watch is not None:
            watch(offer)  # before the selection thread can serve a read of it
        self._open().offer(offer)
        return offer

    def still_ours(self, offer: SelectionOffer) -> bool:
        return self._selections is not None and self._selections.owns(offer)

    def read_by_target(self, offer: SelectionOffer) -> bool:
        """Whether the target has read `offer` by now, `fetched` not yet handled or not (`X11Selections.read_by_target`)."""
        return self._selections is not None and self._selections.read_by_target(offer)

    def restore(self, snapshot: dict[str, object], offer: SelectionOffer) -> None:
        empty = tuple(name for name, data in snapshot.items() if data is None)
        if empty and self._selections is not None:
            self._selections.disown(offer, empty)
        for name, data in snapshot.items():
            if data is not None:
                self._qt.put(data, _MODE[name])
