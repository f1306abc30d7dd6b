"""Command line: the GUI by default, plus `transcribe`, `worker` and the remote-control commands.

Only argparse and the chosen subcommand's module are imported, so `dictate toggle` stays instant and
the GUI never pulls in torch. Bad input ends in one sentence on stderr and exit status 2 (1 for
runtime failures), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from app.errors import UserError

REMOTE_COMMANDS = ("toggle", "start", "stop", "cancel")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from app.engine import ENGINES, QUANTIZATIONS

    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="speech engine (default: auto, Whisper on CTranslate2 without a GPU, on transformers with one)")
    p.add_argument("--model", help="model folder or Hugging Face id (diffusion: the adapter)")
    p.add_argument("--backbone", help="diffusion only: DiffusionGemma backbone folder or id (overrides the adapter's)")
    p.add_argument("--encoder", help="diffusion only: Whisper encoder folder or id (overrides the adapter's)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="random seed (diffusion canvas)")
    p.add_argument("--compile", action="store_true",
                   help="diffusion only: also compile the decoder layers with torch.compile (Inductor); "
                        "the first run compiles for seconds to minutes, later runs reuse the cache")


def _spec(args: argparse.Namespace):
    """The EngineSpec the engine options above describe."""
    from app.engine import DEFAULT_MODELS, EngineSpec

    return EngineSpec(engine=args.engine, model=args.model or DEFAULT_MODELS[args.engine], backbone=args.backbone,
                      encoder=args.encoder, quantization=args.quantization, device=args.device, seed=args.seed,
                      compile=args.compile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dictate", description="Hold a hotkey, speak, release: the words appear in the focused window.")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("gui", help="start the tray app (the default)")

    t = sub.add_parser("transcribe", help="transcribe audio files and print the text")
    t.add_argument("files", nargs="+", metavar="FILE", help="WAV, FLAC or OGG files")
    _add_engine_options(t)
    t.add_argument("--language", default="auto", help="auto, en, de, fr, es, hi or zh (default: auto)")
    t.add_argument("--steps", type=int, default=None, help="diffusion: maximum denoising steps, 1..48 (default 8)")
    t.add_argument("--server", metavar="URL", help="send the audio to a speech server (`dictate serve`, as in "
                   "http://gpu-box:8765) instead of "
                   "loading a model here")
    t.add_argument("--token-file", help="with --server: file whose first line is the server's token")
    t.add_argument("--json", action="store_true", help="print one JSON object per file (with raw_text: the engine's own)")
    t.add_argument("--subtitles", choices=("srt", "vtt"),
                   help="write FILE.srt (or .vtt) beside each file, a cue per stretch of speech, and print its path")
    words = t.add_argument_group("your words (docs/vocabulary.md)")
    words.add_argument("--vocabulary", default="", metavar='"A, B"',
                       help="names and terms you use, comma-separated: the model is prompted with them and "
                            "words that sound like one are written as it")
    words.add_argument("--vocabulary-file", metavar="FILE", help="the same, one entry per line (UTF-8)")
    words.add_argument("--keep-fillers", action="store_true", help="keep um, uh, äh, euh, ... (removed by default)")
    words.add_argument("--spoken-punctuation", action="store_true",
                       help='turn spoken "comma", "period", "new line", ... into the characters')
    words.add_argument("--raw", action="store_true", help="print the engine's text untouched: no text pipeline")
    t.add_argument("--no-speech-check", dest="speech_check", action="store_false",
                   help="transcribe every file, also those in which the speech check hears no speech (by default "
                        "such a file prints an empty text: models invent words for silence and noise)")

    sub.add_parser("worker", help="run the speech worker on stdin/stdout (started by the app)")

    s = sub.add_parser("serve", help="serve one speech model over HTTP with an OpenAI-compatible API")
    _add_engine_options(s)
    from app.server.serve import add_arguments

    add_arguments(s)

    sub.add_parser("server-token", help="store the speech server's token for the app (read from stdin; empty "
                   "forgets it): in the system keyring, else a file only you can read")

    c = sub.add_parser("check-model", help="load a model once, as the worker would, and report; prints one JSON line")
    _add_engine_options(c)

    for name in REMOTE_COMMANDS:
        sub.add_parser(name, help=f"{name} dictation in the running app")
    return parser


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from app.audio.loading import load_audio
    from app.engine.base import check_language
    from app.text import TextOptions, finish_transcript

    language = check_language(args.language)
    if args.engine == "server" and not args.server:  # Settings' form: engine "server", its address as the model
        if not args.model:
            raise UserError("--engine server sends the audio to a speech server: give its address with --server URL "
                            "(as in http://gpu-box:8765).", code="bad_option")
        args.server = args.model
    vocabulary = _vocabulary(args.vocabulary, args.vocabulary_file)
    options = TextOptions(vocabulary=vocabulary, remove_fillers=not args.keep_fillers,
                          spoken_punctuation=args.spoken_punctuation)
    if args.json and args.subtitles:
        raise UserError("--json prints the text and --subtitles writes subtitle files: choose one.", code="bad_option")
    audios = [(path, load_audio(path)) for path in args.files]  # fail on bad input before loading a model
    if args.subtitles:
        return _write_subtitles(args, audios, language, vocabulary, options)
    transcribe, close = _on_server(args) if args.server else _here(args)
    try:
        for path, audio in audios:
            if not args.speech_check or _speech_in(path, audio):
                # A speech server checks too (unless served with --no-speech-check): its `no_speech` is kept.
                result = {"no_speech": False, **transcribe(audio, language=language, steps=args.steps, vocabulary=vocabulary)}
            else:
                result = {"text": "", "language": language, "steps_used": 0, "timings": {}, "language_detected": False,
                          "no_speech": True}
            if not args.raw:
                result = finish_transcript(result, options)
            if args.json:
                print(json.dumps({"file": str(path), **result}, ensure_ascii=False), flush=True)
            else:
                print(result["text"], flush=True)
    finally:
        close()
    return 0


def _write_subtitles(args: argparse.Namespace, audios: list, language: str, vocabulary: tuple[str, ...],
                     options) -> int:
    """`transcribe --subtitles srt|vtt`: each file's speech in timed segments (`app.engine.segments`, on the
    server with --server), cut into readable cues where the engine timed the words (`app.text.subtitles`), each
    cue's text through the text pipeline, written beside the file."""
    import dataclasses
    from pathlib import Path

    from app.text import finish
    from app.text.subtitles import cues, srt, vtt

    segments_of, close = _segments_on_server(args) if args.server else _segments_here(args)
    try:
        for path, audio in audios:
            segments, spoken = segments_of(path, audio, language=language, steps=args.steps, vocabulary=vocabulary)
            pieces = cues(tuple(segments), spoken)
            if not args.raw:  # in the language spoken: fillers and spoken punctuation are words of a language
                pieces = tuple(dataclasses.replace(c, text=finish(c.text, spoken, options)) for c in pieces)
            pieces = tuple(c for c in pieces if c.text)
            out = Path(path).with_suffix(f".{args.subtitles}")
            out.write_text(srt(pieces, spoken) if args.subtitles == "srt" else vtt(pieces, spoken), encoding="utf-8")
            print(out, flush=True)
    finally:
        close()
    return 0


