"""A model failure in the server: 503 and a reload, never a dead server.

A CPU machine cannot make CUDA fail on purpose, so the engine here is a stand-in that raises what
torch raises (a CUDA RuntimeError, `torch.cuda.OutOfMemoryError`); the server around it is the real
one (routes, queue, engine slot), run by uvicorn on a thread of this process on 127.0.0.1, and the
app's real `ServerClient` hears about a model that cannot run.
"""

from __future__ import annotations

import io
import os
import threading
import time

import httpx2
import numpy as np
import pytest
import soundfile as sf
import torch
import uvicorn

from app.engine import EngineSpec, Transcript
from app.errors import UserError
from app.server.app_factory import ServerOptions, create_app
from app.server.batching import EngineQueue
from app.worker.engine_slot import EngineSlot
from tests.server_process import free_port

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class FailingEngine:
    """Stand-in: fails the first `failures` calls with `error`, then answers."""

    name = "stand-in"

    def __init__(self, quantization: str, failures: list[BaseException]) -> None:
        self.quantization = quantization
        self._failures = failures

    def transcribe(self, audio, *, language="auto", steps=None, on_progress=None, vocabulary=()):
        if self._failures:
            raise self._failures.pop(0)
        return Transcript(text=f"ran in {self.quantization}", language="en", steps_used=1, timings={"total": 1.0})


@pytest.fixture
def serve():
    servers = []

    def start(failures: list[BaseException], quantization: str = "bf16", loads_ok: int = 99) -> tuple[str, list[str]]:
        loads: list[str] = []

        def load(spec: EngineSpec) -> FailingEngine:
            loads.append(spec.quantization)
            if len(loads) > loads_ok:
                raise UserError("The speech model stand-in could not be loaded (the GPU is gone).", code="load_failed")
            return FailingEngine("bf16" if spec.quantization == "auto" else spec.quantization, failures)

        slot = EngineSlot(load)
        slot.load(EngineSpec(engine="whisper", model="stand-in", quantization=quantization))
        port = free_port()
        options = ServerOptions(model_id="stand-in", speech_check=False)  # the stand-in gets a second of silence
        server = uvicorn.Server(uvicorn.Config(create_app(EngineQueue(slot), options), host="127.0.0.1", port=port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", loads

    yield start
    for server in servers:
        server.should_exit = True


def transcribe(url: str) -> httpx2.Response:
    wav = io.BytesIO()
    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000, format="WAV")
    return httpx2.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav.getvalue())},
                       data={"model": "whisper-1"}, timeout=30)


def test_a_cuda_error_answers_503_and_reloads_the_model(serve):
    url, loads = serve([RuntimeError("CUDA error: an illegal memory access was encountered")])
    failed = transcribe(url)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "5"
    assert failed.json()["error"]["code"] == "model_failed" and "loaded again" in failed.json()["error"]["message"]
    assert loads == ["bf16", "bf16"]  # loaded anew after the failure
    again = transcribe(url)
    assert again.status_code == 200 and again.json()["text"] == "ran in bf16"


def test_out_of_memory_with_auto_shrinks_and_answers(serve):
    url, loads = serve([torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")], "auto")
    answer = transcribe(url)
    assert answer.status_code == 200 and answer.json()["text"] == "ran in fp8"
    assert loads == ["auto", "fp8"]


def test_out_of_memory_with_an_explicit_mode_answers_503(serve):
    url, _ = serve([torch.cuda.OutOfMemoryError("CUDA out of memory.")], "int4")
    answer = transcribe(url)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable"
    assert "ran out of memory" in answer.json()["error"]["message"]
    assert transcribe(url).status_code == 200


def test_a_model_that_cannot_load_again_answers_503_and_health_says_so(serve, qtbot):
    from app.server.client import ServerClient

    url, loads = serve([RuntimeError("CUDA error: unspecified launch failure")], loads_ok=1)
    assert transcribe(url).json()["error"]["code"] == "model_failed" and len(loads) == 2
    later = transcribe(url)
    assert later.status_code == 503 and later.json()["error"]["code"] == "model_unavailable"
    assert "GPU is gone" in later.json()["error"]["message"]
    assert httpx2.get(url + "/health").json()["status"] == "unavailable"
    client = ServerClient(EngineSpec(engine="server", model=url), token_loader=lambda: None, retry_s=60)
    failures = []
    client.failed.connect(lambda job, code, message: failures.append((job, code, message)))
    client.start()
    qtbot.waitUntil(lambda: client.state == "failed", timeout=10_000)
    assert failures[0][:2] == ("", "model_unavailable") and "cannot run its model" in failures[0][2]
    client.stop()


def test_a_recording_the_model_fails_on_is_sent_once_more_then_kept_without_a_reload_loop(serve, qtbot):
    """The stand-in fails on this recording every time; /health stays ok. `model_failed` used to put the
    client in `failed`; each /health check then found the server well, the app sent the kept recording
    again, the model failed and was loaded anew: every 5 s, for every user of that server. Now the job is
    sent once more (a CUDA error that a reload cures is gone by then) and then fails as this recording's
    failure, with the client still ready for the next dictation."""
    from app.server.client import ServerClient

    cuda_error = RuntimeError("CUDA error: an illegal memory access was encountered")
    url, loads = serve([cuda_error, cuda_error, cuda_error])  # two for the first recording, one for the next
    client = ServerClient(EngineSpec(engine="server", model=url), token_loader=lambda: None, retry_s=0.2)
    failures, results = [], []
    client.failed.connect(lambda job, code, message: failures.append((job, code, message)))
    client.result.connect(lambda job, transcript: results.append((job, transcript)))
    client.start()
    qtbot.waitUntil(lambda: client.state == "ready", timeout=10_000)
    job = client.submit(np.zeros(16_000, dtype=np.float32))
    qtbot.waitUntil(lambda: bool(failures), timeout=30_000)
    assert failures == [(job, "model_failed", failures[0][2])] and "failed twice" in failures[0][2], failures
    assert len(loads) == 3 and client.state == "ready"  # loaded, reloaded after each of the two failures
    qtbot.wait(1_000)  # five /health intervals: nothing is sent again by itself
    assert len(loads) == 3 and failures[1:] == [] and client.state == "ready"
    # A failure that a reload cures: the job's second try answers.
    again = client.submit(np.zeros(16_000, dtype=np.float32))
    qtbot.waitUntil(lambda: bool(results), timeout=30_000)
    assert results == [(again, results[0][1])] and results[0][1]["attempts"] == 2
    assert results[0][1]["text"] == "ran in bf16" and len(failures) == 1
    client.stop()
