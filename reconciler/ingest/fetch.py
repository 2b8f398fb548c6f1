"""How a site fetches artifacts, and what every source of their bytes shares: the ``fetch:``
settings of site.yaml (``FetchLimits``, ``AuthConfig``), the ``Deadline`` of one ingest, retries
(``with_retries``), and the ``Body`` a source gives (``Opened``). Where the bytes come from is
``reconciler.ingest.sources``; over HTTP, ``reconciler.ingest.httpsource``.

Every failure is a ReconcilerError whose class says what happens next; an ``Interrupted`` one is
tried again within the same ingest."""

from __future__ import annotations

import base64
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler import reasons
from reconciler.cancel import CancelToken, shut_down
from reconciler.errors import Interrupted, Stalled, Transient
from reconciler.manifests.types import parse_duration

T = TypeVar("T")


# --- settings -----------------------------------------------------------------------------------

def _seconds(value: object) -> float:
    return parse_duration(value).total_seconds()


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class AuthConfig(BaseModel):
    """Credentials for one host, named by environment variable so that no secret sits in a config
    file, a repr or a log: a bearer token (``tokenEnv``) or HTTP basic (``username`` + ``passwordEnv``).
    They go over https only, unless ``allowHttp`` says this host may have them in clear text (a
    mirror on the site's own network), as container registries ask for an "insecure" opt-in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenEnv: str | None = None
    username: str | None = None
    passwordEnv: str | None = None
    allowHttp: bool = False

    @model_validator(mode="after")
    def _one_scheme(self) -> AuthConfig:
        basic = (self.username, self.passwordEnv)
        if self.tokenEnv is not None and basic == (None, None):
            return self
        if self.tokenEnv is None and None not in basic:
            return self
        raise ValueError("give either tokenEnv (bearer token) or both username and passwordEnv (basic)")

    def header(self, scheme: str, host: str) -> str:
        """The Authorization header value, read from the environment now (so a restart picks up a rotated secret)."""
        if scheme != "https" and not self.allowHttp:
            raise Stalled(reasons.ArtifactAuthInsecure, f"this site has credentials for {host}, and sends them over https only; "
                                                        f"use an https URI, or set fetch.auth.{host}.allowHttp")
        if self.tokenEnv is not None:
            return f"Bearer {_secret(self.tokenEnv, host)}"
        pair = f"{self.username}:{_secret(self.passwordEnv or '', host)}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"


def _secret(variable: str, host: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise Stalled(reasons.ArtifactAuthMissing, f"the credentials for {host} come from ${variable}, which is not set")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # http.client would echo the value in its error; say which variable instead.
        raise Stalled(reasons.ArtifactAuthInvalid, f"${variable} (credentials for {host}) contains control characters")
    return value


class FetchLimits(BaseModel):
    """How a site fetches artifacts: ``fetch:`` in site.yaml (camelCase keys there, durations like
    "30s"), snake_case and seconds in code.

    Stalls: no byte at all for ``read_timeout``, or fewer than ``min_rate`` bytes/s on average over
    ``stall_timeout`` (a server that trickles). ``deadline`` bounds one whole ingest, attempts and
    pauses included. ``retries`` counts attempts in total; before attempt n+1 the agent sleeps a
    random time in [0, backoff * 2**(n-1)] (exponential backoff, full jitter). ``auth`` maps host
    names to credentials, sent to that host only. ``ca_bundle`` replaces the system's CAs for https."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    max_bytes: Annotated[int, Field(gt=0)] = 2 << 30
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 30.0
    stall_timeout: Seconds = 60.0
    min_rate: Annotated[int, Field(ge=0)] = 1024
    deadline: Seconds = 3600.0
    retries: Annotated[int, Field(ge=1)] = 3
    backoff: Seconds = 0.5
    redirects: Literal["none", "same-host", "any"] = "same-host"
    auth: dict[str, AuthConfig] = {}
    ca_bundle: Path | None = None

    @field_validator("auth")
    @classmethod
    def _hosts_lowercase(cls, auth: dict[str, AuthConfig]) -> dict[str, AuthConfig]:
        return {host.lower(): credentials for host, credentials in auth.items()}


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
    last = None
    for n in range(limits.retries):
        if n:
            deadline.pause(min(random.uniform(0, limits.backoff * 2 ** (n - 1)), max(0.0, deadline.left())))
        if deadline.left() <= 0:
            raise deadline.exceeded(last) from last
        try:
            return attempt()
        except Interrupted as exc:
            last = exc
    raise last


# --- what a source gives -------------------------------------------------------------------------

class Body(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill the start of ``view`` with the next bytes (one read); 0 at the end."""
        ...


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