def _segments_here(args: argparse.Namespace):
    """A `segments_of(path, audio, **options) -> ([Segment], language)` over a model loaded in this process, and
    its `close`."""
    from app.audio.speech_spans import Span, speech_spans
    from app.engine import load_engine
    from app.engine.base import prepare_all
    from app.engine.segments import transcribe_segments

    engine = load_engine(_spec(args))
    prepare_all(engine)

    def segments_of(path: str, audio, **options) -> tuple[list, str]:
        spans = speech_spans(audio)
        if not spans and args.speech_check:
            print(f"{path}: no speech heard, so the subtitles are empty (--no-speech-check transcribes it anyway).",
                  file=sys.stderr, flush=True)
            return [], options["language"]
        spans = spans or [Span.whole(audio)]
        done = transcribe_segments(engine, audio, spans, words=True, **options)  # where the engine times words
        return list(done.segments), done.transcript.language

    return segments_of, lambda: None


def _segments_on_server(args: argparse.Namespace):
    """The same from a speech server's `verbose_json` (it finds the speech itself, as `_segments_here` does), with
    word timestamps where its engine times words (its /health says)."""
    from app.engine.base import Word
    from app.engine.segments import Segment
    from app.text.subtitles import spaced

    conn = _connection(args, read_timeout_s=3600.0)  # the answer comes whole, after every piece is transcribed
    timed = bool(conn.health().get("times_words"))

    def segments_of(path: str, audio, **options) -> tuple[list, str]:
        answer = conn.segments(audio, words=timed, **options)
        words = [Word(float(w["start"]), float(w["end"]), str(w["word"])) for w in answer.get("words", ())]
        return ([Segment(float(s["start"]), float(s["end"]), str(s["text"]),  # the API's words come without spaces
                         spaced([w for w in words if s["start"] <= (w.start + w.end) / 2 <= s["end"]], str(s["text"])))
                 for s in answer["segments"]],
                str(answer.get("language_code") or options["language"]))

    return segments_of, conn.close


