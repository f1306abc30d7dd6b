"""The Wayland paths, against stand-in wtype / ydotool / wl-copy / wl-paste programs that record what
they were asked to do (no compositor here): the key sequences, the one-paste observation, and the
messages when the tools or global hotkeys are missing."""

import os
import shutil
import stat

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.desktop.clipboard import WlClipboard  # noqa: E402
from app.desktop.hotkeys import HotkeyListener  # noqa: E402
from app.desktop.injection import WaylandKeys  # noqa: E402
from app.desktop.keys import parse_combo  # noqa: E402
from app.desktop.session import display_server  # noqa: E402
from app.errors import UserError  # noqa: E402

RECORDER = """#!/bin/sh
printf '%s\\n' "${{0##*/}} $*" >> "{log}"
"""
# Serves its one paste when the test creates the file `pasted`, like `wl-copy --paste-once` would.
WL_COPY = RECORDER + """cat > "{dir}/offered"
while [ ! -e "{dir}/pasted" ]; do sleep 0.01; done
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"

    def install(name, script=RECORDER):
        path = bin_dir / name
        path.write_text(script.format(log=log, dir=tmp_path))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    for helper in ("cat", "sleep"):  # all the stand-ins need; nothing else of the real PATH is visible
        (bin_dir / helper).symlink_to(shutil.which(helper))
    monkeypatch.setenv("PATH", str(bin_dir))
    return install, log, tmp_path


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


def test_wtype_sends_the_combo_with_modifiers_released_in_reverse(tools):
    install, log, _ = tools
    install("wtype")
    keys = WaylandKeys()
    keys.send("ctrl+shift+v")
    keys.type_text("hello")
    assert calls(log) == ["wtype -M ctrl -M shift -k v -m shift -m ctrl", "wtype -- hello"]


def test_ydotool_uses_evdev_key_codes(tools):
    install, log, _ = tools
    install("ydotool")
    WaylandKeys().send("ctrl+v")
    assert calls(log) == ["ydotool key 29:1 47:1 47:0 29:0"]


def test_without_a_tool_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="install wtype or ydotool"):
        WaylandKeys().send("ctrl+v")


def test_wl_copy_serves_one_paste_and_its_exit_is_the_observation(tools, qtbot):
    install, log, tmp = tools
    install("wl-copy", WL_COPY)
    install("wl-paste")
    clipboard = WlClipboard()
    assert clipboard.available()
    offer = clipboard.offer("dictated text")
    seen = []
    offer.fetched.connect(lambda: seen.append(True))
    qtbot.waitUntil(lambda: (tmp / "offered").exists() and (tmp / "offered").read_text() == "dictated text")
    assert seen == []  # nobody pasted yet
    (tmp / "pasted").touch()
    qtbot.waitUntil(lambda: seen == [True])
    assert calls(log)[0] == "wl-copy --foreground --paste-once --type text/plain;charset=utf-8"


def test_wayland_sessions_are_told_to_bind_the_toggle_command(monkeypatch, qapp):
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    assert display_server() == "wayland"
    listener = HotkeyListener(parse_combo("<ctrl>+<shift>+<space>"), parse_combo("<esc>"))
    with pytest.raises(UserError, match="python -m app toggle"):
        listener.start()
