"""A paste target reduced to its X client: one window, and a CLIPBOARD read when told.

Prints its window id first. Each stdin line "read DELAY [COPY]" waits DELAY seconds, reads the
CLIPBOARD as UTF8_STRING the way a toolkit does (ConvertSelection to a property of its own window),
prints what it got as a JSON string, and, when COPY is given, has xclip copy that text right after.
Run: python -m tests.desktop.selection_reader
"""

import json
import subprocess
import sys
import time

from Xlib import X, Xatom, display


def read_clipboard(dpy, window) -> str:
    clipboard, utf8, prop = (dpy.intern_atom(n) for n in ("CLIPBOARD", "UTF8_STRING", "READER_PROP"))
    window.convert_selection(clipboard, utf8, prop, X.CurrentTime)
    dpy.flush()
    while True:
        event = dpy.next_event()
        if event.type == X.SelectionNotify:
            if event.property == X.NONE:
                return ""
            value = window.get_full_property(prop, X.AnyPropertyType)
            data = value.value if value is not None else b""
            return data.decode() if isinstance(data, bytes) else str(data)


def main() -> None:
    dpy = display.Display()
    window = dpy.screen().root.create_window(0, 0, 10, 10, 0, X.CopyFromParent)
    window.change_property(dpy.intern_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [0])  # not our pid: ids decide
    dpy.sync()
    print(window.id, flush=True)
    for line in sys.stdin:
        _, delay, *copy = line.split(maxsplit=2)
        time.sleep(float(delay))
        print(json.dumps(read_clipboard(dpy, window)), flush=True)
        if copy:
            subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=copy[0].strip().encode(), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
