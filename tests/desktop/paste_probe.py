"""Runs one paste with the real Paster and X11 clipboard on an X display, against a scripted target.

The target is a real X client (selection_reader.py) standing in for the focused window; the
"keystroke" tells it to read the CLIPBOARD after a delay (a slow target), or has another program
read it instead (xclip: not the target), or nothing at all, or the target reads and another program
copies over our text. Typing is recorded, or refused ("nobody": a window that takes no keys). In "broken"
sending the keystroke raises what no paste expects (a lost X connection, a bug): the paste must still end. In
"manager_at_once" a clipboard manager reads each new clipboard before the app's GUI thread goes on (a
loaded machine: the selection thread serves it first); the target reads it too. In "early" the clipboard
holds an image (image_owner.py) that the app saves while the engine works (`Paster.prefetch_clipboard`)
before the paste; in "early_changed" the user copies a text between that early save and the paste.
Prints one JSON object: how the paste finished, what each reader got, what was typed, and what
the clipboard held afterwards.
Run: python -m tests.desktop.paste_probe SCENARIO   (slow | other | manager_at_once | nobody | overwrite | early |
                                                        early_changed | broken | copied_at_restore | woke_at_ping)
 or: python -m tests.desktop.paste_probe focused KEYS TEXT [LINGER]   (the real injector, into the focused window;
     LINGER: seconds to run on after the paste, as the app does)
"""

import json
import logging
import subprocess
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from Xlib import X

from app.desktop.paste import PasteOptions, Paster
from app.desktop.x11_clipboard import X11Clipboard
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
        if self.scenario == "broken":
            raise ConnectionResetError("the X server closed the connection")
        if self.scenario == "slow":  # reads the clipboard a whole second after the keystroke
            self.reader.stdin.write("read 1\n")
        elif self.scenario.startswith("early") or self.scenario in ("manager_at_once", "copied_at_restore"):  # reads it at once
            self.reader.stdin.write("read 0\n")
        elif self.scenario == "overwrite":  # reads it, then the user copies something else at once
            self.reader.stdin.write("read 0 COPIED-LATER\n")
        elif self.scenario in ("other", "nobody"):  # a clipboard manager reads it; the target does not
            self.other = subprocess.Popen(["xclip", "-selection", "clipboard", "-o"], stdout=subprocess.PIPE)
        self.reader.stdin.flush()

    def answers(self, window: int, timeout_s: float) -> bool | None:
        """The paster's question whether the target handles its events (`X11Keys.answers`). In "woke_at_ping"
        the target, busy since the paste key, gets to its events just then: it reads the clipboard and answers
        in the same moment (a real one sends its read before its answer). Elsewhere: no ping, nothing told."""
        if self.scenario != "woke_at_ping":
            return None
        self.reader.stdin.write("read 0\n")
        self.reader.stdin.flush()
        time.sleep(0.2)  # its read has reached the X server, and our selection thread, well before we go on
        return True

    def type_text(self, text: str) -> None:
        if self.scenario == "nobody":
            raise UserError("This window takes no keys.", code="paste_failed")
        self.typed = text

    def results(self) -> dict:
        out = self.reader.communicate(timeout=10)[0].splitlines()  # closes its stdin: it exits
        return {"reader_got": json.loads(out[0]) if out else None, "typed": self.typed,
                "other_got": self.other.communicate(timeout=10)[0].decode() if self.other else None}


class ManagerReadsAtOnce(X11Clipboard):
    """A clipboard manager that reads each new clipboard the moment it changes hands, before `offer` returns to
    the paster: the order a loaded machine can give the selection thread and the GUI thread."""

    manager_got: str | None = None

    def offer(self, text: str, **kwargs):
        offer = super().offer(text, **kwargs)
        self.manager_got = subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True,
                                          timeout=10).stdout.decode()
        return offer


