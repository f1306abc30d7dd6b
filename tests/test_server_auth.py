"""Where the server's token comes from: none on 127.0.0.1, required (and generated once, 0600)
anywhere else, a token file's sentence when it is unusable; and the constant-time bearer check."""

from __future__ import annotations

import stat

import pytest

from app.errors import UserError
from app.server.api_errors import ApiError
from app.server.auth import check_bearer, server_token


def test_loopback_needs_no_token_and_any_other_address_gets_one_generated_once(tmp_path):
    default = tmp_path / "config" / "server-token"
    assert server_token("127.0.0.1", None, default) == (None, False)
    assert server_token("::1", None, default) == (None, False) and not default.exists()
    token, generated = server_token("0.0.0.0", None, default)
    assert generated and len(token) >= 32 and stat.S_IMODE(default.stat().st_mode) == 0o600
    assert server_token("192.168.1.20", None, default) == (token, False)  # read back, not printed again


def test_a_token_file_turns_the_check_on_even_on_loopback(tmp_path):
    given = tmp_path / "token"
    given.write_text("a-token-of-enough-length\n")
    assert server_token("127.0.0.1", given, tmp_path / "unused") == ("a-token-of-enough-length", False)
    given.write_text("short\n")
    with pytest.raises(UserError, match="shorter than 16 characters"):
        server_token("0.0.0.0", given, tmp_path / "unused")
    with pytest.raises(UserError, match="cannot be read"):
        server_token("0.0.0.0", tmp_path / "missing", tmp_path / "unused")


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\n", b"\xff\xfe\x00 not text"])
def test_a_blank_or_binary_token_file_is_a_sentence_not_a_crash(tmp_path, content):
    """`echo $UNSET > token` leaves one newline; that used to end `serve` and `transcribe --server` in an IndexError."""
    given = tmp_path / "token"
    given.write_bytes(content)
    with pytest.raises(UserError, match="shorter than 16 characters|is not text"):
        server_token("0.0.0.0", given, tmp_path / "unused")


@pytest.mark.parametrize("header, code", [(None, "missing_token"), ("Basic abc", "missing_token"),
                                          ("Bearer", "missing_token"), ("Bearer wrong", "invalid_token")])
def test_bearer_check(header, code):
    with pytest.raises(ApiError) as caught:
        check_bearer(header, "the-right-token-123")
    assert caught.value.status == 401 and caught.value.code == code
    check_bearer("Bearer the-right-token-123", "the-right-token-123")
    check_bearer(None, None)
