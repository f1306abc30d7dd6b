"""`python -m app`: start the tray app, or hand over to the instance already running."""

from __future__ import annotations

import logging
import signal
import sys

from app import config
from app.desktop.remote import request


def run_gui(argv: list[str]) -> int:
    """Run the tray app until Quit (or SIGINT/SIGTERM); `argv` is unused: the GUI has no options yet."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if request("show") is not None:  # a second launch opens the running app's settings instead
        print("The app is already running: its settings are open, and its menu is in the system tray.",
              file=sys.stderr)
        return 0
    settings, problems = config.load()
    if not config.settings_path().exists():
        try:
            config.save(settings)  # so that there is a file to edit until the settings window exists
        except OSError as exc:
            problems.append(f"The settings could not be saved to {config.settings_path()} ({exc}); "
                            "check that the folder is writable.")

    from PySide6.QtWidgets import QApplication

    from app.ui.dictation import DictationApp

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Dictate")
    app.setQuitOnLastWindowClosed(False)  # closing the settings notice must not end the app
    dictation = DictationApp(settings)
    if not dictation.start():
        print("Another instance took over while this one was starting; use its tray menu.", file=sys.stderr)
        return 0
    from app.ui.wiring import attach_ui

    ui = attach_ui(dictation, problems)  # settings window, overlay, history, sound cues, live settings
    for problem in problems:
        dictation.notify(problem, error=True)
    for signum in (signal.SIGINT, signal.SIGTERM):  # quit cleanly, so the worker is shut down too
        signal.signal(signum, lambda *_: app.quit())
    from PySide6.QtCore import QTimer

    wake = QTimer(interval=250, timeout=lambda: None)  # lets Python run its signal handlers inside Qt's loop
    wake.start()
    try:
        return app.exec()
    finally:
        ui.shutdown()
        dictation.shutdown()
