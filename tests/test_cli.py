"""`python -m app transcribe` as a user runs it: a real subprocess, real weights, real speech."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from tests.data import WHISPER_BASE, WHISPER_TINY_EN, WHISPER_TINY_EN_CT2
from tests.speech import clips, wer


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=300)


def test_transcribe_json_one_object_per_file():
    selection = clips(source="librivox")[:2]
    proc = _run("transcribe", *(str(c.path) for c in selection), "--engine", "whisper",
                "--model", str(WHISPER_BASE), "--language", "en", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for clip, line in zip(selection, lines):
        obj = json.loads(line)
        assert obj["file"] == str(clip.path)
        assert obj["language"] == "en"
        assert obj["steps_used"] > 0
        assert obj["timings"]["total"] > 0
        assert wer([clip.text], [obj["text"]]) < 0.3, obj["text"]


def test_plain_output_is_the_text():
    clip = clips(source="cards")[0]
    proc = _run("transcribe", str(clip.path), "--model", str(WHISPER_TINY_EN))
    assert proc.returncode == 0, proc.stderr
    assert wer([clip.text], [proc.stdout.strip()]) <= 0.5, proc.stdout


def test_faster_whisper_engine_on_a_ctranslate2_folder():
    clip = clips(source="librivox")[1]
    proc = _run("transcribe", str(clip.path), "--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2),
                "--language", "en", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["steps_used"] > 0 and {"features", "encoder", "decode", "total"} <= set(obj["timings"])
    assert wer([clip.text], [obj["text"]]) < 0.3, obj["text"]


def test_a_file_without_speech_prints_no_invented_words():
    """Whisper tiny.en writes "you" for this noise; the app's silence check keeps it out, as in the app."""
    speech, noise = clips(source="cards")[0], next(c for c in clips(source="silence") if c.id == "noise")
    args = ("transcribe", str(speech.path), str(noise.path), "--model", str(WHISPER_TINY_EN_CT2), "--json")
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    heard, silent = (json.loads(line) for line in proc.stdout.splitlines())
    assert not heard["no_speech"] and wer([speech.text], [heard["text"]]) <= 0.5, heard
    assert silent["no_speech"] and silent["text"] == silent["raw_text"] == "" and silent["steps_used"] == 0, silent
    assert f"{noise.path}: no speech heard" in proc.stderr

    unchecked = json.loads(_run(*args[:2], *args[3:], "--no-speech-check").stdout)
    assert not unchecked["no_speech"] and "encoder" in unchecked["timings"], unchecked  # the model ran on it


