"""The head beacon over HTTP(S) (site.yaml ``headBeacon``): one conditional GET per poll, on a
connection kept alive between polls, so a poll that finds nothing new costs the server a 304
and the site no git process. The same proxy variables, ``fetch.caBundle`` and ``fetch.auth``
credentials as an artifact download (reconciler.ingest.httpsource), and its timeout is
``fetch.connectTimeout`` for the connection and each read: a beacon is small, and a slow one
must not hold up the git poll that replaces it.

A beacon's body names a commit: the id alone (what the shipped post-receive hook writes, and
GitHub's ``application/vnd.github.sha`` media type), or a forge's JSON: ``sha`` (GitHub
``/commits/<branch>``), ``object.sha`` (GitHub ``/git/ref/heads/<branch>``) or ``commit.id``
(Gitea/Forgejo and GitLab ``/branches/<branch>``). Redirects are not followed: give the final
URL. Every failure is a Transient with reason HeadBeaconFailed; the caller polls git instead."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlsplit

from reconciler import reasons
from reconciler.errors import ReconcilerError, Transient
from reconciler.ingest.httpsource import http_connection, request_line, shown_url
from reconciler.settings import FetchLimits

__all__ = ["BODY_LIMIT", "Beacon", "commit_named"]

BODY_LIMIT = 64 * 1024  # a commit id, or a forge's small JSON; a longer body is no beacon
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# A kept-alive connection the server has closed since the last poll fails so on first use.
_CLOSED_BY_SERVER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def commit_named(body: bytes) -> str | None:
    """The commit a beacon's body names (lower case), or None when it names none."""
    text = body.decode("utf-8", "replace").strip()
    if _COMMIT.fullmatch(text.lower()):
        return text.lower()
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for outer, inner in ((None, "sha"), ("object", "sha"), ("commit", "id")):
        value = document.get(outer) if outer else document
        value = value.get(inner) if isinstance(value, dict) else None
        if isinstance(value, str) and _COMMIT.fullmatch(value.lower()):
            return value.lower()
    return None


class Beacon:
    """One site's beacon: the validators of its last answer (``ETag``, ``Last-Modified``) and
    one connection, reused while the server keeps it open. Not thread-safe: one per agent."""

    def __init__(self, url: str, limits: FetchLimits):
        self.url = url
        self.shown = shown_url(url)
        self.limits = limits
        self._connection: http.client.HTTPConnection | None = None
        self._validators: dict[str, str] = {}  # If-None-Match / If-Modified-Since for the next poll

    def poll(self) -> str | None:
        """The commit the beacon names when it answers with a body; None when it answers 304 Not
        Modified (nothing changed since its last answer)."""
        try:
            status, headers, body = self._exchange()
        except ReconcilerError:
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise Transient(reasons.HeadBeaconFailed, f"head beacon {self.shown}: {detail}") from exc
        if status == 304 and self._validators:
            return None
        if status != 200:
            redirect = " (redirects are not followed: give the final URL)" if 300 <= status < 400 else ""
            raise Transient(reasons.HeadBeaconFailed, f"head beacon {self.shown}: HTTP {status}{redirect}")
        commit = commit_named(body)
        if commit is None:
            self._validators = {}
            raise Transient(reasons.HeadBeaconFailed, f"head beacon {self.shown}: its body names no commit "
                                                      f"(a 40- or 64-hex id, or JSON with one): {body[:60]!r}")
        self._validators = {name: value for name, value in (("If-None-Match", headers.get("ETag")),
                                                            ("If-Modified-Since", headers.get("Last-Modified")))
                            if value}
        return commit

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _exchange(self) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One GET with the last answer's validators; once more on a new connection when the
        kept-alive one turns out closed by the server."""
        reused = self._connection is not None
        try:
            return self._get()
        except _CLOSED_BY_SERVER:
            if not reused:
                raise
            self.close()
            return self._get()

    def _get(self) -> tuple[int, http.client.HTTPMessage, bytes]:
        parts = urlsplit(self.url)
        proxy, target, headers = request_line(parts, self.limits)
        if self._connection is None:
            self._connection = http_connection(parts.scheme.lower(), parts.hostname or "", parts.port, proxy,
                                               self.limits, self.limits.connect_timeout)
        self._connection.request("GET", target, headers=headers | self._validators)
        response = self._connection.getresponse()
        body = response.read(BODY_LIMIT + 1)
        if len(body) > BODY_LIMIT:
            self.close()
            raise Transient(reasons.HeadBeaconFailed, f"head beacon {self.shown}: a body over {BODY_LIMIT} bytes "
                                                      "is no commit id")
        if not response.isclosed():
            response.read()  # the rest (none, as a rule), so the connection can carry the next poll
        if response.will_close:
            self.close()
        return response.status, response.headers, body
