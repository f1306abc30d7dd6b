"""Model downloads for the settings window: size first, then the files with byte progress (torch-free).

Everything goes through huggingface_hub into its normal cache, so the worker's `resolve_model`
finds the files later without knowing the GUI fetched them, and works offline from then on.
The steps, each a plain function so the UI can run them on a thread and tests can drive them:

1. `plan()` asks the Hub for the file list with sizes (`model_info(files_metadata=True)`) and
   counts what the cache already holds, so the user sees the size before anything starts; gated,
   missing and unreachable repos become sentences that say what to do.
2. `check_disk()` refuses a download the disk cannot hold, instead of failing at 95 %.
3. `download()` fetches file by file with `hf_hub_download`, reporting bytes through its
   `tqdm_class` hook; a cancel raises from that hook. Finished files stay in the cache, so a
   cancelled or interrupted download continues with the first unfinished file (huggingface_hub
   2.x resumes a file only within one attempt, after a dropped connection, and deletes the
   partial file when the attempt fails). A last `snapshot_download` records the branch, which
   the worker needs when it later resolves the id without a network.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from app.errors import UserError

ProgressCallback = Callable[[int, int, str], None]  # bytes done, bytes in all, file being fetched
DISK_MARGIN = 200 * 1024 * 1024  # keep some room: a full disk breaks more than this download
PUBLIC_HUB = "https://huggingface.co"


class DownloadCancelled(UserError):
    def __init__(self) -> None:
        super().__init__("The download was cancelled; the files fetched so far are kept, so it continues "
                         "from there next time.", code="cancelled")


@dataclass
class RepoFile:
    name: str
    size: int
    cached: bool = False


@dataclass
class DownloadPlan:
    """What `download()` will fetch: the repo at one commit, its files and what the cache holds already."""

    repo_id: str
    revision: str
    commit: str
    files: list[RepoFile]
    cache_dir: Path
    endpoint: str | None = None
    token: str | bool | None = None
    free_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def needed_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)

    @property
    def complete(self) -> bool:
        return all(f.cached for f in self.files)


def hub_page(repo_id: str, endpoint: str | None = None) -> str:
    """The repo's web page, where gated terms are accepted."""
    return f"{(endpoint or PUBLIC_HUB).rstrip('/')}/{repo_id}"


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def plan(repo_id: str, *, revision: str = "main", endpoint: str | None = None, token: str | bool | None = None,
         cache_dir: Path | None = None) -> DownloadPlan:
    """Ask the Hub what `repo_id` holds and what of it is cached here already."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    cache_dir = Path(cache_dir or default_cache_dir())
    with _hub_errors(repo_id, endpoint):
        info = HfApi(endpoint=endpoint or None, token=token).model_info(repo_id, revision=revision,
                                                                        files_metadata=True)
    files = []
    for sibling in info.siblings or []:
        size = sibling.lfs.size if sibling.lfs is not None else (sibling.size or 0)
        hit = try_to_load_from_cache(repo_id, sibling.rfilename, cache_dir=str(cache_dir), revision=info.sha)
        files.append(RepoFile(sibling.rfilename, int(size), cached=isinstance(hit, str)))
    return DownloadPlan(repo_id, revision, str(info.sha), files, cache_dir, endpoint or None, token,
                        free_bytes=free_space(cache_dir))


def free_space(folder: Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or would, once created)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def check_disk(plans: list[DownloadPlan]) -> None:
    """Raise a UserError when the downloads (all into one cache) cannot fit on its disk."""
    needed = sum(p.needed_bytes for p in plans)
    free = plans[0].free_bytes if plans else None
    if free is not None and needed + DISK_MARGIN > free:
        names = [p.repo_id for p in plans if p.needed_bytes]
        raise UserError(
            f"{' and '.join(names)} need{'s' if len(names) == 1 else ''} {format_bytes(needed)} but the disk holding {plans[0].cache_dir} has only "
            f"{format_bytes(free)} free. Free some space, or set HF_HOME to a folder on a larger disk "
            "and restart the app.", code="disk_full")


def download(plan: DownloadPlan, on_progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None) -> Path:
    """Fetch every file of `plan` not in the cache yet; returns the snapshot folder.

    `on_progress(done, total, filename)` is called from this thread, often (every 10 MB chunk at
    most); `cancel.set()` from any thread stops at the next chunk with DownloadCancelled.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    cancel = cancel or threading.Event()
    report = on_progress or (lambda done, total, name: None)
    total, done = plan.total_bytes, sum(f.size for f in plan.files if f.cached)
    report(done, total, "")
    for repo_file in plan.files:
        if repo_file.cached:
            continue
        if cancel.is_set():
            raise DownloadCancelled()
        bar = _progress_class(lambda n, base=done, name=repo_file.name: report(base + n, total, name), cancel)
        with _hub_errors(plan.repo_id, plan.endpoint):
            hf_hub_download(plan.repo_id, repo_file.name, revision=plan.commit, cache_dir=str(plan.cache_dir),
                            endpoint=plan.endpoint, token=plan.token, tqdm_class=bar)
        repo_file.cached = True
        done += repo_file.size
        report(done, total, repo_file.name)
    with _hub_errors(plan.repo_id, plan.endpoint):
        folder = snapshot_download(plan.repo_id, revision=plan.revision, cache_dir=str(plan.cache_dir),
                                   endpoint=plan.endpoint, token=plan.token,
                                   tqdm_class=_progress_class(lambda n: None, cancel))
    return Path(folder)


