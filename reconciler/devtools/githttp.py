"""A real git smart-HTTP server for tests, benchmarks and the demo: every bare repository under a
root directory, served by running ``git http-backend`` as a CGI program for each request, with
pushes and partial clones (``--filter``) enabled; and the head beacons beside them
(``<repo>.git.head``, as the shipped post-receive hook writes them) as static files with an ETag,
answered 304 when it matches, as nginx serves them. Standard library and the git command only."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

DEMO_IDENTITY = {
    "GIT_AUTHOR_NAME": "reconciler demo",
    "GIT_AUTHOR_EMAIL": "demo@localhost",
    "GIT_COMMITTER_NAME": "reconciler demo",
    "GIT_COMMITTER_EMAIL": "demo@localhost",
}
_COPY_CHUNK = 64 * 1024
_NAMESPACE_PATH = "ns"  # /ns/<namespace>/<repo>.git: the repository as one namespace sees it


def run_git(cwd: Path | None, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run one git command with the demo identity; its stdout, stripped. Raises on failure with
    git's own message, since callers here are tests and demos that should stop loudly."""
    full_env = {**os.environ, **DEMO_IDENTITY, **(env or {})}
    done = subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def init_bare_repo(root: Path, name: str, source_dir: Path | None = None) -> Path:
    """Create ``root/<name>.git`` (branch ``main``); with ``source_dir``, its contents become the
    first commit on ``main``. The commit is written straight into the bare repository through a
    private index, which is what a push of a fresh clone would leave there."""
    bare = (root / f"{name}.git").resolve()
    root.mkdir(parents=True, exist_ok=True)
    run_git(None, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    if source_dir is not None:
        with tempfile.TemporaryDirectory() as scratch:
            env = {"GIT_DIR": str(bare), "GIT_WORK_TREE": str(source_dir.resolve()),
                   "GIT_INDEX_FILE": str(Path(scratch) / "index")}
            run_git(source_dir, "add", "--all", ".", env=env)
            tree = run_git(source_dir, "write-tree", env=env)
            commit = run_git(source_dir, "commit-tree", tree, "-m", "Initial fleet", env=env)
            run_git(source_dir, "update-ref", "refs/heads/main", commit, env=env)
    return bare


def commit_and_push(
    workdir: Path, files: Mapping[str, str | bytes | None], message: str, force: bool = False
) -> str:
    """Write (or, for None, delete) ``files`` in a clone, commit them all and push the current
    branch to origin (``force`` to rewrite its history). Returns the new commit's sha."""
    for rel, content in files.items():
        path = workdir / rel
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    run_git(workdir, "add", "--all")
    run_git(workdir, "commit", "--quiet", "--allow-empty", "-m", message)
    run_git(workdir, "push", "--quiet", *(["--force"] if force else []), "origin", "HEAD")
    return run_git(workdir, "rev-parse", "HEAD")


def namespace_only_config(namespace: str, first_key: int = 0) -> dict[str, str]:
    """``GIT_CONFIG_*`` that keep a namespace's view to its own refs: receive-pack would otherwise
    tell a pusher of every ref outside the namespace as a ``.have`` line, one per distinct commit,
    and a push into a shard of the fleet would again cost the whole fleet's refs."""
    hidden = ("^refs/", f"!^refs/namespaces/{namespace}/")  # all but its own, by full name
    config = {"GIT_CONFIG_COUNT": str(first_key + len(hidden))}
    for offset, pattern in enumerate(hidden):
        config[f"GIT_CONFIG_KEY_{first_key + offset}"] = "transfer.hideRefs"
        config[f"GIT_CONFIG_VALUE_{first_key + offset}"] = pattern
    return config


class GitHttpServer:
    """``with GitHttpServer(root) as server: git clone server.url("fleet")``. ``allow_filter=False``
    is a server that refuses partial clones, as some still do; ``requests`` (git's, each a
    backend process) and ``bytes_sent`` (their response bodies) count what clients asked for and
    fetched so far; a head beacon's request runs no backend and is not counted."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, allow_filter: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._httpd = ThreadingHTTPServer((host, port), _CgiHandler)
        # Request threads are joined on stop, so no request outlives the server.
        self._httpd.daemon_threads = False
        self._httpd.project_root = self.root  # type: ignore[attr-defined]
        self._httpd.allow_filter = allow_filter  # type: ignore[attr-defined]
        self._httpd.traffic = _Traffic()  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> int:
        return self._httpd.traffic.requests  # type: ignore[attr-defined]

    @property
    def bytes_sent(self) -> int:
        return self._httpd.traffic.bytes_sent  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, repo_name: str, namespace: str | None = None) -> str:
        """The repository's URL; with ``namespace``, a view of it holding only that namespace's
        refs (``/ns/<namespace>/<repo>.git``, served with ``GIT_NAMESPACE``), so a push there is
        told of those refs alone, not of every ref in the repository."""
        host = self._httpd.server_address[0]
        prefix = f"/{_NAMESPACE_PATH}/{namespace}" if namespace else ""
        return f"http://{host}:{self.port}{prefix}/{repo_name}.git"

    def beacon_url(self, repo_name: str) -> str:
        return f"{self.url(repo_name)}.head"

    def start(self) -> GitHttpServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="git-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _CgiHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a client that keeps a socket open cannot hold a
    # request thread (and with it stop()) hostage.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        if self.path.endswith(".git.head"):
            self._serve_beacon()
        else:
            self._run_backend()

    def do_POST(self) -> None:
        self._run_backend()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve_beacon(self) -> None:
        """The file under the project root, its ETag from its mtime and size as nginx makes it."""
        root = self.server.project_root.resolve()  # type: ignore[attr-defined]
        path = (root / self.path.lstrip("/")).resolve()
        try:
            if not path.is_relative_to(root):
                raise FileNotFoundError(self.path)
            status, data = path.stat(), path.read_bytes()
        except OSError:
            self.send_error(404)
            return
        etag = f'"{status.st_mtime_ns:x}-{status.st_size:x}"'
        matched = self.headers.get("If-None-Match") == etag
        self.send_response(304 if matched else 200)
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", "no-cache")
        if not matched:
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not matched:
            self.wfile.write(data)

    def _run_backend(self) -> None:
        # The body is spooled to a file first so the backend's stdin never blocks on our reading
        # its stdout, whatever order it does its I/O in.
        with tempfile.TemporaryFile() as body, tempfile.TemporaryFile() as errors:
            length = self._spool_body(body)
            body.seek(0)
            backend = subprocess.Popen(
                ["git", "http-backend"], stdin=body, stdout=subprocess.PIPE, stderr=errors,
                env=self._cgi_environment(length),
            )
            assert backend.stdout is not None
            with backend.stdout:
                self._relay_response(backend.stdout)
            if backend.wait() != 0:
                errors.seek(0)
                log.warning("git http-backend failed for %s: %s", self.path, errors.read().decode(errors="replace"))

    def _spool_body(self, sink: IO[bytes]) -> int:
        """Copy the request body to ``sink``, undoing chunked transfer encoding (git uses it for
        bodies over http.postBuffer). Content-Encoding (gzip) is left for the backend."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                total += self._copy(size, sink)
                self.rfile.readline()  # the CRLF closing each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return total
        return self._copy(int(self.headers.get("Content-Length") or 0), sink)

    def _copy(self, size: int, sink: IO[bytes]) -> int:
        remaining = size
        while remaining:
            data = self.rfile.read(min(remaining, _COPY_CHUNK))
            if not data:
                raise ConnectionError("request body ended early")
            sink.write(data)
            remaining -= len(data)
        return size

    def _cgi_environment(self, content_length: int) -> dict[str, str]:
        path, _, query = self.path.partition("?")
        namespace = None
        if path.startswith(f"/{_NAMESPACE_PATH}/"):
            namespace, _, rest = path.removeprefix(f"/{_NAMESPACE_PATH}/").partition("/")
            path = "/" + rest
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.server.project_root),  # type: ignore[attr-defined]
            "GIT_HTTP_EXPORT_ALL": "1",
            # Anonymous pushes are refused unless http.receivepack is true; set it for every repo.
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            # Partial clones (--filter=blob:none) need the server's consent, off by default.
            "GIT_CONFIG_KEY_1": "uploadpack.allowFilter",
            "GIT_CONFIG_VALUE_1": "true" if self.server.allow_filter else "false",  # type: ignore[attr-defined]
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(content_length),
            "REMOTE_ADDR": self.client_address[0],
        }
        for name, value in self.headers.items():
            if name.lower() not in ("content-type", "content-length", "transfer-encoding"):
                env["HTTP_" + name.upper().replace("-", "_")] = value
        if namespace:
            env["GIT_NAMESPACE"] = namespace
            env.update(namespace_only_config(namespace, first_key=int(env["GIT_CONFIG_COUNT"])))
        if "Git-Protocol" in self.headers:
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        return env

    def _relay_response(self, stdout: IO[bytes]) -> None:
        status, headers = 200, []
        for raw in iter(stdout.readline, b""):
            line = raw.rstrip(b"\r\n").decode("latin-1")
            if not line:
                break
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value.strip()))
        else:
            status = 502  # the backend ended before finishing its headers
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        sent = 0
        while chunk := stdout.read(_COPY_CHUNK):
            self.wfile.write(chunk)
            sent += len(chunk)
        self.server.traffic.count(sent)  # type: ignore[attr-defined]


class _Traffic:
    """Totals that request threads add to."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()

    def count(self, sent: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += sent
