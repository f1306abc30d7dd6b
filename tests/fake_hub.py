"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving the endpoints huggingface_hub 2.x downloads with.

- `GET /api/models/{repo}/revision/{rev}` (`?blobs=true` adds sizes): `model_info` and `repo_info`
- `GET /api/models/{repo}/tree/{rev}`: the file listing `snapshot_download` caches
- `HEAD` / `GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag`, `Content-Length`, and `Range`
  requests answered with `206 Partial Content`

A gated repo answers 403 with `X-Error-Code: GatedRepo`, as the Hub does. `drop_once[file] = n`
closes the connection after `n` bytes of that file's first GET, like a network that drops, so a
test can see the client resume with a `Range` request. Every request is logged in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], *, gated: set[str] | None = None) -> None:
        self.repos = repos
        self.gated = gated or set()
        self.drop_once: dict[str, int] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def gets(self, filename: str) -> list[str]:
        """The Range headers of every GET of `filename` ("" for a whole-file GET)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + filename)
                and "/resolve/" in path]

    def entry(self, repo: str, name: str) -> dict:
        data = self.repos[repo][name]
        sha256 = hashlib.sha256(data).hexdigest()
        # Files over 1 KB are LFS files here, as large weights are on the Hub (their ETag is the sha256).
        lfs = {"oid": sha256, "size": len(data), "pointerSize": 134} if len(data) > 1024 else None
        return {"name": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(), "lfs": lfs}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range", "")))
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
                self._info(m[1], m[2], body)
            elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
                self._tree(m[1], body)
            elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                self._file(m[1], m[3], body)
            else:
                self._error(404, "EntryNotFound", f"no route {path}")

        def _repo_ok(self, repo: str) -> bool:
            if repo not in hub.repos:
                self._error(401, "RepoNotFound", "Repository not found")
                return False
            if repo in hub.gated:
                self._error(403, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it "
                                              "and be authenticated to access it. Please log in.")
                return False
            return True

        def _info(self, repo: str, revision: str, body: bool) -> None:
            if not self._repo_ok(repo):
                return
            siblings = []
            for name in hub.repos[repo]:
                e = hub.entry(repo, name)
                sibling = {"rfilename": name, "size": e["size"], "blobId": e["oid"]}
                if e["lfs"]:
                    sibling["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 134}
                siblings.append(sibling)
            self._json({"id": repo, "modelId": repo, "sha": hub.commits[repo], "private": False, "gated": False,
                        "siblings": siblings, "tags": []}, body)

        def _tree(self, repo: str, body: bool) -> None:
            if not self._repo_ok(repo):
                return
            entries = []
            for name in hub.repos[repo]:
                e = hub.entry(repo, name)
                item = {"type": "file", "path": name, "size": e["size"], "oid": e["oid"]}
                if e["lfs"]:
                    item["lfs"] = e["lfs"]
                entries.append(item)
            self._json(entries, body)

        def _file(self, repo: str, name: str, body: bool) -> None:
            if not self._repo_ok(repo):
                return
            if name not in hub.repos[repo]:
                self._error(404, "EntryNotFound", f"{name} does not exist", commit=hub.commits[repo])
                return
            data = hub.repos[repo][name]
            e = hub.entry(repo, name)
            etag = e["lfs"]["oid"] if e["lfs"] else e["oid"]
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                start = int(m[1])
            part = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", hub.commits[repo])
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(part)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = hub.drop_once.pop(name, None)
            if cut is not None:  # the network drops mid-file: send part of it, then hang up
                self.wfile.write(part[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(part)

        def _json(self, payload, body: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