def _speech_in(path: str, audio) -> bool:
    """The app's silence check (Silero VAD) on one file; a file without speech is said so on stderr."""
    from app.audio.vad import has_speech

    if has_speech(audio):
        return True
    print(f"{path}: no speech heard, so nothing was transcribed (--no-speech-check transcribes it anyway).",
          file=sys.stderr, flush=True)
    return False


def _here(args: argparse.Namespace):
    """A `transcribe(audio, **options) -> dict` over a model loaded in this process, and its `close`."""
    from app.engine import load_engine
    from app.engine.base import prepare_all

    engine = load_engine(_spec(args))
    prepare_all(engine)  # GPU graphs (and compiled layers): one process, so now rather than while idle
    return (lambda audio, **options: engine.transcribe(audio, **options).to_dict()), lambda: None


def _on_server(args: argparse.Namespace):
    """`transcribe --server URL`: the same calls, the model on a speech server (the text pipeline stays here)."""
    conn = _connection(args)
    return conn.transcribe, conn.close


def _connection(args: argparse.Namespace, **timeouts):
    """The connection to `--server`, with `--token-file`'s token."""
    from pathlib import Path

    from app.server.auth import read_token
    from app.server.http import ServerConnection
    from app.setting_checks import check_server_url

    url = check_server_url(args.server)  # as Settings checks it: "gpu-box:8765" needs its http://
    token = read_token(Path(args.token_file)) if args.token_file else None
    return ServerConnection(url, token, **timeouts)


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.server.serve import serve

    return serve(args, _spec(args))
def _vocabulary(listed: str, file: str | None) -> tuple[str, ...]:
    """`--vocabulary "A, B"` and the lines of `--vocabulary-file`, in that order, blanks and repeats dropped."""
    entries = listed.split(",")
    if file:
        try:
            entries += open(file, encoding="utf-8").read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"The vocabulary file {file} cannot be read ({exc.__class__.__name__}: "
                            f"{getattr(exc, 'strerror', None) or exc}); give a UTF-8 text file with one entry per line.",
                            code="bad_vocabulary") from exc
    return tuple(dict.fromkeys(" ".join(e.split()) for e in entries if e.strip()))


def _read_token_input() -> str:
    """The token for `server-token`: piped in, or typed at a prompt that does not echo it.

    Typed at a terminal, a bare `readline` waited without a word and showed the secret on screen."""
    if not sys.stdin.isatty():
        return sys.stdin.readline()
    import getpass

    return getpass.getpass("Paste the speech server's token and press Enter (empty forgets it): ")


def _cmd_check_model(args: argparse.Namespace) -> int:
    """The settings window's "Check" button: proves a model folder loads, in a process the GUI can spare."""
    import time

    from app.engine import load_engine

    spec = _spec(args)
    started = time.monotonic()
    engine = load_engine(spec)
    print(json.dumps({"ok": True, "engine": spec.engine, "model": spec.model, "device": str(getattr(engine, "device", "")),
                      "load_s": round(time.monotonic() - started, 1)}), flush=True)
    return 0


def _dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    command = args.command or "gui"
    if command == "check-model":
        return _cmd_check_model(args)
    if command == "transcribe":
        return _cmd_transcribe(args)
    if command == "server-token":
        from app.server.token_store import save_token

        where = save_token(_read_token_input())
        print(f"The server token is kept in {where}.", file=sys.stderr)
        return 0
    if command == "serve":
        return _cmd_serve(args)
    if command == "worker":
        from app.worker.server import main as worker_main

        return worker_main()
    if command in REMOTE_COMMANDS:
        from app.desktop.remote import send_command

        return send_command(command)
    from app.ui.main import run_gui

    return run_gui(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0] in REMOTE_COMMANDS:  # a desktop shortcut's path: skip the engine imports
        from app.desktop.remote import send_command

        return send_command(argv[0])
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
