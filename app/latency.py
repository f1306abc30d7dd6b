"""What a dictation costs on this machine: per-step and fixed time, learnt from real transcriptions.

The quality slider shows, beside each stop, how long a transcript takes with that many denoising
steps. That is only honest when measured here, with this model, precision and device: the worker's
timings split every diffusion transcription into the denoising steps (listed one by one) and
everything else (features, encoder, prefill, detokenising). A running average of both, per model,
is kept in a small JSON file in the data folder, so the estimate survives restarts and follows the
machine when it gets faster (a warm GPU) or slower (another program on it).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.engine import EngineSpec

LATENCY_FILE = "latency.json"
_WEIGHT = 0.3  # of a new measurement in the running average: recent runs count most, one outlier does not rule
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cost:
    """Milliseconds: `step_ms` per denoising step, `fixed_ms` for the rest of a transcription."""

    step_ms: float
    fixed_ms: float
    samples: int

    def estimate_ms(self, steps: int) -> float:
        return self.fixed_ms + steps * self.step_ms


def spec_key(spec: EngineSpec) -> str:
    """What the cost depends on: the engine, the model, its precision and the device."""
    return f"{spec.engine}|{spec.model}|{spec.quantization}|{spec.device}"


class LatencyRecord:
    """The measured costs per model; `path=None` uses the data folder."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from app.history import data_dir

            path = data_dir() / LATENCY_FILE
        self.path = path
        self._costs: dict[str, Cost] = {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._costs = {k: Cost(float(v["step_ms"]), float(v["fixed_ms"]), int(v["samples"])) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable latency record %s (%s); it is measured again", path, exc)

    def cost(self, key: str) -> Cost | None:
        return self._costs.get(key)

    def add(self, key: str, timings: dict) -> Cost | None:
        """Learn from one transcript's `timings`; ignored (None) when it has no per-step times."""
        steps = timings.get("steps")
        total = timings.get("total")
        if not isinstance(steps, list) or not steps or not isinstance(total, (int, float)):
            return None
        step_ms = sum(steps) / len(steps)
        fixed_ms = max(0.0, float(total) - sum(steps))
        old = self._costs.get(key)
        if old is not None:
            step_ms = old.step_ms + _WEIGHT * (step_ms - old.step_ms)
            fixed_ms = old.fixed_ms + _WEIGHT * (fixed_ms - old.fixed_ms)
        cost = Cost(round(step_ms, 2), round(fixed_ms, 2), (old.samples if old else 0) + 1)
        self._costs[key] = cost
        self._save()
        return cost

    def _save(self) -> None:
        """Atomic, like the settings: a crash never leaves half a file (a lost update costs nothing)."""
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".latency-", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({k: vars(c) for k, c in self._costs.items()}, fh, indent=1)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not save the latency record %s (%s)", self.path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def format_seconds(ms: float) -> str:
    """A latency as people read it: "0.42 s", "1.3 s", "12 s"."""
    seconds = ms / 1000
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"
