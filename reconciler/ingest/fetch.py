"""Reading artifact bytes from where a manifest points — a repo-relative path, ``file://`` or
``http(s)://`` — under the site's fetch settings.

A source is opened at an offset and gives a ``Body`` that reads straight into the caller's buffer
(one kernel copy, no Python-level copies). Over HTTP, a later attempt asks for the rest with
``Range`` when the server supports it. HTTP uses the standard library's ``http.client`` rather than
httpx on purpose: httpx reads bodies 64 KiB at a time through several copies, which on loopback is
slower than SHA-256 itself, while ``readinto1`` into a large buffer is not.

Every failure is a ReconcilerError whose reason says what happens next; ``RETRIED`` lists the
ones another attempt within the same ingest may cure."""

from __future__ import annotations

import base64
import http.client
import os
import random
import re
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Protocol, TypeVar
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.cancel import CancelToken, shut_down
from reconciler.errors import Stalled, Transient
from reconciler.ingest.proxy import Proxy, proxy_for
from reconciler.manifests.types import parse_duration

MAX_REDIRECTS = 5
RETRIED = frozenset({"ArtifactUnavailable", "ArtifactTruncated", "ArtifactStalled"})
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TUNNEL_REFUSED = re.compile(r"^Tunnel connection failed: (4\d\d)\b")  # http.client's words for a CONNECT refused

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
            raise Stalled("ArtifactAuthInsecure", f"this site has credentials for {host}, and sends them over https only; "
                                                  f"use an https URI, or set fetch.auth.{host}.allowHttp")
        if self.tokenEnv is not None:
            return f"Bearer {_secret(self.tokenEnv, host)}"
        pair = f"{self.username}:{_secret(self.passwordEnv or '', host)}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"


