"""Model management in the settings window: pick a Hub id or a folder, download with progress, check it loads.

Downloads run in a QThread through `app.model_download` (huggingface_hub, torch-free): first the
size, shown before anything is fetched, then the files with a byte progress bar and a Cancel
button. "Check" proves the model loads by running `python -m app check-model` in its own process:
loading needs torch, which the GUI process never imports, and a model that crashes the loader must
not take the settings window with it. The check never downloads (HF_HUB_OFFLINE=1): a Hub model
has to be downloaded here first, with progress.
"""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QThread, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from app import model_download
from app.config import DEFAULT_MODELS
from app.engine.model_source import looks_like_hub_id
from app.errors import UserError
from app.model_download import DownloadPlan, format_bytes


class Job(QThread):
    """Runs `fn(report)` on a thread; `report(*args)` becomes the `progress` signal, `ended` follows.

    The outcome is left in `result` or `error` (a sentence) for the slot of `ended`, which runs on
    the GUI thread when connected to a method of a GUI object.
    """

    progress = Signal(object)
    ended = Signal()

    def __init__(self, fn: Callable[[Callable[..., None]], Any], parent=None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.result: Any = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = self._fn(lambda *args: self.progress.emit(args))
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug, but the window must say something rather than hang in "Downloading…"
            self.error = (f"The download stopped unexpectedly ({type(exc).__name__}: {exc}). Try again; if it "
                          "keeps happening, report it with the log.")
        self.ended.emit()


def check_command(engine: str, model: str, quantization: str, device: str) -> list[str]:
    """`python -m app check-model ...`, or the frozen executable with the same arguments."""
    base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app"]
    return [*base, "check-model", "--engine", engine, "--model", model, "--quantization", quantization,
            "--device", device]


class ModelPanel(QWidget):
    """The "Model" field: emits `model_changed(text)`; `downloaded(list of folders)` after a download."""

    model_changed = Signal(str)
    downloaded = Signal(object)

    def __init__(self, parent: QWidget | None = None, *, cache_dir: Path | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = cache_dir
        self.engine, self.quantization, self.device, self.endpoint = "whisper", "auto", "auto", ""
        self.edit = QLineEdit()
        self.edit.setAccessibleName("Model")
        self.edit.setClearButtonEnabled(True)
        self.browse_button = QPushButton("Folder…")
        self.browse_button.setToolTip("Use a model folder on this computer; no network needed.")
        self.download_button = QPushButton("Download")
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Load the model once, as dictation will, to see that it works.")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel()
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.status.setOpenExternalLinks(True)
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.check_button)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(0)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(row)
        column.addLayout(buttons)
        self._buttons_row = buttons
        column.addWidget(self.status)
        self.setFocusProxy(self.edit)
        self._plans: list[DownloadPlan] | None = None  # sized and waiting for the user's go
        self._job: Job | None = None
        self._on_success: Callable[[Any], None] = lambda result: None
        self._cancel = threading.Event()
        self._check: QProcess | None = None
        self._rate = _Rate()
        self.edit.editingFinished.connect(self._edited)
        self.browse_button.clicked.connect(self._browse)
        self.download_button.clicked.connect(self._download_clicked)
        self.check_button.clicked.connect(self.check)
        self.cancel_button.clicked.connect(self.cancel)
        self._set_busy(False)

    # ---- state from the settings ---------------------------------------------------------------
    def model(self) -> str:
        return self.edit.text().strip()

    def set_model(self, name: str) -> None:
        """Show `name` without emitting `model_changed`."""
        if name != self.model():
            self.edit.setText(name)
        self._plans = None
        self._describe()

    def set_context(self, *, engine: str, quantization: str, device: str, endpoint: str) -> None:
        """What the model is for: the engine's default fills an empty field; downloads use `endpoint`."""
        self.engine, self.quantization, self.device, self.endpoint = engine, quantization, device, endpoint
        self.edit.setPlaceholderText("not used: the speech server chooses" if engine == "server" else
                                     f"{DEFAULT_MODELS[engine]} (default)")
        if self._job is None:
            self._plans = None
            self._describe()

    def effective_model(self) -> str:
        return self.model() or DEFAULT_MODELS[self.engine]

    def _edited(self) -> None:
        self._plans = None
        self._describe()
        self.model_changed.emit(self.model())

    def _browse(self) -> None:
        start = self.model() if Path(self.model()).expanduser().is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", start)
        if folder:
            self.edit.setText(folder)
            self._edited()

    def _describe(self) -> None:
        """Say where the model is and what the buttons will do."""
        if not self.busy:  # with a speech server nothing here applies: its empty model read as "a folder here"
            for widget in (self.edit, self.browse_button, self.check_button):
                widget.setEnabled(self.engine != "server")
        if self.engine == "server":
            self.download_button.setEnabled(False)
            self._say("The speech server runs the model it was started with: enter its address under Server URL "
                      "below. Choose another engine to pick a model here.")
            return
        name = self.effective_model()
        folder = Path(name).expanduser()
        self.download_button.setText("Download")
        if folder.is_dir():
            self.download_button.setEnabled(self.engine == "diffusion")  # its backbone may still need fetching
            self.download_button.setToolTip("Download the backbone and encoder this adapter uses.")
            self._say("A folder on this computer: no download needed. Press Check to try loading it.")
        elif looks_like_hub_id(name):
            self.download_button.setEnabled(True)
            self.download_button.setToolTip("Show the download size first, then fetch the files with progress.")
            cached = model_download.cached_folder(name, cache_dir=self.cache_dir)
            if cached is not None:
                self._say(f"Downloaded: {name} is on this computer ({cached}).")
            else:
                self._say(f"{name} is not downloaded yet. Press Download to see its size; otherwise it is fetched "
                          "when dictation first needs it.")
        else:
            self.download_button.setEnabled(False)
            self._say(f"'{name}' is neither a folder on this computer nor a Hugging Face id like "
                      "openai/whisper-base.", error=True)

    def _say(self, text: str, *, error: bool = False, rich: bool = False) -> None:
        self.status.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
        self.status.setProperty("error", error)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        self.status.setText(text)

    def _set_busy(self, busy: bool, *, progress: bool = False) -> None:
        self._buttons_row.setStretch(self._buttons_row.count() - 1, 0 if progress else 1)
        self.progress.setVisible(progress)
        self.cancel_button.setVisible(progress)
        for widget in (self.edit, self.browse_button, self.download_button, self.check_button):
            widget.setEnabled(not busy)

    # ---- download ------------------------------------------------------------------------------
    def _download_clicked(self) -> None:
        if self._plans is None:
            self.plan()
        else:
            self.start_download()

    def plan(self) -> None:
        """Ask the Hub for the size; the next click on Download (then labelled with it) starts."""
        name, engine, endpoint = self.effective_model(), self.engine, self.endpoint or None
        self._say("Asking the model hub for the download size…")
        self._run(lambda report: model_download.plan_model(name, engine=engine, endpoint=endpoint,
                                                           cache_dir=self.cache_dir), self._planned, progress=False)

    def _planned(self, plans: list[DownloadPlan]) -> None:
        needed = sum(p.needed_bytes for p in plans)
        if needed == 0:
            self._plans = None
            self._say("Everything this model needs is downloaded already.")
            return
        parts = ", ".join(f"{p.repo_id} {format_bytes(p.needed_bytes)}" for p in plans if p.needed_bytes)
        free = plans[0].free_bytes
        try:
            model_download.check_disk(plans)
        except UserError as exc:
            self._say(str(exc), error=True)
            return
        self._plans = plans
        self.download_button.setText(f"Download {format_bytes(needed)}")
        self.download_button.setFocus()
        room = f" ({format_bytes(free)} free on this disk)" if free is not None else ""
        self._say(f"To download: {parts}{room}. Press Download {format_bytes(needed)} to start; finished files are "
                  "kept if you cancel.")

    def start_download(self) -> None:
        plans, self._plans = self._plans, None
        if not plans:
            return
        self._cancel.clear()
        self._rate = _Rate()
        self.progress.setValue(0)
        self._say("Starting the download…")
        cancel = self._cancel
        self._run(lambda report: model_download.download_all(plans, report, cancel), self._done, progress=True)

    def cancel(self) -> None:
        self._cancel.set()
        self._say("Cancelling…")

    @property
    def busy(self) -> bool:
        return self._job is not None or self._check is not None

    def _progressed(self, args: tuple) -> None:
        done, total, name = args
        self.progress.setValue(int(1000 * done / total) if total else 0)
        speed = self._rate.update(done)
        rate = f" · {format_bytes(speed)}/s" if speed else ""
        self._say(f"{format_bytes(done)} of {format_bytes(total)}{rate}\n{name}")

    def _done(self, folders: list[Path]) -> None:
        self._say("Downloaded. Dictation loads the model from this computer from now on.")
        self.downloaded.emit(folders)

    def _run(self, fn: Callable, on_success: Callable, *, progress: bool) -> None:
        """Run `fn` on a thread; `on_success(result)` runs on this thread once it has ended."""
        job = Job(fn)
        self._job, self._on_success = job, on_success
        self._set_busy(True, progress=progress)
        job.progress.connect(self._progressed)
        job.ended.connect(self._job_ended)
        job.start()

    def _job_ended(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        job.wait()  # `ended` is its last act: this returns at once, and the thread may then be deleted
        self._set_busy(False)
        job.deleteLater()
        if job.error is not None:
            cancelled = job.error.startswith("The download was cancelled")
            self._say(_linkify(job.error), error=not cancelled, rich=True)
        else:
            self._on_success(job.result)

    # ---- check ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Load the model in a separate process (`python -m app check-model`) and report the outcome."""
        name = self.effective_model()
        if looks_like_hub_id(name) and model_download.cached_folder(name, cache_dir=self.cache_dir) is None:
            self._say(f"{name} is not downloaded yet: press Download first.", error=True)
            return
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("HF_HUB_OFFLINE", "1")
        if self.cache_dir is not None:
            env.insert("HF_HUB_CACHE", str(self.cache_dir))
        proc.setProcessEnvironment(env)
        command = check_command(self.engine, name, self.quantization, self.device)
        proc.setProgram(command[0])
        proc.setArguments(command[1:])
        # Methods, not lambdas holding `proc`: with PySide6 6.12 a slot that keeps its own sender alive
        # crashes when the sender is deleted.
        proc.finished.connect(self._checked)
        proc.errorOccurred.connect(self._check_error)
        self._check = proc
        self._set_busy(True)
        self._say("Loading the model to check it… (a large model takes a minute)")
        proc.start()

    def _checked(self, code: int, _status: QProcess.ExitStatus) -> None:
        proc = self._check
        if proc is None:
            return
        out = proc.readAllStandardOutput().data().decode("utf-8", "replace").strip().splitlines()
        err = proc.readAllStandardError().data().decode("utf-8", "replace").strip().splitlines()
        self._check_done(proc)
        try:
            report = json.loads(out[-1]) if code == 0 and out else None
        except ValueError:
            report = None
        if report and report.get("ok"):
            device = f" on {report['device']}" if report.get("device") else ""
            self._say(f"The model loads{device} in {report.get('load_s', '?')} s: ready for dictation.")
            return
        sentence = next((line[len("error: "):] for line in reversed(err) if line.startswith("error: ")), None)
        self._say(_linkify(sentence or f"The model did not load (exit status {code}). "
                           f"Its last words: {err[-1] if err else 'none'}"), error=True, rich=True)

    def _check_error(self, error: QProcess.ProcessError) -> None:
        proc = self._check
        if proc is not None and error == QProcess.ProcessError.FailedToStart:
            self._check_done(proc)
            self._say(f"The model check could not be started ({proc.errorString()}); reinstall the app.", error=True)

    def _check_done(self, proc: QProcess) -> None:
        if self._check is proc:
            self._check = None
        self._set_busy(False)
        proc.deleteLater()

    def shutdown(self) -> None:
        """Stop background work before the window goes (a download continues from its finished files)."""
        self._cancel.set()
        if self._check is not None:
            self._check.kill()
            self._check.waitForFinished(2000)
        if self._job is not None:
            self._job.wait(5000)


class _Rate:
    """Bytes per second over the last few seconds, for "23 MB/s"."""

    def __init__(self) -> None:
        self._points: list[tuple[float, int]] = []

    def update(self, done: int) -> float:
        now = time.monotonic()
        self._points = [p for p in self._points if now - p[0] < 4.0] + [(now, done)]
        (t0, d0), (t1, d1) = self._points[0], self._points[-1]
        return (d1 - d0) / (t1 - t0) if t1 - t0 > 0.5 else 0.0


def _linkify(text: str) -> str:
    """Plain sentence -> rich text with its https:// links clickable (gated repos link to their terms)."""
    escaped = html.escape(text)
    return re.sub(r"(https?://[^\s,;]+?)([.,;]?(?:\s|$))", r'<a href="\1">\1</a>\2', escaped)

