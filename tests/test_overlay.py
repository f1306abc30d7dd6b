"""The overlay: its draft rendering, its no-focus flags, and in a real X11 session that the focused window keeps focus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt

from app.ui.overlay import Overlay, draft_html, settled_flags

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def test_words_that_survive_a_step_are_settled():
    assert settled_flags([], "the quick brown".split()) == [False, False, False]
    assert settled_flags("the quick brown fax".split(), "the quick brown fox jumps".split()) == [
        True, True, True, False, False]
    assert settled_flags("a b c".split(), "x a b c".split()) == [False, True, True, True]


def test_draft_dims_moving_words_and_keeps_the_tail_of_a_long_draft():
    html = draft_html(["fine", "<b>"], [True, False])
    assert html.index("fine") < html.index("&lt;b&gt;") and "color:#7d8593\">&lt;b&gt;" in html
    long = draft_html([f"w{i}" for i in range(200)], [True] * 200)
    assert long.startswith('<span style="color:#7d8593">…</span>') and "w199" in long and "w0<" not in long


def test_overlay_is_flagged_never_to_take_focus(qtbot):
    overlay = Overlay()
    qtbot.addWidget(overlay)
    flags = overlay.windowFlags()
    for flag in (Qt.WindowType.Tool, Qt.WindowType.FramelessWindowHint, Qt.WindowType.WindowStaysOnTopHint,
                 Qt.WindowType.WindowDoesNotAcceptFocus, Qt.WindowType.WindowTransparentForInput):
        assert flags & flag, flag
    assert overlay.testAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
    assert overlay.focusPolicy() == Qt.FocusPolicy.NoFocus


def test_overlay_walks_through_a_dictation(qtbot):
    overlay = Overlay()
    qtbot.addWidget(overlay)
    overlay.show_recording(0.5, "Release to finish")
    assert overlay.isVisible() and overlay.mode == "recording" and overlay.meter.isVisibleTo(overlay)
    overlay.show_progress(0, 0, "")
    assert overlay.mode == "transcribing" and overlay.bar.maximum() == 0 and not overlay.text.isVisibleTo(overlay)
    overlay.show_progress(1, 8, "hello wurld")
    overlay.show_progress(2, 8, "hello world again")
    assert overlay.counter.text() == "step 2 of 8" and (overlay.bar.value(), overlay.bar.maximum()) == (2, 8)
    assert overlay.text.text().count("#f2f4f7") == 1  # "hello" settled; "world" and "again" still moving
    overlay.show_result("Hello world again.", seconds=0.05)
    assert overlay.mode == "result" and "#7d8593" not in overlay.text.text()
    qtbot.waitUntil(lambda: not overlay.isVisible())
    assert overlay.mode == "hidden"


@pytest.fixture(scope="module")
def x_session(tmp_path_factory):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt install xvfb), and this test needs a real X server")
    from tests.desktop.harness import XSession, missing_tools

    missing = missing_tools()
    assert not missing, f"missing desktop test tools {missing}: run `packaging/setup.sh deps`"
    session = XSession(tmp_path_factory.mktemp("overlay")).start()
    yield session
    session.stop()


def test_focused_window_keeps_focus_and_keystrokes_while_the_overlay_shows(x_session):
    from tests.desktop.harness import Target, wait_for

    target = Target(x_session, x_session.workdir)
    target.focus()
    focus_before = x_session.xdotool("getwindowfocus").strip()
    probe = subprocess.Popen([sys.executable, "-m", "tests.overlay_probe"], env=x_session.env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert json.loads(probe.stdout.readline()) == {"ready": True}
        typed = ""
        for step, mode, word in (("recording", "recording", "one"), ("progress", "transcribing", "two"),
                                 ("result", "result", "three")):
            probe.stdin.write(step + "\n")
            probe.stdin.flush()
            report = json.loads(probe.stdout.readline())
            assert report["mode"] == mode and report["visible"], report
            assert not report["focus_window"] and not report["active"], f"the overlay took the focus at {step}"
            info = x_session.run("xwininfo", "-id", str(report["window"]))
            assert "IsViewable" in info and "Override Redirect State: yes" in info, info
            assert x_session.xdotool("getwindowfocus").strip() == focus_before, f"focus moved at {step}"
            assert x_session.xdotool("getactivewindow").strip() == target.window_id, f"activation moved at {step}"
            x_session.xdotool("type", "--delay", "20", word + " ")
            typed += word + " "
            wait_for(lambda: target.text() == typed, f"the target to receive '{typed}'", timeout=30)
        probe.stdin.write("quit\n")
        probe.stdin.flush()
        probe.wait(20)
    finally:
        if probe.poll() is None:
            probe.kill()