class CopyAtRestore(X11Clipboard):
    """The user copies something just as the paster gives the clipboard back, while the selection thread is
    busy (as when it serves a large read): here it handles the news that it lost the clipboard 0.3 s late.
    The paster must still see that the clipboard is no longer ours, or its restore destroys the copy."""

    def offer(self, text: str, **kwargs):
        offer = super().offer(text, **kwargs)
        handle = self._selections._event

        def late(event) -> None:
            if event.type == X.SelectionClear:
                time.sleep(0.3)
            handle(event)

        self._selections._event = late
        return offer

    answered: bool | None = None

    def still_ours(self, offer) -> bool:
        # xclip's process holds the copy from then on: it must not hold our stdout, which the test reads to its end
        subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=b"COPIED-AT-RESTORE", check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True).stdout != b"COPIED-AT-RESTORE":
            time.sleep(0.01)  # until xclip holds the clipboard: the server has told us so by now
        self.answered = super().still_ours(offer)
        return self.answered


class Notes(logging.Handler):
    """The paster's log lines, to count what it noticed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


IMAGE_SIZE = 200_000  # a small screenshot's PNG: the owner sends it whole (X takes up to 256 KiB a request)


def early_save(scenario: str, paster: Paster) -> subprocess.Popen:
    """An image on the clipboard, saved early as when a recording goes to the engine; in "early_changed" the user
    then copies a text. Returns the image's owner, which prints when each read happened."""
    owner = subprocess.Popen([sys.executable, "-m", "tests.desktop.image_owner", str(IMAGE_SIZE)],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "owned"
    paster.prefetch_clipboard()
    if scenario == "early_changed":
        subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=b"COPIED-BEFORE-PASTE", check=True)
        while subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True).stdout != \
                b"COPIED-BEFORE-PASTE":  # xclip's copy holds the clipboard from a process of its own
            time.sleep(0.02)
        QApplication.processEvents()  # as the app's event loop runs while the user copies, well before the paste
    return owner


def main() -> int:
    scenario = sys.argv[1]
    app = QApplication(sys.argv[:1])
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=b"BEFORE", check=True)
    linger = float(sys.argv[4]) if scenario == "focused" and len(sys.argv) > 4 else 0.0
    if scenario == "focused":
        target, text = None, sys.argv[3]
        paster = Paster(PasteOptions(keys=sys.argv[2]), server="x11")
    else:
        target, text = ScriptedTarget(scenario), TRANSCRIPT
        clipboard = {"manager_at_once": ManagerReadsAtOnce, "copied_at_restore": CopyAtRestore}.get(scenario, lambda: None)()
        paster = Paster(PasteOptions(), server="x11", injector=target, clipboard=clipboard)
    notes = Notes()
    logging.getLogger("app.desktop.paste").addHandler(notes)
    logging.getLogger("app.desktop.paste").setLevel(logging.INFO)
    report: dict = {}
    owner = early_save(scenario, paster) if scenario.startswith("early") else None
    image = scenario == "early"

    poll = QTimer(interval=20)
    after: list[subprocess.Popen] = []

    def finished(ok: bool, message: str) -> None:
        report.update(ok=ok, message=message, outcome=paster.outcome)
        # read the clipboard while our event loop still runs: we may be the owner that must answer
        reader = [sys.executable, "-m", "tests.desktop.image_owner", "read", str(IMAGE_SIZE)] if image else \
            ["xclip", "-selection", "clipboard", "-o"]
        after.append(subprocess.Popen(reader, stdout=subprocess.PIPE))
        poll.start()

    def check_read() -> None:
        if after[0].poll() is not None:
            report["clipboard_after"] = after[0].stdout.read().decode().strip() if image else \
                after[0].stdout.read().decode()
            poll.stop()
            QTimer.singleShot(int(linger * 1000), app.quit)  # the app runs on after a paste, and serves what it owns

    def paste() -> None:
        report["paste_at"] = time.monotonic()
        paster.paste(text)

    poll.timeout.connect(check_read)
    paster.finished.connect(finished)
    QTimer.singleShot(0, paste)
    app.exec()
    report["others_noticed"] = sum("(not the target) read the clipboard" in line for line in notes.lines)
    if target is not None:
        report.update(target.results())
    if isinstance(paster.clipboard, ManagerReadsAtOnce):
        report["manager_got"] = paster.clipboard.manager_got
    if isinstance(paster.clipboard, CopyAtRestore):
        report["still_ours"] = paster.clipboard.answered
    if owner is not None:  # it exited when the paste took the clipboard
        served = owner.communicate(timeout=10)[0].split()
        report["image_reads_at"] = [float(t) for t, kind in zip(served[0::2], served[1::2]) if kind == "image/png"]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
