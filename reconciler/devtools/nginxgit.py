"""A production-shaped git smart-HTTP server for the fleet simulator and the head beacon's tests:
Debian's nginx in front of fcgiwrap running ``git http-backend`` (install them with ``make
bench-deps``), on 127.0.0.1, with ``/ns/<namespace>/<repo>.git`` served under ``GIT_NAMESPACE`` as
reconciler.devtools.githttp does, and ``/<repo>.git.head`` (the head beacon the shipped
post-receive hook writes, ``install_beacon_hook``) as nginx serves it in production
(packaging/git-server/nginx-head-beacon.conf).

What it reports is counted at the server: ``bytes_sent`` from nginx's access log (``$bytes_sent``,
headers included) and ``cpu_seconds``, the CPU of nginx, fcgiwrap and every backend process.
fcgiwrap does not wait for its CGI children, so their CPU never reaches its rusage; each request
therefore runs the backend under a small bash script that appends its child's user and system
time to a log. The script's own start (a few ms) is not counted but does add to latency."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

BACKEND = "/usr/lib/git-core/git-http-backend"
BEACON_HOOK = Path(__file__).resolve().parents[2] / "packaging" / "git-server" / "post-receive"
_WRAPPER = """#!/bin/bash
# The backend's CPU, to the millisecond (bash's time reads its rusage), appended to the log.
TIMEFORMAT='%3U %3S'
{{ time {backend} 2>&4 ; }} 4>&2 2>>{log}
"""
_CONFIG = r"""daemon off;
{user}
worker_processes 1;
worker_rlimit_nofile 32768;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 24000; }}
http {{
  log_format counted '$bytes_sent';
  access_log {run}/access.log counted buffer=64k flush=1s;
  client_body_temp_path {run}/body; fastcgi_temp_path {run}/fastcgi; proxy_temp_path {run}/proxy;
  uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
  client_max_body_size 0;
  fastcgi_buffering off;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    # The head beacon, as packaging/git-server/nginx-head-beacon.conf serves it (logged here: counted).
    location ~ \.git\.head$ {{
      root {root};
      default_type text/plain;
      etag on;
      add_header Cache-Control "no-cache" always;
      try_files $uri =404;
    }}
    location ~ ^/ns/([^/]+)(/.*)$ {{
      fastcgi_param GIT_NAMESPACE $1;
      fastcgi_param PATH_INFO $2;
      # Only the namespace's refs, as reconciler.devtools.githttp.namespace_only_config says why.
      fastcgi_param GIT_CONFIG_COUNT 2;
      fastcgi_param GIT_CONFIG_KEY_0 transfer.hideRefs;
      fastcgi_param GIT_CONFIG_VALUE_0 ^refs/;
      fastcgi_param GIT_CONFIG_KEY_1 transfer.hideRefs;
      fastcgi_param GIT_CONFIG_VALUE_1 !^refs/namespaces/$1/;
      include {run}/git_params;
    }}
    location / {{
      fastcgi_param PATH_INFO $uri;
      include {run}/git_params;
    }}
  }}
}}
"""
_PARAMS = """fastcgi_pass unix:{run}/fcgiwrap.sock;
fastcgi_param SCRIPT_FILENAME {run}/backend.sh;
fastcgi_param GIT_PROJECT_ROOT {root};
fastcgi_param GIT_HTTP_EXPORT_ALL 1;
# Per push, two processes fewer: no gc --auto (the operator runs git maintenance on a schedule), and
# the connectivity check's "alternate refs" (the quarantine's alternate is the repository itself,
# whose visible refs --all covers) are not listed by a for-each-ref of every ref of the repository.
fastcgi_param GIT_CONFIG_PARAMETERS "'receive.autogc'='false' 'core.alternaterefscommand'='true'";
fastcgi_param GIT_PROTOCOL $http_git_protocol;
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
"""
NAME = "nginx + fcgiwrap + git-http-backend"


def available() -> bool:
    return all(shutil.which(tool, path="/usr/sbin:/usr/bin") for tool in ("nginx", "fcgiwrap")) \
        and Path(BACKEND).exists()


class NginxGitServer:
    def __init__(self, root: Path, run: Path, workers: int = 8):
        self.root, self.run, self.workers = Path(root), Path(run), workers
        self.port = _free_port()
        self._processes: list[subprocess.Popen] = []

    def url(self, repo_name: str, namespace: str | None = None) -> str:
        prefix = f"/ns/{namespace}" if namespace else ""
        return f"http://127.0.0.1:{self.port}{prefix}/{repo_name}.git"

    def beacon_url(self, repo_name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo_name}.git.head"

    def __enter__(self) -> NginxGitServer:
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "times.log").touch()
        wrapper = self.run / "backend.sh"
        wrapper.write_text(_WRAPPER.format(backend=BACKEND, log=self.run / "times.log"))
        wrapper.chmod(0o755)
        (self.run / "git_params").write_text(_PARAMS.format(run=self.run, root=self.root))
        (self.run / "nginx.conf").write_text(_CONFIG.format(
            run=self.run, root=self.root, port=self.port, user="user root;" if os.getuid() == 0 else ""))
        self._processes.append(subprocess.Popen(
            ["fcgiwrap", "-c", str(self.workers), "-s", f"unix:{self.run}/fcgiwrap.sock"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._processes.append(subprocess.Popen(
            ["nginx", "-p", str(self.run), "-c", str(self.run / "nginx.conf")], stderr=subprocess.DEVNULL,
            start_new_session=True))
        _wait_for_port(self.port)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self._processes):
            os.killpg(process.pid, signal.SIGTERM)  # the group: fcgiwrap's prefork workers too
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()

    @property
    def bytes_sent(self) -> int:
        time.sleep(1.2)  # the access log is flushed every second
        with open(self.run / "access.log") as log:
            return sum(int(line) for line in log if line.strip().isdigit())

    @property
    def cpu_seconds(self) -> float:
        """nginx's and fcgiwrap's own CPU (their processes and reaped children) plus every backend's."""
        own = sum(_process_cpu(process.pid) for process in self._processes)
        for child in _children(self._processes):
            own += _process_cpu(child)
        return own + _backend_cpu(self.run / "times.log")


def install_beacon_hook(bare: Path, branch: str = "main") -> None:
    """The shipped post-receive hook in ``bare``, and its beacon written for the branch as it is
    (the hook writes it on the next push that moves the branch)."""
    hook = Path(bare) / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    shutil.copyfile(BEACON_HOOK, hook)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    head = subprocess.run(["git", "rev-parse", f"refs/heads/{branch}"], cwd=bare, capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run([str(hook)], cwd=bare, input=f"{'0' * len(head)} {head} refs/heads/{branch}\n", text=True,
                   env={**os.environ, "GIT_DIR": str(bare)}, check=True)


def _backend_cpu(log: Path) -> float:
    """Sum of the logged ``user system`` seconds."""
    total = 0.0
    for line in log.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and all(field.replace(".", "", 1).isdigit() for field in fields):
            total += float(fields[0]) + float(fields[1])
    return total


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def _children(processes: list[subprocess.Popen]) -> list[int]:
    """The nginx worker and fcgiwrap's prefork workers (the masters' direct children)."""
    parents = {process.pid for process in processes}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in parents:
                found.append(int(entry.name))
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} within {timeout:g}s")
