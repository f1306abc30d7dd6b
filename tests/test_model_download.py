"""Model downloads against a local stand-in for the Hub (tests/fake_hub.py) and the settings window's model panel."""

from __future__ import annotations

import json
import os
import threading

import pytest

from app import model_download as md
from app.errors import UserError
from app.ui.models import ModelPanel
from tests.fake_hub import FakeHub

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

WEIGHTS = os.urandom(12 * 1024 * 1024 + 4321)  # > one 10 MiB chunk, so a dropped connection can resume mid-file


@pytest.fixture
def hub():
    repos = {
        "acme/whisper-mini": {"config.json": b'{"model_type": "whisper"}', "model.safetensors": WEIGHTS,
                              "tokenizer/vocab.json": b'{"a": 0}'},
        "acme/asr-adapter": {"asr_config.json": json.dumps({"backbone": "acme/backbone",
                                                            "encoder": "acme/encoder"}).encode(),
                             "projector.safetensors": os.urandom(5000)},
        "acme/backbone": {"config.json": b"{}", "model.safetensors": os.urandom(300_000)},
        "acme/encoder": {"config.json": b"{}", "model.safetensors": os.urandom(100_000)},
        "interfaze-ai/diffusion-gemma-asr-small": {"asr_config.json": b"{}"},
    }
    with FakeHub(repos, gated={"interfaze-ai/diffusion-gemma-asr-small"}) as server:
        yield server


def test_size_is_known_before_any_file_is_fetched(hub, tmp_path):
    plan = md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path)
    assert plan.total_bytes == plan.needed_bytes == len(WEIGHTS) + 25 + 8
    assert plan.free_bytes and plan.free_bytes > 0
    assert not [r for r in hub.requests if "/resolve/" in r[1]]


def test_download_reports_progress_resumes_a_dropped_connection_and_fills_the_cache(hub, tmp_path):
    plan = md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path)
    hub.drop_once["model.safetensors"] = 11 * 1024 * 1024
    seen: list[tuple[int, int, str]] = []
    folder = md.download(plan, lambda done, total, name: seen.append((done, total, name)))

    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "tokenizer" / "vocab.json").exists()
    assert hub.gets("model.safetensors") == ["", "bytes=10485760-"]  # resumed, not restarted
    dones = [done for done, _, _ in seen]
    assert dones == sorted(dones) and dones[-1] == plan.total_bytes and len(seen) > 3
    assert {total for _, total, _ in seen} == {plan.total_bytes}
    assert md.cached_folder("acme/whisper-mini", cache_dir=tmp_path) == folder  # offline from now on
    assert md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path).complete


def test_cancel_keeps_finished_files_and_the_next_run_fetches_only_the_rest(hub, tmp_path):
    plan = md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path)
    cancel = threading.Event()

    def stop_in_the_weights(done, total, name):
        if name == "model.safetensors" and done > len(b'{"model_type": "whisper"}'):
            cancel.set()

    with pytest.raises(md.DownloadCancelled):
        md.download(plan, stop_in_the_weights, cancel)
    again = md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path)
    assert [f.name for f in again.files if f.cached] == ["config.json"]
    md.download(again)
    assert hub.gets("config.json") == [""]  # fetched once over both runs
    assert md.cached_folder("acme/whisper-mini", cache_dir=tmp_path) is not None


