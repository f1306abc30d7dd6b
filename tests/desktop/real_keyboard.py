"""Key events from Xvfb's own keyboard device, as a person's keyboard sends them.

xdotool, like the app's paste, sends its keys through the server's XTest device. A key the app
lifts or presses there is a key xdotool holds, so tests that type with xdotool cannot show what the
app's keys do to a key held on another keyboard: the X server keeps a key's state per device, and a
press from a device that still holds the key is dropped as a duplicate. This sends XTest's device
events (XInput 1 DeviceKeyPress / DeviceKeyRelease) for the "Xvfb keyboard" slave instead, the one
the server's own keyboard driver would use.
"""

from __future__ import annotations

from Xlib import XK, X, display
from Xlib.ext import xinput
from Xlib.protocol import rq

_DEVICE_KEY_PRESS, _DEVICE_KEY_RELEASE = 1, 2  # XInput 1 event numbers, after the extension's first event


class _FakeDeviceInput(rq.Request):
    """XTest's FakeInput with its last byte, the device id, set (python-xlib's request leaves it 0)."""

    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(2), rq.RequestLength(), rq.Card8("event_type"),
                         rq.Card8("detail"), rq.Pad(2), rq.Card32("time"), rq.Window("root", (X.NONE,)), rq.Pad(8),
                         rq.Int16("x"), rq.Int16("y"), rq.Pad(7), rq.Card8("deviceid"))


class RealKeyboard:
    """Presses and releases keys on the X server's keyboard device (`down("ctrl+shift+space")`)."""

    NAMES = {"ctrl": "Control_L", "shift": "Shift_L", "alt": "Alt_L", "super": "Super_L"}

    def __init__(self, display_name: str, device: str = "Xvfb keyboard") -> None:
        self._dpy = display.Display(display_name)
        self._dpy.xinput_query_version()
        devices = self._dpy.xinput_query_device(xinput.AllDevices).devices
        found = [d.deviceid for d in devices if d.name == device]
        assert found, f"no X input device named {device!r}: {[d.name for d in devices]}"
        self._device = found[0]
        self._first_event = self._dpy.query_extension("XInputExtension").first_event

    def down(self, keys: str) -> None:
        for name in keys.split("+"):
            self._send(name, True)

    def up(self, keys: str) -> None:
        for name in keys.split("+"):
            self._send(name, False)

    def _send(self, name: str, press: bool) -> None:
        code = self._dpy.keysym_to_keycode(XK.string_to_keysym(self.NAMES.get(name, name)))
        assert code, f"no key for {name!r} on the test display's layout"
        _FakeDeviceInput(display=self._dpy.display, opcode=self._dpy.display.get_extension_major("XTEST"),
                         event_type=self._first_event + (_DEVICE_KEY_PRESS if press else _DEVICE_KEY_RELEASE),
                         detail=code, time=X.CurrentTime, root=X.NONE, x=0, y=0, deviceid=self._device)
        self._dpy.sync()

    def close(self) -> None:
        self._dpy.close()
