"""The overlay: a small panel at the bottom of the screen that shows what dictation is doing, without ever taking focus.

Focus is the whole point: the transcript is pasted into whatever window has the keyboard focus, so a
status window that takes it sends the user's words into itself (the fifth most reported bug class
of dictation apps). Every layer is told: Qt (Tool, WindowDoesNotAcceptFocus,
WA_ShowWithoutActivating, and transparent for input so a click falls through), the window manager
(notification window type) and, on X11, no window manager at all (override-redirect, so no WM
focus policy can hand it the focus). tests/test_overlay.py checks this in a real X11 session.

It shows, in turn: the input level while recording; the diffusion model's canvas condensing step by
step (the words that changed since the previous step are dimmed: they have not settled yet);
the final text for a moment. The controller-facing API is `show_recording`, `set_level`,
`show_progress`, `show_result`, `show_error` and `hide`.
"""

from __future__ import annotations

import difflib
import html
import math

from PySide6.QtCore import QPoint, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QCursor, QGuiApplication, QPainter, QPainterPath, QRegion
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from app.ui.widgets.level_meter import LevelMeter

WIDTH = 560
MARGIN_BOTTOM = 64  # above the bottom edge of the work area (docks and panels are outside it)
RADIUS = 14
DRAFT_CHARS = 240  # a long draft shows its last words: that is where the canvas is still moving
_BG = QColor(28, 31, 36, 238)
_SETTLED, _MOVING, _ACCENT = "#f2f4f7", "#7d8593", "#4f8ef7"


def settled_flags(previous: list[str], current: list[str]) -> list[bool]:
    """For each word of the current draft: True when it is unchanged from the previous step's draft.

    The canvas is denoised all at once, so words appear, change and move anywhere in it; a word
    that survived a step in the same order is taken as settled.
    """
    flags = [False] * len(current)
    if not previous:
        return flags
    for block in difflib.SequenceMatcher(a=previous, b=current, autojunk=False).get_matching_blocks():
        for i in range(block.b, block.b + block.size):
            flags[i] = True
    return flags


def draft_html(words: list[str], flags: list[bool]) -> str:
    """The draft as rich text: settled words bright, moving ones dimmed; a long draft keeps its tail."""
    spans, length = [], 0
    for word, settled in reversed(list(zip(words, flags))):
        length += len(word) + 1
        if length > DRAFT_CHARS:
            spans.append(f'<span style="color:{_MOVING}">…</span>')
            break
        spans.append(f'<span style="color:{_SETTLED if settled else _MOVING}">{html.escape(word)}</span>')
    return " ".join(reversed(spans))


