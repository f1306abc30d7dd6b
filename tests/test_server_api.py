"""The speech server (`python -m app serve`) as OpenAI clients see it: a real server subprocess on
127.0.0.1, Whisper tiny.en (CTranslate2) and the micro diffusion model, spoken to by the official
`openai` package and by curl, with real speech (espeak-ng clips and the micro model's held-out clips)."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time

import httpx2
import numpy as np
import openai
import pytest
import soundfile as sf

from app.audio.loading import load_audio
from app.audio.speech_spans import speech_spans
from app.engine import EngineSpec, load_engine
from app.engine.base import BatchItem
from app.training.micro import DEFAULT_OUT as MICRO, EVAL_CLIPS, load_heldout
from tests.data import WHISPER_TINY_EN_CT2
from tests.data.build import synthesize
from tests.server_process import ROOT, ServerProcess
from tests.speech import clips, wer

pytestmark = pytest.mark.slow
WHISPER = ["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu"]


@pytest.fixture(scope="module")
def speech():
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    return clips(source="espeak", language="en")[:8]


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory, speech):
    server = ServerProcess([*WHISPER, "--max-upload-mb", "0.5"], tmp_path_factory.mktemp("srv") / "server.log")
    yield server.wait_ready()
    server.stop()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory, speech):
    """A token, room for one waiting request only, and no speech check (for clients that check themselves)."""
    folder = tmp_path_factory.mktemp("guarded")
    token = "s3cret-token-for-the-tests-0123456789"
    (folder / "token").write_text(token + "\n")
    server = ServerProcess([*WHISPER, "--token-file", str(folder / "token"), "--queue-size", "1",
                            "--no-speech-check"], folder / "server.log", token=token)
    yield server.wait_ready()
    server.stop()


def client(server, token: str | None = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.token or token, max_retries=0)


def heard(text: str, reference: str) -> bool:
    """tiny.en's text of an espeak clip: at most one word in five wrong (it hears "milk. Red" for "milk, bread")."""
    return wer([reference], [text]) <= 0.2


def curl(server, *fields: str, headers: dict | None = None) -> tuple[int, str]:
    cmd = ["curl", "-sS", "-w", "\n%{http_code}", server.url + "/v1/audio/transcriptions"]
    for name, value in (server.headers if headers is None else headers).items():
        cmd += ["-H", f"{name}: {value}"]
    for field in fields:
        cmd += ["-F", field]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


# -- answers ------------------------------------------------------------------------------------


def test_openai_client_gets_text_json_and_verbose_json(whisper_server, speech):
    api = client(whisper_server)
    clip = speech[0]
    with open(clip.path, "rb") as fh:
        as_json = api.audio.transcriptions.create(model="whisper-1", file=fh)
    assert heard(as_json.text, clip.text), as_json.text
    with open(clip.path, "rb") as fh:
        as_text = api.audio.transcriptions.create(model="whisper-tiny.en-ct2", file=fh, response_format="text")
    assert as_text.strip() == as_json.text
    with open(clip.path, "rb") as fh:
        verbose = api.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json",
                                                  language="en")
    assert verbose.text == as_json.text and verbose.language == "english"
    assert verbose.duration == pytest.approx(clip.seconds, abs=0.05)
    extra = verbose.model_extra
    assert extra["language_code"] == "en" and extra["steps_used"] > 0 and extra["timings"]["total"] > 0


