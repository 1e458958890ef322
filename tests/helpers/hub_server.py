"""A small Hugging Face Hub-compatible HTTP server for tests (127.0.0.1, port 0): the routes
huggingface-hub 2.x calls to create a repo, commit files ("regular" upload mode, NDJSON
commits), read repo info and trees, and download files (HEAD/GET resolve with ETag,
X-Repo-Commit, Content-Length and Range). Knobs let tests tamper with a file's bytes or
cut a download short."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    tamper: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead of the real ones
    cut: set[str] = field(default_factory=set)  # paths whose downloads stop half-way
    requests: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # --- helpers ---------------------------------------------------------------------------
    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _resolve(self, repo: Repo, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        return rev if rev in repo.commits else None

    def _record(self) -> str:
        path = urlparse(self.path).path
        self.state.requests.append(f"{self.command} {path}")
        self.state.auth.append(self.headers.get("Authorization"))
        return path

    # --- routes ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        path = self._record()
        body = self._body()
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            doc = json.loads(body or b"{}")
            repo_id = f"{doc.get('organization') or 'user'}/{doc['name']}" if "/" not in doc["name"] else doc["name"]
            if repo_id in self.state.repos:
                return self._json(409, {"error": "You already created this model repo", "url": f"/{repo_id}"})
            self.state.repos[repo_id] = Repo(private=bool(doc.get("private")) or doc.get("visibility") == "private")
            return self._json(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) >= 5 and parts[:2] == ["api", "models"]:
            repo_id = f"{parts[2]}/{parts[3]}"
            repo = self.state.repos.get(repo_id)
            if repo is None:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                   "oid": None} for f in files], "commitOid": None})
            if parts[4] == "commit":
                return self._commit(repo_id, repo, unquote("/".join(parts[5:])) or "main", body)
            if parts[4] == "branch":
                branch = unquote("/".join(parts[5:]))
                head = repo.branches.get("main")
                repo.branches.setdefault(branch, head)
                return self._json(200, {})
        return self._json(404, {"error": f"no route {path}"})

    def _commit(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> None:
        parent = repo.branches.get(branch)
        files = dict(repo.commits.get(parent, {})) if parent else {}
        summary = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value.get("summary", "")
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                files = {p: d for p, d in files.items() if p != value["path"] and not p.startswith(value["path"] + "/")}
            elif item["key"] == "lfsFile":
                return self._json(400, {"error": "this test server only takes regular uploads"})
        commit = hashlib.sha1(f"{parent}:{summary}:{sorted((p, git_blob_id(d)) for p, d in files.items())}"
                              .encode()).hexdigest()
        repo.commits[commit] = files
        repo.branches[branch] = commit
        return self._json(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{commit}",
                                "commitOid": commit, "pullRequestUrl": None})

    def do_GET(self) -> None:  # noqa: N802
        self._get()

    def do_HEAD(self) -> None:  # noqa: N802
        self._get()

    def _get(self) -> None:
        path = self._record()
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id = f"{parts[2]}/{parts[3]}"
            repo = self.state.repos.get(repo_id)
            if repo is None:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            rest = parts[4:]
            if not rest or rest[0] == "revision":
                rev = unquote("/".join(rest[1:])) if rest else "main"
                commit = self._resolve(repo, rev)
                if commit is None:
                    return self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                files = repo.commits[commit]
                return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.private,
                                        "siblings": [self._entry(p, d, full=True) for p, d in sorted(files.items())],
                                        "tags": [], "downloads": 0, "likes": 0})
            if rest[0] == "tree":
                commit = self._resolve(repo, rest[1] if len(rest) > 1 else "main")
                if commit is None:
                    return self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                files = repo.commits[commit]
                return self._json(200, [{"type": "file", **self._entry(p, d)} for p, d in sorted(files.items())])
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.state.repos.get(f"{parts[0]}/{parts[1]}")
            commit = self._resolve(repo, parts[3]) if repo else None
            name = unquote("/".join(parts[4:]))
            if commit is None or name not in repo.commits[commit]:
                return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return self._file(commit, name, repo.commits[commit][name])
        return self._json(404, {"error": f"no route {path}"})

    def _entry(self, path: str, data: bytes, full: bool = False) -> dict:
        sha = hashlib.sha256(data).hexdigest()
        entry = {"path": path, "oid": git_blob_id(data), "size": len(data), "lfs": {"oid": sha, "sha256": sha,
                                                                                 "size": len(data)}}
        if full:
            entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data),
                     "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134}}
        return entry

    def _file(self, commit: str, name: str, data: bytes) -> None:
        etag = hashlib.sha256(data).hexdigest()
        data = self.state.tamper.get(name, data)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"',
                   "X-Linked-Size": str(len(data)), "Accept-Ranges": "bytes"}
        code = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if self.command == "GET" and name in self.state.cut:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(code, body, headers, ctype="application/octet-stream")


class HubServer:
    """`with HubServer() as hub: hub.url` - a fresh in-memory Hub on 127.0.0.1."""

    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
