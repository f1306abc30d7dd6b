"""The overlay in a process of its own, driven line by line over stdin, for the X11 focus test.

Commands: `recording`, `progress`, `result`, `quit`. After each, once the overlay is on screen, one
JSON line is printed: the overlay's mode, its X window id and whether this app holds the focus.
Run: python -m tests.overlay_probe
"""

import json
import queue
import sys
import threading

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app.ui.overlay import Overlay


def main() -> int:
    app = QApplication(sys.argv[:1])
    overlay = Overlay()
    commands: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [commands.put(line.strip()) for line in sys.stdin], daemon=True).start()
    actions = {
        "recording": lambda: overlay.show_recording(0.6, "Release to finish"),
        "progress": lambda: overlay.show_progress(5, 12, "the quick brown fox jumps over the lazy dog"),
        "result": lambda: overlay.show_result("The quick brown fox jumps over the lazy dog.", seconds=60),
    }

    def poll() -> None:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            return
        if command == "quit":
            app.quit()
            return
        actions[command]()
        QTimer.singleShot(300, report)  # a few event loop turns: mapped, and any focus change delivered

    def report() -> None:
        print(json.dumps({"mode": overlay.mode, "window": int(overlay.winId()), "visible": overlay.isVisible(),
                          "focus_window": QGuiApplication.focusWindow() is not None,
                          "active": overlay.isActiveWindow()}), flush=True)

    timer = QTimer(interval=20, timeout=poll)
    timer.start()
    print(json.dumps({"ready": True}), flush=True)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