def test_openai_client_streams_drafts_then_the_text(whisper_server, speech):
    api = client(whisper_server)
    clip = speech[5]  # the longest short clip
    with open(clip.path, "rb") as fh:
        events = list(api.audio.transcriptions.create(model="whisper-1", file=fh, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert deltas, kinds
    assert "".join(e.delta for e in deltas).strip() == events[-1].text.strip()  # Whisper only appends
    assert heard(events[-1].text, clip.text), events[-1].text


def test_curl_gets_every_format(whisper_server, speech):
    clip = speech[1]
    status, body = curl(whisper_server, f"file=@{clip.path}", "model=whisper-1", "response_format=text")
    assert status == 200 and heard(body, clip.text), body
    status, body = curl(whisper_server, f"file=@{clip.path}", "model=whisper-1", "response_format=verbose_json")
    assert status == 200 and json.loads(body)["duration"] > 0
    status, body = curl(whisper_server, f"file=@{clip.path}", "model=whisper-1", "stream=true")
    events = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    assert status == 200 and events[-1]["type"] == "transcript.text.done"
    assert heard(events[-1]["text"], clip.text)


@pytest.fixture(scope="module")
def three_sentences(speech, tmp_path_factory):
    """Three clips with 1.5 s of silence before each: a file to subtitle, and when each sentence was spoken."""
    gap = np.zeros(24_000, dtype=np.float32)
    parts, spoken, at = [], [], 0.0
    for clip in speech[:3]:
        audio = load_audio(clip.path)
        parts += [gap, audio]
        spoken.append((at + 1.5, at + 1.5 + len(audio) / 16_000))
        at = spoken[-1][1]
    path = tmp_path_factory.mktemp("subtitles") / "three.wav"
    sf.write(path, np.concatenate(parts), 16_000, subtype="PCM_16")
    return path, spoken, [clip.text for clip in speech[:3]]


def cues(subtitles: str, separator: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue of an srt (separator ",") or vtt (".") file."""
    def seconds(clock: str) -> float:
        h, m, s = clock.replace(separator, ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    found = []
    for block in subtitles.strip().split("\n\n"):
        lines = block.splitlines()
        timing = next((i for i, line in enumerate(lines) if " --> " in line), None)
        if timing is not None:
            start, end = lines[timing].split(" --> ")
            found.append((seconds(start), seconds(end), " ".join(lines[timing + 1:])))
    return found


def test_subtitles_have_a_cue_for_each_sentence_when_it_was_spoken(whisper_server, three_sentences):
    """srt, vtt and verbose_json's segments: the speech is found with the VAD, each piece transcribed on its own."""
    path, spoken, texts = three_sentences
    status, body = curl(whisper_server, f"file=@{path}", "model=whisper-1", "response_format=srt")
    assert status == 200, body
    found = cues(body, ",")
    assert [block.splitlines()[0] for block in body.strip().split("\n\n")] == ["1", "2", "3"], body
    assert len(found) == 3, body
    for (start, end, text), (spoken_start, spoken_end), reference in zip(found, spoken, texts):
        # Inside the clip, give or take the padding: espeak's clips begin and end with a little silence.
        assert spoken_start - 0.2 <= start < end <= spoken_end + 0.2, (start, end, spoken_start, spoken_end)
        assert heard(text, reference), (text, reference)

    with open(path, "rb") as fh:
        as_vtt = client(whisper_server).audio.transcriptions.create(model="whisper-1", file=fh, response_format="vtt")
    assert as_vtt.startswith("WEBVTT\n\n") and cues(as_vtt, ".") == found

    with open(path, "rb") as fh:
        verbose = client(whisper_server).audio.transcriptions.create(model="whisper-1", file=fh,
                                                                     response_format="verbose_json")
    # A segment is the stretch of speech the VAD heard; its cue, the time its words were said (inside it).
    assert [s.text for s in verbose.segments] == [text for _, _, text in found]
    assert all(s.start - 0.001 <= start < end <= s.end + 0.001 for s, (start, end, _) in zip(verbose.segments, found))
    assert verbose.text == " ".join(text for _, _, text in found) and verbose.language == "english"
    assert verbose.words is None  # asked only for segments (OpenAI's default)


def test_word_timestamps_say_when_each_word_was_spoken(whisper_server, three_sentences):
    """timestamp_granularities[] word (OpenAI's client sends it so): each word of each sentence, in order, inside
    the time its sentence was spoken, the first beginning and the last ending near the sentence's own ends."""
    path, spoken, texts = three_sentences
    with open(path, "rb") as fh:
        verbose = client(whisper_server).audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    words = verbose.words
    assert "".join(w.word for w in words) == verbose.text.replace(" ", ""), (words, verbose.text)
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.start <= w.end for w in words), words
    for segment, (spoken_start, spoken_end) in zip(verbose.segments, spoken):
        inside = [w for w in words if segment.start <= w.start and w.end <= segment.end]
        assert "".join(w.word for w in inside) == segment.text.replace(" ", ""), (inside, segment.text)
        # Give or take the VAD's margin (0.15 s), to which a word the alignment began early is held.
        assert spoken_start - 0.2 <= inside[0].start <= spoken_start + 0.4, (inside[0], spoken_start)
        assert spoken_end - 0.6 <= inside[-1].end <= spoken_end + 0.2, (inside[-1], spoken_end)

    only_words = json.loads(curl(whisper_server, f"file=@{path}", "model=whisper-1", "response_format=verbose_json",
                                 "timestamp_granularities[]=word")[1])
    assert "segments" not in only_words and [w["word"] for w in only_words["words"]] == [w.word for w in words]
    status, body = curl(whisper_server, f"file=@{path}", "model=whisper-1", "timestamp_granularities[]=word")
    assert status == 400 and "verbose_json" in json.loads(body)["error"]["message"], body
    status, body = curl(whisper_server, f"file=@{path}", "model=whisper-1", "response_format=verbose_json",
                        "timestamp_granularities[]=phoneme")
    assert status == 400 and json.loads(body)["error"]["param"] == "timestamp_granularities", body


def test_models_and_health_describe_the_served_model(whisper_server):
    models = client(whisper_server).models.list()
    assert [m.id for m in models.data] == ["whisper-tiny.en-ct2"]
    health = httpx2.get(whisper_server.url + "/health").json()
    assert health["status"] == "ok" and health["engine"] == "faster-whisper" and health["device"] == "cpu"
    assert health["model"] == "whisper-tiny.en-ct2" and health["queue_length"] == 0
    assert health["languages"] == ["en"]  # an English-only model: the app's settings window warns beside Language
    assert health["times_words"] is True  # Whisper on CTranslate2 aligns its words (the CLI's subtitles ask for them)
    assert str(WHISPER_TINY_EN_CT2) not in json.dumps(health)  # no server path leaves the server


# -- no speech ----------------------------------------------------------------------------------


def test_an_upload_without_speech_gets_empty_text_and_never_reaches_the_engine(whisper_server, guarded_server,
                                                                                  tmp_path):
    """Whisper tiny.en writes "you" for the test data's noise. The server checks every upload for speech
    first, as the app does, and answers one without it with an empty text in every format; the engine's
    log line for a job ("job ...: 3.0 s of audio in ... ms") shows it was never asked."""
    noise, silence = (next(c for c in clips(source="silence") if c.id == name) for name in ("noise", "silence"))
    api = client(whisper_server)
    engine_jobs = whisper_server.log().count(" s of audio in ")
    for clip in (noise, silence):
        with open(clip.path, "rb") as fh:
            answer = api.audio.transcriptions.create(model="whisper-1", file=fh)
        assert answer.text == "" and answer.model_extra["no_speech"] is True, answer
        assert answer.model_extra["steps_used"] == 0 and answer.model_extra["timings"] == {}
    status, body = curl(whisper_server, f"file=@{noise.path}", "model=whisper-1", "response_format=text")
    assert (status, body) == (200, "\n")
    with open(noise.path, "rb") as fh:
        verbose = api.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert verbose.text == "" and verbose.segments == [] and verbose.duration == pytest.approx(noise.seconds, abs=0.05)
    with open(noise.path, "rb") as fh:
        events = list(api.audio.transcriptions.create(model="whisper-1", file=fh, stream=True))
    assert [(e.type, e.text, e.model_extra["no_speech"]) for e in events] == [("transcript.text.done", "", True)]
    log = whisper_server.log()
    assert log.count(" s of audio in ") == engine_jobs and log.count("without speech") == 5, log
    # One spoken word is speech: it is transcribed (and does reach the engine).
    word = tmp_path / "yes.wav"
    sf.write(word, synthesize("Yes.", "en-us", tmp_path), 16_000)
    with open(word, "rb") as fh:
        spoken = api.audio.transcriptions.create(model="whisper-1", file=fh)
    assert "yes" in spoken.text.lower() and spoken.model_extra["no_speech"] is False, spoken
    assert whisper_server.log().count(" s of audio in ") == engine_jobs + 1
    # Served with --no-speech-check, the model gets the noise and invents its word.
    with open(noise.path, "rb") as fh:
        unchecked = client(guarded_server).audio.transcriptions.create(model="whisper-1", file=fh)
    assert unchecked.text.strip() and unchecked.model_extra["no_speech"] is False, unchecked


def test_serve_without_the_speech_checks_model_says_so_before_loading(tmp_path):
    """A broken install (no silero-vad) used to answer every upload with a 500; now `serve` ends at once."""
    (tmp_path / "silero_vad.py").write_text("")  # a module, not the package with the ONNX model in it
    server = ServerProcess([*WHISPER], tmp_path / "server.log", env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    try:
        assert server.proc.wait(60) == 2
    finally:
        server.stop()
    assert "--no-speech-check" in server.log() and "Traceback" not in server.log()
    assert "Serving" not in server.log(), server.log()  # said before the model loads


def test_the_generated_token_is_shown_once_the_model_has_loaded(tmp_path):
    """`serve` on a non-local address printed its new token before loading the model: a model that then
    failed to load left a token line above its error, and that token, kept in its file, was never shown."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    kept = tmp_path / "config" / "diffusion-dictate" / "server-token"
    broken = ServerProcess(["--engine", "faster-whisper", "--model", str(tmp_path / "missing"), "--device", "cpu",
                            "--host", "0.0.0.0"], tmp_path / "broken.log", env=env)
    try:
        assert broken.proc.wait(60) == 2
    finally:
        broken.stop()
    assert "does not exist" in broken.log() and "Clients need this token" not in broken.log(), broken.log()
    assert not kept.exists()
    server = ServerProcess([*WHISPER, "--host", "0.0.0.0"], tmp_path / "server.log", env=env)
    try:
        deadline = time.monotonic() + 120
        while "Serving" not in server.log() and server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        server.token = kept.read_text().strip()
        assert f"Clients need this token (shown once; it is kept in {kept}):\n{server.token}\n" in server.log()
        assert health_ok(server.wait_ready())  # the token shown is the one the server asks for
    finally:
        server.stop()


def test_cli_keeps_the_servers_no_speech(whisper_server):
    """`transcribe --no-speech-check --server URL` sends the noise; the server's check answers, and says so."""
    noise = next(c for c in clips(source="silence") if c.id == "noise")
    cmd = [sys.executable, "-m", "app", "transcribe", str(noise.path), "--server", whisper_server.url,
           "--no-speech-check", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["text"] == "" and answer["no_speech"] is True, answer


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, status, code", [
    (["model=whisper-1"], 400, "missing_file"),
    (["file=@{wav}"], 400, "missing_model"),
    (["file=@{wav}", "model=gpt-4o-transcribe"], 404, "model_not_found"),
    (["file=@{text}", "model=whisper-1"], 400, "invalid_audio"),
    (["file=@{empty}", "model=whisper-1"], 400, "empty_file"),
    (["file=@{silent_header}", "model=whisper-1"], 400, "empty_audio"),
    (["file=@{big}", "model=whisper-1"], 413, "file_too_large"),
    (["file=@{wav}", "model=whisper-1", "language=klingon"], 400, "unsupported_language"),
    (["file=@{wav}", "model=whisper-1", "steps=0"], 400, "invalid_steps"),
    (["file=@{wav}", "model=whisper-1", "steps=49"], 400, "invalid_steps"),
    (["file=@{wav}", "model=whisper-1", "steps=many"], 400, "invalid_steps"),
    (["file=@{wav}", "model=whisper-1", "response_format=docx"], 400, "unsupported_response_format"),
    (["file=@{wav}", "model=whisper-1", "response_format=srt", "stream=true"], 400, "unsupported_response_format"),
    (["file=@{wav}", "model=whisper-1", "language=de"], 400, "bad_language"),  # tiny.en knows English only
])
def test_bad_input_gets_openais_error_shape(whisper_server, speech, tmp_path, fields, status, code):
    files = {"wav": speech[0].path, "text": tmp_path / "notes.txt", "empty": tmp_path / "empty.wav",
             "silent_header": tmp_path / "no-samples.wav", "big": tmp_path / "big.wav"}
    files["text"].write_text("this is not audio\n" * 100)
    files["empty"].write_bytes(b"")
    sf.write(files["silent_header"], [], 16_000)
    sf.write(files["big"], [0.0] * (16_000 * 40), 16_000, subtype="FLOAT")  # 2.5 MB > the 0.5 MB limit
    got, body = curl(whisper_server, *(f.format(**files) for f in fields))
    error = json.loads(body)["error"]
    assert (got, error["code"]) == (status, code), body
    assert error["type"] == "invalid_request_error" and error["message"].endswith(".")
    if code == "file_too_large":  # --max-upload-mb 0.5 used to be said as "a limit of 0 MB"
        assert "limit of 0.5 MB;" in error["message"], error["message"]
    assert health_ok(whisper_server)  # and the server goes on


def test_the_openai_client_raises_its_own_errors(whisper_server, speech):
    api = client(whisper_server)
    with open(speech[0].path, "rb") as fh, pytest.raises(openai.NotFoundError, match="does not exist on this server"):
        api.audio.transcriptions.create(model="whisper-large-v9", file=fh)
    with pytest.raises(openai.BadRequestError, match="not audio this server can read"):
        api.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"RIFF....WAVEfmt garbage"))


