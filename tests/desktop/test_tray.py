"""The tray icon in a real tray (trayer): notices queue instead of replacing each other, a left click
opens the menu, and the menu reaches the history."""

import json
import queue
import subprocess
import threading
import time

import pytest

from tests.desktop.harness import PYTHON, ROOT


@pytest.fixture
def tray(x_session):
    proc = subprocess.Popen([PYTHON, "-m", "tests.desktop.tray_probe"], env=x_session.env, cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    seen: dict = {}

    def read() -> None:
        for text in proc.stdout:
            line = json.loads(text)
            seen.update(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def next_line(key: str, timeout: float = 30) -> object:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if key in line:
                return line[key]

    yield proc, next_line, seen.get
    proc.kill()
    proc.wait(10)


def test_a_left_click_opens_the_menu_and_it_has_history(x_session, tray):
    _, next_line, latest = tray
    next_line("geometry")
    time.sleep(1.0)  # trayer may still lay its icons out
    for attempt in range(3):  # a click while the tray re-lays its icons can miss
        x, y, w, h = latest("geometry")
        x_session.xdotool("mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
        try:
            menu = next_line("menu", timeout=5)
            break
        except queue.Empty:
            continue
    else:
        raise AssertionError("a left click on the tray icon opened no menu")
    assert "History…" in menu and "Settings…" in menu and "Quit" in menu
    x_session.xdotool("key", "Escape")


def test_two_notices_at_once_are_both_shown_in_turn(tray):
    proc, next_line, _ = tray
    next_line("geometry")
    proc.stdin.write("notices\n")
    proc.stdin.flush()
    first = next_line("notice")
    assert first.startswith("The settings file was damaged")
    started = time.monotonic()
    assert next_line("notice") == "Ready: hold Ctrl+Shift+Space"
    assert time.monotonic() - started >= 5, "the error stays up for its 6 s before the next notice"
