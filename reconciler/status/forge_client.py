"""The HTTP client of the forges' commit-status APIs (GitHub, Gitea/Forgejo, GitLab): posts the
statuses reconciler.status.forge builds and reads them back for reconciler.status.forge_gate.

``publish`` reads what the forge shows for the commit first (every page) and posts only contexts
whose state, description or link differ: one listing plus one request per changed context, and
GitHub's limit of 1000 statuses per commit and context is approached only by 1000 real changes.

State names per forge (ours -> GitHub / Gitea / Forgejo -> GitLab):
  pending      pending   pending
  progressing  pending   running
  success      success   success
  failure      failure   failed
  aborted      failure   canceled   (the rollout refused the change: a failure of the change,
                                     not of the agent; GitLab has a word for a stopped job)
  error        error     failed     (the agent could not do its work)

When the description's pairs' state agrees with the forge's state, ``read_statuses`` returns it;
otherwise it returns the forge's state in our names, which is lossy where two of ours share a
forge name (gates only need healthy / failed / not yet, which survive). Each status read back
carries the forge's own instant of its newest change (``ShownStatus.at``), so a reader trusts no
clock but the forge's.

The token is read from the environment variable the config names. It goes into request headers
and nowhere else: error messages carry the status code and the forge's message with the token cut
out, and HTTP errors are not chained (their request object holds the headers)."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import get_args
from urllib.parse import quote, unquote, urlsplit

import httpx

from reconciler import reasons
from reconciler.errors import Stalled, Transient
from reconciler.retrying import exponential
from reconciler.settings import ForgeConfig
from reconciler.status.forge import (
    CONTEXT_PREFIX,
    CommitStatus,
    ShownStatus,
    fit_description,
    split_description,
    truncate,
)
from reconciler.status.record import State

log = logging.getLogger(__name__)

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_OUR_STATES: Mapping[str, State] = {state: state for state in get_args(State)}


@dataclass(frozen=True)
class _Dialect:
    """What differs between the forges' commit-status APIs."""

    states: Mapping[State, str]  # ours -> the forge's
    read_back: Mapping[str, State]  # the forge's -> ours
    description_limit: int  # GitHub refuses > 140 (422); GitLab > 255 (400); Gitea stores TEXT, 255 reads well
    name_field: str  # the field carrying the context, in requests and listings
    state_field: str  # the field carrying the state in listings
    page_size: tuple[str, int]  # query parameter and the largest page the forge serves
    next_by_link: bool  # next page from the Link header (else GitLab's X-Next-Page)


_GITHUB_STATES: Mapping[State, str] = {
    "pending": "pending", "progressing": "pending", "success": "success",
    "failure": "failure", "aborted": "failure", "error": "error",
}
_GITHUB_READ_BACK: Mapping[str, State] = {"pending": "pending", "success": "success", "failure": "failure", "error": "error"}
_GITEA = _Dialect(_GITHUB_STATES, _GITHUB_READ_BACK, 255, "context", "status", ("limit", 50), True)
_DIALECTS: Mapping[str, _Dialect] = {
    "github": _Dialect(_GITHUB_STATES, _GITHUB_READ_BACK, 140, "context", "state", ("per_page", 100), True),
    "gitea": _GITEA,
    "forgejo": _GITEA,
    "gitlab": _Dialect(
        {"pending": "pending", "progressing": "running", "success": "success",
         "failure": "failed", "aborted": "canceled", "error": "failed"},
        {"pending": "pending", "running": "progressing", "success": "success", "failed": "failure", "canceled": "aborted"},
        255, "name", "status", ("per_page", 100), False,
    ),
}
# GitLab keeps one in-flight job per name and only moves it forward: it refuses pending -> pending,
# running -> running and running -> pending (HTTP 400, "Cannot transition status"). A finished job
# is replaced by a new one, so any state may follow success, failed or canceled.
_GITLAB_IN_FLIGHT = {"pending": 0, "running": 1}


@dataclass(frozen=True)
class _Shown:
    """The newest status the forge shows for one context."""

    id: int
    state: str
    description: str
    target_url: str
    at: datetime | None  # the forge's instant of the status's newest change
    changes: int = 1  # statuses posted for the context on the commit


