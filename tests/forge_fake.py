"""A fake forge: a real HTTP server on 127.0.0.1 speaking the commit-status API of GitHub,
Gitea/Forgejo or GitLab. It is strict where the real forges are documented to be (routes,
authentication scheme, state names, description limits, GitLab's state transitions, GitHub's 1000
statuses per commit and context) and refuses anything else our client must not send (missing
headers, unknown fields or query parameters), so a test passing here means the requests have the
documented shape. Listings paginate the way each forge does and order entries the way it does:
GitHub newest first, Gitea by creation time in whole seconds (ties oldest first), GitLab oldest
first and only the newest per name unless ``all`` is asked. Each listed status carries the times
its forge documents, in that forge's format (GitHub ``created_at``/``updated_at`` in UTC whole
seconds, Gitea the same in the server's zone with its offset, GitLab ``created_at``/``started_at``/
``finished_at`` with milliseconds, a job updated in place keeping its ``created_at``), read from
``clock``, which tests may set.

Tests can queue answers that bypass the API (``answer_next``: throttling, outages) and read the
request log."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit

API_PREFIX = {"github": "", "gitea": "/api/v1", "forgejo": "/api/v1", "gitlab": "/api/v4"}
STATES = {
    "github": {"error", "failure", "pending", "success"},
    "gitea": {"pending", "success", "error", "failure", "warning"},
    "forgejo": {"pending", "success", "error", "failure", "warning"},
    "gitlab": {"pending", "running", "success", "failed", "canceled", "skipped"},
}
PAGE_SIZE = {"github": (30, 100), "gitea": (30, 50), "forgejo": (30, 50), "gitlab": (20, 100)}  # default, max
GITHUB_DESCRIPTION_LIMIT = 140
GITLAB_FIELD_LIMIT = 255
SHA = re.compile(r"[0-9a-f]{40}")
GITEA_ZONE = timezone(timedelta(hours=2))  # Gitea renders times in the server's zone
GITLAB_FINISHED = {"success", "failed", "canceled", "skipped"}


@dataclass
class Stored:
    id: int
    context: str
    state: str
    description: str | None
    target_url: str | None
    created: float  # seconds since the epoch; GitHub and Gitea keep whole seconds
    started: float | None = None  # GitLab: when the job went running
    finished: float | None = None  # GitLab: when the job finished


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query
    body: object


class Refused(Exception):
    def __init__(self, code: int, body: object):
        super().__init__(code)
        self.code, self.body = code, body


class FakeForge(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing outlives the test

    def __init__(self, kind: str, token: str, repository: str = "fleet-org/fleet", max_page_size: int | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kind, self.token, self.repository = kind, token, repository
        self.max_page_size = max_page_size or PAGE_SIZE[kind][1]
        self.max_per_context = 1000  # GitHub's documented limit per commit and context
        self.link_origin: str | None = None  # where Link headers point; None: this server
        self.statuses: dict[str, list[Stored]] = defaultdict(list)
        self.log: list[Seen] = []
        self.clock: Callable[[], float] = time.time
        self._scripted: deque[tuple[int, dict[str, str], object]] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.origin + API_PREFIX[self.kind]

    def answer_next(self, code: int, headers: dict[str, str] | None = None, body: object = None,
                    times: int = 1) -> None:
        for _ in range(times):
            self._scripted.append((code, headers or {}, body if body is not None else {"message": "scripted"}))

    def seed(self, sha: str, context: str, state: str, description: str = "", target_url: str | None = None) -> None:
        with self._lock:
            self.statuses[sha].append(Stored(next(self._ids), context, state, description, target_url, self.clock()))

    def shown(self, sha: str) -> dict[str, Stored]:
        """The newest status per context, as the forge's UI shows it."""
        newest: dict[str, Stored] = {}
        for status in self.statuses[sha]:
            newest[status.context] = status
        return newest

    def listing(self, sha: str) -> list[dict[str, object]]:
        """Every status of the commit as the forge lists it, on one page."""
        return [self._render(status) for status in self._ordered(sha, all_statuses=True)]

    def posts(self) -> list[Seen]:
        return [seen for seen in self.log if seen.method == "POST"]

    def gets(self) -> list[Seen]:
        return [seen for seen in self.log if seen.method == "GET"]

    # --- the API ----------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
               ) -> tuple[int, dict[str, str], object]:
        with self._lock:
            body = json.loads(raw_body) if raw_body else None
            self.log.append(Seen(method, raw_path, body))
            if self._scripted:
                return self._scripted.popleft()
            try:
                return self._route(method, raw_path, headers, body)
            except Refused as refusal:
                return refusal.code, {}, refusal.body

    def _route(self, method: str, raw_path: str, headers: dict[str, str], body: object
               ) -> tuple[int, dict[str, str], object]:
        self._authenticate(headers)
        url = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if not url.path.startswith(API_PREFIX[self.kind] + "/"):
            raise Refused(404, {"message": "Not Found"})
        path = url.path.removeprefix(API_PREFIX[self.kind])
        gitlab = self.kind == "gitlab"
        repo = r"/projects/(?P<repo>[^/]+)" if gitlab else r"/repos/(?P<repo>[^/]+/[^/]+)"
        commits = "/repository/commits" if gitlab else "/commits"
        if method == "POST" and (match := re.fullmatch(repo + r"/statuses/(?P<sha>[^/]+)", path)):
            self._check_target(match["repo"], match["sha"])
            if query:
                raise Refused(400, {"message": f"fake: unexpected query {url.query}"})
            if headers.get("content-type", "").split(";")[0] != "application/json":
                raise Refused(415, {"message": "fake: the body must be JSON"})
            return 201, {}, self._render(self._create(match["sha"], body))
        if method == "GET" and (match := re.fullmatch(repo + commits + r"/(?P<sha>[^/]+)/statuses", path)):
            self._check_target(match["repo"], match["sha"])
            return self._list(url.path, match["sha"], query)
        raise Refused(404, {"message": "Not Found"})

    def _authenticate(self, headers: dict[str, str]) -> None:
        if self.kind == "github":
            for name, value in (("accept", "application/vnd.github+json"), ("x-github-api-version", "2022-11-28")):
                if headers.get(name) != value:
                    raise Refused(400, {"message": f"fake: header {name} must be {value}"})
            good = headers.get("authorization") == f"Bearer {self.token}"
            refusal = {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        elif self.kind == "gitlab":
            good = headers.get("private-token") == self.token
            refusal = {"message": "401 Unauthorized"}
        else:
            good = headers.get("authorization") == f"token {self.token}"
            refusal = {"message": "user does not exist [uid: 0, name: ]"}
        if not good:
            raise Refused(401, refusal)

    def _check_target(self, raw_repo: str, sha: str) -> None:
        # GitLab wants the project path URL-encoded into one segment; the others owner/repo.
        expected = quote(self.repository, safe="") if self.kind == "gitlab" else self.repository
        if raw_repo != expected:
            raise Refused(404, {"message": "404 Project Not Found" if self.kind == "gitlab" else "Not Found"})
        if not SHA.fullmatch(sha):
            if self.kind == "github":
                raise Refused(422, {"message": f"No commit found for SHA: {sha}"})
            raise Refused(404, {"message": "404 Commit Not Found" if self.kind == "gitlab" else "Not Found"})

    def _create(self, sha: str, body: object) -> Stored:
        if not isinstance(body, dict):
            raise Refused(400, {"message": "fake: the body must be a JSON object"})
        name_field = "name" if self.kind == "gitlab" else "context"
        allowed = {"state", name_field, "description", "target_url"}
        if unknown := set(body) - allowed:
            raise Refused(422, {"message": f"fake: unexpected fields {sorted(unknown)}"})
        state, context = body.get("state"), body.get(name_field)
        if state not in STATES[self.kind]:
            raise Refused(400 if self.kind == "gitlab" else 422, {"message": f"state is invalid: {state!r}"})
        if not isinstance(context, str) or not context:
            raise Refused(422, {"message": f"fake: {name_field} must be a non-empty string"})
        for name in ("description", "target_url"):
            if name in body and not isinstance(body[name], str):
                raise Refused(422, {"message": f"fake: {name} must be a string"})
        description, target_url = body.get("description"), body.get("target_url")
        if self.kind == "github":
            return self._create_github(sha, context, state, description, target_url)
        if self.kind == "gitlab":
            return self._create_gitlab(sha, context, state, description, target_url)
        # Gitea trims the text fields before it stores them.
        status = Stored(next(self._ids), context.strip(), state, (description or "").strip(), (target_url or "").strip(),
                        self.clock())
        self.statuses[sha].append(status)
        return status

    def _create_github(self, sha: str, context: str, state: str, description: str | None,
                       target_url: str | None) -> Stored:
        if description is not None and len(description) > GITHUB_DESCRIPTION_LIMIT:
            raise Refused(422, {"message": "Validation Failed", "errors": [{
                "resource": "Status", "code": "custom", "field": "description",
                "message": f"description is too long (maximum is {GITHUB_DESCRIPTION_LIMIT} characters)"}]})
        if sum(1 for s in self.statuses[sha] if s.context.lower() == context.lower()) >= self.max_per_context:
            raise Refused(422, {"message": "Validation Failed", "errors": [{
                "resource": "Status", "code": "custom",
                "message": "This SHA and context has reached the maximum number of statuses."}]})
        status = Stored(next(self._ids), context, state, description, target_url, self.clock())
        self.statuses[sha].append(status)
        return status

    def _create_gitlab(self, sha: str, name: str, state: str, description: str | None,
                       target_url: str | None) -> Stored:
        for field_name, value in (("description", description), ("target_url", target_url)):
            if value is not None and len(value) > GITLAB_FIELD_LIMIT:
                raise Refused(400, {"message": {field_name: [f"is too long (maximum is {GITLAB_FIELD_LIMIT} characters)"]}})
        # GitLab updates the name's pending or running job, else starts a new one; a job moves
        # created -> pending -> running -> finished, never back and never onto itself.
        job = next((s for s in reversed(self.statuses[sha]) if s.context == name and s.state in ("pending", "running")),
                   None)
        if job is not None and (state == job.state or (job.state == "running" and state == "pending")):
            event = "enqueue" if state == "pending" else "run"
            raise Refused(400, {"message": f"Cannot transition status via :{event} from :{job.state} "
                                           f"(Reason(s): Status cannot transition via \"{event}\")"})
        now = self.clock()
        if job is None:
            job = Stored(next(self._ids), name, state, description, target_url, now)
            self.statuses[sha].append(job)
        job.state, job.description, job.target_url = state, description, target_url
        if state == "running":
            job.started = now
        if state in GITLAB_FINISHED:
            job.finished = now
        return job

    def _list(self, path: str, sha: str, query: dict[str, str]) -> tuple[int, dict[str, str], object]:
        size_param = "limit" if self.kind in ("gitea", "forgejo") else "per_page"
        allowed = {size_param, "page"} | ({"all"} if self.kind == "gitlab" else set())
        if unknown := set(query) - allowed:
            raise Refused(400, {"message": f"fake: unexpected query parameters {sorted(unknown)}"})
        default_size, _ = PAGE_SIZE[self.kind]
        size = min(int(query.get(size_param, default_size)), self.max_page_size)
        page = int(query.get("page", 1))
        entries = self._ordered(sha, all_statuses=query.get("all") == "true")
        pages = max(1, -(-len(entries) // size))
        chunk = entries[(page - 1) * size: page * size]
        headers = self._page_headers(path, size_param, size, page, pages, len(entries))
        return 200, headers, [self._render(status) for status in chunk]

    def _ordered(self, sha: str, all_statuses: bool) -> list[Stored]:
        statuses = self.statuses[sha]
        if self.kind == "github":
            return sorted(statuses, key=lambda s: -s.id)
        if self.kind == "gitlab":
            return sorted(statuses if all_statuses else self.shown(sha).values(), key=lambda s: s.id)
        return sorted(statuses, key=lambda s: (-int(s.created), s.id))

    def _page_headers(self, path: str, size_param: str, size: int, page: int, pages: int, total: int
                      ) -> dict[str, str]:
        def link(number: int) -> str:
            return f"{self.link_origin or self.origin}{path}?{urlencode({size_param: size, 'page': number})}"

        rels = ([f'<{link(page + 1)}>; rel="next"', f'<{link(pages)}>; rel="last"'] if page < pages else [])
        headers = {"Link": ", ".join(rels)} if rels else {}
        if self.kind in ("gitea", "forgejo"):
            headers["X-Total-Count"] = str(total)
        if self.kind == "gitlab":
            headers.update({"X-Page": str(page), "X-Per-Page": str(size), "X-Total": str(total),
                            "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else ""})
        return headers

    def _render(self, status: Stored) -> dict[str, object]:
        if self.kind == "gitlab":
            times = {f"{name}_at": _gitlab_time(at) for name, at in
                     (("created", status.created), ("started", status.started), ("finished", status.finished))}
            return {"id": status.id, "status": status.state, "name": status.context, "description": status.description,
                    "target_url": status.target_url, **times, "allow_failure": False}
        if self.kind == "github":
            created = datetime.fromtimestamp(int(status.created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            state_field = "state"
        else:
            created = datetime.fromtimestamp(int(status.created), GITEA_ZONE).isoformat()
            state_field = "status"
        return {"id": status.id, state_field: status.state, "context": status.context,
                "description": status.description, "target_url": status.target_url,
                "created_at": created, "updated_at": created}


def _gitlab_time(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    server: FakeForge

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        raw_body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        code, extra, body = self.server.answer(self.command, self.path, headers, raw_body)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(kind: str, token: str, **options: object) -> Iterator[FakeForge]:
    """Run a fake forge for the duration of a fixture."""
    forge = FakeForge(kind, token, **options)
    thread = threading.Thread(target=forge.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield forge
    finally:
        forge.shutdown()
        forge.server_close()
        thread.join()
