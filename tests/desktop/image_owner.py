"""A program that copied an image: owns CLIPBOARD with a PNG of about `SIZE` bytes and serves every request.

Prints "owned" once it holds the selection, then one line per request it answered: the system-wide
monotonic time (time.monotonic: CLOCK_MONOTONIC, the same clock in every process) and the target
asked for. Exits when another program takes the selection. The bytes are `image_bytes(SIZE)`, so a
test can compare what the clipboard holds later. Kept under X's request size (256 KiB), so no
INCR transfer: what is counted is one read per request.
With "read" first it is instead the program the image is pasted into, later: a Qt application (Qt
reads large selections in INCR chunks, as xclip -o fails to from Qt), printing "same" when
CLIPBOARD's image/png is that PNG byte for byte, else "different".
Run: python -m tests.desktop.image_owner SIZE  |  python -m tests.desktop.image_owner read SIZE
"""

import random
import struct
import sys
import time
import zlib

from Xlib import X, Xatom, display
from Xlib.protocol import event as xevent


def image_bytes(size: int) -> bytes:
    """A real PNG of about `size` bytes (noise, as a screenshot's pixels compress little), the same every time."""
    side = max(1, int((size / 3) ** 0.5))
    pixels = random.Random(side).randbytes(side * side * 3)
    rows = b"".join(b"\0" + pixels[y * side * 3:(y + 1) * side * 3] for y in range(side))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


def read(size: int) -> None:
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication(sys.argv[:1])
    print("same" if app.clipboard().mimeData().data("image/png").data() == image_bytes(size) else "different")


def main() -> None:
    if sys.argv[1] == "read":
        return read(int(sys.argv[2]))
    data = image_bytes(int(sys.argv[1]))
    dpy = display.Display()
    window = dpy.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
    clipboard, targets, png = (dpy.intern_atom(n) for n in ("CLIPBOARD", "TARGETS", "image/png"))
    window.set_selection_owner(clipboard, X.CurrentTime)
    dpy.sync()
    print("owned", flush=True)
    while True:
        event = dpy.next_event()
        if event.type == X.SelectionClear:
            return
        if event.type != X.SelectionRequest:
            continue
        prop = event.property or event.target
        if event.target == targets:
            event.requestor.change_property(prop, Xatom.ATOM, 32, [targets, png])
        elif event.target == png:
            event.requestor.change_property(prop, png, 8, data)
        else:
            prop = X.NONE
        event.requestor.send_event(xevent.SelectionNotify(time=event.time, requestor=event.requestor,
                                                          selection=event.selection, target=event.target,
                                                          property=prop), event_mask=0)
        dpy.flush()
        print(f"{time.monotonic():.6f} {dpy.get_atom_name(event.target)}", flush=True)


if __name__ == "__main__":
    main()
