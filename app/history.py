"""The dictation history: every transcript in an SQLite file in the per-OS data folder.

Kept so that nothing the user said is lost to a failed paste: a dictation is stored when its
transcript arrives, before the paste, and its paste outcome is filled in afterwards. The audio is
only kept when the user asks for it (off by default), as 16-bit WAV in the same row, so deleting
an entry deletes its recording too. Everything runs on the GUI thread: one insert per dictation is
far below a millisecond, and SQLite's WAL mode keeps a reader (the history window) from blocking it.
A damaged file (overwritten, or pages broken by a crash or a failing disk) is moved aside as
`history.sqlite3.broken` (`.broken.2` and on while an earlier copy is kept) and a new history started
with every transcript that can still be read from it, as a damaged settings file is salvaged: left in
place, a file that was not a database stopped the history at every start, and one that opened but failed
its queries stopped the app from starting at all. Damage is looked for when the file is opened (SQLite's
quick check, milliseconds) and repaired the same way when a later query meets it.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sqlite3
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.desktop.paths import APP_NAME

log = logging.getLogger(__name__)
HISTORY_FILE = "history.sqlite3"
LOCK_WAIT_S = 0.25  # how long a write waits for another program's lock before it fails
# The outcome of a recording kept because the model could not run; `set_transcript` replaces it.
NOT_TRANSCRIBED, TRANSCRIBED_LATER = "not_transcribed", "transcribed_later"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS dictations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    text TEXT NOT NULL,
    language TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    steps INTEGER,
    timings TEXT NOT NULL DEFAULT '{}',
    target TEXT NOT NULL DEFAULT '',
    paste_ok INTEGER,
    paste_message TEXT NOT NULL DEFAULT '',
    audio BLOB,
    outcome TEXT NOT NULL DEFAULT '',
    raw_text TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dictations_created ON dictations(created);
"""
_COLUMNS = ("id", "created", "text", "language", "engine", "model", "steps", "timings", "target", "paste_ok",
            "paste_message", "audio", "outcome", "raw_text")
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class HistoryDamaged(sqlite3.DatabaseError):
    """SQLite's quick check found damage that no query has met yet."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Damage to the file itself, which a new file repairs; a lock, a full disk or a read-only folder is not."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE_CODES


def _repairs_damage(method: Callable) -> Callable:
    """Run a query; when it meets a damaged file, repair the history (`History._repair`) and run it once more."""
    @functools.wraps(method)
    def run(self: History, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._repair(exc)
            return method(self, *args, **kwargs)
    return run


def data_dir() -> Path:
    """The per-OS folder for app data (XDG_DATA_HOME on Linux)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass
class Dictation:
    """One history row. `paste_ok` is None while the paste is still under way (or never reported)."""

    id: int
    created: float
    text: str
    language: str = ""
    engine: str = ""
    model: str = ""
    steps: int | None = None
    timings: dict = field(default_factory=dict)
    target: str = ""
    paste_ok: bool | None = None
    paste_message: str = ""
    has_audio: bool = False
    outcome: str = ""  # pasted, typed, clipboard, failed (paste.py), or NOT_TRANSCRIBED / TRANSCRIBED_LATER
    raw_text: str = ""  # the engine's transcript before the text pipeline (app/text/); `text` is what was pasted


