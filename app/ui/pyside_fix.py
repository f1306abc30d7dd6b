"""A guard against a PySide6 6.12.0 bug that kills long-running GUIs on Python 3.11.

PySide6 6.12.0 returns None from every wrapped C++ method that returns void without taking a
reference to it, so each such call (QPainter.setPen, QWidget.update, QLabel.setText, ...) drops
one reference to None. On Python 3.12 and later None is immortal and nothing happens; on 3.11 its
count falls from a few thousand to zero and the process aborts with "Fatal Python error:
none_dealloc: deallocating None". An animated overlay makes hundreds of such calls a second, so the
app died within a minute of dictating. The guard checks whether the bug is present and, if so,
gives None 2**40 extra references (decades of calls); with a fixed PySide6 it does nothing.
The real fixes are a PySide6 release without the bug or Python 3.12+.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)
_EXTRA_REFERENCES = 1 << 40
_applied = False


def guard_none_refcount() -> bool:
    """Apply the guard (once) when this PySide6 leaks references to None; returns whether it is applied."""
    global _applied
    if _applied or sys.version_info >= (3, 12):
        return _applied
    from PySide6.QtGui import QColor

    probe = QColor()
    before = sys.getrefcount(None)
    for _ in range(16):
        probe.setAlpha(255)  # a void method: costs None one reference when the bug is present
    if sys.getrefcount(None) >= before:
        return False
    # ob_refcnt is the first field of every object in CPython's release builds.
    ctypes.c_ssize_t.from_address(id(None)).value += _EXTRA_REFERENCES
    _applied = True
    log.warning("this PySide6 drops a reference to None on every void call; None was given %d extra references "
                "so the app does not abort (upgrade PySide6 or use Python 3.12+ to make this unnecessary)",
                _EXTRA_REFERENCES)
    return True
