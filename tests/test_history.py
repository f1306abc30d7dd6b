"""History: the SQLite store (insert, search, paste outcome, retention, audio) and the history window."""

from __future__ import annotations

import io
import os
import sqlite3
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QGuiApplication

from app.history import NOT_TRANSCRIBED, TRANSCRIBED_LATER, History
from app.ui.history_window import HistoryWindow, details, paste_status, when

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def history(tmp_path):
    store = History(tmp_path / "history.sqlite3")
    yield store
    store.close()


def test_insert_search_and_paste_outcome(history):
    first = history.add("Über den Wolken muss die Freiheit grenzenlos sein", language="de", engine="diffusion",
                        steps=12, timings={"total": 640.5, "steps": [40.0] * 12}, target="firefox")
    second = history.add("Call the dentist before noon", language="en", created=time.time() + 1)
    history.set_paste_result(first, False, "No window took the text.")
    history.set_paste_result(second, True)

    assert [e.id for e in history.search()] == [second, first]  # newest first
    assert [e.id for e in history.search("über")] == [first]  # case folded beyond ASCII
    assert [e.id for e in history.search("dentist NOON")] == [second]  # every word, any case
    assert history.search("dentist wolken") == []
    assert [e.id for e in history.search(failed_only=True)] == [first]
    entry = history.get(first)
    assert (entry.language, entry.steps, entry.target, entry.paste_ok) == ("de", 12, "firefox", False)
    assert entry.timings["steps"] == [40.0] * 12 and entry.paste_message == "No window took the text."
    assert details(entry).endswith(" · German · 12 steps · transcribed in 0.64 s · into firefox · paste failed")


def test_search_treats_sql_wildcards_as_text(history):
    history.add("100% done")
    history.add("1000 done")
    assert [e.text for e in history.search("100%")] == ["100% done"]


def test_retention_by_age_and_count(history):
    now = time.time()
    for days_ago in (40, 20, 3, 1, 0):
        history.add(f"{days_ago} days ago", created=now - days_ago * 86400)
    assert history.prune(max_days=30, now=now) == 1
    assert history.prune(max_entries=2) == 2
    assert [e.text for e in history.search()] == ["0 days ago", "1 days ago"]
    assert history.prune(max_days=0, max_entries=0) == 0  # 0: no limit


def test_retention_never_deletes_a_recording_still_waiting_for_its_transcript(history):
    """Pruning runs at start-up, before the model has had its chance: a kept recording must outlive it."""
    now = time.time()
    waiting = history.add("", created=now - 40 * 86400, audio=np.zeros(1600, np.float32))
    history.set_transcript(waiting, "", NOT_TRANSCRIBED)
    for days_ago in (20, 1, 0):
        history.add(f"{days_ago} days ago", created=now - days_ago * 86400)
    assert history.prune(max_days=30, max_entries=1, now=now) == 2
    assert history.untranscribed() == [waiting]
    assert [e.text for e in history.search()] == ["0 days ago", ""]


def test_audio_is_kept_as_wav_only_when_given(history):
    tone = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 16000)).astype(np.float32)
    with_audio = history.add("with audio", audio=tone)
    without = history.add("without audio")
    assert history.get(with_audio).has_audio and not history.get(without).has_audio
    assert history.audio(without) is None
    with wave.open(io.BytesIO(history.audio(with_audio))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 16000)
        back = np.frombuffer(wav.readframes(16000), "<i2") / 32767
    assert np.allclose(back, tone, atol=1e-4)


def test_history_window_finds_copies_and_repastes_a_failed_paste(qtbot, history):
    ok = history.add("The meeting moves to Thursday.", created=time.time() - 60)
    failed = history.add("git commit -m 'fix focus'", target="xterm")
    history.set_paste_result(ok, True)
    history.set_paste_result(failed, False, "No window took the text.")
    window = HistoryWindow(history)
    qtbot.addWidget(window)
    window.show()
    assert window.list.topLevelItemCount() == 2
    assert window.list.topLevelItem(0).text(2) == "Paste failed"

    window.failed_only.setChecked(True)
    assert [window.list.topLevelItem(i).text(1) for i in range(window.list.topLevelItemCount())] == \
        ["git commit -m 'fix focus'"]
    assert window.text.toPlainText() == "git commit -m 'fix focus'" and "into xterm" in window.meta.text()
    assert not window.failed.isHidden() and "(No window took the text)" in window.failed.text()

    window.copy_button.click()
    assert QGuiApplication.clipboard().text() == "git commit -m 'fix focus'"
    with qtbot.waitSignal(window.repaste_requested) as signal:
        window.paste_button.click()
    assert signal.args == [failed, "git commit -m 'fix focus'"]

    window.failed_only.setChecked(False)
    window.search.setText("thursday")
    qtbot.waitUntil(lambda: window.list.topLevelItemCount() == 1)
    assert window.current_id() == ok
    window.delete_button.click()
    assert history.get(ok) is None and window.list.topLevelItemCount() == 0
    assert window.count.text() == "0 of 1 transcripts"