def test_subtitles_are_written_beside_each_file_in_readable_cues(tmp_path):
    """Four read sentences in one file: the pauses between them make the segments (Silero VAD), cut into cues
    between the words that Whisper timed; a file of noise gets an empty subtitle file and a line on stderr."""
    selection = clips(source="librivox")[:4]
    talk = tmp_path / "talk.wav"
    sf.write(talk, np.concatenate([sf.read(c.path, dtype="float32")[0] for c in selection]), 16_000)
    noise = tmp_path / "noise.wav"
    sf.write(noise, sf.read(next(c for c in clips(source="silence") if c.id == "noise").path, dtype="float32")[0],
             16_000)
    proc = _run("transcribe", str(talk), str(noise), "--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2),
                "--subtitles", "srt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "talk.srt"), str(tmp_path / "noise.srt")]
    blocks = (tmp_path / "talk.srt").read_text(encoding="utf-8").strip().split("\n\n")
    assert len(blocks) >= 2 and [b.splitlines()[0] for b in blocks] == [str(n) for n in range(1, len(blocks) + 1)]
    times = [b.splitlines()[1].split(" --> ") for b in blocks]
    seconds = [sum(float(x) * 60 ** i for i, x in enumerate(reversed(t.replace(",", ".").split(":"))))
               for pair in times for t in pair]
    assert seconds == sorted(seconds) and seconds[-1] <= sum(c.seconds for c in selection) + 0.01, times
    # Readable cues (Whisper on CTranslate2 times its words): two lines of at most 42 characters, at most 7 s.
    assert all(len(b.splitlines()[2:]) <= 2 and all(len(line) <= 42 for line in b.splitlines()[2:]) for b in blocks)
    assert all(end - start <= 7.0 for start, end in zip(seconds[0::2], seconds[1::2])), times
    text = " ".join(" ".join(b.splitlines()[2:]) for b in blocks)
    assert wer([" ".join(c.text for c in selection)], [text]) < 0.3, text
    assert (tmp_path / "noise.srt").read_text(encoding="utf-8") == "" and "noise.wav: no speech heard" in proc.stderr


def _assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_json_and_subtitles_are_one_or_the_other():
    clip = clips(source="cards")[0]
    _assert_one_line_error(_run("transcribe", str(clip.path), "--json", "--subtitles", "srt"), "choose one")


def test_wrong_path(tmp_path):
    _assert_one_line_error(_run("transcribe", str(tmp_path / "missing.wav"), "--model", str(WHISPER_TINY_EN)), "No such file")


def test_text_file_renamed_wav(tmp_path):
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all\n" * 10)
    _assert_one_line_error(_run("transcribe", str(fake), "--model", str(WHISPER_TINY_EN)), "not a readable audio file")


def test_empty_wav(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16_000)
    _assert_one_line_error(_run("transcribe", str(empty), "--model", str(WHISPER_TINY_EN)), "no audio samples")


def test_bad_model_folder(tmp_path):
    clip = clips(source="cards")[0]
    _assert_one_line_error(_run("transcribe", str(clip.path), "--model", str(tmp_path / "nowhere")), "does not exist")


def test_bad_language():
    clip = clips(source="cards")[0]
    _assert_one_line_error(_run("transcribe", str(clip.path), "--model", str(WHISPER_TINY_EN), "--language", "klingon"), "Unknown language")


def test_vocabulary_flags_prompt_and_correct(tmp_path):
    """`--vocabulary` and `--vocabulary-file`: the term tiny.en mishears alone comes out right; `--raw` and
    the JSON's `raw_text` show the engine's own text."""
    from benchmarks.vocabulary import SENTENCES, synthesize_sentences

    wav = tmp_path / "kubernetes.wav"
    sf.write(wav, synthesize_sentences(tmp_path)[0], 16_000)  # "...the new service on Kubernetes before Friday."
    base = ("transcribe", str(wav), "--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--language", "en")
    plain = _run(*base)
    assert plain.returncode == 0 and "Kubernetes" not in plain.stdout, plain.stdout + plain.stderr
    listed = tmp_path / "words.txt"
    listed.write_text("Nguyen\n\nKubernetes\n", encoding="utf-8")
    for flags in (("--vocabulary", "Nguyen, Kubernetes"), ("--vocabulary-file", str(listed))):
        proc = _run(*base, *flags, "--json")
        assert proc.returncode == 0, proc.stderr
        obj = json.loads(proc.stdout)
        assert "Kubernetes" in obj["text"] and obj["raw_text"], obj
    assert SENTENCES[0][0] == "Kubernetes"


def test_text_pipeline_flags(tmp_path):
    """Fillers go by default (`--keep-fillers` keeps them); `--spoken-punctuation` writes what is said."""
    from tests.data.build import synthesize

    wav = tmp_path / "question.wav"
    sf.write(wav, synthesize("Hello, how are you, question mark", "en-us", tmp_path), 16_000)
    base = ("transcribe", str(wav), "--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--language", "en")
    spoken = _run(*base, "--spoken-punctuation")
    assert spoken.returncode == 0, spoken.stderr
    assert spoken.stdout.strip().endswith("you?") and "mark" not in spoken.stdout.lower(), spoken.stdout
    for words in (_run(*base), _run(*base, "--raw")):  # off by default; --raw: no text step at all
        assert "question mark" in words.stdout.lower(), words.stdout


def test_unreadable_vocabulary_file(tmp_path):
    clip = clips(source="cards")[0]
    proc = _run("transcribe", str(clip.path), "--model", str(WHISPER_TINY_EN), "--vocabulary-file", str(tmp_path / "no.txt"))
    _assert_one_line_error(proc, "vocabulary file")


def test_blank_server_token_file(tmp_path):
    """A token file holding only a newline (`echo $UNSET > token`) is named in one sentence, not a traceback."""
    clip = clips(source="cards")[0]
    token = tmp_path / "token"
    token.write_text("\n")
    proc = _run("transcribe", str(clip.path), "--server", "http://127.0.0.1:9", "--token-file", str(token))
    _assert_one_line_error(proc, "shorter than 16 characters")


def test_serve_with_a_missing_or_mismatched_tls_file(tmp_path):
    """A wrong --tls-cert/--tls-key is named before the model loads, not a FileNotFoundError traceback after it."""
    proc = _run("serve", "--engine", "whisper", "--model", str(WHISPER_TINY_EN), "--device", "cpu", "--port", "9",
                "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    _assert_one_line_error(proc, "TLS certificate")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    proc = _run("serve", "--engine", "whisper", "--model", str(WHISPER_TINY_EN), "--device", "cpu", "--port", "9",
                "--tls-cert", str(junk), "--tls-key", str(junk))
    _assert_one_line_error(proc, "TLS certificate")


def test_server_address_without_http(tmp_path):
    """`--server gpu-box:8765` is checked as Settings checks the address: the sentence says to add http://,
    where it used to blame an unreachable server (UnsupportedProtocol) and point at Settings."""
    clip = clips(source="cards")[0]
    _assert_one_line_error(_run("transcribe", str(clip.path), "--server", "127.0.0.1:9"), "must start with http://")


def test_serve_on_a_port_in_use_says_so_before_loading_the_model():
    """A port another program listens on is named at once, not after the model has loaded (minutes for diffusion)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = _run("serve", "--engine", "whisper", "--model", str(WHISPER_TINY_EN), "--device", "cpu",
                    "--port", str(port))
    _assert_one_line_error(proc, "another --port")
    proc = _run("serve", "--engine", "whisper", "--model", str(WHISPER_TINY_EN), "--device", "cpu", "--port", "70000")
    _assert_one_line_error(proc, "not a TCP port")  # was an OverflowError traceback from uvicorn


def test_server_token_typed_at_a_terminal_is_asked_for_and_not_shown(tmp_path):
    """`dictate server-token` in a terminal used to wait without a prompt and echo the secret as it was typed."""
    import os
    import pty
    import select
    import time

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    pid, fd = pty.fork()  # the child's controlling terminal is the pty, as in a real terminal
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "app", "server-token"], env)
        finally:
            os._exit(127)  # never back into pytest in the child

    def read_until(needle: bytes, timeout_s: float = 30.0) -> bytes:
        out, deadline = b"", time.monotonic() + timeout_s
        while needle not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:  # the child has ended
                    break
        return out

    try:
        assert b"token" in read_until(b"(empty forgets it): "), "no prompt"
        os.write(fd, b"typed-secret-token-0123456789\n")
        after = read_until(b"is kept in")
    finally:
        for _ in range(50):  # it ends by itself once the token is stored
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)  # still waiting for input: the child this test started, by its pid
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0 and b"is kept in" in after, after
    assert b"typed-secret-token" not in after  # not echoed
    assert (tmp_path / "diffusion-dictate" / "server-client-token").read_text().strip() == "typed-secret-token-0123456789"
