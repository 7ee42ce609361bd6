"""A local stand-in for the Hugging Face Hub: the requests huggingface_hub makes to push a small folder, in memory.

The stand-in (a threaded ``http.server``) answers just the requests huggingface_hub makes to create a repository, a
branch and one commit of small files (``/api/repos/create``, ``/api/validate-yaml``, ``.../preupload/REV`` saying
"regular" for every file, so contents travel base64 inside ``.../commit/REV``) and records what arrives. The ``hub``
fixture of ``conftest.py`` serves one per test.
"""
from __future__ import annotations

import base64
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = "hospital-a/medication-adapter"
REPO_PATH = r"(?P<repo>[^/]+(?:/[^/]+)?)"
ROUTES = {
    "create_repo": re.compile(r"/api/repos/create"),
    "validate_yaml": re.compile(r"/api/validate-yaml"),
    "branch": re.compile(rf"/api/models/{REPO_PATH}/branch/(?P<revision>[^/]+)"),
    "preupload": re.compile(rf"/api/models/{REPO_PATH}/preupload/(?P<revision>[^/]+)"),
    "commit": re.compile(rf"/api/models/{REPO_PATH}/commit/(?P<revision>[^/]+)"),
}


class HubStandIn(ThreadingHTTPServer):
    """The hub endpoints of create_repo, create_branch and create_commit (regular uploads), in memory.

    ``repos[repo_id]`` holds ``private`` and ``branches``: each branch maps a path in the repository to its bytes.
    ``requests`` lists ``(endpoint, authorization header)`` in order; ``failures`` maps an endpoint to the HTTP
    status it answers instead.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.failures: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def files(self, repo_id: str = REPO, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]


class StandInHandler(BaseHTTPRequestHandler):
    server: HubStandIn

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, content: dict) -> None:
        body = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append(("unknown", self.headers.get("Authorization")))
        self.reply(404, {"error": "not served by the stand-in"})

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
        self.server.repos[repo_id] = {"private": request.get("visibility") == "private", "branches": {"main": {}}}
        self.reply(200, {"url": f"{self.server.url}/{repo_id}"})

    def validate_yaml(self, body: bytes) -> None:
        self.reply(200, {"errors": [], "warnings": []})

    def branch(self, body: bytes, repo: str, revision: str) -> None:
        branches = self.server.repos[repo]["branches"]
        if revision in branches:
            return self.reply(409, {"error": "Reference already exists"})
        branches[revision] = dict(branches["main"])
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
        self.server.repos[repo]["branches"][revision].update(added)
        oid = f"{len(self.server.requests):040x}"
        self.reply(200, {"commitUrl": f"{self.server.url}/{repo}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})
