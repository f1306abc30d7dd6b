"""`python -m app serve`: load one engine the way the worker does, then serve it over HTTP with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.engine import EngineSpec
from app.errors import UserError

DEFAULT_PORT = 8765


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; any other address requires a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--token-file", type=Path, help="file whose first line is the bearer token clients must send "
                   "(default on a non-local address: generated on first start in the config folder)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM) for https")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM) for https")
    p.add_argument("--model-id", help="the model name clients send and /v1/models lists (default: the model "
                   "folder's name or the Hub id)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted audio file (default 25 MB)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait while the engine is busy; "
                   "one more gets 429 (default 16)")
    p.add_argument("--max-batch", type=int, default=8, help="diffusion: waiting requests denoised together in one "
                   "batch of canvases (default 8; 1 runs them one by one)")
    p.add_argument("--log-text", action="store_true", help="log transcripts (never logged otherwise)")
    p.add_argument("--no-speech-check", dest="speech_check", action="store_false",
                   help="send every upload to the model, also those in which the speech check hears no speech (by "
                   "default such an upload gets an empty text: models invent words for silence and noise); for "
                   "clients that check for speech themselves")


def served_model_id(spec: EngineSpec) -> str:
    """A local folder is listed by its name, so clients never learn (or name) a server path."""
    path = Path(spec.model)
    return path.name if path.is_absolute() or path.exists() else spec.model


def _check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and key as uvicorn will, so that a wrong path is a sentence, not a traceback."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise UserError(f"The TLS certificate {cert} or key {key} cannot be used ({reason}); give PEM files this "
                        "user can read, the key matching the certificate.", code="bad_tls") from None


def _check_listen(host: str, port: int) -> None:
    """Bind `host:port` once, as uvicorn will after the model has loaded, so that a port in use is said
    at once rather than after minutes of loading. The socket is closed again: a race with another
    program in between still ends in uvicorn's own error."""
    import errno
    import socket

    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port; choose one from 1024 to 65535.", code="bad_option")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host} is not an address of this machine ({exc.strerror}); give one of its "
                        "addresses or names, or 0.0.0.0 for all of them.", code="bad_option") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed connection's TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            fix = {errno.EADDRINUSE: "another program (perhaps another `dictate serve`) listens there; stop it or "
                                     "choose another --port",
                   errno.EACCES: "ports below 1024 need administrator rights; choose a port from 1024 up",
                   errno.EADDRNOTAVAIL: "this machine has no such address; give one of its addresses, or 0.0.0.0 "
                                        "for all of them"}.get(exc.errno, "choose another --host or --port")
            raise UserError(f"The server cannot listen on {host}:{port} ({exc.strerror}): {fix}.",
                            code="bad_option") from None


def _load_speech_check() -> None:
    """Load the speech check's model now: the first upload does not wait for it, and a broken install
    is said before the model loads rather than as a 500 on every request."""
    from app.audio.vad import VadModel

    try:
        VadModel.shared()
    except UserError as exc:
        raise UserError("The speech check cannot start: silero-vad or onnxruntime is missing; install both (pip "
                        "install silero-vad onnxruntime), or serve without it: --no-speech-check.",
                        code=exc.code) from None


def serve(args: argparse.Namespace, spec: EngineSpec) -> int:
    import uvicorn

    from app.desktop.paths import config_dir
    from app.server.app_factory import ServerOptions, create_app
    from app.server.auth import TOKEN_FILE, server_token
    from app.server.batching import EngineQueue
    from app.worker.engine_slot import EngineSlot

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("Give both --tls-cert and --tls-key for https, or neither.", code="bad_tls")
    if args.tls_cert is not None:
        _check_tls(args.tls_cert, args.tls_key)  # before the model loads: minutes for a diffusion model
    if args.queue_size < 1 or args.max_batch < 1 or args.max_upload_mb <= 0:
        raise UserError("--queue-size and --max-batch must be at least 1 and --max-upload-mb more than 0.",
                        code="bad_option")
    _check_listen(args.host, args.port)  # before the model loads, as the TLS files are
    if args.speech_check:
        _load_speech_check()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="server %(levelname)s %(message)s")
    token_path = config_dir() / TOKEN_FILE
    token, _ = server_token(args.host, args.token_file, token_path, generate=False)  # a bad token file: said now
    slot = EngineSlot()
    slot.load(spec)  # a model that cannot load ends here, with its sentence, before the port opens
    # How clients authenticate is said only now, just before the port opens: printed before a model
    # that then failed to load, it read as if the server were up; and a token generated then was kept
    # but never shown again.
    token, generated = server_token(args.host, args.token_file, token_path) if token is None else (token, False)
    if generated:
        print(f"Clients need this token (shown once; it is kept in {token_path}):\n{token}", flush=True)
    elif token is None:
        print("No token: only this machine can connect (127.0.0.1).", file=sys.stderr, flush=True)
    info = slot.describe()
    print(f"Serving {info['engine']} {served_model_id(spec)} on {info['device']}", file=sys.stderr, flush=True)
    queue = EngineQueue(slot, max_waiting=args.queue_size, max_batch=args.max_batch, log_text=args.log_text)
    options = ServerOptions(model_id=args.model_id or served_model_id(spec), token=token,
                            max_upload_bytes=int(args.max_upload_mb * 2**20), speech_check=args.speech_check)
    uvicorn.run(create_app(queue, options), host=args.host, port=args.port, log_level="info",
                ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
                ssl_keyfile=str(args.tls_key) if args.tls_key else None)
    return 0
