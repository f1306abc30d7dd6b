"""A paste target in its own process: a focused QTextEdit that logs its text on every change.

Each change is appended to the log file as one JSON line {"t": CLOCK_MONOTONIC seconds, "text": ...};
the monotonic clock is system-wide on Linux, so the benchmark can compare it with its own.
Run: python -m tests.desktop.target_app LOGFILE
"""

import json
import sys
import time

from PySide6.QtWidgets import QApplication, QTextEdit


def main() -> int:
    log_path = sys.argv[1]
    app = QApplication(sys.argv[:1])
    edit = QTextEdit()
    edit.setWindowTitle("dictation-target")
    edit.resize(700, 300)

    def changed() -> None:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.monotonic(), "text": edit.toPlainText()}) + "\n")

    edit.textChanged.connect(changed)
    edit.show()
    edit.activateWindow()
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"t": time.monotonic(), "text": "", "ready": True}) + "\n")
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
