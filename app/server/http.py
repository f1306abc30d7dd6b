"""Blocking calls to a speech server, shared by `ServerClient` (on its own thread) and the CLI.

httpx2 (the HTTP client huggingface_hub already brings) does the HTTP; this module turns its
outcomes into what the app understands: a transcript dict like the worker's `result`, drafts through
a callback, and every failure as one `UserError` sentence that says what to do next.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Callable

import numpy as np
import soundfile as sf

from app.engine.base import SAMPLE_RATE
from app.errors import UserError

DraftCallback = Callable[[int, int, str], None]  # step, total, draft


class ServerConnection:
    """One server: its URL and token; `timeout_s` bounds connecting and each read (not the whole job)."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 10.0, read_timeout_s: float = 300.0) -> None:
        import httpx2

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx2.Client(headers=headers, timeout=httpx2.Timeout(timeout_s, read=read_timeout_s))
        self._short = httpx2.Timeout(timeout_s)
        self._errors = httpx2

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict:
        """The server's /health: engine, model, device, queue; raises UserError when it cannot be had."""
        with self._request("GET", "/health", timeout=self._short) as response:  # a hung server must not block jobs
            return json.loads(response.read())

    def transcribe(self, audio: np.ndarray, *, model: str = "whisper-1", language: str = "auto",
                   steps: int | None = None, vocabulary: Sequence[str] = (), on_draft: DraftCallback | None = None,
                   should_stop: Callable[[], bool] = lambda: False, speculative: bool = False,
                   client: str = "") -> dict:
        """Send 16 kHz mono audio; return text, language, steps_used, timings, language_detected, no_speech,
        queue_ms.

        The answer is always streamed (SSE), so that a job that waits long in the server's queue, or
        runs long without drafts, still sends something (the server's keep-alive comments) before any
        read times out; a plain JSON answer sends nothing until the end. `on_draft` gets each draft as
        it arrives. `vocabulary` goes as OpenAI's `prompt`, one entry a line (the server reads commas and
        lines). `should_stop` is asked between events: True closes the connection, which cancels the job there.
        `speculative` asks for a transcription ahead that gives way to any other request, and `client`
        names the sender, whose newer request ends its older speculative ones (`app.server.batching`).
        """
        data = {**_form(model, language, steps, vocabulary), "response_format": "json", "stream": "true"}
        if speculative:
            data["speculative"] = "true"
        if client:
            data["client"] = client
        files = {"file": ("dictation.flac", _flac(audio), "audio/flac")}
        with self._request("POST", "/v1/audio/transcriptions", data=data, files=files) as response:
            for line in response.iter_lines():
                if should_stop():
                    raise UserError("The transcription was cancelled.", code="cancelled")
                if not line.startswith("data:"):  # blank lines between events, and the keep-alive comments
                    continue
                event = json.loads(line[5:])
                kind = event.get("type")
                if kind == "transcript.text.delta" and on_draft is not None:
                    on_draft(int(event.get("step", 0)), int(event.get("total", 0)), str(event.get("draft", "")))
                elif kind == "transcript.text.done":
                    return {k: v for k, v in event.items() if k not in ("type", "usage")}
                elif kind == "error":
                    raise _api_error(event, self.url)
        raise UserError(f"The speech server at {self.url} ended the answer early; try again.", code="server_failed")

    def segments(self, audio: np.ndarray, *, model: str = "whisper-1", language: str = "auto",
                 steps: int | None = None, vocabulary: Sequence[str] = (), words: bool = False) -> dict:
        """The server's `verbose_json` answer: the recording in timed `segments` (`start`, `end`, `text`), the
        `language_code` it was transcribed in, and the whole `text`; with `words`, each word's time too (`words`:
        `word`, `start`, `end`; only a server whose engine times words gives them, its /health says).

        That answer is not streamed: nothing comes until every piece is transcribed, so a long file needs a
        read timeout that covers it (`transcribe --subtitles` gives it an hour)."""
        data = {**_form(model, language, steps, vocabulary), "response_format": "verbose_json",
                "timestamp_granularities[]": ["segment", "word"] if words else ["segment"]}
        files = {"file": ("recording.flac", _flac(audio), "audio/flac")}
        with self._request("POST", "/v1/audio/transcriptions", data=data, files=files) as response:
            return json.loads(response.read())

    def _request(self, method: str, path: str, **kwargs):
        return _Checked(self, method, path, kwargs)


class _Checked:
    """A streamed request whose failures (no connection, 4xx/5xx) become UserErrors on entry."""

    def __init__(self, conn: ServerConnection, method: str, path: str, kwargs: dict) -> None:
        self._conn, self._method, self._path, self._kwargs = conn, method, path, kwargs
        self._cm = None

    def __enter__(self):
        conn = self._conn
        try:
            self._cm = conn._http.stream(self._method, conn.url + self._path, **self._kwargs)
            response = self._cm.__enter__()
        except conn._errors.TimeoutException:
            raise UserError(f"The speech server at {conn.url} did not answer in time; check that it runs and is "
                            "not overloaded.", code="server_unreachable") from None
        except conn._errors.HTTPError as exc:
            raise UserError(f"The speech server at {conn.url} cannot be reached ({type(exc).__name__}); check that "
                            "it runs and that its address is right.", code="server_unreachable") from None
        if response.status_code >= 400:
            body = response.read()
            self._cm.__exit__(None, None, None)
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {}
            if response.status_code == 401:
                raise UserError(f"The speech server at {conn.url} refused the token; store the server's token with "
                                "`dictate server-token` (on the command line: --token-file).", code="server_token")
            raise _api_error(parsed, conn.url, response.status_code)
        return response

    def __exit__(self, *exc) -> None:
        try:
            self._cm.__exit__(*exc)
        except self._conn._errors.HTTPError:
            pass
        if exc[0] is not None and isinstance(exc[1], self._conn._errors.HTTPError):
            raise UserError(f"The connection to the speech server at {self._conn.url} broke off "
                            f"({type(exc[1]).__name__}); check that it still runs.", code="server_unreachable") from None


def _api_error(body: dict, url: str, status: int | None = None) -> UserError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return UserError(str(error["message"]), code=str(error.get("code") or "server_error"))
    return UserError(f"The speech server at {url} answered with an error (HTTP {status}); see its log.",
                     code="server_error")


def _form(model: str, language: str, steps: int | None, vocabulary: Sequence[str]) -> dict:
    """The form fields of a transcription request; `vocabulary` goes as OpenAI's `prompt`, one entry a line."""
    data = {"model": model}
    if language and language != "auto":
        data["language"] = language
    if steps is not None:
        data["steps"] = str(steps)
    if vocabulary:
        data["prompt"] = "\n".join(vocabulary)
    return data


def _flac(audio: np.ndarray) -> bytes:
    """16-bit FLAC: lossless for a microphone's samples and about a third of float32 WAV's size."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
