"""The HTTP routes: OpenAI's `POST /v1/audio/transcriptions` and `GET /v1/models`, and `GET /health`.

`create_app(queue, options)` builds a FastAPI app around an `EngineQueue` whose engine is already
loaded. Every failure a client can cause ends in OpenAI's error shape with a 4xx status; anything
unexpected in a handler ends in a 500 of the same shape and the server goes on.

Speech models invent words for silence and noise (Whisper tiny.en writes "you"), so every upload
goes through the app's speech check (Silero VAD, `app.audio.vad`) before it may wait for the engine;
one without speech is answered at once, as a normal transcript with empty text and `no_speech`
true, so that OpenAI clients take it as they take any answer. `--no-speech-check` turns it off for
clients that check themselves. Answers in timed segments (`srt`, `vtt`, `verbose_json`) find where the
speech is with the same model (`app.engine.segments`); one with none has no segments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.audio.speech_spans import Span, speech_spans
from app.audio.vad import has_speech
from app.engine import Progress, Transcript
from app.engine.base import LANGUAGES
from app.engine.segments import Segment, Segmented
from app.server import request_checks as checks
from app.server.api_errors import ApiError
from app.server.auth import check_bearer
from app.server.batching import EngineQueue, Job
from app.text.subtitles import cues, srt, vtt

log = logging.getLogger("app.server")

_MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


@dataclass(frozen=True)
class ServerOptions:
    model_id: str  # what /v1/models lists and `model` must name (or "whisper-1")
    token: str | None = None
    max_upload_bytes: int = 25 * 2**20
    speech_check: bool = True  # uploads without speech get empty text without reaching the engine
    keepalive_s: float = 15.0  # a stream sends a comment this often while its job waits or runs without drafts


class _BodyLimit:
    """ASGI middleware: a request body longer than the file limit (and the form around it) is cut off
    with 413 while it is read.

    A `Content-Length` over the limit is refused before a byte is read; a chunked upload is counted
    as it arrives, so neither way can a client make the server hold more than the limit.
    """

    def __init__(self, app, file_limit: int) -> None:
        self.app, self.file_limit = app, file_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.file_limit + _MULTIPART_SLACK:
                raise _too_large(self.file_limit)
            return message

        return await self.app(scope, counted, send)


def _too_large(limit: int) -> ApiError:
    # The limit as the operator gave it (--max-upload-mb 0.5 is "0.5 MB", 25 is "25 MB"), not rounded to 0.
    return ApiError(413, f"The file is larger than this server's limit of {round(limit / 2**20, 2):g} MB; send a "
                    "shorter recording or a compressed format (FLAC, OGG).", "file_too_large", param="file")


def create_app(queue: EngineQueue, options: ServerOptions) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(queue.run())
        yield
        task.cancel()
        queue.shutdown()

    api = FastAPI(title="diffusion-dictate speech server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    api.add_middleware(_BodyLimit, file_limit=options.max_upload_bytes)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "No such endpoint; this server has POST /v1/audio/transcriptions, GET /v1/models and GET /health." \
            if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message, "not_found" if exc.status_code == 404 else "http_error").response()

    @api.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("a request failed")
        return ApiError(500, f"The server failed on this request ({type(exc).__name__}); try again, and tell its "
                        "administrator if it keeps happening.", "internal_error").response()

    def authorize(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), options.token)

    @api.get("/health")
    async def health(request: Request) -> dict:
        authorize(request)
        slot, prep = queue.slot, queue.preparation
        preparing = {"done": prep.done, "total": prep.total} if prep.pending else None  # speed-up pieces still to run
        return {"status": "ok" if slot.engine is not None else "unavailable", **slot.describe(), "preparing": preparing,
                "model": options.model_id,  # a server folder's name only, never its path
                "queue_length": queue.waiting, "busy": bool(queue.running), "speculative": queue.speculations(),
                "max_batch": queue.max_batch,
                "max_waiting": queue.max_waiting, "max_upload_bytes": options.max_upload_bytes}

    @api.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": 0,
                                             "owned_by": "diffusion-dictate"}]}

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        authorize(request)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > options.max_upload_bytes + _MULTIPART_SLACK:
            raise _too_large(options.max_upload_bytes)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "Send the audio as multipart/form-data with the recording in the field 'file'.",
                           "invalid_content_type")
        try:
            form = await request.form(max_files=1, max_fields=32)
        except ApiError:
            raise
        except Exception as exc:  # starlette's MultiPartException and friends: a malformed body
            raise ApiError(400, f"The form data could not be read ({exc}); send multipart/form-data with a 'file' "
                           "field.", "invalid_form") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "The field 'file' with the audio recording is missing.", "missing_file", param="file")
        if upload.size is not None and upload.size > options.max_upload_bytes:
            raise _too_large(options.max_upload_bytes)
        checks.check_model(_field(form, "model"), options.model_id)
        language = checks.check_language(_field(form, "language"))
        steps = checks.check_steps(_field(form, "steps"))
        fmt = checks.check_format(_field(form, "response_format"))
        stream = checks.check_flag(_field(form, "stream"), "stream")
        checks.check_stream(fmt, stream)
        speculative = checks.check_flag(_field(form, "speculative"), "speculative")
        client = checks.check_client(_field(form, "client"))
        if speculative:
            queue.check_speculation()
        data = await upload.read()
        audio = await run_in_threadpool(checks.decode_audio, data, upload.filename or "")
        times_words = bool(getattr(queue.slot.engine, "times_words", False))
        granularities = checks.check_granularities(
            [v for key in ("timestamp_granularities[]", "timestamp_granularities") for v in form.getlist(key)
             if isinstance(v, str)], fmt, times_words, str(queue.slot.describe().get("engine")))
        req = checks.TranscriptionRequest(audio, language, steps, fmt, stream,
                                          checks.vocabulary(_field(form, "prompt")), speculative, client,
                                          granularities=granularities,
                                          words="word" in granularities or (fmt in ("srt", "vtt") and times_words))
        if fmt in checks.SEGMENTED_FORMATS and not stream:
            spans = tuple(await run_in_threadpool(speech_spans, audio))
            if not spans and not options.speech_check:  # the client checks for speech itself: all of it, then
                spans = (Span.whole(audio),)
            req = dataclasses.replace(req, spans=spans)
            if not spans:
                log.info("%.1f s of audio without speech: answered with no segments, the engine not asked", req.seconds)
                return _render(Segmented(Transcript(text="", language=language, steps_used=0), ()), req,
                               queue_ms=0.0, no_speech=True)
        elif options.speech_check and not await run_in_threadpool(has_speech, audio):
            log.info("%.1f s of audio without speech: answered with empty text, the engine not asked", req.seconds)
            silent = Transcript(text="", language=language, steps_used=0)
            if stream:
                return StreamingResponse(_sse_no_speech(silent, req), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            return _render(silent, req, queue_ms=0.0, no_speech=True)
        job = queue.submit(req)
        if stream:
            return StreamingResponse(_sse(job, options.keepalive_s), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            outcome = await _wait(job, request)
        except asyncio.CancelledError:
            job.cancel()
            raise
        if isinstance(outcome, ApiError):
            raise outcome
        return _render(outcome, job.request, queue_ms=job.queue_ms)

    return api


def _field(form, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def _wait(job: Job, request: Request) -> Transcript | Segmented | ApiError:
    """The job's outcome; a client that disconnects meanwhile cancels its job."""
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(job.done), timeout=1.0)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                return ApiError(499, "The client closed the connection.", "cancelled")


