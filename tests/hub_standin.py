"""A local stand-in for the Hugging Face Hub: the requests huggingface_hub makes to push a small folder and to
download it again, in memory.

Pushing: ``/api/repos/create``, ``/api/validate-yaml``, ``.../branch/REV``, ``.../preupload/REV`` saying "regular" for
every file (so contents travel base64 inside ``.../commit/REV``). Downloading, as ``snapshot_download`` and
transformers do: ``GET /api/models/REPO[/revision/REV]`` (the commit of a branch or commit id), ``GET
/api/models/REPO/tree/REV[/PATH]`` (the file listing) and ``HEAD``/``GET /REPO/resolve/REV/PATH`` (``X-Repo-Commit``,
``ETag``, ``Content-Length`` and the bytes). Unknown repositories, revisions and files get 404 with the hub's
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``); a private repository answers only a token
of ``tokens``. Every commit is kept, so a commit id serves the files as they were. The ``hub`` fixture of
``conftest.py`` serves one per test.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = "hospital-a/medication-adapter"
TOKEN = "hf_standin"
REPO_PATH = r"(?P<repo>[^/]+(?:/[^/]+)?)"
ROUTES = {
    "create_repo": re.compile(r"/api/repos/create"),
    "validate_yaml": re.compile(r"/api/validate-yaml"),
    "branch": re.compile(rf"/api/models/{REPO_PATH}/branch/(?P<revision>[^/]+)"),
    "preupload": re.compile(rf"/api/models/{REPO_PATH}/preupload/(?P<revision>[^/]+)"),
    "commit": re.compile(rf"/api/models/{REPO_PATH}/commit/(?P<revision>[^/]+)"),
}
DOWNLOADS = {
    "model_info": re.compile(rf"/api/models/{REPO_PATH}(?:/revision/(?P<revision>[^/]+))?"),
    "tree": re.compile(rf"/api/models/{REPO_PATH}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?"),
    "resolve": re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)"),
}


def etag(content: bytes) -> str:
    """The git blob id of ``content``, as the hub gives a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubStandIn(ThreadingHTTPServer):
    """The hub endpoints of create_repo, create_branch, create_commit (regular uploads) and downloads, in memory.

    ``repos[repo_id]`` holds ``private``, ``branches`` (each maps a path in the repository to its bytes), ``refs``
    (each branch's commit id) and ``commits`` (each commit id's files). ``requests`` lists ``(endpoint, authorization
    header)`` in order; ``failures`` maps an endpoint to the HTTP status it answers instead; ``tokens`` read private
    repositories.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.failures: dict[str, int] = {}
        self.tokens = {TOKEN}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def files(self, repo_id: str = REPO, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    def create(self, repo_id: str, *, private: bool = False) -> None:
        """A new repository whose ``main`` holds one empty commit."""
        self.repos[repo_id] = {"private": private, "branches": {"main": {}}, "refs": {}, "commits": {}}
        self.commit(repo_id, {})

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add (or replace) ``files`` on ``branch`` of ``repo_id`` (created where missing) in one commit; its id."""
        if repo_id not in self.repos:
            self.create(repo_id)
        repo = self.repos[repo_id]
        repo["branches"].setdefault(branch, {}).update(files)
        oid = hashlib.sha1(f"{repo_id}:{len(repo['commits'])}".encode()).hexdigest()
        repo["commits"][oid] = dict(repo["branches"][branch])
        repo["refs"][branch] = oid
        return oid


