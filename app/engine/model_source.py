"""Find a model: a local folder as is, or a Hugging Face Hub id downloaded into the Hub cache.

A local folder never touches the network. Hub downloads go through huggingface_hub, which shows
progress, resumes interrupted files and verifies them; gated repos and missing networks become
sentences that say what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def could_name_a_model(name: str) -> bool:
    """Whether `name` can name a model at all, before any folder is looked at: an 'owner/name' Hub id or a
    path (absolute, from ~, or an existing folder). A folder on a drive that is not mounted now still counts;
    "whisper base" or "openai/whisper base" never can."""
    path = Path(name).expanduser()
    return bool(_HUB_ID.match(name)) or path.is_absolute() or path.exists()


def looks_like_hub_id(name: str) -> bool:
    """True for 'owner/name' strings that are not an existing local path."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def resolve_model(name: str, *, what: str = "model") -> Path:
    """Return a local folder for `name` (a folder path or a Hub id), downloading if needed."""
    if not name:
        raise UserError(f"No {what} is set: choose a model folder or a Hugging Face model id.", code="no_model")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise UserError(f"The {what} '{name}' is a file; point to the folder that holds it.", code="bad_model")
    if not looks_like_hub_id(name):
        raise UserError(f"The {what} folder '{name}' does not exist. Check the path, or give a Hub id such as openai/whisper-base.", code="no_model")
    return _download(name, what=what)


def _download(repo_id: str, *, what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1"))
    except GatedRepoError as exc:
        raise UserError(
            f"The {what} {repo_id} is gated: accept its terms at https://huggingface.co/{repo_id}, "
            "then log in with `hf auth login` and try again.",
            code="gated_model",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise UserError(f"There is no {what} '{repo_id}' on the Hugging Face Hub (or it is private).", code="no_model") from exc
    except LocalEntryNotFoundError as exc:
        raise UserError(
            f"The {what} {repo_id} is not downloaded yet and the Hub cannot be reached; "
            "connect to the internet or choose a local model folder.",
            code="offline",
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"Downloading the {what} {repo_id} failed ({exc}); check the connection and disk space, then retry.", code="download_failed") from exc