def test_a_cut_list_says_that_it_is_cut(qtbot, history):
    """The list shows the newest 500; with more kept (the default keeps 1000) it said "620 transcripts" over 500
    rows, and an older one could not be found by scrolling with no word of why."""
    for n in range(620):
        history.add(f"note {n}", created=1000.0 + n)
    window = HistoryWindow(history)
    qtbot.addWidget(window)
    assert window.list.topLevelItemCount() == 500
    assert window.count.text() == "The newest 500 transcripts of 620: search to find an older one."
    window.search.setText("note 61")
    window.refresh()
    assert window.count.text() == f"{window.list.topLevelItemCount()} of 620 transcripts"


def test_when_reads_like_a_clock():
    now = time.mktime((2026, 5, 12, 15, 0, 0, 0, 0, -1))
    assert when(now - 600, now) == "14:50"
    assert when(now - 86400, now).startswith("Yesterday")
    assert when(now - 5 * 86400, now).endswith("15:00") and "May" in when(now - 5 * 86400, now)


def test_what_became_of_each_text_is_kept_and_shown(history):
    typed = history.add("typed into a window that took no paste")
    history.set_paste_result(typed, True, "", "typed")
    kept = history.add("", audio=np.zeros(1600, np.float32))
    history.set_transcript(kept, "", "not_transcribed")
    assert [paste_status(history.get(i)) for i in (typed, kept)] == ["Typed", "Not transcribed"]
    assert history.untranscribed() == [kept]
    history.set_transcript(kept, "said while the model was missing", "transcribed_later")
    assert history.untranscribed() == [] and paste_status(history.get(kept)) == "Transcribed later"
    assert details(history.get(typed)).endswith(" · typed")


def test_a_history_from_before_outcomes_gains_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as it was, without `outcome`
        db.execute("CREATE TABLE dictations (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, text TEXT "
                   "NOT NULL, language TEXT NOT NULL DEFAULT '', engine TEXT NOT NULL DEFAULT '', model TEXT NOT NULL "
                   "DEFAULT '', steps INTEGER, timings TEXT NOT NULL DEFAULT '{}', target TEXT NOT NULL DEFAULT '', "
                   "paste_ok INTEGER, paste_message TEXT NOT NULL DEFAULT '', audio BLOB)")
        db.execute("INSERT INTO dictations (created, text, paste_ok) VALUES (1.0, 'old words', 1)")
    old = History(path)
    (entry,) = old.search()
    assert entry.text == "old words" and entry.outcome == "" and paste_status(entry) == "Pasted"
    old.close()


def test_raw_and_final_transcripts_are_both_kept(tmp_path):
    history = History(tmp_path / "h.sqlite3")
    changed = history.add("Deploy on Kubernetes.", raw_text="Um, deploy on cuber netties.", language="en")
    same = history.add("Hello.")
    assert history.get(changed).raw_text == "Um, deploy on cuber netties." and history.get(same).raw_text == "Hello."
    assert details(history.get(changed)).endswith("\nAs heard: Um, deploy on cuber netties.")
    assert "As heard" not in details(history.get(same))
    kept = history.add("", audio=np.zeros(1600, np.float32))
    history.set_transcript(kept, "Final.", TRANSCRIBED_LATER, raw_text="final period")
    assert (history.get(kept).text, history.get(kept).raw_text) == ("Final.", "final period")
    history.close()