def _secret(variable: str, host: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise Stalled("ArtifactAuthMissing", f"the credentials for {host} come from ${variable}, which is not set")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # http.client would echo the value in its error; say which variable instead.
        raise Stalled("ArtifactAuthInvalid", f"${variable} (credentials for {host}) contains control characters")
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
        return Transient("ArtifactDeadlineExceeded", f"{self.uri}: not fetched within the deadline of {self.seconds:g}s{after}")


def with_retries(limits: FetchLimits, deadline: Deadline, attempt: Callable[[], T]) -> T:
    last = None
    for n in range(limits.retries):
        if n:
            deadline.pause(min(random.uniform(0, limits.backoff * 2 ** (n - 1)), max(0.0, deadline.left())))
        if deadline.left() <= 0:
            raise deadline.exceeded(last) from last
        try:
            return attempt()
        except Transient as exc:
            if exc.reason not in RETRIED:
                raise
            last = exc
    raise last


# --- sources ------------------------------------------------------------------------------------

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


@contextmanager
def open_source(
    uri: str, repo_root: RepoRoot, limits: FetchLimits, deadline: Deadline,
    offset: int = 0, expected: int | None = None,
) -> Iterator[Opened]:
    """The bytes of ``uri`` from ``offset`` on if the source can, else from 0 (see ``Opened.start``);
    ``expected`` is the artifact's full size when the manifest says it."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "":
        source = _repo_source(uri, repo_root, deadline)
    elif scheme == "file":
        source = _file_source(_file_url_path(uri), uri)
    elif scheme in ("http", "https"):
        source = _http_source(uri, limits, deadline, offset, expected)
    else:
        raise Stalled("ArtifactSchemeUnsupported",
                      f"{uri}: sites cannot fetch {scheme}:// URIs; give a repo-relative path, "
                      "file:///absolute/path or an http(s):// URL")
    with source as opened:
        yield opened


def _repo_source(uri: str, repo_root: RepoRoot, deadline: Deadline) -> AbstractContextManager[Opened]:
    """A path inside the repository; neither '..', an absolute path nor a symlink may leave it."""
    if repo_root is None:
        raise Stalled("ArtifactUriInvalid", f"{uri}: a repo-relative path needs a repository")
    if "\0" in uri:
        raise Stalled("ArtifactUriInvalid", f"{uri!r}: contains a NUL byte")
    if PurePosixPath(uri).is_absolute():
        raise Stalled("ArtifactPathEscapes", f"{uri}: an absolute path is not repo-relative (use file://)")
    if isinstance(repo_root, Path):
        return _file_source(_repo_path(uri, repo_root), uri)
    return _tree_source(repo_root, uri, deadline)


@contextmanager
def _tree_source(tree: RepoTree, uri: str, deadline: Deadline) -> Iterator[Opened]:
    with tree.open_file(uri, deadline.bound(deadline.seconds)) as fd:
        yield Opened(_FileBody(fd, uri), start=0, resumable=False)


def _repo_path(uri: str, repo_root: Path) -> Path:
    root = repo_root.resolve()
    path = (root / uri).resolve()
    if not path.is_relative_to(root):
        raise Stalled("ArtifactPathEscapes", f"{uri}: resolves to {path}, outside the repository")
    return path


def _file_url_path(uri: str) -> Path:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or "\0" in path:
        raise Stalled("ArtifactUriInvalid", f"{uri}: expected file:///absolute/path")
    return Path(path)


@contextmanager
def _file_source(path: Path, uri: str) -> Iterator[Opened]:
    # O_NONBLOCK: opening a FIFO must not hang the agent; it is refused below as not a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise Stalled("ArtifactNotFound", f"{uri}: no such file {path}") from None
    except PermissionError:
        raise Stalled("ArtifactUnreadable", f"{uri}: permission denied on {path}") from None
    except OSError as exc:
        raise Transient("ArtifactUnavailable", f"{uri}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Stalled("ArtifactNotFound", f"{uri}: {path} is not a regular file")
        yield Opened(_FileBody(fd, uri), start=0, resumable=False)
    finally:
        os.close(fd)


class _FileBody:
    def __init__(self, fd: int, uri: str):
        self._fd = fd
        self._uri = uri

    def readinto(self, view: memoryview) -> int:
        try:
            return os.readv(self._fd, [view])
        except OSError as exc:
            raise Transient("ArtifactUnavailable", f"{self._uri}: reading failed: {exc.strerror}") from exc


# --- HTTP ---------------------------------------------------------------------------------------

@contextmanager
def _http_source(uri: str, limits: FetchLimits, deadline: Deadline, offset: int, expected: int | None) -> Iterator[Opened]:
    url = uri
    for _ in range(MAX_REDIRECTS + 1):
        with deadline.cutting_on_stop() as watch:
            connection, sock, response = _request(uri, url, limits, deadline, offset, watch)
            try:
                location = response.getheader("Location") if response.status in _REDIRECT_CODES else None
                if location is None:
                    yield _opened(uri, url, response, sock, limits, deadline, offset, expected)
                    return
            finally:
                response.close()
                connection.close()
        url = _follow(uri, url, urljoin(url, location), limits.redirects)
    raise Stalled("ArtifactRedirectRefused", f"{uri}: more than {MAX_REDIRECTS} redirects")


def _request(
    uri: str, url: str, limits: FetchLimits, deadline: Deadline, offset: int, watch: Callable[[socket.socket], None]
) -> tuple[http.client.HTTPConnection, socket.socket, http.client.HTTPResponse]:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise Stalled("ArtifactUriInvalid", f"{shown_url(url)}: credentials in a URI are refused; configure fetch.auth for its host")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise Stalled("ArtifactUriInvalid", f"{uri}: {exc}") from None
    if not host:
        raise Stalled("ArtifactUriInvalid", f"{uri}: no host")
    scheme = parts.scheme.lower()
    headers = _headers(limits, scheme, host, offset)
    target = _target(parts)
    proxy = proxy_for(scheme, host, port)
    if proxy is not None and scheme == "http":
        target = f"http://{parts.netloc}{target}"  # absolute form: the proxy forwards it
        headers |= proxy.headers
    connection = _connection(scheme, host, port, proxy, limits, deadline.bound(limits.connect_timeout))
    try:
        connection.connect()
        # Kept here: when the server closes after the body, getresponse() hands the socket to the response.
        sock = connection.sock
        watch(sock)
        sock.settimeout(deadline.bound(limits.read_timeout))
        connection.request("GET", target, headers=headers)
        return connection, sock, connection.getresponse()
    except BaseException as exc:
        connection.close()
        if isinstance(exc, OSError | http.client.HTTPException):
            deadline.check()  # a stop cut the connection: that, not the connection, is the cause
            raise _request_error(exc, uri, host, proxy, limits, deadline) from exc
        raise


def _connection(scheme: str, host: str, port: int | None, proxy: Proxy | None, limits: FetchLimits,
                timeout: float) -> http.client.HTTPConnection:
    """To the host, or to the proxy that reaches it: https through a CONNECT tunnel, so the proxy
    sees the host and nothing of the request."""
    if scheme == "http":
        return http.client.HTTPConnection(*((host, port) if proxy is None else (proxy.host, proxy.port)), timeout=timeout)
    context = _tls_context(limits.ca_bundle)
    if proxy is None:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    connection = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout, context=context)
    connection.set_tunnel(host, port or 443, headers=proxy.headers)
    return connection


def _request_error(exc: Exception, uri: str, host: str, proxy: Proxy | None, limits: FetchLimits,
                   deadline: Deadline) -> Exception:
    refused_tunnel = _TUNNEL_REFUSED.match(str(exc)) if proxy is not None else None
    if refused_tunnel:
        # The proxy's own answer (its access rules, its credentials): another attempt gets the same one.
        wants = "; it wants credentials: give them in the proxy URL of $https_proxy" if refused_tunnel[1] == "407" else ""
        return Stalled("ArtifactProxyRejected", f"{uri}: the proxy {proxy.shown} refused the tunnel to {host} "
                                                f"with HTTP {refused_tunnel[1]}{wants}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Stalled("ArtifactTlsFailed", f"{uri}: the certificate of {host} is not trusted: {exc.verify_message}")
    if isinstance(exc, http.client.InvalidURL):
        return Stalled("ArtifactUriInvalid", f"{uri}: {exc}")
    if isinstance(exc, TimeoutError):
        if deadline.left() <= 0:
            return deadline.exceeded()
        return Transient("ArtifactUnavailable", f"{uri}: {host} did not answer in time (connectTimeout "
                                                f"{limits.connect_timeout:g}s, readTimeout {limits.read_timeout:g}s)")
    return Transient("ArtifactUnavailable", f"{uri}: {_describe(exc)}")


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=None if ca_bundle is None else str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise Stalled("TlsCaBundleInvalid", f"fetch.caBundle {ca_bundle}: {_describe(exc)}") from None


def _target(parts: SplitResult) -> str:
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    return f"{path}?{parts.query}" if parts.query else path


def _headers(limits: FetchLimits, scheme: str, host: str, offset: int) -> dict[str, str]:
    # identity: the digest is over the bytes as stored, so no transfer compression may change them.
    headers = {"Accept-Encoding": "identity", "User-Agent": "reconciler"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    credentials = limits.auth.get(host.lower())
    if credentials is not None:
        headers["Authorization"] = credentials.header(scheme, host)
    return headers


def _follow(uri: str, current: str, target: str, policy: str) -> str:
    """``target`` if the site's redirect policy allows the hop from ``current``; credentials are
    chosen per hop by host, so they never follow a redirect to another host."""
    source, dest = urlsplit(current), urlsplit(target)
    hop = f"{shown_url(current)} redirects to {shown_url(target)}"
    if dest.scheme.lower() not in ("http", "https"):
        raise Stalled("ArtifactRedirectRefused", f"{uri}: {hop}, which is not http(s)")
    if source.scheme.lower() == "https" and dest.scheme.lower() == "http":
        raise Stalled("ArtifactRedirectRefused", f"{uri}: {hop}: a downgrade from https to http is never followed")
    if policy == "none":
        raise Stalled("ArtifactRedirectRefused", f"{uri}: {hop}; this site follows no redirects (fetch.redirects: none)")
    if policy == "same-host" and dest.hostname != source.hostname:
        raise Stalled(
            "ArtifactRedirectRefused",
            f"{uri}: {hop}: from host {source.hostname} to host {dest.hostname}; this site follows redirects "
            "within a host only (fetch.redirects: same-host)",
        )
    return target


def shown_url(url: str) -> str:
    """A URL without credentials or query (pre-signed URLs carry their signature in the query)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?…" if parts.query else "")


def _opened(
    uri: str, url: str, response: http.client.HTTPResponse, sock: socket.socket,
    limits: FetchLimits, deadline: Deadline, offset: int, expected: int | None,
) -> Opened:
    start = _start_of_body(uri, urlsplit(url).hostname or "", response, offset, expected)
    encoding = response.getheader("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Stalled("ArtifactEncodingUnsupported", f"{uri}: the server sends Content-Encoding {encoding} though asked for identity")
    if expected is not None and response.length is not None:
        total = start + response.length
        if total > expected:
            raise Stalled("ArtifactTooLarge", f"{uri}: server sends {total} bytes, the manifest says {expected}")
        if total < expected:
            raise Stalled("ArtifactSizeMismatch", f"{uri}: server sends {total} bytes, the manifest says {expected}")
    resumable = response.status == 206 or response.getheader("Accept-Ranges", "").strip().lower() == "bytes"
    return Opened(_HttpBody(uri, response, sock, limits, deadline), start, resumable)


def _start_of_body(uri: str, host: str, response: http.client.HTTPResponse, offset: int, expected: int | None) -> int:
    code = response.status
    if code == 200:
        return 0  # a server that ignores Range sends everything again
    if code == 206:
        match = _CONTENT_RANGE.match(response.getheader("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise Stalled("ArtifactRangeInvalid", f"{uri}: asked for bytes from {offset}, the server sends "
                                                  f"Content-Range {response.getheader('Content-Range')!r}")
        if expected is not None and match.group(3) not in ("*", str(expected)):
            raise Stalled("ArtifactSizeMismatch", f"{uri}: the server's copy has {match.group(3)} bytes, the manifest says {expected}")
        return offset
    if code in (404, 410):
        raise Stalled("ArtifactNotFound", f"{uri}: HTTP {code}")
    if code in (408, 429) or code >= 500:
        raise Transient("ArtifactUnavailable", f"{uri}: HTTP {code}")
    if code == 416:
        raise Stalled("ArtifactRangeInvalid", f"{uri}: HTTP 416: the server has fewer than the {offset} bytes already received")
    if code == 407:
        raise Stalled("ArtifactProxyRejected", f"{uri}: HTTP 407: the proxy wants credentials; give them in the proxy URL of $http_proxy")
    if code in (401, 403):
        raise Stalled("ArtifactRequestRejected", f"{uri}: HTTP {code}: check the credentials this site has for {host} (fetch.auth)")
    raise Stalled("ArtifactRequestRejected", f"{uri}: HTTP {code}")


class _HttpBody:
    """A response body read with one ``recv`` per call, into the caller's buffer, watched for
    stalls and the deadline between reads."""

    def __init__(self, uri: str, response: http.client.HTTPResponse, sock: socket.socket, limits: FetchLimits, deadline: Deadline):
        self._uri = uri
        self._response = response
        self._sock = sock
        self._limits = limits
        self._deadline = deadline
        self._left = response.length  # None: until the server ends the body
        self.received = 0
        self._window = (time.monotonic(), 0)  # (since, bytes received then) for the minimum rate

    def readinto(self, view: memoryview) -> int:
        if self._left == 0:
            return 0
        if self._left is not None:
            view = view[: self._left]
        self._sock.settimeout(self._deadline.bound(self._limits.read_timeout))
        try:
            n = self._read(view)
        except TimeoutError as exc:
            self._deadline.check()
            if self._deadline.left() <= 0:
                raise self._deadline.exceeded() from exc
            raise Transient("ArtifactStalled", f"{self._uri}: no data for {self._limits.read_timeout:g}s "
                                               f"after {self.received} bytes") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._deadline.check()
            raise Transient("ArtifactTruncated", f"{self._uri}: connection lost after {self.received} bytes: {_describe(exc)}") from exc
        if n == 0 and self._left:
            self._deadline.check()
            raise Transient("ArtifactTruncated", f"{self._uri}: the body ended after {self.received} bytes, "
                                                 f"{self._left} short of its Content-Length")
        self.received += n
        if self._left is not None:
            self._left -= n
        self._check_rate()
        return n

    def _read(self, view: memoryview) -> int:
        if self._response.chunked:
            data = self._response.read1(len(view))
            view[: len(data)] = data
            return len(data)
        # readinto1: at most one recv, straight into ``view`` (http.client's own readinto loops
        # until the buffer is full, which would hide a trickle from the rate check).
        return self._response.fp.readinto1(view)

    def _check_rate(self) -> None:
        since, then = self._window
        elapsed = time.monotonic() - since
        if elapsed < self._limits.stall_timeout:
            return
        if self.received - then < self._limits.min_rate * elapsed:
            raise Transient("ArtifactStalled", f"{self._uri}: {self.received - then} bytes in {elapsed:.1f}s, below the "
                                               f"minimum of {self._limits.min_rate} bytes/s")
        self._window = (time.monotonic(), self.received)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
