"""Hotkey combos: parsing, matching sided modifiers, and the auto-repeat grace period (no X needed)."""

import pytest

from app.desktop.keys import ComboTracker, parse_combo
from app.errors import UserError


def test_parse_and_format():
    assert str(parse_combo("Ctrl+Shift+Space")) == "<ctrl>+<shift>+<space>"
    assert str(parse_combo("<alt_r>")) == "<alt_r>"
    assert str(parse_combo("<ctrl>++")) == "<ctrl>++"
    assert parse_combo("<ctrl>+<alt>+d").label() == "Ctrl+Alt+D"
    assert parse_combo("<alt_r>").label() == "Right Alt"
    with pytest.raises(UserError, match="not a key name"):
        parse_combo("<ctrl>+<hyperdrive>")
    with pytest.raises(UserError, match="empty"):
        parse_combo(" ")


def test_sided_modifiers():
    right_alt = parse_combo("<alt_r>")
    assert right_alt.matches({"alt_r"}) and right_alt.matches({"alt_gr"}) and not right_alt.matches({"alt"})
    ctrl = parse_combo("<ctrl>+d")
    assert ctrl.matches({"ctrl_r", "d"}) and ctrl.matches({"ctrl", "d"}) and not ctrl.matches({"d"})


def test_a_modifier_only_hotkey_presses_and_releases():
    tracker = ComboTracker(parse_combo("<alt_r>"), grace_s=0.05)
    assert tracker.key("alt_r", True, 1.0) == [("press", 1.0)]
    assert tracker.key("alt_r", False, 2.0) == []
    assert tracker.deadline == pytest.approx(2.05)
    assert tracker.poll(2.06) == [("release", 2.0)]


def test_auto_repeat_release_press_pairs_are_not_releases():
    tracker = ComboTracker(parse_combo("<ctrl>+<shift>+<space>"), grace_s=0.05)
    events = []
    for name in ("ctrl", "shift", "space"):
        events += tracker.key(name, True, 1.0)
    for t in (1.5, 1.53, 1.56):  # X11 auto-repeat: release + press of the same key, a few ms apart
        events += tracker.key("space", False, t)
        events += tracker.key("space", True, t + 0.001)
    events += tracker.key("space", True, 1.6)  # detectable auto-repeat: presses only
    events += tracker.key("space", False, 3.0)
    events += tracker.poll(3.2)
    assert events == [("press", 1.0), ("release", 3.0)]


def test_a_new_press_after_the_grace_period_is_a_new_press():
    tracker = ComboTracker(parse_combo("<ctrl>+d"), grace_s=0.05)
    tracker.key("ctrl", True, 0.0)
    tracker.key("d", True, 0.0)
    tracker.key("d", False, 1.0)
    assert tracker.key("d", True, 1.2) == [("release", 1.0), ("press", 1.2)]


def test_windows_and_macos_drop_only_the_hotkeys_own_key():
    """suppress.py's decisions (the pynput filters that apply them run on Windows and macOS only)."""
    from app.desktop.suppress import KeySuppressor

    s = KeySuppressor(parse_combo("<ctrl>+<shift>+<space>"), parse_combo("<esc>"))
    assert [s.feed(k, True) for k in ("ctrl_l", "shift", "space", "space")] == [False, False, True, True]
    assert s.feed("ctrl_l", False) is False  # a modifier's release always passes, or it would stick
    assert s.feed("space", True) is True  # still repeating after Ctrl went up: swallowed with its press
    assert s.feed("space", False) is True and s.feed("shift", False) is False
    assert s.feed("space", True) is False and s.feed("space", False) is False  # a plain space is typed
    assert s.feed("esc", True) is False and s.feed("esc", False) is False
    s.cancel_armed = True
    assert s.feed("esc", True) is True and s.feed("esc", False) is True
