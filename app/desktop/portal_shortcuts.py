"""Global shortcuts on Wayland through the XDG desktop portal (org.freedesktop.portal.GlobalShortcuts).

Wayland gives ordinary clients no global keys, but desktops that implement this portal interface
(KDE Plasma 5.27+, GNOME 48+, Hyprland's portal) bind a shortcut for an app and report its press
(`Activated`) and release (`Deactivated`): a real push-to-talk key with nothing to configure
beyond confirming the binding the desktop offers. The conversation, on the session bus:

  CreateSession(options)                       -> Request; its Response carries session_handle
  BindShortcuts(session, [(id, props)], "", o) -> Request; its Response carries the bound shortcuts
  Activated / Deactivated(session, id, timestamp, options)   signals, for as long as the session lives

Each portal call answers with a Request object whose `Response(code, results)` signal comes
later; its path is predictable from our unique bus name and the `handle_token` we pass, so the
match is in place before the call (no race). The D-Bus side is jeepney (pure Python) on a thread of
its own: Qt's D-Bus module cannot build the portal's a(sa{sv}) arguments from Python (PySide6's
QDBusArgument produced an empty signature when tried), and a blocking loop on a thread hands each
event to the GUI thread through a queued signal with the time it arrived, as `hotkeys.py` does for
X11. No bus, no portal or a refused binding: `failed(message)`, and `hotkeys.py` falls back to
telling the user which command to bind.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from jeepney import DBusAddress, DBusErrorResponse, HeaderFields, MatchRule, Properties, message_bus, new_method_call
from jeepney.io.blocking import open_dbus_connection
from PySide6.QtCore import QObject, Signal

from app.desktop.keys import Combo

log = logging.getLogger(__name__)

PORTAL = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
INTERFACE = "org.freedesktop.portal.GlobalShortcuts"
REQUEST_INTERFACE = "org.freedesktop.portal.Request"
SHORTCUT_ID = "dictate"
REPLY_TIMEOUT_S = 120  # BindShortcuts may wait for the user to confirm the key in a desktop dialog

# XDG shortcut names ("shortcuts" specification: CTRL, SHIFT, ALT, LOGO and xkb key names)
_TRIGGER_NAMES = {"ctrl": "CTRL", "shift": "SHIFT", "alt": "ALT", "alt_gr": "ALT", "cmd": "LOGO", "space": "space",
                  "enter": "Return", "esc": "Escape", "tab": "Tab", "backspace": "BackSpace", "delete": "Delete",
                  "insert": "Insert", "home": "Home", "end": "End", "page_up": "Page_Up", "page_down": "Page_Down",
                  "up": "Up", "down": "Down", "left": "Left", "right": "Right", "pause": "Pause",
                  "print_screen": "Print", "menu": "Menu", "caps_lock": "Caps_Lock", "scroll_lock": "Scroll_Lock"}


def preferred_trigger(combo: Combo) -> str:
    """The combo in the portal's trigger syntax: <ctrl>+<shift>+space -> "CTRL+SHIFT+space".
    Sided modifiers lose their side: the shortcuts specification has none."""
    names = []
    for part in combo.parts:
        base = part.removesuffix("_l").removesuffix("_r") if part not in _TRIGGER_NAMES else part
        names.append(_TRIGGER_NAMES.get(base, base.upper() if base.startswith("f") and base[1:].isdigit() else base))
    return "+".join(dict.fromkeys(names))


class PortalShortcuts(QObject):
    """One GlobalShortcuts session with one shortcut. Signals (GUI thread, queued): `bound(trigger)`
    once the desktop assigned a key (trigger: the desktop's own description of it), `needs_key(message)`
    while it has assigned none (the session stays: a key assigned later arrives as `bound`), `activated(t)`
    and `deactivated(t)` with time.monotonic() of arrival, `failed(message)` when there is no portal
    or it refused."""

    bound = Signal(str)
    needs_key = Signal(str)
    activated = Signal(float)
    deactivated = Signal(float)
    failed = Signal(str)

    def __init__(self, combo: Combo, description: str = "Dictate: hold to talk, or tap to start and stop",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.trigger = preferred_trigger(combo)
        self.description = description
        self.session_handle = ""
        self.version = 0  # of the portal's GlobalShortcuts interface
        self._connection = None
        self._stopping = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="portal-shortcuts", daemon=True).start()

    def stop(self) -> None:
        """Close the session (the desktop drops the binding's events) and the bus connection."""
        self._stopping = True
        connection = self._connection
        if connection is not None:
            try:
                if self.session_handle:
                    session = DBusAddress(self.session_handle, bus_name=PORTAL, interface="org.freedesktop.portal.Session")
                    connection.send(new_method_call(session, "Close"))
                connection.close()
            except OSError:
                pass

    def _run(self) -> None:
        try:
            connection = self._connection = open_dbus_connection(bus="SESSION")
        except (OSError, KeyError, ValueError) as exc:
            self.failed.emit(f"No session bus, so the desktop's global shortcuts portal cannot be asked ({exc}).")
            return
        portal = DBusAddress(PORTAL_PATH, bus_name=PORTAL, interface=INTERFACE)
        try:
            self.version = connection.send_and_get_reply(Properties(portal).get("version"), timeout=10).body[0][1]
        except (DBusErrorResponse, TimeoutError, OSError) as exc:
            self.failed.emit(f"This desktop has no global shortcuts portal ({_first(exc)}).")
            return
        sender = connection.unique_name.lstrip(":").replace(".", "_")

        def request(method: str, signature: str, args: tuple, options: dict) -> dict:
            """One portal call and its Request's Response; raises RuntimeError when not granted."""
            token = f"dictate{secrets.token_hex(6)}"
            path = f"/org/freedesktop/portal/desktop/request/{sender}/{token}"
            rule = MatchRule(type="signal", interface=REQUEST_INTERFACE, member="Response", path=path)
            connection.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
            with connection.filter(rule) as queue:
                options = {**options, "handle_token": ("s", token)}
                connection.send_and_get_reply(new_method_call(portal, method, signature, (*args, options)),
                                              timeout=10)
                code, results = connection.recv_until_filtered(queue, timeout=REPLY_TIMEOUT_S).body
            if code != 0:
                raise RuntimeError("the desktop cancelled it" if code == 1 else "the desktop refused it")
            return results

        signals = MatchRule(type="signal", interface=INTERFACE, path=PORTAL_PATH)
        try:
            connection.send_and_get_reply(message_bus.AddMatch(signals), timeout=10)
            with connection.filter(signals, bufsize=64) as queue:  # from before the binding: nothing missed
                results = request("CreateSession", "a{sv}", (),
                                  {"session_handle_token": ("s", f"dictate{secrets.token_hex(6)}")})
                self.session_handle = results["session_handle"][1]
                shortcut = (SHORTCUT_ID, {"description": ("s", self.description),
                                          "preferred_trigger": ("s", self.trigger)})
                results = request("BindShortcuts", "oa(sa{sv})sa{sv}", (self.session_handle, [shortcut], ""), {})
                self._announce(results.get("shortcuts", ("a(sa{sv})", []))[1])
                self._listen(connection, queue)
        except (DBusErrorResponse, RuntimeError, TimeoutError, KeyError) as exc:
            self.failed.emit(f"The desktop did not bind the shortcut ({_first(exc)}).")
        except OSError as exc:
            if not self._stopping:
                self.failed.emit(f"The connection to the desktop portal was lost ({_first(exc)}); restart the app "
                                 "to get the hotkey back.")

    def _announce(self, shortcuts: list) -> None:
        """`bound` when the desktop assigned a key; else `needs_key`: KDE Plasma 5.27 binds nothing by
        itself and lists the app in System Settings → Shortcuts for the user to assign one."""
        bound = dict(shortcuts)
        if SHORTCUT_ID in bound:
            described = bound[SHORTCUT_ID].get("trigger_description", ("s", ""))[1] or self.trigger
            log.info("hotkeys: desktop portal GlobalShortcuts v%s bound %s (%s)", self.version, described,
                     self.session_handle)
            self.bound.emit(described)
        else:
            log.info("hotkeys: desktop portal GlobalShortcuts v%s bound no key yet (%s)", self.version,
                     self.session_handle)
            self.needs_key.emit("The desktop has not assigned a key to dictation yet: assign one in its shortcut "
                                "settings (the app is listed there), or bind `python -m app toggle`.")

    def _listen(self, connection, queue) -> None:
        """Until stop(): the shortcut's press and release, and changes of its key in the desktop's settings."""
        while not self._stopping:
            message = connection.recv_until_filtered(queue)
            member = message.header.fields.get(HeaderFields.member)
            if message.body[0] != self.session_handle:
                continue
            if member == "ShortcutsChanged":
                self._announce(message.body[1])
            elif message.body[1] != SHORTCUT_ID:
                continue
            elif member == "Activated":
                self.activated.emit(time.monotonic())
            elif member == "Deactivated":
                self.deactivated.emit(time.monotonic())


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
