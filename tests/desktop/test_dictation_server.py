"""The tray app as the client of a speech server: a real server subprocess (Whisper tiny.en on
CTranslate2, with a token), the real app under Xvfb with engine "server", speech through the
recorder's audio seam, the text pasted into a window of another process. Then the server is killed
while the user dictates: one clear notice, the recording kept in the history, and transcribed once
the server is back."""

import os
import re
import stat
import subprocess
import sys

import pytest

from tests.data import WHISPER_TINY_EN_CT2
from tests.desktop.conftest import APP_SETTINGS
from tests.desktop.harness import CLIP_END, ROOT, App, wait_for
from tests.desktop.test_dictation import MAX_WER, wer
from tests.desktop.test_nothing_lost import dictate_by_command
from tests.server_process import ServerProcess

LONG_WAIT = 180
TOKEN = "desktop-test-token-0123456789abcdef"
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # no Secret Service under Xvfb


def start_server(workdir, port=None) -> ServerProcess:
    (workdir / "token").write_text(TOKEN + "\n")
    server = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu",
                            "--token-file", str(workdir / "token")], workdir / "server.log", token=TOKEN, port=port)
    return server.wait_ready()


@pytest.fixture
def server(tmp_path):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def client_app(x_session, tmp_path, server):
    workdir = tmp_path / "app"
    workdir.mkdir()
    settings = {**APP_SETTINGS, "engine": "server", "server_url": server.url, "hotkey": "<ctrl>+<alt>+k",
                "history_audio": True}
    app = App(x_session, workdir, settings)
    app.env.update(NO_KEYRING)
    stored = subprocess.run([sys.executable, "-m", "app", "server-token"], input=TOKEN + "\n", text=True, cwd=ROOT,
                            env={**os.environ, **app.env}, capture_output=True, timeout=60)
    assert stored.returncode == 0, stored.stderr
    token_file = app.config_home / "diffusion-dictate" / "server-client-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text().strip() == TOKEN
    app.start()
    try:
        wait_for(lambda: (s := app.status()) and s["worker"] == "ready" and s["hotkeys"], "the server client", 120)
    except AssertionError:
        app.stop()
        raise
    yield app
    app.stop()


def test_dictation_through_the_server_pastes_and_loads_no_model_here(client_app, server, target, clips):
    clip = clips["espeak-en-02"]
    target.clear()
    target.focus()
    dictate_by_command(client_app, clip["path"])
    text = wait_for(lambda: target.text().strip(), "text in the target window", LONG_WAIT)
    assert wer(clip["text"], text) <= MAX_WER, text
    entry = wait_for(lambda: (h := client_app.history()) and h[-1]["paste_ok"] is not None and h[-1], "the history entry")
    assert entry["text"].strip() == text and entry["paste_ok"]
    assert not client_app.maps_torch(), "the app process must not load torch when a server runs the model"
    assert client_app.status()["worker_pid"] is None  # no local worker
    settings = (client_app.config_home / "diffusion-dictate" / "settings.json").read_text()
    assert TOKEN not in settings
    assert "job " in server.log() and clip["text"] not in server.log()  # no transcripts in its log by default


def test_the_server_killed_mid_dictation_keeps_the_recording_until_it_is_back(client_app, server, target, clips,
                                                                               tmp_path):
    clip = clips["espeak-en-03"]
    client_app.speak(clip["path"])
    played = client_app.count(CLIP_END)
    client_app.command("toggle")
    wait_for(lambda: client_app.status()["state"] == "recording", "recording to start")
    server.kill()  # the user is still speaking
    client_app.wait_spoken(played, LONG_WAIT)
    client_app.command("toggle")
    wait_for(lambda: client_app.count("notice: .*cannot be reached") >= 1, "the notice that the server is gone",
             LONG_WAIT)
    entry = wait_for(lambda: (h := client_app.history()) and h[-1], "the recording in the history", LONG_WAIT)
    assert entry["outcome"] == "not_transcribed" and entry["text"] == ""
    assert client_app.count("is kept in History and will be transcribed") == 1
    notice = [line for line in client_app.log().splitlines() if "notice:" in line and "cannot be reached" in line][0]
    assert server.url in notice and notice.rstrip().endswith(".")
    # The server comes back on the same address: the kept recording is sent again and fills in its entry.
    back = start_server(tmp_path, port=server.port)
    try:
        done = wait_for(lambda: (h := client_app.history()) and h[-1]["outcome"] == "transcribed_later" and h[-1],
                        "the kept recording to be transcribed", LONG_WAIT)
        assert done["id"] == entry["id"] and wer(clip["text"], done["text"]) <= MAX_WER, done
    finally:
        back.stop()


def test_a_pause_before_the_end_has_the_servers_text_ready(client_app, server, target, clips):
    """Transcribe during pauses, through the server: the speaker stops, the recording goes on a moment
    (as users hold the key a second longer), and the recording so far is uploaded then as a speculative
    request; at the end nothing is uploaded again and the server's text is pasted once."""
    clip = clips["espeak-en-02"]
    target.clear()
    target.focus()
    client_app.speak(clip["path"])
    played, ahead = client_app.count(CLIP_END), client_app.count("transcription ahead: .* done")
    plain_jobs = r"job (?!early-)\w+: [\d.]+ s of audio"  # the server's log line of a request not sent ahead
    uploaded = len(re.findall(plain_jobs, server.log()))
    client_app.command("toggle")
    client_app.wait_spoken(played, LONG_WAIT)
    wait_for(lambda: client_app.count("transcription ahead: .* done") > ahead, "the server's text ahead", LONG_WAIT)
    client_app.command("toggle")
    text = wait_for(lambda: target.text().strip(), "text in the target window", LONG_WAIT)
    client_app.wait_idle()
    assert wer(clip["text"], text) <= MAX_WER, text
    assert client_app.count("answered by the transcription ahead") == 1
    assert len(re.findall(plain_jobs, server.log())) == uploaded, "the end of the dictation must not be uploaded"
    assert re.search(r"job early-\w+: [\d.]+ s of audio", server.log())
    assert target.text().strip() == text, "the text must be pasted exactly once"
