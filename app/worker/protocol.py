"""The wire format between the GUI and the speech worker, shared by both sides (stdlib + numpy only).

A frame is a fixed 14-byte prefix, a UTF-8 JSON header (an object with a "type") and an optional raw
payload (the audio, float32 little-endian PCM):

    magic  4 bytes  b"\\xffDWF"
    version  u16    PROTOCOL_VERSION
    header_len u32  bytes of JSON that follow
    payload_len u32 bytes of payload after the JSON

all little-endian. The prefix layout never changes between versions, so either side can read the
version of a frame it does not understand and say so. The magic starts with 0xFF, a byte that never
occurs in UTF-8: a JSON header containing 0xFF was cut short by the next frame, and scanning for the
magic finds where the next frame begins. That is how the decoder resynchronises after garbage,
truncated or oversized frames instead of giving up. docs/protocol.md lists the messages.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"\xffDWF"
PREFIX = struct.Struct("<4sHII")
PREFIX_SIZE = PREFIX.size

MAX_HEADER_BYTES = 1 << 20
# 30 minutes of 16 kHz float32 audio: longer than any dictation, small enough to hold in memory.
MAX_PAYLOAD_BYTES = 30 * 60 * 16_000 * 4

# Message types the worker understands, and those it sends (docs/protocol.md describes each).
TO_WORKER = ("load", "transcribe", "speculate", "cancel", "ping", "shutdown")
FROM_WORKER = ("hello", "progress", "result", "error", "pong", "preparing")


@dataclass
class Frame:
    """One decoded frame: the JSON header (always with a str "type") and the raw payload."""

    header: dict
    payload: bytes = b""

    @property
    def type(self) -> str:
        return self.header["type"]

    def get(self, key: str, default=None):
        return self.header.get(key, default)

    def __getitem__(self, key: str):
        return self.header[key]


@dataclass
class FrameError:
    """Something on the stream that is not a usable frame; the decoder has already skipped past it.

    `code` is one of malformed_frame, frame_too_large, truncated_frame, version_mismatch.
    """

    code: str
    message: str
    details: dict = field(default_factory=dict)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(type_: str, payload: bytes = b"", *, version: int = PROTOCOL_VERSION, **fields) -> bytes:
    """One frame, ready to write. `version` exists so tests can speak a wrong one."""
    header = json.dumps({"type": type_, **fields}, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()
    if len(header) > MAX_HEADER_BYTES or len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"frame too large: header {len(header)} bytes, payload {len(payload)} bytes")
    return PREFIX.pack(MAGIC, version, len(header), len(payload)) + header + payload


def audio_payload(audio: np.ndarray) -> bytes:
    """Audio as the payload of a `transcribe` frame."""
    return np.ascontiguousarray(audio, dtype="<f4").tobytes()


def payload_audio(payload: bytes) -> np.ndarray:
    """The audio of a `transcribe` frame (a writable copy, the engine may keep it)."""
    if len(payload) % 4:
        raise ValueError(f"an audio payload of {len(payload)} bytes is not a whole number of float32 samples")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


def version_mismatch_message(theirs: int, side: str) -> str:
    """The sentence both sides show when the other speaks another protocol version."""
    return (
        f"The {side} speaks worker protocol version {theirs}, this one speaks version {PROTOCOL_VERSION}: "
        "the app and its speech worker come from different installs. Reinstall the app so both match."
    )


class FrameDecoder:
    """Turns a byte stream into frames, in whatever chunks it arrives (push-style, no I/O).

    `feed()` returns the frames and errors completed by the new bytes; after an error the decoder has
    resynchronised on the next magic, so the caller reports it and carries on. `finish()` at end of
    stream reports a frame cut short. One error is reported per run of skipped bytes, not per byte.
    """

    def __init__(self, *, peer: str = "other side") -> None:
        self._buf = bytearray()
        self._skipping = False
        self._peer = peer

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        self._buf += data
        events: list[Frame | FrameError] = []
        while (event := self._next()) is not None:
            events.append(event)
        return events

    def finish(self) -> list[FrameError]:
        """End of stream: anything left over is a truncated frame (or trailing garbage)."""
        if not self._buf:
            return []
        left, self._buf = len(self._buf), bytearray()
        if self._skipping:  # a run of garbage, already reported
            return []
        return [FrameError("truncated_frame", f"The stream ended in the middle of a frame ({left} bytes left over).")]

    def _next(self) -> Frame | FrameError | None:
        buf = self._buf
        if not buf.startswith(MAGIC):
            error = self._skip_to_magic()
            if error is not None:
                return error
            if not buf.startswith(MAGIC):
                return None
        self._skipping = False
        if len(buf) < PREFIX_SIZE:
            return None
        _magic, version, header_len, payload_len = PREFIX.unpack_from(buf)
        if header_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
            return self._drop(
                1, "frame_too_large",
                f"A frame announced {header_len} header bytes and {payload_len} payload bytes, more than the "
                f"limits ({MAX_HEADER_BYTES} and {MAX_PAYLOAD_BYTES}); it was skipped.",
            )
        header_end = PREFIX_SIZE + header_len
        cut = buf.find(0xFF, PREFIX_SIZE, header_end)
        if cut >= 0:  # the next frame's magic arrived inside this JSON header
            return self._drop(cut, "truncated_frame", "A frame was cut short by the next one; it was skipped.")
        end = header_end + payload_len
        if len(buf) < end:
            return None
        if version != PROTOCOL_VERSION:
            del buf[:end]
            return FrameError("version_mismatch", version_mismatch_message(version, self._peer), {"version": version})
        try:
            header = json.loads(bytes(buf[PREFIX_SIZE:header_end]))
        except (UnicodeDecodeError, ValueError):
            return self._drop(1, "malformed_frame", "A frame header is not valid JSON; it was skipped.")
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            return self._drop(1, "malformed_frame", 'A frame header is not a JSON object with a "type"; it was skipped.')
        payload = bytes(buf[header_end:end])
        del buf[:end]
        return Frame(header, payload)

    def _drop(self, count: int, code: str, message: str) -> FrameError:
        """Discard `count` bytes and resynchronise on the next magic, reporting `message` once."""
        del self._buf[:count]
        self._skipping = True
        return FrameError(code, message)

    def _skip_to_magic(self) -> FrameError | None:
        buf = self._buf
        at = buf.find(MAGIC)
        if at < 0:  # keep a tail that may be the start of a magic split across reads
            at = len(buf)
            for keep in range(min(len(MAGIC) - 1, len(buf)), 0, -1):
                if MAGIC.startswith(bytes(buf[-keep:])):
                    at = len(buf) - keep
                    break
        if at == 0:
            return None
        del buf[:at]
        if self._skipping:
            return None
        self._skipping = True
        return FrameError("malformed_frame", f"Received {at} bytes that are not part of a frame; skipping to the next frame.")