def test_gated_missing_and_unreachable_repos_say_what_to_do(hub, tmp_path):
    with pytest.raises(UserError) as gated:
        md.plan("interfaze-ai/diffusion-gemma-asr-small", endpoint=hub.url, cache_dir=tmp_path)
    assert gated.value.code == "gated_model"
    assert f"{hub.url}/interfaze-ai/diffusion-gemma-asr-small" in str(gated.value) and "accept its terms" in str(gated.value)
    assert md.hub_page("interfaze-ai/diffusion-gemma-asr-small") == \
        "https://huggingface.co/interfaze-ai/diffusion-gemma-asr-small"
    with pytest.raises(UserError, match="no model 'acme/nothing'"):
        md.plan("acme/nothing", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(UserError, match="cannot be reached") as offline:
        md.plan("acme/whisper-mini", endpoint="http://127.0.0.1:9", cache_dir=tmp_path)
    assert offline.value.code == "offline"


def test_a_short_disk_is_refused_before_the_download(hub, tmp_path):
    plan = md.plan("acme/whisper-mini", endpoint=hub.url, cache_dir=tmp_path)
    plan.free_bytes = 1_000_000
    with pytest.raises(UserError) as short:
        md.check_disk([plan])
    assert short.value.code == "disk_full"
    assert str(short.value).startswith("acme/whisper-mini needs 12.6 MB but the disk holding")


def test_diffusion_adapter_plans_its_backbone_and_encoder(hub, tmp_path):
    plans = md.plan_model("acme/asr-adapter", engine="diffusion", endpoint=hub.url, cache_dir=tmp_path)
    assert [p.repo_id for p in plans] == ["acme/asr-adapter", "acme/backbone", "acme/encoder"]
    folders = md.download_all(plans)
    assert (folders[1] / "model.safetensors").stat().st_size == 300_000


def test_a_local_folder_needs_no_network(hub, tmp_path):
    folder = tmp_path / "my-whisper"
    folder.mkdir()
    assert md.plan_model(str(folder), engine="whisper", endpoint=hub.url) == []
    assert md.frozen_parts(None) == ["google/diffusiongemma-26B-A4B-it", "openai/whisper-small"]  # engine defaults
    (folder / "asr_config.json").write_text(json.dumps({"backbone": "backbone", "encoder": "acme/encoder"}))
    (folder / "backbone").mkdir()
    assert md.frozen_parts(folder) == ["acme/encoder"]  # the folder shipped with the adapter is not fetched
    assert hub.requests == []


def test_model_panel_shows_the_size_then_downloads_with_progress(qtbot, hub, tmp_path):
    panel = ModelPanel(cache_dir=tmp_path)
    qtbot.addWidget(panel)
    panel.set_context(engine="whisper", quantization="auto", device="cpu", endpoint=hub.url)
    panel.set_model("acme/whisper-mini")
    assert "not downloaded yet" in panel.status.text()

    panel.download_button.click()
    qtbot.waitUntil(lambda: not panel.busy and panel.download_button.text() == "Download 12.6 MB", timeout=20000)
    assert "acme/whisper-mini 12.6 MB" in panel.status.text() and "free on this disk" in panel.status.text()
    assert not [r for r in hub.requests if "/resolve/" in r[1]]

    values: list[int] = []
    panel.progress.valueChanged.connect(values.append)
    with qtbot.waitSignal(panel.downloaded, timeout=60000):
        panel.download_button.click()
    qtbot.waitUntil(lambda: not panel.busy)
    assert values[-1] == 1000 and values == sorted(values)
    assert panel.status.text().startswith("Downloaded")
    panel.set_model("acme/whisper-mini")
    assert panel.status.text().startswith("Downloaded: acme/whisper-mini is on this computer")


def test_model_panel_links_to_the_terms_of_a_gated_model(qtbot, hub, tmp_path):
    panel = ModelPanel(cache_dir=tmp_path)
    qtbot.addWidget(panel)
    panel.set_context(engine="diffusion", quantization="auto", device="auto", endpoint=hub.url)
    panel.set_model("")  # the engine's default: the gated adapter
    panel.download_button.click()
    qtbot.waitUntil(lambda: "gated" in panel.status.text(), timeout=20000)
    assert f'<a href="{hub.url}/interfaze-ai/diffusion-gemma-asr-small">' in panel.status.text()
    assert panel.status.openExternalLinks()


def test_check_reports_a_folder_that_does_not_load(qtbot, tmp_path):
    """The check runs `python -m app check-model` in its own process and shows its one-sentence error."""
    panel = ModelPanel(cache_dir=tmp_path)
    qtbot.addWidget(panel)
    panel.set_context(engine="whisper", quantization="auto", device="cpu", endpoint="")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    panel.set_model(str(empty))
    panel.check_button.click()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120000)
    assert panel.status.property("error") is True
    assert "empty-model" in panel.status.text() and "Traceback" not in panel.status.text()
