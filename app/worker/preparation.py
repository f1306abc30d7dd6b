"""Counting and running an engine's speed-up pieces (`Engine.preparations`) between jobs.

The worker and the speech server both run the pieces one at a time on the thread that runs jobs
(a CUDA graph capture must never race a job), and only while no job waits, so a dictation waits at
most for the piece under way. This module holds what both need: which piece is next, how many
are done out of how many, and how long they took, so the settings window and `/health` can show it.

The count belongs to the loaded engine: a new engine (a load, an out-of-memory step-down, the
reload after an idle unload) starts again from 0. A dictation of a new shape can add pieces to an
engine whose pieces were all done; they extend the same count ("8 of 8" after "7 of 7").
"""

from __future__ import annotations

import logging
import time
import weakref

from app.engine.base import Engine, Preparation

log = logging.getLogger(__name__)


class PreparationProgress:
    """Which of an engine's pieces ran, and the next one; not thread-safe (one job thread uses it).

    `next_piece(engine)` asks the engine for its pending pieces (it may have more after a job);
    `run(piece)` runs one and times it. A piece that raises is a bug in the engine (its `run` keeps
    expected failures to itself): it is logged and this engine gets no more pieces, so a piece that
    fails every time cannot loop forever. So is a piece the engine offers again after it ran.
    """

    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, engine: Engine | None) -> None:
        # A weak reference: an unloaded engine's memory (the GPU's, above all) must not be held here.
        self._engine = weakref.ref(engine) if engine is not None else None
        self.done = 0
        self.total = 0
        self.ms = 0.0  # time spent in this engine's pieces, summed (jobs in between not counted)
        self.error: str | None = None  # why preparing stopped early (a bug in the engine), for the log and the UI
        self._ran: set[str] = set()
        self._reported_final = True

    @property
    def pending(self) -> bool:
        """Pieces are known to wait (the last ask found some, and they have not all run)."""
        return self.done < self.total

    def next_piece(self, engine: Engine | None) -> Preparation | None:
        """The piece to run now for `engine`, or None; resets the count when the engine changed."""
        if engine is not (self._engine() if self._engine is not None else None):
            self._reset(engine)
        if engine is None or self.error is not None:
            return None
        pieces = list(getattr(engine, "preparations", lambda: [])())
        if pieces and pieces[0].label in self._ran:
            self._stop(f"the engine offered the piece {pieces[0].label!r} again after it ran")
            return None
        self.total = self.done + len(pieces)
        if pieces:
            self._reported_final = False
        return pieces[0] if pieces else None

    def run(self, piece: Preparation) -> float:
        """Run `piece` on this thread; its time in ms."""
        started = time.monotonic()
        try:
            piece.run()
        except Exception as exc:  # `run` keeps expected failures to itself: this is a bug, stop asking
            log.exception("preparing %r failed", piece.label)
            self._stop(f"{piece.label} failed ({type(exc).__name__}: {exc})")
        ms = (time.monotonic() - started) * 1000.0
        self._ran.add(piece.label)
        self.done += 1
        self.total = max(self.total, self.done)
        self.ms += ms
        log.info("prepared %s in %.0f ms (%d of %d)", piece.label, ms, self.done, self.total)
        return ms

    def final(self) -> bool:
        """True once after a run of pieces ended (all done, or stopped by a bug): time to report it."""
        if self._reported_final or self.pending:
            return False
        self._reported_final = True
        if self.done:
            log.info("all %d speed-up pieces prepared in %.1f s", self.done, self.ms / 1000.0)
        return self.done > 0

    def report(self, label: str | None = None) -> dict:
        """The fields of a `preparing` frame: `label` is the piece about to run (None on the final frame)."""
        fields = {"done": self.done, "total": self.total, "label": label, "ms": round(self.ms, 1)}
        if self.error is not None:
            fields["error"] = self.error
        return fields

    def _stop(self, why: str) -> None:
        log.error("no more speed-up pieces for this model: %s; it keeps its eager path", why)
        self.error = why
        self.total = self.done