def test_a_history_from_before_the_text_pipeline_gains_raw_text(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as it was, with `outcome` but without `raw_text`
        db.execute("CREATE TABLE dictations (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, text TEXT "
                   "NOT NULL, language TEXT NOT NULL DEFAULT '', engine TEXT NOT NULL DEFAULT '', model TEXT NOT NULL "
                   "DEFAULT '', steps INTEGER, timings TEXT NOT NULL DEFAULT '{}', target TEXT NOT NULL DEFAULT '', "
                   "paste_ok INTEGER, paste_message TEXT NOT NULL DEFAULT '', audio BLOB, outcome TEXT NOT NULL "
                   "DEFAULT '')")
        db.execute("INSERT INTO dictations (created, text, paste_ok, outcome) VALUES (1.0, 'old words', 1, 'pasted')")
    old = History(path)
    (entry,) = old.search()
    assert (entry.text, entry.raw_text, entry.outcome) == ("old words", "old words", "pasted")
    new = old.add("New.", raw_text="new")
    assert old.get(new).raw_text == "new"
    old.close()
    reopened = History(path)  # the migration runs once; opening again changes nothing
    assert [e.raw_text for e in reopened.search()] == ["new", "old words"]
    reopened.close()


def fill_and_damage(history: History, rows: int = 400) -> None:
    """Fill the history, write everything into the main file, then overwrite some of its pages: the file still
    opens, and a query that reaches those pages fails with "database disk image is malformed"."""
    for n in range(rows):
        history.add(f"dictation number {n} " + "words " * 40, created=1000.0 + n)
    checkpoint = sqlite3.connect(history.path)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    with open(history.path, "r+b") as fh:
        fh.seek(5 * 4096)
        fh.write(b"\xab" * 7 * 4096)


def _readable(path: Path) -> list[str]:
    """The texts SQLite can still read from a damaged file, row by row."""
    db = sqlite3.connect(path)
    texts = []
    for entry_id in range(1, 1000):
        try:
            row = db.execute("SELECT text FROM dictations WHERE id = ?", (entry_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row:
            texts.append(row[0])
    db.close()
    return texts


def test_a_partly_damaged_history_keeps_what_can_be_read_and_its_window_opens(qtbot, tmp_path):
    """The file opened, then the first query said "database disk image is malformed": the app did not start
    (retention pruning at start-up raised) and the history window could not open."""
    path = tmp_path / "history.sqlite3"
    damaged = History(path)
    fill_and_damage(damaged)
    damaged.close()
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        sqlite3.connect(path).execute("SELECT text FROM dictations").fetchall()
    readable = _readable(path)
    assert 0 < len(readable) < 400

    notices: list[str] = []
    history = History(path, on_repair=notices.append)
    assert history.prune(max_days=30, max_entries=1000, now=1000.0 + 10 * 86400) == 0
    assert sorted(e.text for e in history.search(limit=1000)) == sorted(readable)
    assert history.get(1).text.startswith("dictation number 0 ")  # ids kept: kept recordings still find theirs
    assert len(notices) == 1 and "history.sqlite3.broken" in notices[0]
    assert f"with the {len(readable)} transcripts that could still be read" in notices[0]
    assert (tmp_path / "history.sqlite3.broken").exists()
    window = HistoryWindow(history)
    qtbot.addWidget(window)
    window.show()
    assert window.list.topLevelItemCount() == len(readable) and window.count.text() == f"{len(readable)} transcripts"
    history.close()


def test_a_second_repair_keeps_the_first_damaged_copy(tmp_path):
    """The second repair renamed its damaged file onto the first one's `.broken` copy, which the notice had told
    the user to keep until no longer needed."""
    path = tmp_path / "history.sqlite3"
    notices: list[str] = []
    for _ in range(2):
        damaged = History(path)
        fill_and_damage(damaged)
        damaged.close()
        History(path, on_repair=notices.append).close()
    first, second = tmp_path / "history.sqlite3.broken", tmp_path / "history.sqlite3.broken.2"
    assert "moved to history.sqlite3.broken and" in notices[0] and "moved to history.sqlite3.broken.2 and" in notices[1]
    assert _readable(first) and _readable(second) and first.read_bytes() != second.read_bytes()


def test_damage_a_later_query_meets_is_repaired_and_the_query_answered(tmp_path):
    notices: list[str] = []
    history = History(tmp_path / "history.sqlite3", on_repair=notices.append)
    fill_and_damage(history)
    other = sqlite3.connect(history.path)  # another change: the open connection reads the file afresh
    other.execute("INSERT INTO dictations (created, text) VALUES (5000.0, 'from elsewhere')")
    other.commit()
    other.close()
    entries = history.search(limit=1000)
    readable = _readable(tmp_path / "history.sqlite3.broken")
    assert sorted(e.text for e in entries) == sorted(readable) and "from elsewhere" in readable
    assert len(notices) == 1 and "was damaged (database disk image is malformed)" in notices[0]
    history.close()