def plan_model(name: str, *, engine: str, endpoint: str | None = None, token: str | bool | None = None,
               cache_dir: Path | None = None) -> list[DownloadPlan]:
    """Everything a model setting needs from the Hub: the repo itself, and for a diffusion adapter its
    backbone and encoder. A local folder needs nothing for itself (and no network unless its parts do)."""
    from huggingface_hub import hf_hub_download

    from app.engine.model_source import looks_like_hub_id

    plans: list[DownloadPlan] = []
    folder = Path(name).expanduser()
    if folder.is_dir():
        adapter = folder
    elif looks_like_hub_id(name):
        main = plan(name, endpoint=endpoint, token=token, cache_dir=cache_dir)
        plans.append(main)
        adapter = None  # no asr_config.json: the engine's defaults
        if engine == "diffusion" and any(f.name == "asr_config.json" for f in main.files):
            with _hub_errors(name, endpoint):  # a few hundred bytes, to learn which backbone it needs
                adapter = Path(hf_hub_download(name, "asr_config.json", revision=main.commit,
                                               cache_dir=str(main.cache_dir), endpoint=main.endpoint,
                                               token=token)).parent
    else:
        raise UserError(f"'{name}' is neither a folder on this computer nor a Hugging Face id like "
                        "openai/whisper-base; check the spelling.", code="no_model")
    if engine == "diffusion":
        plans += [plan(part, endpoint=endpoint, token=token, cache_dir=cache_dir) for part in frozen_parts(adapter)]
    return plans


def download_all(plans: list[DownloadPlan], on_progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None) -> list[Path]:
    """`download()` each plan, with one progress over all of them (label: "repo: file")."""
    report = on_progress or (lambda done, total, name: None)
    total = sum(p.total_bytes for p in plans)
    before = 0
    folders = []
    for p in plans:
        folders.append(download(p, lambda done, _t, name, base=before, repo=p.repo_id:
                                report(base + done, total, f"{repo}: {name}" if name else repo), cancel))
        before += p.total_bytes
    return folders


