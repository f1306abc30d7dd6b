"""A STAND-IN for the XDG desktop portal's GlobalShortcuts interface, on a private session bus.

No desktop here has a portal that binds keys by itself and can be made to press them: KDE's
(xdg-desktop-portal-kde 5.27 under kwin_wayland --virtual) was run and accepted our calls but binds
no key until a user assigns one in System Settings, and GNOME's needs GNOME 48 (see docs/wayland.md).
This service owns org.freedesktop.portal.Desktop and speaks the interface as specified: it checks
each call's D-Bus signature and options, answers through Request objects on the path derived from
the caller's name and handle_token, and emits the portal's signals. It is told what the "desktop"
does through its stdin, one word a line:

  press / release   Activated / Deactivated for the bound shortcut (a user pressing the key)
  assign            ShortcutsChanged with a key (a user assigning one in the desktop's settings)

Every call is appended to LOG as a JSON line {"method", "signature", "body"}.
Run: python -m tests.desktop.portal_standin LOG (bound | unassigned); DBUS_SESSION_BUS_ADDRESS names the bus.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

from jeepney import (DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal)
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

PORTAL = "org.freedesktop.portal.Desktop"
PATH = "/org/freedesktop/portal/desktop"
INTERFACE = "org.freedesktop.portal.GlobalShortcuts"
TRIGGER = "Ctrl+Shift+Space"


def main() -> int:
    log_path, mode = sys.argv[1], sys.argv[2]
    conn = open_dbus_connection(bus="SESSION")
    reply = conn.send_and_get_reply(message_bus.RequestName(PORTAL, 4), timeout=10)  # 4: do not queue
    assert reply.body[0] == 1, "another portal owns the name"
    commands: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [commands.put(line.strip()) for line in sys.stdin], daemon=True).start()
    sessions: dict[str, dict] = {}  # session path -> {"sender", "shortcuts"}

    def record(msg) -> None:
        with open(log_path, "a") as fh:
            fh.write(json.dumps({"method": msg.header.fields[HeaderFields.member],
                                 "signature": msg.header.fields.get(HeaderFields.signature, ""),
                                 "body": msg.body}, default=str) + "\n")

    def respond(msg, sender: str, results: dict) -> None:
        """Reply with the Request path, then emit its Response, as the real portal does."""
        token = msg.body[-1]["handle_token"][1]
        request = f"{PATH}/request/{sender.lstrip(':').replace('.', '_')}/{token}"
        conn.send(new_method_return(msg, "o", (request,)))
        signal = new_signal(DBusAddress(request, interface="org.freedesktop.portal.Request"), "Response", "ua{sv}",
                            (0, results))
        signal.header.fields[HeaderFields.destination] = sender
        conn.send(signal)

    def bound(session: dict, assigned: bool) -> list:
        return [(sid, {"description": props["description"], "trigger_description": ("s", TRIGGER)})
                for sid, props in session["shortcuts"]] if assigned else []

    def broadcast(member: str, signature: str, body: tuple) -> None:
        conn.send(new_signal(DBusAddress(PATH, interface=INTERFACE), member, signature, body))

    print("ready", flush=True)
    while True:
        while not commands.empty():
            word = commands.get()
            for path, session in sessions.items():
                for sid, _ in session["shortcuts"]:
                    if word in ("press", "release"):
                        broadcast("Activated" if word == "press" else "Deactivated", "osta{sv}",
                                  (path, sid, int(time.time() * 1000), {}))
                if word == "assign":
                    broadcast("ShortcutsChanged", "oa(sa{sv})", (path, bound(session, True)))
        try:
            msg = conn.receive(timeout=0.02)
        except TimeoutError:
            continue
        if msg.header.message_type != MessageType.method_call or msg.header.fields.get(HeaderFields.path) != PATH:
            continue
        record(msg)
        member = msg.header.fields[HeaderFields.member]
        signature = msg.header.fields.get(HeaderFields.signature, "")
        sender = msg.header.fields[HeaderFields.sender]
        if member == "Get" and msg.body == (INTERFACE, "version"):
            conn.send(new_method_return(msg, "v", (("u", 1),)))
        elif member == "CreateSession" and signature == "a{sv}" and "session_handle_token" in msg.body[0] \
                and "handle_token" in msg.body[0]:
            path = f"{PATH}/session/{sender.lstrip(':').replace('.', '_')}/{msg.body[0]['session_handle_token'][1]}"
            sessions[path] = {"sender": sender, "shortcuts": []}
            respond(msg, sender, {"session_handle": ("s", path)})
        elif member == "BindShortcuts" and signature == "oa(sa{sv})sa{sv}" and msg.body[0] in sessions \
                and "handle_token" in msg.body[3]:
            session = sessions[msg.body[0]]
            session["shortcuts"] = msg.body[1]
            respond(msg, sender, {"shortcuts": ("a(sa{sv})", bound(session, mode == "bound"))})
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "s",
                                (f"the stand-in portal does not accept {member}({signature})",)))


if __name__ == "__main__":
    sys.exit(main())