def health_ok(server) -> bool:
    return httpx2.get(server.url + "/health", headers=server.headers, timeout=10).json()["status"] == "ok"


# -- the token and the queue --------------------------------------------------------------------


def test_401_without_or_with_a_wrong_token(guarded_server, speech):
    for headers, code in (({}, "missing_token"), ({"Authorization": "Bearer wrong-token"}, "invalid_token")):
        status, body = curl(guarded_server, f"file=@{speech[0].path}", "model=whisper-1", headers=headers)
        assert (status, json.loads(body)["error"]["code"]) == (401, code)
        assert httpx2.get(guarded_server.url + "/health", headers=headers).status_code == 401
    with open(speech[0].path, "rb") as fh, pytest.raises(openai.AuthenticationError, match="token is wrong"):
        client(guarded_server, token=None).with_options(api_key="wrong").audio.transcriptions.create(
            model="whisper-1", file=fh)
    with open(speech[0].path, "rb") as fh:
        assert heard(client(guarded_server).audio.transcriptions.create(model="whisper-1", file=fh).text,
                          speech[0].text)


def test_429_with_retry_after_when_the_queue_is_full(guarded_server, speech):
    """One request runs (a 42 s clip), then five arrive at once with room for one waiting: four get 429."""
    long_clip = clips(source="espeak", language="en")[-1]

    def send(clip):
        with open(clip.path, "rb") as fh:
            return httpx2.post(guarded_server.url + "/v1/audio/transcriptions", headers=guarded_server.headers,
                               files={"file": fh}, data={"model": "whisper-1"}, timeout=300)

    def busy() -> bool:
        return httpx2.get(guarded_server.url + "/health", headers=guarded_server.headers).json()["busy"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = pool.submit(send, long_clip)
        deadline = time.monotonic() + 60
        while not busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        rest = [pool.submit(send, clip) for clip in speech[:5]]
        answers = [first.result(), *(f.result() for f in rest)]
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 200 and sorted(statuses[1:]) == [200, 429, 429, 429, 429], statuses
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1 and answer.json()["error"]["code"] == "queue_full"
            assert "try again in" in answer.json()["error"]["message"]
    for clip, answer in zip([long_clip, *speech[:5]], answers):
        if answer.status_code == 200:
            assert heard(answer.json()["text"], clip.text)


# -- the micro diffusion model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion_server(tmp_path_factory):
    server = ServerProcess(["--engine", "diffusion", "--model", str(MICRO), "--device", "cpu"],
                           tmp_path_factory.mktemp("diffusion") / "server.log")
    yield server.wait_ready(timeout_s=300)
    server.stop()


def test_diffusion_answers_with_its_steps_and_streams_its_drafts(diffusion_server, tmp_path):
    text, audio = load_heldout(MICRO / "adapter")[EVAL_CLIPS]
    wav = tmp_path / "heldout.wav"
    sf.write(wav, audio, 16_000)
    api = client(diffusion_server)
    with open(wav, "rb") as fh:
        answer = api.audio.transcriptions.create(model="diffusion-micro", file=fh, response_format="verbose_json",
                                                 extra_body={"steps": 4})
    # The micro model gets many words wrong; what matters here is that the server's text is the engine's.
    engine = load_engine(EngineSpec(engine="diffusion", model=str(MICRO), device="cpu"))
    assert answer.text and answer.text == engine.transcribe(load_audio(wav), steps=4).text, (text, answer.text)
    steps = answer.model_extra["timings"]["steps"]
    assert 1 <= answer.model_extra["steps_used"] <= 4 and len(steps) == answer.model_extra["steps_used"]
    with open(wav, "rb") as fh:
        events = list(api.audio.transcriptions.create(model="whisper-1", file=fh, stream=True,
                                                      extra_body={"steps": 4}))
    drafts = [e.model_extra for e in events if e.type == "transcript.text.delta"]
    assert drafts and all(d["total"] == 4 and 1 <= d["step"] <= 4 for d in drafts)
    assert events[-1].type == "transcript.text.done" and events[-1].text == answer.text  # seeded: the same canvas
    status, body = curl(diffusion_server, f"file=@{wav}", "model=whisper-1", "response_format=verbose_json",
                        "timestamp_granularities[]=word")
    assert status == 400 and "does not time words" in json.loads(body)["error"]["message"], body
    assert httpx2.get(diffusion_server.url + "/health").json()["times_words"] is False


def test_cli_transcribes_on_the_server(guarded_server, speech, tmp_path):
    (tmp_path / "token").write_text(guarded_server.token + "\n")
    cmd = [sys.executable, "-m", "app", "transcribe", str(speech[3].path), "--server", guarded_server.url,
           "--token-file", str(tmp_path / "token")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and heard(done.stdout.strip(), speech[3].text), done.stderr
    refused = subprocess.run(cmd[:-2], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and "refused the token" in refused.stderr and "Traceback" not in refused.stderr



def test_cli_writes_subtitles_from_the_servers_segments(whisper_server, three_sentences, tmp_path):
    path, spoken, texts = three_sentences
    local = tmp_path / "three.wav"
    local.write_bytes(path.read_bytes())
    done = subprocess.run([sys.executable, "-m", "app", "transcribe", str(local), "--server", whisper_server.url,
                           "--subtitles", "vtt"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "three.vtt"), done.stderr
    found = cues((tmp_path / "three.vtt").read_text(encoding="utf-8"), ".")
    assert len(found) == 3 and all(heard(text, reference) for (_, _, text), reference in zip(found, texts)), found
    assert all(a - 0.2 <= start < end <= b + 0.2 for (start, end, _), (a, b) in zip(found, spoken)), found


def test_cli_engine_server_takes_the_model_as_the_address(whisper_server, speech):
    """`--engine server --model URL` is how Settings names a server; it used to say "start one with
    `python -m app serve` and choose another engine here", about a server that was running."""
    cmd = [sys.executable, "-m", "app", "transcribe", str(speech[3].path), "--engine", "server", "--model",
           whisper_server.url]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and heard(done.stdout.strip(), speech[3].text), done.stderr
    bare = subprocess.run(cmd[:-2], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bare.returncode == 2 and "--server URL" in bare.stderr and "Traceback" not in bare.stderr, bare.stderr

def test_a_chunked_upload_over_the_limit_is_cut_off_while_it_arrives(whisper_server):
    """No Content-Length to refuse up front: the server counts the bytes and stops at the limit."""
    boundary = "dictation-boundary"

    def body():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="long.wav"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(40):  # 2.5 MB in 64 KiB pieces, over the 0.5 MB limit
            yield bytes(64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = httpx2.post(whisper_server.url + "/v1/audio/transcriptions", content=body(), timeout=60,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "file_too_large"
    assert "limit of 0.5 MB;" in answer.json()["error"]["message"]  # the operator's limit, not the form's slack
    assert '"POST /v1/audio/transcriptions HTTP/1.1" 413' in whisper_server.log()
    assert health_ok(whisper_server)


def test_the_prompt_is_the_vocabulary_whisper_is_conditioned_on(whisper_server, tmp_path):
    """OpenAI's `prompt` reaches the engine as the speaker's vocabulary: tiny.en hears "Cuba, Nites" in
    this sentence alone (tests/test_vocabulary_speech.py), and writes the term when it is in the prompt."""
    wav = tmp_path / "kubernetes.wav"
    sf.write(wav, synthesize("Please deploy the new service on Kubernetes.", "en-us", tmp_path), 16_000)
    api = client(whisper_server)
    with open(wav, "rb") as fh:
        plain = api.audio.transcriptions.create(model="whisper-1", file=fh, language="en").text
    with open(wav, "rb") as fh:
        prompted = api.audio.transcriptions.create(model="whisper-1", file=fh, language="en",
                                                   prompt="Kubernetes, Nguyen").text
    assert "Kubernetes" not in plain and "Kubernetes" in prompted, (plain, prompted)


def test_waiting_diffusion_requests_are_denoised_as_one_batch(diffusion_server, tmp_path):
    """While one request runs, three arrive and wait; the engine then takes them as one batch of canvases.
    Each answer is exactly what the engine's `transcribe_batch` gives those three recordings in that order.
    (Answers in segments, `verbose_json` among them, batch their own pieces instead: `test_subtitles_...`.)"""
    long_clip = clips(source="espeak", language="en")[-1]
    heldout = load_heldout(MICRO / "adapter")[EVAL_CLIPS + 1 : EVAL_CLIPS + 4]
    longest = max(len(audio) for _, audio in heldout)  # one length: the trimmed micro model batches only that
    paths = []
    for k, (_, audio) in enumerate(heldout):
        paths.append(tmp_path / f"heldout-{k}.wav")
        sf.write(paths[-1], np.pad(audio, (0, longest - len(audio))), 16_000)

    def send(path, steps: int):
        with open(path, "rb") as fh:
            return httpx2.post(diffusion_server.url + "/v1/audio/transcriptions", files={"file": fh}, timeout=300,
                               data={"model": "whisper-1", "language": "en", "steps": str(steps)})

    def health() -> dict:
        return httpx2.get(diffusion_server.url + "/health").json()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(send, long_clip.path, 48)
        wait_until(lambda: health()["busy"], "the first request to run")
        waiting = []
        for path in paths:  # one at a time, so their order in the queue (and in the batch) is known
            waiting.append(pool.submit(send, path, 8))
            wait_until(lambda: health()["queue_length"] == len(waiting), "the request to wait in the queue")
        assert health()["busy"], "the first request must still run, or the test proves nothing"
        answers = [f.result().json() for f in waiting]
    assert first.result().status_code == 200 and health()["max_batch"] == 8
    assert [a["timings"]["batch"] for a in answers] == [3, 3, 3], answers
    engine = load_engine(EngineSpec(engine="diffusion", model=str(MICRO), device="cpu"))
    expected = engine.transcribe_batch([BatchItem(load_audio(p), "en") for p in paths], steps=8)
    assert [a["text"] for a in answers] == [t.text for t in expected]


def test_subtitles_from_the_diffusion_engine_denoise_the_pieces_as_one_batch(diffusion_server, tmp_path):
    """Two sentences with a pause between them: two cues, whose texts are what the engine's `transcribe_batch`
    gives the two pieces the server cut the recording into (the same VAD, here in the test)."""
    heldout = load_heldout(MICRO / "adapter")[EVAL_CLIPS:EVAL_CLIPS + 2]
    gap = np.zeros(24_000, dtype=np.float32)
    audio = np.concatenate([heldout[0][1], gap, heldout[1][1]])
    wav = tmp_path / "two.wav"
    sf.write(wav, audio, 16_000, subtype="FLOAT")
    with open(wav, "rb") as fh:
        answer = httpx2.post(diffusion_server.url + "/v1/audio/transcriptions", files={"file": fh}, timeout=300,
                             data={"model": "whisper-1", "language": "en", "steps": "4",
                                   "response_format": "verbose_json"}).json()
    spans = speech_spans(load_audio(wav))
    assert len(spans) == 2 and spans[0].end < len(heldout[0][1]) / 16_000 + 0.2 < spans[1].start, spans
    engine = load_engine(EngineSpec(engine="diffusion", model=str(MICRO), device="cpu"))
    expected = engine.transcribe_batch([BatchItem(load_audio(wav)[s.audio_start:s.audio_end], "en") for s in spans],
                                       steps=4)
    assert [s["text"] for s in answer["segments"]] == [t.text.strip() for t in expected], answer
    assert [(s["start"], s["end"]) for s in answer["segments"]] == [(round(s.start, 3), round(s.end, 3)) for s in spans]
    assert answer["timings"]["segments"] == 2 and answer["text"] == " ".join(t.text.strip() for t in expected)


def test_a_speculative_request_only_uses_time_no_other_request_wants(diffusion_server, tmp_path):
    """What the app sends at a pause with the key held (`speculative=true`): any other request stops a
    running one, the same client's newer request ends its older one, it is refused while another request
    runs, and a dictation that comes ends a waiting one too (it would wait behind it, and every later one).
    The micro diffusion model on the CPU: 48 steps on the longest clip run for seconds, long enough to be
    interrupted."""
    long_clip = clips(source="espeak", language="en")[-1].path
    short = tmp_path / "short.wav"
    sf.write(short, load_heldout(MICRO / "adapter")[EVAL_CLIPS][1], 16_000)
    finished: list[str] = []

    def send(name: str, path, steps: int, **fields: str) -> httpx2.Response:
        with open(path, "rb") as fh:
            answer = httpx2.post(diffusion_server.url + "/v1/audio/transcriptions", files={"file": fh}, timeout=300,
                                 data={"model": "whisper-1", "language": "en", "steps": str(steps), **fields})
        finished.append(name)
        return answer

    def health() -> dict:
        return httpx2.get(diffusion_server.url + "/health").json()

    def superseded(answer: httpx2.Response) -> bool:
        return answer.status_code == 409 and answer.json()["error"]["code"] == "superseded"

    def running_ahead() -> bool:
        return health()["speculative"]["running"] == 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ahead = pool.submit(send, "ahead", long_clip, 48, speculative="true", client="alice")
        wait_until(running_ahead, "the speculative request to run")
        other = pool.submit(send, "other", short, 4, client="bob")  # another speaker's dictation
        assert superseded(ahead.result()), ahead.text
        assert other.result().status_code == 200 and other.result().json()["text"]

        older = pool.submit(send, "older", long_clip, 48, speculative="true", client="alice")
        wait_until(running_ahead, "the older speculative request to run")
        newer = pool.submit(send, "newer", short, 4, speculative="true", client="alice")  # alice spoke on
        assert superseded(older.result()), older.text
        assert newer.result().status_code == 200 and newer.result().json()["text"] == other.result().json()["text"]

        first = pool.submit(send, "first", long_clip, 48)
        wait_until(lambda: health()["busy"], "the first request to run")
        refused = send("refused", short, 4, speculative="true", client="dave")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full", refused.text
        assert health()["busy"] and not first.done(), "the first must still run, or the test proves nothing"
        assert first.result().status_code == 200

        running = pool.submit(send, "running ahead", long_clip, 48, speculative="true", client="alice")
        wait_until(running_ahead, "one speaker's speculative request to run")
        queued_ahead = pool.submit(send, "queued ahead", short, 8, speculative="true", client="carol")
        wait_until(lambda: health()["speculative"]["waiting"] == 1, "another's speculative request to wait")
        later = pool.submit(send, "later", short, 4)  # a dictation: ends the waiting speculative one too
        assert superseded(running.result()), running.text
        assert superseded(queued_ahead.result()), queued_ahead.text
        assert later.result().status_code == 200
    assert health()["speculative"] == {"waiting": 0, "running": 0}


def wait_until(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
