"""The frame decoder on its own: round trips in any chunking, and resynchronisation after bad bytes."""

from __future__ import annotations

import numpy as np

from app.worker.protocol import (
    MAX_PAYLOAD_BYTES,
    MAGIC,
    PREFIX,
    PREFIX_SIZE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    audio_payload,
    encode,
    payload_audio,
)


def _decode(data: bytes, chunk: int | None = None) -> list[Frame | FrameError]:
    decoder = FrameDecoder()
    step = chunk or max(len(data), 1)
    events = [e for i in range(0, len(data), step) for e in decoder.feed(data[i : i + step])]
    return events + decoder.finish()


def _summary(events: list[Frame | FrameError]) -> list[str]:
    return [e.type if isinstance(e, Frame) else f"!{e.code}" for e in events]


def test_round_trip_with_audio_in_any_chunking():
    audio = np.linspace(-1, 1, 1601, dtype=np.float32)
    data = encode("transcribe", audio_payload(audio), id="a", language="de", steps=8) + encode("ping", seq=1, draft="Grüße 你好")
    for chunk in (None, 1, 7, 4096):
        events = _decode(data, chunk)
        assert _summary(events) == ["transcribe", "ping"]
        assert events[0].header == {"type": "transcribe", "id": "a", "language": "de", "steps": 8}
        np.testing.assert_array_equal(payload_audio(events[0].payload), audio)
        assert events[1]["draft"] == "Grüße 你好"


def test_garbage_is_reported_once_and_skipped():
    garbage = bytes(range(256)) * 4 + MAGIC[:2]  # includes 0xFF and a partial magic
    events = _decode(garbage + encode("ping", seq=1) + b"trailing junk" + encode("ping", seq=2), chunk=5)
    assert _summary(events) == ["!malformed_frame", "ping", "!malformed_frame", "ping"]
    assert [e["seq"] for e in events if isinstance(e, Frame)] == [1, 2]


def test_a_frame_cut_short_by_the_next_one_is_skipped():
    full = encode("transcribe", b"\0" * 64, id="x")
    for cut in (3, 6, 12, PREFIX_SIZE + 5, len(full) - 70):  # inside the prefix, the header
        events = _decode(full[:cut] + encode("ping", seq=cut))
        assert events[-1].type == "ping" and events[-1]["seq"] == cut, (cut, _summary(events))
        assert len(events) == 2 and isinstance(events[0], FrameError), (cut, _summary(events))


def test_truncated_frame_at_end_of_stream():
    events = _decode(encode("ping") + encode("transcribe", b"\0" * 64, id="x")[:-10])
    assert _summary(events) == ["ping", "!truncated_frame"]


def test_oversized_and_non_json_frames_are_rejected():
    oversized = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 10, MAX_PAYLOAD_BYTES + 1) + b"{}" * 5
    bad_json = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 5, 0) + b"{nope"
    no_type = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 2, 0) + b"[]"
    events = _decode(oversized + encode("ping", seq=1) + bad_json + encode("ping", seq=2) + no_type + encode("ping", seq=3))
    assert _summary(events) == ["!frame_too_large", "ping", "!malformed_frame", "ping", "!malformed_frame", "ping"]


def test_version_mismatch_names_both_versions_and_skips_the_frame():
    events = _decode(encode("hello", b"\1\2\3\4", version=PROTOCOL_VERSION + 1, protocol=PROTOCOL_VERSION + 1) + encode("ping"))
    assert _summary(events) == ["!version_mismatch", "ping"]
    assert f"version {PROTOCOL_VERSION + 1}" in events[0].message and "Reinstall" in events[0].message