class Overlay(QWidget):
    """The no-focus status panel; see the module docstring. Create once, call its `show_*` methods."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        flags = (Qt.WindowType.Tool | Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint
                 | Qt.WindowType.WindowDoesNotAcceptFocus | Qt.WindowType.WindowTransparentForInput)
        if QGuiApplication.platformName() == "xcb":
            flags |= Qt.WindowType.X11BypassWindowManagerHint
        self.setWindowFlags(flags)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.setAttribute(Qt.WidgetAttribute.WA_X11NetWmWindowTypeNotification)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setWindowTitle("Dictation overlay")
        # Wayland's xdg-shell has no "never focus me" window: sway, GNOME and KDE focus a new toplevel,
        # and the transcript would be pasted into the overlay (tests/desktop/test_wayland_session.py saw
        # it). A layer-shell surface would do, but Qt for Python has no binding for it: there the
        # overlay stays hidden and the tray carries the state.
        self.can_show = QGuiApplication.platformName() != "wayland"
        self._translucent = _supports_translucency()
        if self._translucent:
            self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setFixedWidth(WIDTH)

        self.dot = _Dot()
        self.title = QLabel()
        self.title.setObjectName("title")
        self.counter = QLabel()
        self.counter.setObjectName("counter")
        self.meter = LevelMeter(dark=True)
        self.meter.setFixedHeight(8)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(4)
        self.text = QLabel()
        self.text.setObjectName("text")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(self.dot)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.counter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 14, 20, 16)
        layout.setSpacing(10)
        layout.addLayout(header)
        layout.addWidget(self.meter)
        layout.addWidget(self.bar)
        layout.addWidget(self.text)
        self.setStyleSheet(f"""
            QLabel {{ color: {_SETTLED}; background: transparent; }}
            QLabel#title {{ font-size: 11pt; font-weight: 600; }}
            QLabel#counter {{ color: {_MOVING}; font-size: 10pt; }}
            QLabel#text {{ font-size: 13pt; }}
            QProgressBar {{ background: rgba(255,255,255,30); border: none; border-radius: 2px; }}
            QProgressBar::chunk {{ background: {_ACCENT}; border-radius: 2px; }}
        """)
        self._words: list[str] = []
        self._flags: list[bool] = []
        self._hide_timer = QTimer(self, singleShot=True, timeout=self.hide)
        self.mode = "hidden"  # hidden | recording | transcribing | result | error (what tests and logs read)

    # ---- the API the app calls -----------------------------------------------------------------
    def show_recording(self, level: float = 0.0, hint: str = "") -> None:
        """Recording started: a pulsing dot, the input level and `hint` (e.g. "Release to transcribe")."""
        self._enter("recording", "Listening", hint)
        self.dot.set_colour("#ff453a", pulse=True)
        self.meter.show()
        self.bar.hide()
        self.text.hide()
        self.set_level(level)
        self._present()

    def set_level(self, level: float) -> None:
        """The input level, 0..1 (see `level_from_db`)."""
        self.meter.set_level(level)

    def show_progress(self, step: int, total: int, draft: str) -> None:
        """Step `step` of at most `total` with the whole draft; step 0 means waiting for the model."""
        first = self.mode != "transcribing"
        self._enter("transcribing", "Transcribing", f"step {step} of {total}" if step and total else "")
        self.dot.set_colour(_ACCENT, pulse=True)
        self.meter.hide()
        self.bar.show()
        if total and step:
            self.bar.setRange(0, total)
            self.bar.setValue(step)
        else:
            self.bar.setRange(0, 0)  # busy: the model has not reported a step yet
        words = draft.split()
        if first:
            self._words, self._flags = [], []
        if words:
            self._flags, self._words = settled_flags(self._words, words), words
            self.text.setText(draft_html(self._words, self._flags))
            self.text.show()
        elif first:
            self.text.hide()
        self._present()

    def show_result(self, text: str, *, seconds: float | None = None) -> None:
        """The final transcript, all settled, for a moment (longer for longer text), then the overlay hides."""
        self._enter("result", "Done", "")
        self.dot.set_colour("#34c759", pulse=False)
        self.meter.hide()
        self.bar.hide()
        words = text.split()
        self.text.setText(draft_html(words, [True] * len(words)) or f'<span style="color:{_MOVING}">(no words)</span>')
        self.text.show()
        self._present()
        self._hide_timer.start(int(1000 * (seconds if seconds is not None else min(4.0, 1.5 + len(text) / 60))))

    def show_error(self, message: str, *, seconds: float = 4.0) -> None:
        self._enter("error", "Not transcribed", "")
        self.dot.set_colour("#ff9f0a", pulse=False)
        self.meter.hide()
        self.bar.hide()
        self.text.setText(f'<span style="color:{_SETTLED}; font-size:11pt">{html.escape(message)}</span>')
        self.text.show()
        self._present()
        self._hide_timer.start(int(seconds * 1000))

    def hide(self) -> None:
        self._hide_timer.stop()
        self.dot.set_colour(_MOVING, pulse=False)
        self.mode = "hidden"
        super().hide()

    # ---- drawing -------------------------------------------------------------------------------
    def _enter(self, mode: str, title: str, counter: str) -> None:
        self._hide_timer.stop()
        self.mode = mode
        self.title.setText(title)
        self.counter.setText(counter)

    def _present(self) -> None:
        """Size to the content and sit at the bottom centre of the screen with the mouse pointer."""
        layout = self.layout()
        layout.activate()
        self.resize(WIDTH, layout.totalHeightForWidth(WIDTH) if layout.hasHeightForWidth() else layout.sizeHint().height())
        screen = QGuiApplication.screenAt(QCursor.pos()) or QGuiApplication.primaryScreen()
        area = screen.availableGeometry()
        self.move(QPoint(area.center().x() - self.width() // 2, area.bottom() - MARGIN_BOTTOM - self.height()))
        if not self.can_show:
            return
        if not self.isVisible():
            self.show()
        self.raise_()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self._translucent:  # no compositor: cut the corners with a shape mask instead
            self.setMask(QRegion(self._shape().toFillPolygon().toPolygon()))

    def _shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), RADIUS, RADIUS)
        return path

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QColor(255, 255, 255, 26))
        p.setBrush(_BG)
        p.drawPath(self._shape())
        p.end()


class _Dot(QWidget):
    """The state light: red and breathing while recording, blue while transcribing, green when done."""

    def __init__(self) -> None:
        super().__init__()
        self.setFixedSize(12, 12)
        self._colour = QColor(_MOVING)
        self._phase = 0.0
        self._timer = QTimer(self, interval=50, timeout=self._tick)

    def set_colour(self, colour: str, *, pulse: bool) -> None:
        self._colour = QColor(colour)
        self._phase = 0.0
        if pulse:
            self._timer.start()
        else:
            self._timer.stop()
        self.update()

    def _tick(self) -> None:
        self._phase = (self._phase + 0.05) % 1.0
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = QColor(self._colour)
        if self._timer.isActive():
            colour.setAlphaF(0.55 + 0.45 * (0.5 + 0.5 * math.cos(2 * math.pi * self._phase)))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(colour)
        p.drawEllipse(QRectF(1, 1, 10, 10))
        p.end()


def _supports_translucency() -> bool:
    """Whether a translucent window gets real transparency: always on Windows, macOS and Wayland,
    on X11 only with a compositing manager (else the corners would be black)."""
    if QGuiApplication.platformName() != "xcb":
        return QGuiApplication.platformName() not in ("offscreen", "minimal")
    try:
        from Xlib import display as xdisplay

        d = xdisplay.Display()
        try:
            return d.get_selection_owner(d.intern_atom(f"_NET_WM_CM_S{d.get_default_screen()}")) != 0
        finally:
            d.close()
    except Exception:  # no python-xlib or no connection: the shape mask is the safe choice
        return False


__all__ = ["Overlay", "settled_flags", "draft_html"]
