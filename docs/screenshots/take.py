"""Screenshots of the real settings window, overlay and history window, taken under Xvfb.

    .venv/bin/python docs/screenshots/take.py [OUTDIR]      (default: docs/screenshots)

Starts its own Xvfb and openbox (so window frames look like a desktop's), then runs itself on
that display with throw-away settings and data folders: the user's own settings and history are
never read. The widgets are the app's; what they show is seeded here: a measured latency for the
quality slider (as a few dictations would leave), sample history entries, and the drafts of a
denoising run for the overlay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = "DICTATE_SCREENSHOT_CHILD"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get(CHILD):
        return take(out)
    with tempfile.TemporaryDirectory() as tmp:
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as fh:
            display = fh.readline().strip()
        env = {**os.environ, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb", CHILD: "1",
               "XDG_CONFIG_HOME": f"{tmp}/config", "XDG_DATA_HOME": f"{tmp}/data", "PYTHONPATH": str(ROOT)}
        env.pop("WAYLAND_DISPLAY", None)
        openbox = subprocess.Popen(["openbox"], env=env, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # openbox takes the screen; a window shown before that would lack its frame
            return subprocess.run([sys.executable, __file__, str(out)], env=env, cwd=ROOT).returncode
        finally:
            openbox.terminate()
            xvfb.terminate()


def take(out: Path) -> int:
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtGui import QFont, QGuiApplication
    from PySide6.QtWidgets import QApplication, QPlainTextEdit, QWidget

    from app.config import Settings
    from app.history import History
    from app.latency import LatencyRecord, spec_key
    from app.ui.history_window import HistoryWindow
    from app.ui.overlay import Overlay
    from app.ui.settings_store import SettingsStore
    from app.ui.settings_window import SettingsWindow

    app = QApplication(sys.argv[:1])
    screen = QGuiApplication.primaryScreen()
    desktop = QWidget(None, Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnBottomHint)
    desktop.setStyleSheet("background: qlineargradient(x1:0, y1:0, x2:1, y2:1, stop:0 #3a5a7c, stop:1 #6d8aa6);")
    desktop.setGeometry(screen.geometry())
    desktop.show()  # a wallpaper, so the overlay is seen against a desktop rather than a black screen

    def settle(ms: int = 600) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def grab(widget, name: str, margin: int = 0) -> None:
        settle()
        frame = widget.frameGeometry().adjusted(-margin, -margin, margin, margin)
        screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(str(out / name))
        print(f"wrote {out / name}")

    # The settings window, on the page with the quality slider.
    config = Path(os.environ["XDG_CONFIG_HOME"])
    settings = Settings(engine="diffusion", steps=12, language="en", quantization="int8")
    store = SettingsStore(settings, [], path=config / "settings.json")
    latency = LatencyRecord(Path(os.environ["XDG_DATA_HOME"]) / "latency.json")
    for _ in range(3):
        latency.add(spec_key(settings.engine_spec()), {"steps": [31.0] * 12, "total": 12 * 31.0 + 145.0})
    window = SettingsWindow(store, latency, mic_monitor=False)
    window.move(160, 60)
    window.show()
    grab(window, "settings.png")
    window.close()

    # The Words page: the speaker's vocabulary and replacements (docs/vocabulary.md).
    words = Settings(vocabulary=("Kubernetes", "PostgreSQL", "Siobhan Nguyen"),
                     replacements=(("at sign", "@"), ("my email", "siobhan@example.org")), spoken_punctuation=True)
    window = SettingsWindow(SettingsStore(words, [], path=config / "settings.json"), latency, mic_monitor=False)
    window.move(160, 60)
    window.show_page("Words")
    window.show()
    grab(window, "settings-words.png")
    window.close()

    # The overlay halfway through denoising, above the window the words will go into.
    editor = QPlainTextEdit()
    editor.setWindowTitle("Notes — draft.txt")
    editor.setFont(QFont("DejaVu Sans", 12))
    editor.setPlainText("Weekly sync, action items:\n\n1. Ship the settings window.\n2. ")
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    editor.setGeometry(190, 250, 900, 420)
    editor.show()
    editor.activateWindow()
    settle()
    overlay = Overlay()
    drafts = ["the the review review to Thursday Thursday the",
              "Move the design review to Thursday after and ask Priya",
              "Move the design review to Thursday afternoon and ask Priya to join."]
    for step, draft in enumerate(drafts, start=3):
        overlay.show_progress(step, 8, draft)
    settle()
    region = overlay.frameGeometry().united(editor.frameGeometry()).adjusted(-24, -24, 24, 24)
    settle()
    screen.grabWindow(0, region.x(), region.y(), region.width(), region.height()).save(str(out / "overlay.png"))
    print(f"wrote {out / 'overlay.png'}")
    overlay.hide()
    editor.close()

    # The history window, with a paste that failed selected.
    history = History(Path(os.environ["XDG_DATA_HOME"]) / "history.sqlite3")
    now = time.time()
    samples = [
        ("Can we move the design review to Thursday afternoon? I'd like Priya to join.", "en", True, "thunderbird", 26 * 3600),
        ("Die Lieferung kommt morgen zwischen neun und elf Uhr.", "de", True, "firefox", 5 * 3600),
        ("git commit -m 'Keep the focus in the target window while the overlay shows'", "en", False, "xterm", 2400),
        ("Remind me to call the dentist before noon tomorrow.", "en", True, "slack", 1300),
        ("Les résultats seront publiés vendredi matin.", "fr", True, "libreoffice", 240),
    ]
    for text, language, ok, target, ago in samples:
        entry = history.add(text, language=language, engine="diffusion", steps=12,
                            timings={"total": 517.0, "steps": [31.0] * 12}, target=target, created=now - ago)
        history.set_paste_result(entry, ok, "" if ok else "No window took the text within 2.5 s; it is on the "
                                 "clipboard, paste it with Ctrl+Shift+V.")
    history_window = HistoryWindow(history)
    history_window.move(220, 90)
    history_window.show()
    history_window.list.setCurrentItem(history_window.list.topLevelItem(2))
    history_window.list.setFocus()
    grab(history_window, "history.png")
    history_window.close()
    history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