class History:
    """The history database; `path=None` opens the file in the user's data folder. `on_repair(sentence)` is
    told when a damaged file was set aside, at opening or later, so that the user learns where it went."""

    def __init__(self, path: Path | None = None, on_repair: Callable[[str], None] | None = None) -> None:
        self.path = path or data_dir() / HISTORY_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.on_repair = on_repair or (lambda sentence: log.warning("history: %s", sentence))
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked or unreadable: not damage, nothing to move
                raise
            self._repair(exc)

    def _open(self) -> None:
        # Everything here runs on the GUI thread: another program holding the file's write lock must cost a
        # dictation a notice (the caller's), not sqlite3's default 5 s wait on the thread that pastes.
        self._db = sqlite3.connect(str(self.path), timeout=LOCK_WAIT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        # SQLite's LIKE folds ASCII only; Python's casefold also matches "Über" to "über" (or "ß" to "ss").
        self._db.create_function("casefold", 1, lambda s: (s or "").casefold(), deterministic=True)
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:  # before the schema is touched: nothing is written into a damaged file
            log.warning("history: SQLite's quick check of %s: %s", self.path, "; ".join(problems))
            raise HistoryDamaged("database disk image is malformed")  # SQLite's own words for it
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(dictations)")}
        if "outcome" not in columns:  # a history from before outcomes were kept
            with self._db:
                self._db.execute("ALTER TABLE dictations ADD COLUMN outcome TEXT NOT NULL DEFAULT ''")
        if "raw_text" not in columns:  # a history from before the text pipeline: its raw text is its text
            with self._db:
                self._db.execute("ALTER TABLE dictations ADD COLUMN raw_text TEXT NOT NULL DEFAULT ''")
                self._db.execute("UPDATE dictations SET raw_text = text")

    def _repair(self, reason: sqlite3.DatabaseError) -> None:
        """Move the damaged file aside, start a new one with every transcript still readable, and say so."""
        self._db.close()
        broken = self._move_aside()
        self._open()
        kept = self._salvage(broken)
        rescued = (f" with the {kept} transcript{'s' if kept != 1 else ''} that could still be read from it"
                   if kept else "")
        self.on_repair(f"The history file {self.path} was damaged ({reason}); it was moved to {broken.name} and a new "
                       f"history started{rescued}. Delete that copy once you no longer need it.")

    def _salvage(self, broken: Path) -> int:
        """Copy every row of `broken` that can still be read, keeping ids; a row whose recording is unreadable
        keeps its text. Walks the ids one query at a time, stepping id by id past a broken page where a scan
        would stop for good. Returns how many rows were copied."""
        try:
            src = sqlite3.connect(str(broken))
        except sqlite3.Error:
            return 0
        kept, start = 0, 1
        try:
            present = {row[1] for row in src.execute("PRAGMA table_info(dictations)")}
            columns = [c for c in _COLUMNS if c in present and c != "audio"]
            last = _last_id(src)
            while start <= last:
                try:
                    row = src.execute("SELECT id FROM dictations WHERE id >= ? ORDER BY id LIMIT 1", (start,)).fetchone()
                except sqlite3.Error:
                    start += 1  # on a broken page
                    continue
                if row is None:
                    break
                start = row[0] + 1
                try:
                    kept += self._copy_row(src, row[0], columns, raw_text="raw_text" in present)
                except sqlite3.Error:
                    continue  # a row whose own page is broken
        except sqlite3.Error as exc:  # no table at all, or not a database: nothing more to read
            log.info("history: salvage stopped after %d rows: %s", kept, exc)
        finally:
            src.close()
        return kept

    def _copy_row(self, src: sqlite3.Connection, entry_id: int, columns: list[str], *, raw_text: bool) -> int:
        """Copy one row of `src` into this history; returns 1, or 0 when no row has that id."""
        row = src.execute(f"SELECT {', '.join(columns)} FROM dictations WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            return 0
        values = dict(zip(columns, row))
        try:
            values["audio"] = src.execute("SELECT audio FROM dictations WHERE id = ?", (entry_id,)).fetchone()[0]
        except sqlite3.Error:
            pass  # the text is what matters; a broken recording is left behind
        if not raw_text:  # a history from before the text pipeline: its raw text is its text
            values["raw_text"] = values.get("text", "")
        with self._db:
            self._db.execute(f"INSERT INTO dictations ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                             tuple(values.values()))
        return 1

    def _move_aside(self) -> Path:
        """Rename the damaged file (and its WAL files) to *.broken, keeping it for the user; returns the new path.
        An earlier damaged copy the user has not deleted stays: this one takes the next free name (.broken.2, ...)."""
        broken = self.path.with_name(self.path.name + ".broken")
        number = 1
        while any(broken.with_name(broken.name + s).exists() for s in ("", "-wal", "-shm")):
            number += 1
            broken = self.path.with_name(f"{self.path.name}.broken.{number}")
        for suffix in ("-wal", "-shm"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                extra.replace(broken.with_name(broken.name + suffix))
        self.path.replace(broken)
        return broken

    def close(self) -> None:
        self._db.close()

    @_repairs_damage
    def add(self, text: str, *, language: str = "", engine: str = "", model: str = "", steps: int | None = None,
            timings: dict | None = None, target: str = "", audio: np.ndarray | None = None,
            created: float | None = None, raw_text: str | None = None, outcome: str = "") -> int:
        """Store a transcript; returns its id for `set_paste_result`. `audio`: 16 kHz float32 mono.
        `raw_text` is the engine's text before the text pipeline (None: the same as `text`). `outcome` is
        written in the same row at once (a recording kept untranscribed: written after the row, a quit in
        between left it with no outcome, and it was never transcribed)."""
        blob = wav_bytes(audio) if audio is not None and len(audio) else None
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO dictations (created, text, language, engine, model, steps, timings, target, audio, raw_text,"
                " outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time() if created is None else created, text, language, engine, model, steps,
                 json.dumps(timings or {}), target, blob, text if raw_text is None else raw_text, outcome))
        return int(cursor.lastrowid)

    @_repairs_damage
    def set_paste_result(self, entry_id: int, ok: bool, message: str = "", outcome: str = "") -> None:
        with self._db:
            self._db.execute("UPDATE dictations SET paste_ok = ?, paste_message = ?, outcome = ? WHERE id = ?",
                             (int(ok), message, outcome, entry_id))

    @_repairs_damage
    def set_transcript(self, entry_id: int, text: str, outcome: str, raw_text: str | None = None) -> None:
        """Fill in the text of a recording kept untranscribed (outcome NOT_TRANSCRIBED) once it is transcribed."""
        with self._db:
            self._db.execute("UPDATE dictations SET text = ?, outcome = ?, raw_text = ? WHERE id = ?",
                             (text, outcome, text if raw_text is None else raw_text, entry_id))

    @_repairs_damage
    def untranscribed(self) -> list[int]:
        """Ids of the recordings still waiting for a model that works, oldest first."""
        rows = self._db.execute("SELECT id FROM dictations WHERE outcome = ? AND audio IS NOT NULL ORDER BY id",
                                (NOT_TRANSCRIBED,))
        return [int(r[0]) for r in rows]

    @_repairs_damage
    def set_target(self, entry_id: int, target: str) -> None:
        with self._db:
            self._db.execute("UPDATE dictations SET target = ? WHERE id = ?", (target, entry_id))

    @_repairs_damage
    def search(self, query: str = "", *, failed_only: bool = False, limit: int = 500) -> list[Dictation]:
        """Newest first; every word of `query` must appear somewhere in the text, ignoring case. `failed_only`:
        failed pastes and recordings not transcribed."""
        where, args = [], []
        for word in query.split():
            where.append("instr(casefold(text), ?) > 0")
            args.append(word.casefold())
        if failed_only:  # what needs the user: a paste that did not arrive, a recording not transcribed
            where.append("(paste_ok = 0 OR outcome = ?)")
            args.append(NOT_TRANSCRIBED)
        sql = ("SELECT id, created, text, language, engine, model, steps, timings, target, paste_ok, paste_message,"
               " audio IS NOT NULL, outcome, raw_text FROM dictations")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        return [_row(r) for r in self._db.execute(sql, (*args, limit))]

    @_repairs_damage
    def get(self, entry_id: int) -> Dictation | None:
        row = self._db.execute(
            "SELECT id, created, text, language, engine, model, steps, timings, target, paste_ok, paste_message,"
            " audio IS NOT NULL, outcome, raw_text FROM dictations WHERE id = ?", (entry_id,)).fetchone()
        return _row(row) if row else None

    @_repairs_damage
    def audio(self, entry_id: int) -> bytes | None:
        """The recording as WAV file bytes, when it was kept."""
        row = self._db.execute("SELECT audio FROM dictations WHERE id = ?", (entry_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    @_repairs_damage
    def delete(self, entry_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM dictations WHERE id = ?", (entry_id,))

    @_repairs_damage
    def clear(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM dictations")
        self._db.execute("VACUUM")  # the user asked for it to be gone: do not leave it in free pages

    @_repairs_damage
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM dictations").fetchone()[0])

    @_repairs_damage
    def prune(self, *, max_days: int = 0, max_entries: int = 0, now: float | None = None) -> int:
        """Apply the retention settings (0: no limit); returns how many entries were deleted. A recording still
        waiting for a model that works (NOT_TRANSCRIBED) is never deleted: pruning runs at start-up, before the
        model has had its chance, and the recording would be lost untranscribed (a week offline with
        "Keep for 3 days", or "Keep at most 5" after eight dictations the model could not take)."""
        where, params = self._beyond(max_days, max_entries, now)
        with self._db:
            return self._db.execute(f"DELETE FROM dictations WHERE {where}", params).rowcount

    @_repairs_damage
    def would_prune(self, *, max_days: int = 0, max_entries: int = 0, now: float | None = None) -> int:
        """How many entries `prune` would delete with these settings: asked before a change deletes any."""
        where, params = self._beyond(max_days, max_entries, now)
        return int(self._db.execute(f"SELECT COUNT(*) FROM dictations WHERE {where}", params).fetchone()[0])

    @staticmethod
    def _beyond(max_days: int, max_entries: int, now: float | None) -> tuple[str, tuple]:
        """The entries the retention settings let go, as an SQL condition and its parameters."""
        clauses, params = [], []
        if max_days > 0:
            clauses.append("created < ?")
            params.append((time.time() if now is None else now) - max_days * 86400)
        if max_entries > 0:
            clauses.append("id NOT IN (SELECT id FROM dictations ORDER BY created DESC, id DESC LIMIT ?)")
            params.append(max_entries)
        if not clauses:
            return "0", ()
        return f"outcome != ? AND ({' OR '.join(clauses)})", (NOT_TRANSCRIBED, *params)


def _last_id(db: sqlite3.Connection) -> int:
    """The highest id a damaged history may hold: the table's own, or AUTOINCREMENT's record of it."""
    last = 0
    for sql in ("SELECT max(id) FROM dictations", "SELECT seq FROM sqlite_sequence WHERE name = 'dictations'"):
        try:
            last = max(last, int((db.execute(sql).fetchone() or [0])[0] or 0))
        except (sqlite3.Error, TypeError, ValueError):
            continue
    return last


def wav_samples(data: bytes) -> np.ndarray:
    """The float32 samples of a WAV file written by `wav_bytes` (16-bit mono)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32767


def wav_bytes(audio: np.ndarray, rate: int = 16_000) -> bytes:
    """Float samples in [-1, 1] as a 16-bit mono WAV file: what any player opens, at half float32's size."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def _row(r: tuple) -> Dictation:
    return Dictation(id=r[0], created=r[1], text=r[2], language=r[3], engine=r[4], model=r[5], steps=r[6],
                     timings=json.loads(r[7] or "{}"), target=r[8], paste_ok=None if r[9] is None else bool(r[9]),
                     paste_message=r[10], has_audio=bool(r[11]), outcome=r[12], raw_text=r[13])
