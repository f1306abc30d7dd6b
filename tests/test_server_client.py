"""The app's side of the speech server: `ServerClient` against a real server subprocess (Whisper
tiny.en on CTranslate2, with a token), and where the token is kept. Qt offscreen. A long wait is
tested against the same server run by uvicorn on a thread of this process, where its keep-alive
interval can be made short."""

from __future__ import annotations

import os
import stat

import pytest

from app.audio.loading import load_audio
from app.engine import EngineSpec
from app.server.client import ServerClient
from tests.data import WHISPER_TINY_EN_CT2
from tests.server_process import ServerProcess, free_port
from tests.speech import clips, wer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytestmark = pytest.mark.slow
TOKEN = "client-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    folder = tmp_path_factory.mktemp("server")
    (folder / "token").write_text(TOKEN)
    server = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu",
                            "--token-file", str(folder / "token")], folder / "server.log", token=TOKEN)
    yield server.wait_ready()
    server.stop()


@pytest.fixture
def no_keyring(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "diffusion-dictate"


def make_client(qtbot, url: str, token: str | None) -> ServerClient:
    client = ServerClient(EngineSpec(engine="server", model=url), token_loader=lambda: token, retry_s=0.5)
    client.start()
    qtbot.waitUntil(lambda: client.state in ("ready", "failed"), timeout=30_000)
    return client


def test_a_dictation_streams_drafts_and_ends_in_one_result(qtbot, server):
    client = make_client(qtbot, server.url, TOKEN)
    assert client.state == "ready" and client.info["engine"] == "faster-whisper" and client.pid is None
    clip = clips(source="espeak", language="en")[6]
    drafts, results = [], []
    client.progress.connect(lambda job, step, total, draft: drafts.append((job, draft)))
    client.result.connect(lambda job, transcript: results.append((job, transcript)))
    job = client.submit(load_audio(clip.path), language="en")
    assert client.state == "busy"
    qtbot.waitUntil(lambda: bool(results), timeout=60_000)
    (done_job, transcript), = results
    assert done_job == job and wer([clip.text], [transcript["text"]]) <= 0.2, transcript
    assert transcript["language"] == "en" and transcript["timings"]["total"] > 0
    assert drafts and drafts[-1] == (job, transcript["text"])
    qtbot.waitUntil(lambda: client.state == "ready")
    client.stop()


def test_a_dictation_that_ends_at_a_pause_is_not_uploaded_again(qtbot, server):
    """`speculate` at a pause uploads the recording so far at once; the job with exactly those samples and
    options takes that answer (`early`) without a second upload, and its text is the one an upload gets.
    A dictation that went on, or asks for other options, is uploaded itself."""
    client = make_client(qtbot, server.url, TOKEN)
    results: list[dict] = []
    client.result.connect(lambda job, transcript: results.append(transcript))
    clip = clips(source="espeak", language="en")[6]
    audio = load_audio(clip.path)

    def uploads() -> int:
        return server.log().count('"POST /v1/audio/transcriptions HTTP/1.1"')

    def dictate(samples, **options) -> dict:
        results.clear()
        client.submit(samples, language="en", **options)
        qtbot.waitUntil(lambda: bool(results), timeout=60_000)
        return results[0]

    plain = dictate(audio)
    assert not plain.get("early") and wer([clip.text], [plain["text"]]) <= 0.2, plain
    before = uploads()
    client.speculate(audio, language="en")
    qtbot.waitUntil(lambda: uploads() == before + 1, timeout=30_000)  # sent at the pause
    answer = dictate(audio.copy())  # the recorder hands over the same samples in an array of its own
    assert answer.get("early") is True and answer["text"] == plain["text"], answer
    assert uploads() == before + 1, "the dictation must not be uploaded again"

    client.speculate(audio[: len(audio) // 2], language="en")  # paused halfway, then spoke on
    assert not (went_on := dictate(audio)).get("early") and went_on["text"] == plain["text"]
    client.speculate(audio, language="en")
    other = dictate(audio, vocabulary=("Pickwick",))  # the vocabulary changed in Settings meanwhile
    assert not other.get("early"), other
    assert not dictate(audio).get("early"), "an answer ahead is used once at most"
    client.stop()


def test_a_wrong_token_fails_the_client_with_one_sentence_and_keeps_trying(qtbot, server):
    failures = []
    client = ServerClient(EngineSpec(engine="server", model=server.url), token_loader=lambda: "wrong", retry_s=0.5)
    client.failed.connect(lambda job, code, message: failures.append((job, code, message)))
    client.start()
    qtbot.waitUntil(lambda: client.state == "failed", timeout=30_000)
    assert failures == [("", "server_token", failures[0][2])] and "refused the token" in failures[0][2]
    job = client.submit(load_audio(clips(source="espeak", language="en")[0].path))
    qtbot.waitUntil(lambda: len(failures) == 2)
    assert failures[1][:2] == (job, "server_token")  # while failed: the app keeps this recording for later
    client.stop()


def test_an_unreachable_server_fails_then_recovers_when_it_comes_back(qtbot, server, tmp_path):
    port = free_port()
    client = make_client(qtbot, f"http://127.0.0.1:{port}", TOKEN)
    assert client.state == "failed"
    (tmp_path / "token").write_text(TOKEN)
    late = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu",
                          "--token-file", str(tmp_path / "token")], tmp_path / "late.log", token=TOKEN, port=port)
    try:
        late.wait_ready()
        qtbot.waitUntil(lambda: client.state == "ready", timeout=30_000)  # the client asks again by itself
    finally:
        late.stop()
        client.stop()


def test_the_token_is_kept_in_a_private_file_without_a_keyring(no_keyring):
    from app.server.token_store import load_token, save_token

    where = save_token("  secret-token-value  ")
    path = no_keyring / "server-client-token"
    assert where == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token() == "secret-token-value"
    save_token("")
    assert load_token() is None and not path.exists()


def test_the_settings_token_field_stores_the_token_and_never_shows_it(qtbot, no_keyring):
    from app.server.token_store import load_token
    from app.ui.widgets.server_token import ServerTokenEdit

    edit = ServerTokenEdit()
    qtbot.addWidget(edit)
    assert "No token" in edit.status.text()
    edit.field.setText("typed-token-0123456789")
    edit.save_button.click()
    assert load_token() == "typed-token-0123456789" and edit.field.text() == ""
    assert "server-client-token" in edit.status.text() and "typed-token" not in edit.status.text()
    assert not (no_keyring / "settings.json").exists()


def test_a_busy_server_keeps_the_dictation_waiting_instead_of_dropping_it(qtbot, tmp_path):
    """A shared server whose queue is full answers 429. That used to fail the dictation at once with
    `queue_full` while the client stayed `ready`, so the recording was neither pasted nor kept; now the
    client asks again until there is room, and the text arrives as one result."""
    import concurrent.futures

    import httpx2
    import numpy as np
    import soundfile as sf

    (tmp_path / "token").write_text(TOKEN)
    busy = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu",
                          "--token-file", str(tmp_path / "token"), "--queue-size", "1"], tmp_path / "busy.log",
                         token=TOKEN)
    long_audio = tmp_path / "long.flac"  # a few minutes: one runs, one waits, while the dictation arrives
    sf.write(long_audio, np.tile(load_audio(clips(source="espeak", language="en")[-1].path), 4), 16_000)

    def send() -> int:
        with open(long_audio, "rb") as fh:
            return httpx2.post(busy.url + "/v1/audio/transcriptions", headers=busy.headers, files={"file": fh},
                               data={"model": "whisper-1"}, timeout=600).status_code

    def health() -> dict:
        return httpx2.get(busy.url + "/health", headers=busy.headers).json()

    client = None
    try:
        busy.wait_ready()
        client = make_client(qtbot, busy.url, TOKEN)
        results, failures = [], []
        client.result.connect(lambda job, transcript: results.append((job, transcript)))
        client.failed.connect(lambda job, code, message: failures.append((job, code)))
        clip = clips(source="espeak", language="en")[6]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(send)
            qtbot.waitUntil(lambda: health()["busy"], timeout=60_000)
            waiting = pool.submit(send)
            qtbot.waitUntil(lambda: health()["queue_length"] == 1, timeout=60_000)
            job = client.submit(load_audio(clip.path), language="en")
            qtbot.waitUntil(lambda: "429" in busy.log(), timeout=30_000)  # refused at first: the queue is full
            qtbot.waitUntil(lambda: bool(results or failures), timeout=300_000)
            assert running.result() == 200 and waiting.result() == 200
        assert failures == [] and [j for j, _ in results] == [job], failures
        assert wer([clip.text], [results[0][1]["text"]]) <= 0.2, results
    finally:
        if client is not None:
            client.stop()
        busy.stop()