def _answer(t: Transcript, req: checks.TranscriptionRequest, *, queue_ms: float, no_speech: bool = False) -> dict:
    """The fields of a `json` answer, which the streamed `transcript.text.done` event carries too."""
    return {"text": t.text, "language": t.language, "steps_used": t.steps_used, "timings": t.timings,
            "language_detected": t.language_detected, "no_speech": no_speech, "queue_ms": queue_ms,
            "usage": {"type": "duration", "seconds": round(req.seconds, 2)}}


def _render(outcome: Transcript | Segmented, req: checks.TranscriptionRequest, *, queue_ms: float,
            no_speech: bool = False) -> Response:
    t, segments = (outcome.transcript, outcome.segments) if isinstance(outcome, Segmented) else (outcome, ())
    if req.response_format == "text":
        return PlainTextResponse(t.text + "\n")
    if req.response_format in ("srt", "vtt"):
        pieces = cues(segments, t.language)
        subtitles = srt(pieces, t.language) if req.response_format == "srt" else vtt(pieces, t.language)
        return PlainTextResponse(subtitles, media_type="text/vtt" if req.response_format == "vtt" else "text/plain")
    body = _answer(t, req, queue_ms=queue_ms, no_speech=no_speech)
    if req.response_format == "verbose_json":
        body = {"task": "transcribe", **body, "language": LANGUAGES.get(t.language, t.language).lower(),
                "language_code": t.language, "duration": round(req.seconds, 3)}
        if "segment" in req.granularities:
            body["segments"] = _openai_segments(segments)
        if "word" in req.granularities:
            body["words"] = [{"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                             for s in segments for w in s.words]
    return JSONResponse(body)


def _openai_segments(segments: tuple[Segment, ...]) -> list[dict]:
    """`verbose_json`'s segments, with the fields of OpenAI's that this server knows (no token ids, no
    log probabilities: the engines do not report them)."""
    return [{"id": n, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "tokens": [],
             "temperature": 0.0} for n, s in enumerate(segments)]


def _event(data: dict) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _sse(job: Job, keepalive_s: float):
    """Server-sent events as OpenAI's streaming transcription sends them, plus the full draft.

    `delta` is what OpenAI clients append. A diffusion draft may also revise earlier words, so each
    delta event carries the whole current `draft` too (with `step` and `total`); clients that know
    it, like the app, show that instead. The final `transcript.text.done` holds the exact text.

    A job may wait minutes behind others, or run minutes without a draft (Whisper on a long file);
    an SSE comment every `keepalive_s` meanwhile keeps the clients' and proxies' read timeouts
    (300 s in `app.server.http`, 60 s in nginx) from ending a job that is merely long. Clients skip it.
    """
    shown = ""
    try:
        while True:
            try:
                item: Progress | None = await asyncio.wait_for(job.events.get(), timeout=keepalive_s)
            except asyncio.TimeoutError:  # a cancelled get() leaves the queue's items where they are
                yield b": keep-alive\n\n"
                continue
            if item is None:
                break
            draft = item.draft
            delta = draft[len(shown):] if draft.startswith(shown) else ""
            if draft.startswith(shown):
                shown = draft
            yield _event({"type": "transcript.text.delta", "delta": delta, "draft": draft, "step": item.step,
                          "total": item.total})
        outcome = await job.done
        if isinstance(outcome, ApiError):
            yield _event({"type": "error", **outcome.body()})
            return
        yield _event({"type": "transcript.text.done", **_answer(outcome, job.request, queue_ms=job.queue_ms)})
    finally:
        if not job.done.done():
            job.cancel()


async def _sse_no_speech(t: Transcript, req: checks.TranscriptionRequest):
    """The stream of an upload without speech: no drafts, only the done event with the empty text."""
    yield _event({"type": "transcript.text.done", **_answer(t, req, queue_ms=0.0, no_speech=True)})
