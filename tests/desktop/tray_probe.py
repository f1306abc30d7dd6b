"""The real Tray in a process of its own on the test display, reporting what a user would see.

Prints JSON lines: {"geometry": [x, y, w, h]} once the icon is docked (and again if it moves); {"menu": [action texts]}
each time its menu opens; {"notice": text} each time the notice on display changes. stdin line
"notices" sends two notices at once, as the app does at start-up (a repaired settings file, then
the hotkey).
Run: python -m tests.desktop.tray_probe
"""

import json
import sys
import threading

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

from app.ui.tray import Tray


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


class Commands(QObject):
    line = Signal(str)


def main() -> int:
    app = QApplication(sys.argv[:1])
    tray = Tray()
    tray.show()
    menu = tray._icon.contextMenu()
    menu.aboutToShow.connect(lambda: say(menu=[a.text() for a in menu.actions() if a.text()]))
    shown = {"notice": None}

    def poll() -> None:
        g = tray._icon.geometry()
        geometry = [g.x(), g.y(), g.width(), g.height()]
        if g.width() > 0 and geometry != shown.get("geometry"):  # docked, or moved by the tray's layout
            shown["geometry"] = geometry
            say(geometry=geometry)
        if tray.notice != shown["notice"]:
            shown["notice"] = tray.notice
            say(notice=tray.notice)

    timer = QTimer(interval=20, timeout=poll)
    timer.start()
    commands = Commands()
    commands.line.connect(lambda line: line.strip() == "notices" and (
        tray.notify("The settings file was damaged; the original was copied to settings.json.broken.", error=True),
        tray.notify("Ready: hold Ctrl+Shift+Space")))
    threading.Thread(target=lambda: [commands.line.emit(x) for x in sys.stdin], daemon=True).start()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
