"""A fixed-size float32 ring buffer: the last few hundred milliseconds of microphone audio.

It is what makes pre-roll possible: with the microphone kept open, the samples spoken just before the
hotkey press are still here when the recording begins.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Keeps the newest `capacity` samples. Not thread-safe: the recorder holds its lock around it."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(max(capacity, 1), dtype=np.float32)
        self._capacity = capacity
        self._end = 0  # write position
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def clear(self) -> None:
        self._end = self._filled = 0

    def write(self, samples: np.ndarray) -> None:
        if self._capacity == 0:
            return
        samples = samples[-self._capacity:]
        n = len(samples)
        first = min(n, self._capacity - self._end)
        self._data[self._end:self._end + first] = samples[:first]
        self._data[:n - first] = samples[first:]
        self._end = (self._end + n) % self._capacity
        self._filled = min(self._capacity, self._filled + n)

    def latest(self, n: int) -> np.ndarray:
        """A copy of the newest `n` samples (fewer if fewer were written), oldest first."""
        n = min(n, self._filled)
        start = (self._end - n) % self._capacity if n else 0
        if start + n <= self._capacity:
            return self._data[start:start + n].copy()
        return np.concatenate([self._data[start:], self._data[:self._end]])
