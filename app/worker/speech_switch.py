"""The app's one speech client, whichever runs the model: a worker on this computer or a speech server.

The controller, overlay, history, kept recordings and settings window connect to the app's speech
client once, at start. A worker and a server need different clients (`WorkerClient`,
`ServerClient`), so choosing a speech server in Settings, or going back to a model here, used to
need a restart. `SpeechSwitch` stands in front of them instead: it forwards the current client's
signals and calls, and when the kind changes it starts a client of the new kind at once (new
dictations go there) while the old one finishes the jobs it holds, whose results still arrive
through the switch, and is stopped then. No recording is lost by switching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer

from app.engine import EngineSpec
from app.worker.speech_client import SpeechClient

MakeClient = Callable[[EngineSpec, QObject], SpeechClient]


def runs_on_server(spec: EngineSpec) -> bool:
    return spec.engine == "server"


class SpeechSwitch(SpeechClient):
    """A `SpeechClient` that forwards to the client `make(spec, parent)` builds for the current spec."""

    def __init__(self, spec: EngineSpec, make: MakeClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._make = make
        self._spec = spec
        self._retiring: list[SpeechClient] = []  # the previous kind, finishing its jobs
        self._current = self._adopt(make(spec, self))

    @property
    def client(self) -> SpeechClient:
        """The client that takes new dictations."""
        return self._current

    @property
    def state(self) -> str:
        return self._current.state

    @property
    def info(self) -> dict:
        return self._current.info

    @property
    def pid(self) -> int | None:
        return self._current.pid

    @property
    def preparation(self) -> dict:
        return self._current.preparation

    @property
    def pending(self) -> int:
        return self._current.pending + sum(client.pending for client in self._retiring)

    def start(self) -> None:
        self._current.start()

    def stop(self) -> None:
        """Stop every client; jobs still held fail with `stopped`, as each client's own stop says."""
        for client in [*self._retiring, self._current]:
            client.stop()
        self._retiring.clear()

    def configure(self, spec: EngineSpec) -> None:
        """Another model, or another kind of client: a server instead of a worker, or the reverse."""
        if runs_on_server(spec) == runs_on_server(self._spec):
            self._spec = spec
            self._current.configure(spec)
            return
        self._spec, old = spec, self._current
        self._current = self._adopt(self._make(spec, self))  # `make` gives it the app's current options
        if old.pending:
            self._retiring.append(old)
        else:
            _dispose(old)
        self._current.start()
        self.state_changed.emit(self._current.state)
        self.preparing.emit(0, 0, "")  # the old client's progress is not the new one's

    def set_idle_unload(self, seconds: float | None) -> None:
        self._current.set_idle_unload(seconds)

    def submit(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
               vocabulary: Sequence[str] = ()) -> str:
        return self._current.submit(audio, language=language, steps=steps, vocabulary=vocabulary)

    def speculate(self, audio: np.ndarray, *, language: str = "auto", steps: int | None = None,
                  vocabulary: Sequence[str] = ()) -> None:
        self._current.speculate(audio, language=language, steps=steps, vocabulary=vocabulary)

    def cancel(self, job_id: str) -> None:
        """Cancel the job wherever it runs (a client ignores ids it does not hold)."""
        for client in [self._current, *self._retiring]:
            client.cancel(job_id)

    def _adopt(self, client: SpeechClient) -> SpeechClient:
        """Forward `client`'s job signals always, its status signals while it is the current one."""
        client.result.connect(self.result.emit)
        client.failed.connect(self.failed.emit)
        client.progress.connect(self.progress.emit)
        client.result.connect(lambda *_: self._retire_drained())
        client.failed.connect(lambda *_: self._retire_drained())
        for signal, own in ((client.ready, self.ready), (client.state_changed, self.state_changed),
                            (client.preparing, self.preparing)):
            signal.connect(lambda *args, c=client, own=own: own.emit(*args) if c is self._current else None)
        return client

    def _retire_drained(self) -> None:
        """Stop the previous clients that hold no job any more (from the event loop, not inside their signal)."""
        drained = [client for client in self._retiring if not client.pending]
        for client in drained:
            self._retiring.remove(client)
            QTimer.singleShot(0, lambda c=client: _dispose(c))


def _dispose(client: SpeechClient) -> None:
    """Stop a client that is no longer used (its process or thread ends) and let Qt free it."""
    client.stop()
    client.deleteLater()
