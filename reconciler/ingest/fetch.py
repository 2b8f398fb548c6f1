"""How a site fetches artifacts, and what every source of their bytes shares: the credentials of
site.yaml's ``fetch:`` settings (reconciler.settings.FetchLimits) as a header, the ``Deadline`` of
one ingest, retries (``with_retries``, honouring a server's ``Retry-After``), and the ``Body`` a source gives (``Opened``). Where the bytes come from is
``reconciler.ingest.sources``; over HTTP, ``reconciler.ingest.httpsource``.

Every failure is a ReconcilerError whose class says what happens next; an ``Interrupted`` one is
tried again within the same ingest."""

from __future__ import annotations

import base64
import datetime
import email.utils
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from reconciler import reasons
from reconciler.cancel import CancelToken, shut_down
from reconciler.errors import Interrupted, Stalled, Transient
from reconciler.retrying import retry
from reconciler.settings import AuthConfig, FetchLimits

T = TypeVar("T")
# A server's Retry-After is honoured up to this; a longer one meets the fetch deadline sooner or
# later, and the next tick asks again.
RETRY_AFTER_CAP = 300.0


# --- credentials ---------------------------------------------------------------------------------

def authorization(credentials: AuthConfig, scheme: str, host: str) -> str:
    """The Authorization header value for ``host``, its secret read from the environment now (so a
    restart picks up a rotated secret); over https only, unless the site allows this host http."""
    if scheme != "https" and not credentials.allow_http:
        raise Stalled(reasons.ArtifactAuthInsecure, f"this site has credentials for {host}, and sends them over https only; "
                                              f"use an https URI, or set fetch.auth.{host}.allowHttp")
    if credentials.token_env is not None:
        return f"Bearer {_secret(credentials.token_env, host)}"
    pair = f"{credentials.username}:{_secret(credentials.password_env or '', host)}".encode()
    return f"Basic {base64.b64encode(pair).decode('ascii')}"


def _secret(variable: str, host: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise Stalled(reasons.ArtifactAuthMissing, f"the credentials for {host} come from ${variable}, which is not set")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # http.client would echo the value in its error; say which variable instead.
        raise Stalled(reasons.ArtifactAuthInvalid, f"${variable} (credentials for {host}) contains control characters")
    return value


class Deadline:
    """The time one ingest (or companion fetch) may take, attempts included, and the agent's
    stop, which ends it sooner: every wait of the fetch is cut short by it."""

    def __init__(self, seconds: float, uri: str, stop: CancelToken | None = None):
        self.seconds = seconds
        self.uri = uri
        self._at = time.monotonic() + seconds
        self._stop = stop or CancelToken()

    def left(self) -> float:
        return self._at - time.monotonic()

    def check(self) -> None:
        """Raise Cancelled once the agent was asked to stop."""
        self._stop.check(self.uri)

    def pause(self, seconds: float) -> None:
        self._stop.wait(seconds)
        self.check()

    @contextmanager
    def cutting_on_stop(self) -> Iterator[Callable[[socket.socket], None]]:
        """A function that puts a socket under watch for the block: a stop shuts it down, so a
        read blocked on it returns at once rather than after its timeout."""
        watched: list[socket.socket] = []

        def cut() -> None:
            for sock in watched:
                shut_down(sock)

        def watch(sock: socket.socket) -> None:
            watched.append(sock)
            if self._stop.is_set():
                shut_down(sock)

        with self._stop.on_cancel(cut):
            yield watch

    def bound(self, timeout: float) -> float:
        """``timeout``, cut to what is left; raises once nothing is left or a stop was asked."""
        self.check()
        left = self.left()
        if left <= 0:
            raise self.exceeded()
        return min(timeout, left)

    def exceeded(self, last: Exception | None = None) -> Transient:
        after = f"; the last attempt failed with {last}" if last else ""
        return Transient(reasons.ArtifactDeadlineExceeded, f"{self.uri}: not fetched within the deadline of {self.seconds:g}s{after}")


def with_retries(limits: FetchLimits, deadline: Deadline, attempt: Callable[[], T]) -> T:
    return retry(attempt, attempts=limits.retries, backoff=limits.backoff, deadline=deadline,
                 retried=lambda failure: isinstance(failure, Interrupted),
                 asked_wait=lambda failure: failure.retry_after if isinstance(failure, Interrupted) else None,
                 longest_asked_wait=RETRY_AFTER_CAP)


def retry_after(header: str | None, now: float) -> float | None:
    """The seconds a ``Retry-After`` asks for (RFC 9110 10.2.3: delay-seconds or an HTTP-date; a
    date in the past asks for none); None when absent or unreadable (then the backoff alone)."""
    value = (header or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # asctime's form has no zone: every HTTP-date is GMT
    return max(0.0, when.timestamp() - now)


def unavailable(uri: str, what: str, status: int, headers: Callable[[str], str | None]) -> Interrupted:
    """HTTP 408, 429 or 5xx: tried again within the ingest, not before the server's Retry-After.
    ``what`` leads the status in the message (``"registry answers manifest 1.0 with "``)."""
    asked = retry_after(headers("Retry-After"), time.time())
    said = f" (Retry-After: {asked:.3g} s)" if asked is not None else ""
    return Interrupted(reasons.ArtifactUnavailable, f"{uri}: {what}HTTP {status}{said}", retry_after=asked)


# --- what a source gives -------------------------------------------------------------------------

class Body(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill the start of ``view`` with the next bytes (one read); 0 at the end."""
        ...


def read_small(body: Body, max_bytes: int, uri: str) -> bytes:
    """All of a small body (a signature, a bundle), refused past ``max_bytes``."""
    buffer = memoryview(bytearray(max_bytes + 1))
    received = 0
    while received <= max_bytes and (n := body.readinto(buffer[received:])):
        received += n
    if received > max_bytes:
        raise Stalled(reasons.ArtifactTooLarge, f"{uri}: more than {max_bytes} bytes")
    return bytes(buffer[:received])


@dataclass(frozen=True)
class Opened:
    body: Body
    start: int  # offset of the body's first byte in the artifact: the one asked for, or 0
    resumable: bool  # a later attempt may ask for the rest with Range


class RepoTree(Protocol):
    """A commit's files read straight from Git, without a checkout (``reconciler.gitdoor.committree``)."""

    def open_file(self, path: str, timeout: float) -> AbstractContextManager[int]:
        """A readable file descriptor of the file's bytes, at ``path`` relative to the tree's root;
        bringing the bytes from elsewhere first may take ``timeout`` seconds."""
        ...


RepoRoot = Path | RepoTree | None  # where repo-relative URIs are read: a directory, a commit, or nowhere

