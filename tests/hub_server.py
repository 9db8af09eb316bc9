"""A small Hugging Face Hub, served from a directory tree, for tests with the real client.

Repos live as plain directories: ``<root>/<org>/<name>/`` is branch ``main`` of repo ``org/name``
and ``<root>/<org>/<name>@<branch>/`` another branch of it. The server answers the endpoints
huggingface_hub 2.4 calls (``file_download.py``, ``hf_api.py``):

- ``GET /api/models/{repo}[/revision/{rev}]`` -> ``{"id", "sha", "siblings"}`` (``model_info``,
  ``resolve_revision``, ``repo_info``);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=`` -> file/directory entries
  (``list_repo_tree``, ``list_repo_files``, ``snapshot_download``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``
  and ``X-Linked-Size`` for LFS files, and ``Range`` (``hf_hub_download``, resumed downloads).

No ``X-Xet-Hash`` header and no ``xetHash`` in listings: the client then takes its plain HTTP path.
Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub's
do, so the client raises its own typed errors. Every request is recorded in :attr:`HubServer.requests`.

Example:
    >>> with HubServer(repos_root) as hub:  # doctest: +SKIP
    ...     snapshot_download("org/name", endpoint=hub.url, cache_dir=tmp)
    ...     hub.requests
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: Extensions the Hub stores through LFS (``.gitattributes`` of a new repo).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".model", ".msgpack", ".h5")


@dataclass
class ServedFile:
    path: str
    local: Path
    size: int
    blob_id: str
    sha256: str | None  # set for LFS files: their ETag

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class ServedRevision:
    commit: str
    files: dict[str, ServedFile] = field(default_factory=dict)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _scan_revision(directory: Path) -> ServedRevision:
    files: dict[str, ServedFile] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        data = path.read_bytes()
        lfs = rel.endswith(LFS_SUFFIXES)
        files[rel] = ServedFile(
            rel, path, len(data), _git_blob_sha1(data), hashlib.sha256(data).hexdigest() if lfs else None
        )
    digest = hashlib.sha1()
    for rel, served in files.items():
        digest.update(f"{rel}\0{served.etag}\n".encode())
    return ServedRevision(digest.hexdigest(), files)


class HubServer:
    """A threaded HTTP server on 127.0.0.1 (random port) serving the repos under ``root``.

    Args:
        root: ``<root>/<org>/<name>[@<branch>]/`` directories.

    Attributes:
        url: the endpoint to give huggingface_hub (``HF_ENDPOINT``).
        requests: ``(method, path)`` of every request served, in order.
        ranges: ``(path in repo, Range header)`` of every ranged ``GET`` (resumed downloads).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._revisions: dict[tuple[str, str], ServedRevision] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget the recorded requests and rescan the repos (after a test changed them)."""
        with self._lock:
            self.requests.clear()
            self.ranges.clear()
            self._revisions.clear()

    def downloads(self) -> set[str]:
        """Repo paths (``repo/path``) fetched with ``GET .../resolve/...`` since the last reset."""
        out = set()
        for method, path in self.requests:
            parts = path.lstrip("/").split("/")
            if method == "GET" and len(parts) > 4 and parts[2] == "resolve":
                out.add("/".join(parts[:2]) + "/" + unquote("/".join(parts[4:])))
        return out

    def commit(self, repo_id: str, branch: str = "main") -> str:
        revision = self.revision(repo_id, branch)
        assert revision is not None, f"no branch {branch!r} of {repo_id}"
        return revision.commit

    # -- repos ----------------------------------------------------------------------------------

    def _branches(self, repo_id: str) -> dict[str, Path]:
        org, _, name = repo_id.partition("/")
        org_dir = self.root / org
        if not name or not org_dir.is_dir():
            return {}
        out = {}
        for entry in org_dir.iterdir():
            base, _, branch = entry.name.partition("@")
            if base == name and entry.is_dir():
                out[branch or "main"] = entry
        return out

    def revision(self, repo_id: str, rev: str) -> ServedRevision | None:
        branches = self._branches(repo_id)
        with self._lock:
            for branch, directory in branches.items():
                key = (repo_id, branch)
                if key not in self._revisions:
                    self._revisions[key] = _scan_revision(directory)
            known = {b: self._revisions[(repo_id, b)] for b in branches}
        if rev in known:
            return known[rev]
        return next((r for r in known.values() if r.commit == rev), None)

    def repo_exists(self, repo_id: str) -> bool:
        return bool(self._branches(repo_id))


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        # -- dispatch ---------------------------------------------------------------------------

        def _serve(self, *, body: bool) -> None:
            split = urlsplit(self.path)
            with hub._lock:
                hub.requests.append((self.command, split.path))
            parts = split.path.lstrip("/").split("/")
            query = parse_qs(split.query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = f"{unquote(parts[2])}/{unquote(parts[3])}"
                rest = parts[4:]
                if not rest:
                    return self._model_info(repo_id, "main")
                if rest[0] == "revision" and len(rest) == 2:
                    return self._model_info(repo_id, unquote(rest[1]))
                if rest[0] == "tree" and len(rest) >= 2:
                    path = unquote("/".join(rest[2:])).strip("/")
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self._tree(repo_id, unquote(rest[1]), path, recursive)
            elif len(parts) >= 5 and parts[2] == "resolve":
                repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
                return self._resolve(repo_id, unquote(parts[3]), unquote("/".join(parts[4:])), body=body)
            self._error(404, "NotFound", "no such endpoint", body=body)

        def _lookup(self, repo_id: str, rev: str, *, body: bool = True) -> ServedRevision | None:
            if not hub.repo_exists(repo_id):
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found", body=body)
                return None
            revision = hub.revision(repo_id, rev)
            if revision is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body=body)
            return revision

        # -- endpoints --------------------------------------------------------------------------

        def _model_info(self, repo_id: str, rev: str) -> None:
            revision = self._lookup(repo_id, rev)
            if revision is None:
                return
            info: dict[str, object] = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": revision.commit,
                "private": False,
                "siblings": [{"rfilename": p} for p in revision.files],
            }
            self._json(info)

        def _tree(self, repo_id: str, rev: str, path: str, recursive: bool) -> None:
            revision = self._lookup(repo_id, rev)
            if revision is None:
                return
            prefix = f"{path}/" if path else ""
            entries: list[dict[str, object]] = []
            folders: set[str] = set()
            for rel, served in revision.files.items():
                if not rel.startswith(prefix):
                    continue
                below = rel[len(prefix) :].split("/")
                for depth in range(1, len(below)):
                    if depth > 1 and not recursive:
                        break
                    folders.add(prefix + "/".join(below[:depth]))
                if len(below) > 1 and not recursive:
                    continue
                entry: dict[str, object] = {
                    "type": "file",
                    "path": rel,
                    "size": served.size,
                    "oid": served.blob_id,
                }
                if served.sha256:
                    entry["lfs"] = {"oid": served.sha256, "size": served.size, "pointerSize": 134}
                entries.append(entry)
            if path and not entries and not folders:
                return self._error(
                    404, "EntryNotFound", f"{path} does not exist on {rev}", commit=revision.commit
                )
            for folder in sorted(folders):
                digest = hashlib.sha1(folder.encode()).hexdigest()
                entries.append({"type": "directory", "path": folder, "oid": digest})
            self._json(entries)

        def _resolve(self, repo_id: str, rev: str, path: str, *, body: bool) -> None:
            revision = self._lookup(repo_id, rev, body=body)
            if revision is None:
                return
            served = revision.files.get(path)
            if served is None:
                return self._error(
                    404, "EntryNotFound", f"{path} does not exist on {rev}", commit=revision.commit, body=body
                )
            data = served.local.read_bytes()
            start, end, status = 0, len(data) - 1, 200
            wanted = self.headers.get("Range")
            if wanted and body:
                with hub._lock:
                    hub.ranges.append((path, wanted))
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes=") :].partition("-")
                start = int(first) if first else 0
                end = min(int(last), len(data) - 1) if last else len(data) - 1
                status = 206
            chunk = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("X-Repo-Commit", revision.commit)
            self.send_header("ETag", f'"{served.blob_id}"')
            if served.sha256:
                self.send_header("X-Linked-Etag", f'"{served.sha256}"')
                self.send_header("X-Linked-Size", str(served.size))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if body:
                self.wfile.write(chunk)

        # -- responses --------------------------------------------------------------------------

        def _json(self, value: object) -> None:
            payload = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _error(
            self, status: int, code: str, message: str, *, commit: str | None = None, body: bool = True
        ) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if body:
                self.wfile.write(payload)

    return Handler


def point_huggingface_hub_at(server: HubServer, monkeypatch: Any) -> None:
    """Make huggingface_hub talk to ``server``, online: this process and its subprocesses.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, so the environment is set (for
    subprocesses) and the matching ``huggingface_hub.constants`` (for this process), as
    huggingface_hub's own tests do.
    """
    from huggingface_hub import constants, file_download

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    if hasattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE"):  # huggingface_hub < 1.0 copies it at import
        monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:  # transformers >= 5 shares one HfApi, whose endpoint is fixed when it is made
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    if hasattr(transformers_hub, "_hf_api"):
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
