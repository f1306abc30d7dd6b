"""The look shared by the settings and history windows: quiet hints, clear errors, a calm page list.

Colours come from the palette where they can (`palette(...)`), so a dark desktop theme stays dark;
only the accents (error red, warning amber, selection) are fixed.
"""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

STYLE = """
QLabel#hint { color: palette(placeholder-text); font-size: 9pt; }
QLabel#error, QLabel[error="true"] { color: #c62828; }
QLabel#note { color: #8a5a00; }
QLabel#heading { font-size: 15pt; font-weight: 600; padding-bottom: 4px; }
QLabel#banner {
    background: #fff4d6; color: #5c4300; border: 1px solid #f0d58c; border-radius: 6px; padding: 8px 10px;
}
QListWidget#pages {
    background: palette(alternate-base); border: none; border-right: 1px solid palette(midlight);
    padding-top: 12px; min-width: 150px; max-width: 150px; font-size: 10.5pt; outline: 0;
}
QListWidget#pages::item { padding: 7px 16px; border-radius: 6px; margin: 1px 8px; color: palette(text); }
QListWidget#pages::item:selected { background: #2f6fde; color: white; }
QListWidget#pages::item:hover:!selected { background: palette(midlight); }
QPushButton#flat { border: none; color: #2f6fde; background: transparent; padding: 4px 6px; }
QPushButton#flat:hover { text-decoration: underline; }
QWidget#page { background: palette(base); }
QScrollArea { background: palette(base); }
QLabel#failed {
    background: #fdecea; color: #8e1b12; border: 1px solid #f5c2bd; border-radius: 6px; padding: 6px 10px;
}
QTreeWidget#transcripts { border: 1px solid palette(mid); border-radius: 6px; }
QTreeWidget#transcripts::item { padding: 5px 6px; }
QTreeWidget#transcripts QHeaderView::section {
    background: palette(window); border: none; border-bottom: 1px solid palette(mid); padding: 6px 6px;
    font-weight: 600;
}
QPlainTextEdit#transcript {
    font-size: 12pt; border: 1px solid palette(mid); border-radius: 6px; padding: 6px; background: palette(base);
}
"""


def apply_style(window: QWidget) -> None:
    window.setStyleSheet(STYLE)