def test_a_job_that_waits_longer_than_the_read_timeout_still_completes(tmp_path):
    """`transcribe --server` on a long file (or behind one) waited for a plain JSON answer, and the
    connection's read timeout (300 s) ended it before a byte came. The connection now streams, and
    the server sends a keep-alive comment while a job waits or runs without drafts: here every 0.2 s,
    against a read timeout of 1 s, while the job waits seconds behind a long file."""
    import concurrent.futures
    import threading
    import time

    import httpx2
    import numpy as np
    import soundfile as sf
    import uvicorn

    from app.server.app_factory import ServerOptions, create_app
    from app.server.batching import EngineQueue
    from app.server.http import ServerConnection
    from app.worker.engine_slot import EngineSlot

    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    slot = EngineSlot()
    slot.load(EngineSpec(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(EngineQueue(slot), ServerOptions("whisper-tiny.en-ct2",
                                                                                          keepalive_s=0.2)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    long_audio = tmp_path / "long.flac"  # minutes of speech: seconds of work that the job waits behind
    sf.write(long_audio, np.tile(load_audio(clips(source="espeak", language="en")[-1].path), 4), 16_000)
    clip = clips(source="espeak", language="en")[3]

    def hold() -> int:
        with open(long_audio, "rb") as fh:
            return httpx2.post(url + "/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-1"},
                               timeout=600).status_code

    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(hold)
            while not httpx2.get(url + "/health").json()["busy"]:
                time.sleep(0.02)
            conn = ServerConnection(url, read_timeout_s=1.0)
            try:
                transcript = conn.transcribe(load_audio(clip.path), language="en")  # as the CLI calls it
            finally:
                conn.close()
            assert held.result() == 200
    finally:
        server.should_exit = True
    assert transcript["queue_ms"] > 2000, "the job must wait longer than the read timeout, or this proves nothing"
    assert wer([clip.text], [transcript["text"]]) <= 0.2 and transcript["no_speech"] is False, transcript


def test_a_pause_in_the_next_dictation_leaves_the_answer_the_last_one_waits_for(qtbot, server):
    """A dictation that ended at a pause waits for its speculative request, still running on the server.
    The speaker starts the next dictation and pauses: that pause's speculative request, with the same
    `client`, used to end the one the first dictation waited for (409), so the first was uploaded and
    transcribed from the start, the second's speculation stopped in turn by that upload: both lost."""
    import httpx2
    import numpy as np

    client = make_client(qtbot, server.url, TOKEN)
    results: list[dict] = []
    client.result.connect(lambda job, transcript: results.append(transcript))
    long_audio = np.tile(load_audio(clips(source="espeak", language="en")[-1].path), 2)  # seconds of work

    def speculative_running() -> bool:
        return httpx2.get(server.url + "/health", headers=server.headers).json()["speculative"]["running"] == 1

    client.speculate(long_audio, language="en")
    qtbot.waitUntil(speculative_running, timeout=30_000)
    client.submit(long_audio.copy(), language="en")  # the first dictation ends at that pause
    client.speculate(load_audio(clips(source="espeak", language="en")[2].path), language="en")  # the next one's pause
    qtbot.waitUntil(lambda: bool(results), timeout=120_000)
    assert results[0].get("early") is True, "the first dictation must take its speculative request's answer"
    client.stop()
