"""The two XKB requests the hotkey grab needs, which python-xlib does not wrap.

XkbUseExtension must come first on a connection, or the server rejects every other XKB request;
XkbPerClientFlags turns on detectable auto-repeat for this client only (a held key then repeats as
presses, with no release between them), so a held hotkey never looks released.
Layouts from the X Keyboard Extension protocol specification (requests 0 and 21).
"""

from __future__ import annotations

from Xlib.protocol import rq


class _UseExtension(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(0), rq.RequestLength(),
                         rq.Card16("wanted_major"), rq.Card16("wanted_minor"))
    _reply = rq.Struct(rq.ReplyCode(), rq.Bool("supported"), rq.Card16("sequence_number"), rq.ReplyLength(),
                       rq.Card16("server_major"), rq.Card16("server_minor"), rq.Pad(20))


class _PerClientFlags(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(21), rq.RequestLength(), rq.Card16("device_spec"), rq.Pad(2),
                         rq.Card32("change"), rq.Card32("value"), rq.Card32("ctrls_to_change"),
                         rq.Card32("auto_ctrls"), rq.Card32("auto_ctrl_values"))
    _reply = rq.Struct(rq.ReplyCode(), rq.Card8("device_id"), rq.Card16("sequence_number"), rq.ReplyLength(),
                       rq.Card32("supported"), rq.Card32("value"), rq.Card32("auto_ctrls"),
                       rq.Card32("auto_ctrl_values"), rq.Pad(8))


def _opcode(dpy) -> int | None:
    info = dpy.query_extension("XKEYBOARD")
    return info.major_opcode if info is not None and info.present else None


def use_extension(dpy) -> bool:
    """Announce XKB 1.0 on this connection; False when the server has no XKB."""
    opcode = _opcode(dpy)
    return opcode is not None and bool(_UseExtension(display=dpy.display, opcode=opcode, wanted_major=1,
                                                     wanted_minor=0).supported)


def per_client_flags(dpy, *, device: int, change: int, value: int) -> int:
    """Set per-client flags (after `use_extension`); return the flags now in force."""
    reply = _PerClientFlags(display=dpy.display, opcode=_opcode(dpy), device_spec=device, change=change, value=value,
                            ctrls_to_change=0, auto_ctrls=0, auto_ctrl_values=0)
    return reply.value
