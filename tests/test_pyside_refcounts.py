"""The installed PySide6 must not leak references to None or True (PySide6 6.12.0 did, on Python 3.11).

Each void Qt call there dropped one reference to None and each signal emit one to True; a GUI that
animates an overlay and relays worker progress aborted within minutes ("deallocating None"). The
dependency excludes that release; this test catches a future one with the same bug.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_void_calls_and_emits_keep_reference_counts():
    probe = textwrap.dedent(
        """
        import sys
        from PySide6.QtCore import QCoreApplication, QObject, Signal
        from PySide6.QtGui import QColor

        app = QCoreApplication([])
        color = QColor()
        before = sys.getrefcount(None)
        for _ in range(1000):
            color.setAlpha(255)
        none_delta = sys.getrefcount(None) - before

        class Emitter(QObject):
            changed = Signal(int)

        emitter = Emitter()
        emitter.changed.connect(lambda value: None)
        before = sys.getrefcount(True)
        for _ in range(100):
            emitter.changed.emit(1)
        print(none_delta, sys.getrefcount(True) - before)
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    none_delta, true_delta = (int(x) for x in proc.stdout.split())
    assert abs(none_delta) < 10 and abs(true_delta) < 10, (none_delta, true_delta)
