"""Speculative requests in the server's queue, against a stand-in engine whose work takes a known
time: one step of 50 ms per second of audio, with the progress callback after each step (as the
diffusion engine calls it, so a request that gives way stops at its next step). The server around
it is the real one (routes, queue, engine slot), run by uvicorn on a thread of this process."""

from __future__ import annotations

import concurrent.futures
import io
import os
import threading
import time

import httpx2
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from app.engine import EngineSpec, Progress, Transcript
from app.server.app_factory import ServerOptions, create_app
from app.server.batching import EngineQueue
from app.worker.engine_slot import EngineSlot
from tests.server_process import free_port

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
STEP_S = 0.05  # the stand-in's work: one step of this per second of audio


class TimedEngine:
    name = "stand-in"
    quantization = "bf16"

    def transcribe(self, audio, *, language="auto", steps=None, on_progress=None, vocabulary=()):
        total = max(1, round(len(audio) / 16_000))
        for step in range(1, total + 1):
            time.sleep(STEP_S)
            if on_progress is not None:
                on_progress(Progress(step=step, total=total, draft=""))
        return Transcript(text=f"{total} steps", language="en", steps_used=total, timings={"total": 1.0})


@pytest.fixture
def url():
    yield from serve()


def serve(wrap=lambda app: app):
    slot = EngineSlot(lambda spec: TimedEngine())
    slot.load(EngineSpec(engine="whisper", model="stand-in"))
    port = free_port()
    app = wrap(create_app(EngineQueue(slot), ServerOptions("stand-in", speech_check=False)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16_000), dtype=np.float32)


def send(url: str, seconds: float, **fields: str) -> httpx2.Response:
    wav = io.BytesIO()
    sf.write(wav, silence(seconds), 16_000, format="WAV")
    return httpx2.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav.getvalue())},
                       data={"model": "whisper-1", **fields}, timeout=60)


def health(url: str) -> dict:
    return httpx2.get(url + "/health").json()


def wait_until(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_waiting_speculative_request_that_gives_way_is_answered_at_once(url):
    """alice's speculative request waits behind bob's, which runs; alice pauses again, and her newer one
    ends the older. Its 409 came only when the engine took its next job (here: bob's 10 s of work), the
    connection held open meanwhile, and every such request stayed in the queue with its audio."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bob = pool.submit(send, url, 200, speculative="true", client="bob")
        wait_until(lambda: health(url)["speculative"]["running"] == 1, "bob's speculative request to run")
        older = pool.submit(send, url, 1, speculative="true", client="alice")
        wait_until(lambda: health(url)["speculative"]["waiting"] == 1, "alice's speculative request to wait")
        newer = pool.submit(send, url, 1, speculative="true", client="alice")
        answer = older.result(timeout=60)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "superseded", answer.text
        assert not bob.done(), "alice's older request must be answered while bob's still runs"
        assert health(url)["speculative"] == {"waiting": 1, "running": 1}
        assert send(url, 1).status_code == 200  # a dictation: both speculative requests give way
        assert [f.result().status_code for f in (bob, newer)] == [409, 409]


def test_a_dictation_that_waits_for_its_speculative_request_is_not_starved_by_later_requests(url, qtbot):
    """alice's speculative request waits behind bob's; alice's dictation ends there and waits for its
    answer. carol's dictations then arrive one after another. A waiting speculative request used to
    stay behind every request that came after it, so alice's dictation, released first, was answered
    after all of carol's, however many came: the server cannot tell that a dictation waits for it. Now
    a dictation that arrives ends the waiting speculative requests too (409), and alice's client sends
    her dictation in its turn."""
    from app.server.client import ServerClient

    client = ServerClient(EngineSpec(engine="server", model=url), token_loader=lambda: None, retry_s=60)
    results: list[tuple[float, dict]] = []
    client.result.connect(lambda job, transcript: results.append((time.monotonic(), transcript)))
    client.start()
    qtbot.waitUntil(lambda: client.state == "ready", timeout=10_000)
    carol: list[float] = []

    def dictation() -> None:
        assert send(url, 10, client="carol").status_code == 200
        carol.append(time.monotonic())

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        bob = pool.submit(send, url, 100, speculative="true", client="bob")
        wait_until(lambda: health(url)["speculative"]["running"] == 1, "bob's speculative request to run")
        client.speculate(silence(10))
        wait_until(lambda: health(url)["speculative"]["waiting"] == 1, "alice's speculative request to wait")
        client.submit(silence(10))  # alice's dictation ends at that pause
        sent = []
        for _ in range(8):  # each 0.5 s of work, one every 0.25 s: the queue never empties
            sent.append(pool.submit(dictation))
            qtbot.wait(250)
        qtbot.waitUntil(lambda: bool(results), timeout=30_000)
        for future in sent:
            future.result()
        assert bob.result().status_code == 409
    assert results[0][0] < max(carol), "alice's dictation must not wait behind every later one"
    client.stop()


def test_a_server_that_does_not_know_speculative_requests_is_not_sent_any(qtbot):
    """A shared server of an earlier version ignores `speculative` and `client`: each pause of each
    speaker would be a whole request there, never stopped for anyone's dictation. Its /health has no
    `speculative` field; the client then sends nothing at a pause."""
    import json

    from app.server.client import ServerClient

    posts: list[str] = []

    def earlier_version(app):
        async def wrapped(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/health":
                body = json.dumps({"status": "ok", "engine": "stand-in", "model": "stand-in", "queue_length": 0,
                                   "busy": False, "max_waiting": 16}).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            if scope["type"] == "http" and scope["method"] == "POST":
                posts.append(scope["path"])
            await app(scope, receive, send)
        return wrapped

    server = serve(earlier_version)
    url = next(server)
    client = ServerClient(EngineSpec(engine="server", model=url), token_loader=lambda: None, retry_s=60)
    results: list[dict] = []
    client.result.connect(lambda job, transcript: results.append(transcript))
    client.start()
    qtbot.waitUntil(lambda: client.state == "ready", timeout=10_000)
    client.speculate(silence(2))
    qtbot.wait(500)
    assert posts == [], "a pause must send nothing to a server that would run it as a dictation"
    client.submit(silence(2))
    qtbot.waitUntil(lambda: bool(results), timeout=10_000)
    assert results[0]["text"] == "2 steps" and posts == ["/v1/audio/transcriptions"]
    client.stop()
    next(server, None)
