"""The real HotkeyListener on an X display, its signals printed as JSON lines for the test to read.

stdin takes commands, one a line: "combo <hotkey>" (set a new hotkey), "arm" / "disarm" (the cancel
key grabbed or not). Prints {"event": "ready" | "unavailable" | "pressed" | "released" | "cancel", ...}.
Run: python -m tests.desktop.hotkey_probe HOTKEY
"""

import json
import sys
import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from app.desktop.hotkeys import HotkeyListener
from app.desktop.keys import parse_combo


def say(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Commands(QObject):
    line = Signal(str)


def main() -> int:
    app = QApplication(sys.argv[:1])
    listener = HotkeyListener(parse_combo(sys.argv[1]), parse_combo("<esc>"))
    listener.ready.connect(lambda: say("ready"))
    listener.unavailable.connect(lambda message: say("unavailable", message=message))
    listener.pressed.connect(lambda at: say("pressed"))
    listener.released.connect(lambda at: say("released"))
    listener.cancel_pressed.connect(lambda: say("cancel"))
    commands = Commands()

    def run(line: str) -> None:
        verb, _, arg = line.strip().partition(" ")
        if verb == "combo":
            listener.set_combos(parse_combo(arg), parse_combo("<esc>"))
        elif verb in ("arm", "disarm"):
            listener.arm_cancel(verb == "arm")
        say("done", command=line.strip())

    commands.line.connect(run)
    threading.Thread(target=lambda: [commands.line.emit(line) for line in sys.stdin], daemon=True).start()
    listener.start()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
