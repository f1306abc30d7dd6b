"""Runs one paste with the real Paster and Qt clipboard on an X display, against a scripted reader.

The "keystroke" starts a reader process instead of a window: `xclip -o` after DELAY seconds
(a slow target), or nothing at all, or another program copying over our text. Prints one JSON
object: how the paste finished, what the reader got, and what the clipboard held afterwards.
Run: python -m tests.desktop.paste_probe SCENARIO   (slow | nobody | overwrite)
"""

import json
import subprocess
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.desktop.paste import PasteOptions, Paster

TRANSCRIPT = "the dictated words"


class ScriptedTarget:
    """Stands in for the focused window: what happens when the paste keystroke arrives."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.reader: subprocess.Popen | None = None

    def window_class(self) -> str:
        return "Probe"

    def send(self, keys: str) -> None:
        if self.scenario == "slow":  # reads the clipboard a whole second after the keystroke
            self.reader = subprocess.Popen(["sh", "-c", "sleep 1; xclip -selection clipboard -o"],
                                           stdout=subprocess.PIPE)
        elif self.scenario == "overwrite":  # reads it, then the user copies something else at once
            self.reader = subprocess.Popen(["sh", "-c", "xclip -selection clipboard -o; printf COPIED-LATER | "
                                            "xclip -selection clipboard -i >/dev/null 2>&1"], stdout=subprocess.PIPE)

    def type_text(self, text: str) -> None:
        raise AssertionError("not used")


def main() -> int:
    scenario = sys.argv[1]
    app = QApplication(sys.argv[:1])
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=b"BEFORE", check=True)
    target = ScriptedTarget(scenario)
    paster = Paster(PasteOptions(), server="x11", injector=target)
    report: dict = {}

    poll = QTimer(interval=20)
    after: list[subprocess.Popen] = []

    def finished(ok: bool, message: str) -> None:
        report.update(ok=ok, message=message)
        # read the clipboard while our event loop still runs: we may be the owner that must answer
        after.append(subprocess.Popen(["xclip", "-selection", "clipboard", "-o"], stdout=subprocess.PIPE))
        poll.start()

    def check_read() -> None:
        if after[0].poll() is not None:
            report["clipboard_after"] = after[0].stdout.read().decode()
            poll.stop()
            app.quit()

    poll.timeout.connect(check_read)
    paster.finished.connect(finished)
    QTimer.singleShot(0, lambda: paster.paste(TRANSCRIPT))
    app.exec()
    report["reader_got"] = target.reader.communicate(timeout=10)[0].decode() if target.reader else None
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
