"""A clipboard manager as small as they come: reads every new clipboard at once and logs it.

Like many managers it honours none of the "do not keep" hints, so it reads (and would keep) the
transcript: the app must not take this read for the target's paste.
Run: python -m tests.desktop.clipboard_manager LOGFILE
"""

import json
import sys

from PySide6.QtWidgets import QApplication


def main() -> int:
    app = QApplication(sys.argv[:1])
    clipboard = app.clipboard()

    def changed() -> None:
        with open(sys.argv[1], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clipboard.text()) + "\n")

    clipboard.dataChanged.connect(changed)
    with open(sys.argv[1], "a", encoding="utf-8") as fh:
        fh.write(json.dumps("(started)") + "\n")
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