class ForgeStatuses:
    """Publishes and reads commit statuses of one repository on one forge. Requests that the forge
    throttles (429; GitHub's 403 with an exhausted rate limit) or fails (5xx, no connection) are
    retried up to ``attempts`` times, waiting as the forge asks (Retry-After, x-ratelimit-reset)
    or else exponentially; a forge asking for more than ``max_wait`` seconds is not waited for.
    Then Transient("ForgeUnavailable"). Any other refusal is Stalled("ForgeRejected")."""

    def __init__(
        self,
        config: ForgeConfig,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        attempts: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
    ):
        self._config = config
        self._dialect = _DIALECTS[config.kind]
        self._token = os.environ.get(config.token_env, "").strip()
        if not self._token:
            raise Stalled(reasons.ForgeTokenMissing, f"environment variable {config.token_env} holds no {config.kind} token")
        self._headers = _auth_headers(config.kind, self._token)
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=config.timeout)
        self._sleep, self._clock = sleep, clock
        self._attempts, self._backoff, self._max_wait = attempts, backoff, max_wait
        self._repo_path = _repository_path(config)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ForgeStatuses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, commit_sha: str, statuses: list[CommitStatus]) -> list[CommitStatus]:
        """Post the statuses that differ from what the forge shows for ``commit_sha``; returns
        them as posted (description shortened to the forge's limit)."""
        shown = self._newest(commit_sha)
        posted = []
        for status in {s.context: s for s in statuses}.values():
            status = status.model_copy(update={
                "description": fit_description(status.description, self._dialect.description_limit),
                "target_url": status.target_url.strip() if status.target_url else None,
            })
            if not self._differs(shown.get(status.context), status):
                continue
            self._request("POST", f"{self._repo_path}/statuses/{commit_sha}", json=self._body(status))
            posted.append(status)
        return posted

    def read_statuses(self, commit_sha: str) -> dict[str, ShownStatus]:
        """The newest status of every ``reconciler/`` context on the commit, in our state names
        (exact when the description's pairs say it), with the forge's instant of it."""
        statuses = {}
        for context, shown in self._newest(commit_sha).items():
            if not context.startswith(CONTEXT_PREFIX):
                continue
            if (state := self._dialect.read_back.get(shown.state)) is None:
                log.warning("skipping forge status %s on %s: unknown state %r", context, commit_sha, shown.state)
                continue
            if shown.at is None:
                log.warning("skipping forge status %s on %s: the forge gives no time for it", context, commit_sha)
                continue
            statuses[context] = ShownStatus(
                context=context, state=self._exact_state(context, shown, state), description=shown.description,
                target_url=shown.target_url or None, at=shown.at, changes=shown.changes)
        return statuses

    def _exact_state(self, context: str, shown: _Shown, read_back: State) -> State:
        """Our state from the description's pairs when the forge's state agrees with it."""
        said = split_description(shown.description)[1].get("state")
        if said is None:
            return read_back
        ours = _OUR_STATES.get(said)
        if ours is not None and self._dialect.states[ours] == shown.state:
            return ours
        log.warning("forge status %s says state=%s but the forge shows %r: reading %s", context, said, shown.state,
                    read_back)
        return read_back

    def _differs(self, shown: _Shown | None, wanted: CommitStatus) -> bool:
        if shown is None:
            return True
        state = self._dialect.states[wanted.state]
        if self._config.kind == "gitlab" and shown.state in _GITLAB_IN_FLIGHT and state in _GITLAB_IN_FLIGHT:
            return _GITLAB_IN_FLIGHT[state] > _GITLAB_IN_FLIGHT[shown.state]
        return (shown.state, shown.description, shown.target_url) != (state, wanted.description, wanted.target_url or "")

    def _body(self, status: CommitStatus) -> dict[str, str]:
        body = {
            "state": self._dialect.states[status.state],
            self._dialect.name_field: status.context,
            "description": status.description,
        }
        if status.target_url:
            body["target_url"] = status.target_url
        return body

    def _newest(self, commit_sha: str) -> dict[str, _Shown]:
        """Every page of the commit's statuses; per context the one with the highest id. Listing
        order is not trusted: Gitea sorts by a creation time in whole seconds, GitLab oldest first."""
        if not _COMMIT_SHA.fullmatch(commit_sha):
            raise Stalled(reasons.InvalidCommitId, f"{commit_sha!r} is not a full commit id")
        newest: dict[str, _Shown] = {}
        posted: Counter[str] = Counter()
        param, size = self._dialect.page_size
        commits = "repository/commits" if self._config.kind == "gitlab" else "commits"
        url: str | None = f"{self._repo_path}/{commits}/{commit_sha}/statuses"
        params: dict[str, int] | None = {param: size}
        while url is not None:
            response = self._request("GET", url, params=params)
            for item in _json_list(response, url):
                shown = self._shown(item)
                context = item.get(self._dialect.name_field)
                if shown is None or not isinstance(context, str):
                    continue
                posted[context] += 1
                if context not in newest or newest[context].id < shown.id:
                    newest[context] = shown
            url, params = self._next_page(response, url, params)
        return {context: replace(shown, changes=posted[context]) for context, shown in newest.items()}

    def _shown(self, item: dict) -> _Shown | None:
        state, status_id = item.get(self._dialect.state_field), item.get("id")
        if not isinstance(state, str) or not isinstance(status_id, int):
            return None
        return _Shown(status_id, state, item.get("description") or "", item.get("target_url") or "", _forge_time(item))

    def _next_page(
        self, response: httpx.Response, url: str, params: dict[str, int] | None
    ) -> tuple[str | None, dict[str, int] | None]:
        if not self._dialect.next_by_link:
            following = response.headers.get("x-next-page", "").strip()
            return (url, {**(params or {}), "page": int(following)}) if following.isdigit() else (None, None)
        following = response.links.get("next", {}).get("url")
        if following is None:
            return None, None
        api = urlsplit(self._config.api_url)
        link = urlsplit(following)
        # The token goes with every request: never follow a link off the API's origin.
        if (link.scheme, link.netloc) != (api.scheme, api.netloc):
            raise Stalled(reasons.ForgeRejected, f"{self._config.api_url}: next-page link leaves the API: {following}")
        return following, None

    def _request(self, method: str, path_or_url: str, **kwargs: object) -> httpx.Response:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self._config.api_url + path_or_url
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.request(method, url, headers=self._headers, **kwargs)
            except httpx.TransportError as error:
                problem, delay = self._redact(f"{type(error).__name__}: {error}"), self._exponential(attempt)
            else:
                if response.is_success:
                    return response
                problem = f"HTTP {response.status_code}: {self._forge_message(response)}"
                if not _throttled_or_failing(response):
                    raise Stalled(reasons.ForgeRejected, f"{method} {url}: {problem}")
                asked = self._asked_delay(response)
                delay = self._exponential(attempt) if asked is None else asked
            if attempt >= self._attempts or delay > self._max_wait:
                # Not chained: an httpx error holds the request, and the request holds the token.
                raise Transient(reasons.ForgeUnavailable, f"{method} {url}: {problem} (gave up after {attempt} attempts)") from None
            log.info("%s %s: %s; retrying in %.1fs", method, url, problem, delay)
            self._sleep(delay)

    def _asked_delay(self, response: httpx.Response) -> float | None:
        """Seconds the forge asks us to wait: Retry-After (seconds or an HTTP date), or GitHub's
        reset time of an exhausted rate limit."""
        headers = response.headers
        if (after := headers.get("retry-after")) is not None:
            if after.strip().isdigit():
                return float(after)
            try:
                return max(0.0, email.utils.parsedate_to_datetime(after).timestamp() - self._clock())
            except (TypeError, ValueError):
                pass
        if headers.get("x-ratelimit-remaining") == "0" and (reset := headers.get("x-ratelimit-reset", "")).isdigit():
            return max(0.0, int(reset) - self._clock())
        return None

    def _exponential(self, attempt: int) -> float:
        # Jitter spreads a fleet of sites that all met the same outage.
        return exponential(self._backoff, attempt) + random.uniform(0, self._backoff)

    def _forge_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self._redact(truncate(response.text, 200) or response.reason_phrase)
        if not isinstance(body, dict):
            return self._redact(truncate(json.dumps(body), 200))
        message = body.get("message") or body.get("error") or response.reason_phrase
        details = [e.get("message") for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")]
        text = message if isinstance(message, str) else json.dumps(message)
        return self._redact(truncate("; ".join([text, *details]), 300))

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")


def _throttled_or_failing(response: httpx.Response) -> bool:
    code = response.status_code
    if code == 429 or code >= 500:
        return True
    # GitHub answers an exhausted (primary or secondary) rate limit with 403 or 429.
    return code == 403 and ("retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0")


# GitHub and Gitea never change a status (updated_at is created_at); GitLab updates a job in place
# and stamps started_at and finished_at. The latest of them is when the status took its state.
_TIME_FIELDS = ("updated_at", "finished_at", "started_at", "created_at")


def _forge_time(item: dict) -> datetime | None:
    """The latest ISO 8601 instant with a zone among the item's time fields (GitHub ``Z``,
    Gitea the server's offset, GitLab milliseconds)."""
    instants = []
    for name in _TIME_FIELDS:
        value = item.get(name)
        if not isinstance(value, str):
            continue
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            continue
        if instant.tzinfo is not None:
            instants.append(instant.astimezone(UTC))
    return max(instants, default=None)


def _json_list(response: httpx.Response, url: str) -> list[dict]:
    try:
        items = response.json()
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise Transient(reasons.ForgeUnavailable, f"GET {url}: the forge did not answer with a list of statuses")
    return [item for item in items if isinstance(item, dict)]


def _auth_headers(kind: str, token: str) -> dict[str, str]:
    if kind == "github":
        return {"Accept": "application/vnd.github+json", "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28"}
    if kind == "gitlab":
        return {"Accept": "application/json", "PRIVATE-TOKEN": token}
    return {"Accept": "application/json", "Authorization": f"token {token}"}


def _repository_path(config: ForgeConfig) -> str:
    """The repository's path under the API URL; every status route hangs below it."""
    if config.kind == "gitlab":
        return "/projects/" + quote(unquote(config.repository), safe="")
    owner, repo = (quote(part, safe="") for part in config.repository.split("/"))
    return f"/repos/{owner}/{repo}"