def cached_folder(repo_id: str, *, revision: str = "main", cache_dir: Path | None = None) -> Path | None:
    """The complete cached snapshot of `repo_id`, without touching the network; None if there is none."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                      cache_dir=str(cache_dir or default_cache_dir())))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None


def frozen_parts(folder: Path | None) -> list[str]:
    """The Hub ids a diffusion adapter in `folder` loads besides itself (backbone and encoder).

    Read from the adapter's `asr_config.json`, with the engine's own defaults for missing keys, so
    that the settings window can offer the whole download (the backbone is most of it) up front.
    Local paths (relative to the adapter) are left out: they are not downloaded.
    """
    from app.engine.model_source import looks_like_hub_id

    defaults = _adapter_defaults()
    data = {}
    if folder is not None:
        try:
            data = json.loads((folder / "asr_config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder / 'asr_config.json'} is not valid JSON ({exc}); fix or delete it.",
                            code="bad_model") from exc
    parts = []
    for key in ("backbone", "encoder"):
        name = data.get(key, defaults[key]) if isinstance(data, dict) else defaults[key]
        if not isinstance(name, str) or (folder is not None and (folder / name).exists()):
            continue  # a folder shipped with the adapter: nothing to download
        if looks_like_hub_id(name):
            parts.append(name)
    return parts


def _adapter_defaults() -> dict[str, str]:
    """The engine's default backbone and encoder, read without importing the engine.

    `app.engine.diffusion`'s package imports the engine and so torch; its `config` module does not.
    Loading that one file by path keeps the GUI torch-free without copying the defaults here. In a
    frozen build the source file is not on disk: then no parts are offered, and the worker fetches
    them when it first loads the model.
    """
    import importlib.util
    import sys

    import app.engine

    path = Path(app.engine.__file__).parent / "diffusion" / "config.py"
    name = "_dictate_adapter_config"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            return {"backbone": "", "encoder": ""}
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    defaults = sys.modules[name].AdapterConfig()
    return {"backbone": defaults.backbone, "encoder": defaults.encoder}


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _progress_class(report: Callable[[int], None], cancel: threading.Event) -> type:
    """A tqdm class for one file: reports its bytes (resumed ones included) and raises on cancel."""
    from tqdm.auto import tqdm  # here, not at the top: importing tqdm costs the GUI's start-up 0.2 s

    class FileProgress(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": True})  # no console bar; we draw our own
            self.done = int(kwargs.get("initial") or 0)
            report(self.done)

        def update(self, n: float | None = 1) -> None:
            if cancel.is_set():
                raise DownloadCancelled()
            self.done += int(n or 0)
            report(self.done)

        def update_transfer(self, n: float | None = 1) -> None:
            """Network bytes (compressed, for Xet storage): `update` already counts the file's bytes."""
            if cancel.is_set():
                raise DownloadCancelled()

        def set_transfer_postfix_str(self, *args, **kwargs) -> None:
            pass

    return FileProgress


class _hub_errors:
    """Turns huggingface_hub's exceptions into sentences that say what to do next."""

    def __init__(self, repo_id: str, endpoint: str | None) -> None:
        self.repo_id, self.endpoint = repo_id, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, UserError):
            return False
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

        repo, page = self.repo_id, hub_page(self.repo_id, self.endpoint)
        if isinstance(exc, GatedRepoError):
            raise UserError(f"{repo} is gated: open {page}, accept its terms, then log in on this computer with "
                            "`hf auth login` and download again.", code="gated_model") from exc
        if isinstance(exc, RepositoryNotFoundError):
            raise UserError(f"There is no model '{repo}' on the Hub (or it is private: log in with `hf auth login`). "
                            "Check the spelling.", code="no_model") from exc
        if isinstance(exc, RevisionNotFoundError):
            raise UserError(f"{repo} has no such branch or version; leave the revision at main.",
                            code="no_model") from exc
        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or _is_network_error(exc):
            raise UserError(f"The model hub ({self.endpoint or PUBLIC_HUB}) cannot be reached. Check the internet "
                            "connection, or choose a model folder on this computer.", code="offline") from exc
        if isinstance(exc, HfHubHTTPError):
            raise UserError(f"Downloading {repo} failed ({exc}). Try again later.", code="download_failed") from exc
        if isinstance(exc, OSError):
            raise UserError(f"Downloading {repo} failed ({exc}). Check the free disk space and try again.",
                            code="download_failed") from exc
        return False


def _is_network_error(exc: BaseException) -> bool:
    import httpx2

    return isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError))


__all__ = ["DownloadPlan", "DownloadCancelled", "RepoFile", "plan", "plan_model", "check_disk", "download",
           "download_all", "cached_folder", "frozen_parts", "format_bytes", "hub_page"]