class StandInHandler(BaseHTTPRequestHandler):
    server: HubStandIn

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, content: dict | list, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self, code: str, headers: dict[str, str] | None = None) -> None:
        self.reply(404, {"error": code}, {"X-Error-Code": code, **(headers or {})})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        name, match = next(((n, p.fullmatch(path)) for n, p in DOWNLOADS.items() if p.fullmatch(path)),
                           ("unknown", None))
        self.server.requests.append((name, self.headers.get("Authorization")))
        if name in self.server.failures:
            return self.reply(self.server.failures[name], {"error": "the stand-in fails here"})
        if match is None:
            return self.reply(404, {"error": "not served by the stand-in"})
        arguments = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
        repo = self.server.repos.get(arguments["repo"])
        if repo is None or (repo["private"] and self.headers.get("Authorization") not in
                            {f"Bearer {token}" for token in self.server.tokens}):
            return self.not_found("RepoNotFound")
        revision = arguments.get("revision", "main")
        oid = revision if revision in repo["commits"] else repo["refs"].get(revision)
        if oid is None:
            return self.not_found("RevisionNotFound")
        getattr(self, name)(arguments["repo"], oid, repo["commits"][oid], arguments.get("path", ""))

    do_HEAD = do_GET

    def model_info(self, repo_id: str, oid: str, files: dict[str, bytes], path: str) -> None:
        self.reply(200, {"id": repo_id, "sha": oid, "private": self.server.repos[repo_id]["private"],
                         "siblings": [{"rfilename": name} for name in sorted(files)]})

    def tree(self, repo_id: str, oid: str, files: dict[str, bytes], path: str) -> None:
        prefix = f"{path}/" if path else ""
        names = sorted(name for name in files if name.startswith(prefix))
        if path and not names:
            return self.not_found("EntryNotFound", {"X-Repo-Commit": oid})
        folders = sorted({"/".join(name.split("/")[:depth]) for name in names
                          for depth in range(prefix.count("/") + 1, name.count("/") + 1)})
        self.reply(200, [{"type": "directory", "path": folder, "oid": etag(folder.encode()), "size": 0}
                         for folder in folders]
                   + [{"type": "file", "path": name, "oid": etag(files[name]), "size": len(files[name])}
                      for name in names])

    def resolve(self, repo_id: str, oid: str, files: dict[str, bytes], path: str) -> None:
        if path not in files:
            return self.not_found("EntryNotFound", {"X-Repo-Commit": oid})
        content = files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("ETag", f'"{etag(content)}"')
        self.send_header("X-Repo-Commit", oid)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(content)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlsplit(self.path).path
        name, match = next(((n, p.fullmatch(path)) for n, p in ROUTES.items() if p.fullmatch(path)), ("unknown", None))
        self.server.requests.append((name, self.headers.get("Authorization")))
        if name in self.server.failures:
            return self.reply(self.server.failures[name], {"error": "the stand-in fails here"})
        if match is None:
            return self.reply(404, {"error": "not served by the stand-in"})
        arguments = {key: unquote(value) for key, value in match.groupdict().items()}
        if "repo" in arguments and arguments["repo"] not in self.server.repos:
            return self.reply(404, {"error": "Repository not found"})
        getattr(self, name)(body, **arguments)

    def create_repo(self, body: bytes) -> None:
        request = json.loads(body)
        repo_id = "/".join(filter(None, (request.get("organization"), request["name"])))
        if repo_id in self.server.repos:
            return self.reply(409, {"error": "You already created this model repo",
                                    "url": f"{self.server.url}/{repo_id}"})
        self.server.create(repo_id, private=request.get("visibility") == "private")
        self.reply(200, {"url": f"{self.server.url}/{repo_id}"})

    def validate_yaml(self, body: bytes) -> None:
        self.reply(200, {"errors": [], "warnings": []})

    def branch(self, body: bytes, repo: str, revision: str) -> None:
        branches = self.server.repos[repo]["branches"]
        if revision in branches:
            return self.reply(409, {"error": "Reference already exists"})
        branches[revision] = dict(branches["main"])
        self.server.repos[repo]["refs"][revision] = self.server.repos[repo]["refs"]["main"]
        self.reply(200, {})

    def preupload(self, body: bytes, repo: str, revision: str) -> None:
        files = json.loads(body)["files"]
        self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})

    def commit(self, body: bytes, repo: str, revision: str) -> None:
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        if any(item["key"] not in ("header", "file") for item in items):
            return self.reply(400, {"error": "the stand-in takes regular files only"})
        added = {item["value"]["path"]: base64.b64decode(item["value"]["content"]) for item in items
                 if item["key"] == "file"}
        oid = self.server.commit(repo, added, unquote(revision))
        self.reply(200, {"commitUrl": f"{self.server.url}/{repo}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})


@contextmanager
def serving() -> Iterator[HubStandIn]:
    """A stand-in hub answering on a background thread until the block ends."""
    server = HubStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
