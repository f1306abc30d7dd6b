"""The server's bearer token: where it comes from, and the constant-time check of each request.

On 127.0.0.1 only processes of this machine can connect, so a token is optional there; on any other
address it is required. Without `--token-file` one is generated on the first start, written to
`server-token` in the config folder with mode 0600, and printed once; later starts read it back.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from app.errors import UserError
from app.server.api_errors import ApiError

TOKEN_FILE = "server-token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The token in `path` (its first line), or a UserError that says how to make one."""
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise UserError(f"The token file {path} cannot be read ({exc.strerror}); create it with one line of at "
                        "least 16 characters, readable only by you (chmod 600).", code="bad_token_file") from None
    except UnicodeDecodeError:
        raise UserError(f"The token file {path} is not text; put the token on its first line as plain text "
                        "(for example the output of `openssl rand -hex 32`).", code="bad_token_file") from None
    token = lines[0].strip() if lines else ""  # a blank file (`echo $UNSET > F`) is a too-short token, not a crash
    if len(token) < 16:
        raise UserError(f"The token in {path} is shorter than 16 characters; put a longer random one there "
                        "(for example the output of `openssl rand -hex 32`).", code="bad_token_file")
    return token


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable only by this user (mode 0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def server_token(host: str, token_file: Path | None, default_file: Path, *,
                 generate: bool = True) -> tuple[str | None, bool]:
    """The token this server requires (None: none needed) and whether it was just generated.

    With `generate=False` a token that would have to be generated is None too: `serve` reads the
    token files before the model loads, and makes a new token only once the model has loaded, so
    that a token is never made (and kept, and never shown again) for a server that did not start.
    """
    if token_file is not None:
        return read_token(token_file), False
    if is_loopback(host):
        return None, False
    if default_file.exists():
        return read_token(default_file), False
    if not generate:
        return None, False
    token = secrets.token_urlsafe(32)
    write_private(default_file, token + "\n")
    return token, True


def check_bearer(header: str | None, token: str | None) -> None:
    """Raise 401 unless `header` is `Bearer <token>`; compared in constant time."""
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "This server needs a token: send the header 'Authorization: Bearer <token>' (the "
                       "token is in the server's token file).", "missing_token",
                       headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "The token is wrong: copy it again from the server's token file.", "invalid_token",
                       headers={"WWW-Authenticate": "Bearer"})
