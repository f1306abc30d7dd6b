"""Runs one paste with the real Paster and X11 clipboard on an X display, against a scripted target.

The target is a real X client (selection_reader.py) standing in for the focused window; the
"keystroke" tells it to read the CLIPBOARD after a delay (a slow target), or has another program
read it instead (xclip: not the target), or nothing at all, or the target reads and another program
copies over our text. Typing is recorded, or refused ("nobody": a window that takes no keys).
Prints one JSON object: how the paste finished, what each reader got, what was typed, and what
the clipboard held afterwards.
Run: python -m tests.desktop.paste_probe SCENARIO   (slow | other | nobody | overwrite)
 or: python -m tests.desktop.paste_probe focused KEYS TEXT   (the real injector, into the focused window)
"""

import json
import subprocess
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.desktop.paste import PasteOptions, Paster
from app.errors import UserError

TRANSCRIPT = "the dictated words"


class ScriptedTarget:
    """Stands in for the focused window: what happens when the paste keystroke arrives."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.reader = subprocess.Popen([sys.executable, "-m", "tests.desktop.selection_reader"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        self.window = int(self.reader.stdout.readline())
        self.other: subprocess.Popen | None = None
        self.typed: str | None = None

    def warm_up(self) -> None:
        pass

    def window_class(self) -> str:
        return "Probe"

    def focused_window(self) -> int:
        return self.window

    def send(self, keys: str) -> None:
        if self.scenario == "slow":  # reads the clipboard a whole second after the keystroke
            self.reader.stdin.write("read 1\n")
        elif self.scenario == "overwrite":  # reads it, then the user copies something else at once
            self.reader.stdin.write("read 0 COPIED-LATER\n")
        elif self.scenario in ("other", "nobody"):  # a clipboard manager reads it; the target does not
            self.other = subprocess.Popen(["xclip", "-selection", "clipboard", "-o"], stdout=subprocess.PIPE)
        self.reader.stdin.flush()

    def type_text(self, text: str) -> None:
        if self.scenario == "nobody":
            raise UserError("This window takes no keys.", code="paste_failed")
        self.typed = text

    def results(self) -> dict:
        out = self.reader.communicate(timeout=10)[0].splitlines()  # closes its stdin: it exits
        return {"reader_got": json.loads(out[0]) if out else None, "typed": self.typed,
                "other_got": self.other.communicate(timeout=10)[0].decode() if self.other else None}


def main() -> int:
    scenario = sys.argv[1]
    app = QApplication(sys.argv[:1])
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=b"BEFORE", check=True)
    if scenario == "focused":
        target, text = None, sys.argv[3]
        paster = Paster(PasteOptions(keys=sys.argv[2]), server="x11")
    else:
        target, text = ScriptedTarget(scenario), TRANSCRIPT
        paster = Paster(PasteOptions(), server="x11", injector=target)
    report: dict = {}

    poll = QTimer(interval=20)
    after: list[subprocess.Popen] = []

    def finished(ok: bool, message: str) -> None:
        report.update(ok=ok, message=message, outcome=paster.outcome)
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
    QTimer.singleShot(0, lambda: paster.paste(text))
    app.exec()
    if target is not None:
        report.update(target.results())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
