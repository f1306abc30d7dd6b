"""Where the app keeps its speech-server token: the OS keyring, else a file only this user can read.

Never in settings.json: that file is shown, copied aside when damaged, and shared in bug reports.
The keyring (Secret Service on Linux, the macOS Keychain, Windows Credential Locker) is used through
the `keyring` package whenever it has a working backend; without one (a bare X session, a container)
the token goes to `server-client-token` in the config folder with mode 0600.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.desktop.paths import config_dir
from app.server.auth import write_private

log = logging.getLogger(__name__)
SERVICE, USERNAME = "diffusion-dictate", "server-token"
FILE_NAME = "server-client-token"


def _token_file() -> Path:
    return config_dir() / FILE_NAME


def _keyring():
    """The keyring module when a real backend is there, else None."""
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
    except Exception as exc:  # no backend can even be chosen
        log.info("no keyring: %s", exc)
        return None
    return None if isinstance(backend, fail.Keyring) else keyring


def save_token(token: str) -> str:
    """Store `token` (empty: forget it); returns where it went, for the settings window to say."""
    token = token.strip()
    keyring = _keyring()
    if keyring is not None:
        try:
            if token:
                keyring.set_password(SERVICE, USERNAME, token)
            else:
                try:
                    keyring.delete_password(SERVICE, USERNAME)
                except keyring.errors.PasswordDeleteError:
                    pass
            _token_file().unlink(missing_ok=True)
            return "the system keyring"
        except Exception as exc:  # a backend that is there but locked or broken
            log.warning("the keyring refused the token (%s); it is kept in a private file instead", exc)
    if token:
        write_private(_token_file(), token + "\n")
    else:
        _token_file().unlink(missing_ok=True)
    return str(_token_file())


def load_token() -> str | None:
    """The stored token, or None."""
    keyring = _keyring()
    if keyring is not None:
        try:
            token = keyring.get_password(SERVICE, USERNAME)
            if token:
                return token
        except Exception as exc:
            log.warning("the keyring could not be read (%s)", exc)
    try:
        return _token_file().read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
