"""The quality slider's stops and step mapping, and the latency record that labels them."""

from __future__ import annotations

import json
import os

import pytest

from app.engine import EngineSpec
from app.latency import LatencyRecord, format_seconds, spec_key
from app.ui.widgets.quality_slider import STOPS, QualitySlider, position_for_steps, steps_for_position

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def test_stops_map_to_denoising_steps():
    assert [(name, steps_for_position(i)) for i, (name, _) in enumerate(STOPS)] == [
        ("Fastest", 4), ("Fast", 8), ("Balanced", 12), ("Accurate", 16), ("Best", 32)]
    assert [position_for_steps(s) for s in (1, 4, 6, 9, 10, 11, 14, 24, 25, 48)] == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert steps_for_position(-1) == 4 and steps_for_position(99) == 32


def test_slider_and_spin_box_stay_in_step(qtbot):
    slider = QualitySlider()
    qtbot.addWidget(slider)
    emitted: list[int] = []
    slider.value_changed.connect(emitted.append)
    for position in range(len(STOPS)):
        slider.slider.setValue(position)
    assert emitted == [4, 8, 12, 16, 32] and slider.steps() == 32
    slider.spin.setValue(10)  # an exact value between two stops is kept
    assert slider.steps() == 10 and slider.slider.value() == position_for_steps(10) and emitted[-1] == 10
    slider.set_steps(48)  # from the settings: shown, not echoed
    assert slider.slider.value() == 4 and emitted[-1] == 10


def test_latency_record_learns_per_model_and_survives_a_restart(tmp_path):
    path = tmp_path / "latency.json"
    record = LatencyRecord(path)
    key = spec_key(EngineSpec(engine="diffusion", model="m", quantization="int8", device="cuda"))
    assert record.cost(key) is None
    assert record.add(key, {"total": 300.0}) is None  # no per-step times (Whisper): nothing learnt
    first = record.add(key, {"steps": [40.0, 60.0], "total": 300.0})
    assert (first.step_ms, first.fixed_ms, first.samples) == (50.0, 200.0, 1)
    second = record.add(key, {"steps": [30.0] * 4, "total": 320.0})  # a moving average, not the last run
    assert second.step_ms == pytest.approx(50 + 0.3 * (30 - 50)) and second.fixed_ms == pytest.approx(200.0)
    assert second.estimate_ms(8) == pytest.approx(second.fixed_ms + 8 * second.step_ms)
    assert LatencyRecord(path).cost(key) == second
    assert LatencyRecord(path).cost(spec_key(EngineSpec(engine="diffusion", model="other"))) is None


def test_an_unreadable_latency_record_is_measured_again(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text("{not json")
    record = LatencyRecord(path)
    record.add("k", {"steps": [10.0], "total": 20.0})
    assert json.loads(path.read_text())["k"]["samples"] == 1


def test_latency_reads_like_people_say_it():
    assert [format_seconds(ms) for ms in (420, 1340, 12400)] == ["0.42 s", "1.3 s", "12 s"]
