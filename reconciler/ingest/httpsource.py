"""Artifact bytes over HTTP(S), directly or through the site's proxy: redirects under the site's
policy, credentials per host, ``Range`` to resume, and a body watched for stalls and the deadline.

A later attempt asks for the rest with ``Range`` when the server supports it. HTTP uses the
standard library's ``http.client`` rather than httpx on purpose: httpx reads bodies 64 KiB at a
time through several copies, which on loopback is slower than SHA-256 itself, while ``readinto1``
into a large buffer is not."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from reconciler import reasons
from reconciler.errors import Interrupted, Stalled
from reconciler.ingest.fetch import Deadline, Opened, authorization, unavailable
from reconciler.ingest.proxy import Proxy, proxy_for
from reconciler.settings import FetchLimits

MAX_REDIRECTS = 5
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TUNNEL_REFUSED = re.compile(r"^Tunnel connection failed: (4\d\d)\b")  # http.client's words for a CONNECT refused


HeadersFor = Callable[[str], dict[str, str]]  # a hop's host[:port] -> headers of its own (a registry's token)


def _no_headers(netloc: str) -> dict[str, str]:
    return {}


@contextmanager
def http_source(uri: str, limits: FetchLimits, deadline: Deadline, offset: int, expected: int | None,
                headers_for: HeadersFor = _no_headers, url: str | None = None) -> Iterator[Opened]:
    """``uri`` is what messages name; ``url`` (default: ``uri``) where the bytes are asked for."""
    url = url or uri
    for _ in range(MAX_REDIRECTS + 1):
        with deadline.cutting_on_stop() as watch:
            connection, sock, response = _request(uri, url, limits, deadline, offset, watch, headers_for)
            try:
                location = response.getheader("Location") if response.status in _REDIRECT_CODES else None
                if location is None:
                    yield _opened(uri, url, response, sock, limits, deadline, offset, expected)
                    return
            finally:
                response.close()
                connection.close()
        url = _follow(uri, url, urljoin(url, location), limits.redirects)
    raise Stalled(reasons.ArtifactRedirectRefused, f"{uri}: more than {MAX_REDIRECTS} redirects")


@contextmanager
def http_response(uri: str, url: str, limits: FetchLimits, deadline: Deadline, headers: dict[str, str],
                  method: str = "GET", body: bytes | BinaryIO | None = None) -> Iterator[http.client.HTTPResponse]:
    """One request to ``url`` and its response as it comes, redirects included: for the caller to
    read its status and headers (a registry's challenge, a manifest's type, an upload's location)."""
    with deadline.cutting_on_stop() as watch:
        connection, _, response = _request(uri, url, limits, deadline, 0, watch, lambda netloc: headers, method, body)
        try:
            yield response
        finally:
            response.close()
            connection.close()


def _request(
    uri: str, url: str, limits: FetchLimits, deadline: Deadline, offset: int, watch: Callable[[socket.socket], None],
    headers_for: HeadersFor, method: str = "GET", body: bytes | BinaryIO | None = None,
) -> tuple[http.client.HTTPConnection, socket.socket, http.client.HTTPResponse]:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise Stalled(reasons.ArtifactUriInvalid, f"{shown_url(url)}: credentials in a URI are refused; configure fetch.auth for its host")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: {exc}") from None
    if not host:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: no host")
    scheme = parts.scheme.lower()
    proxy, target, headers = request_line(parts, limits, offset)
    headers |= headers_for(parts.netloc.lower())
    connection = http_connection(scheme, host, port, proxy, limits, deadline.bound(limits.connect_timeout))
    try:
        connection.connect()
        # Kept here: when the server closes after the body, getresponse() hands the socket to the response.
        sock = connection.sock
        watch(sock)
        sock.settimeout(deadline.bound(limits.read_timeout))
        connection.request(method, target, body=body, headers=headers)
        return connection, sock, connection.getresponse()
    except BaseException as exc:
        connection.close()
        if isinstance(exc, OSError | http.client.HTTPException):
            deadline.check()  # a stop cut the connection: that, not the connection, is the cause
            raise _request_error(exc, uri, host, proxy, limits, deadline) from exc
        raise


def request_line(parts: SplitResult, limits: FetchLimits, offset: int = 0) -> tuple[Proxy | None, str, dict[str, str]]:
    """For a GET of ``parts``: the proxy that reaches its host (or None), the request target (the
    absolute form through a plain-http proxy, which forwards it) and the headers, the host's
    ``fetch.auth`` credentials and the proxy's included."""
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    headers = _headers(limits, scheme, host, offset)
    target = _target(parts)
    proxy = proxy_for(scheme, host, parts.port)
    if proxy is not None and scheme == "http":
        target = f"http://{parts.netloc}{target}"
        headers |= proxy.headers
    return proxy, target, headers


def http_connection(scheme: str, host: str, port: int | None, proxy: Proxy | None, limits: FetchLimits,
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
        return Stalled(reasons.ArtifactProxyRejected, f"{uri}: the proxy {proxy.shown} refused the tunnel to {host} "
                                                      f"with HTTP {refused_tunnel[1]}{wants}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Stalled(reasons.ArtifactTlsFailed, f"{uri}: the certificate of {host} is not trusted: {exc.verify_message}")
    if isinstance(exc, http.client.InvalidURL):
        return Stalled(reasons.ArtifactUriInvalid, f"{uri}: {exc}")
    if isinstance(exc, TimeoutError):
        if deadline.left() <= 0:
            return deadline.exceeded()
        return Interrupted(reasons.ArtifactUnavailable, f"{uri}: {host} did not answer in time (connectTimeout "
                                                        f"{limits.connect_timeout:g}s, readTimeout {limits.read_timeout:g}s)")
    return Interrupted(reasons.ArtifactUnavailable, f"{uri}: {_describe(exc)}")


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=None if ca_bundle is None else str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise Stalled(reasons.TlsCaBundleInvalid, f"fetch.caBundle {ca_bundle}: {_describe(exc)}") from None


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
        headers["Authorization"] = authorization(credentials, scheme, host)
    return headers


def _follow(uri: str, current: str, target: str, policy: str) -> str:
    """``target`` if the site's redirect policy allows the hop from ``current``; credentials are
    chosen per hop by host, so they never follow a redirect to another host."""
    source, dest = urlsplit(current), urlsplit(target)
    hop = f"{shown_url(current)} redirects to {shown_url(target)}"
    if dest.scheme.lower() not in ("http", "https"):
        raise Stalled(reasons.ArtifactRedirectRefused, f"{uri}: {hop}, which is not http(s)")
    if source.scheme.lower() == "https" and dest.scheme.lower() == "http":
        raise Stalled(reasons.ArtifactRedirectRefused, f"{uri}: {hop}: a downgrade from https to http is never followed")
    if policy == "none":
        raise Stalled(reasons.ArtifactRedirectRefused, f"{uri}: {hop}; this site follows no redirects (fetch.redirects: none)")
    if policy == "same-host" and dest.hostname != source.hostname:
        raise Stalled(
            reasons.ArtifactRedirectRefused,
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
        raise Stalled(reasons.ArtifactEncodingUnsupported, f"{uri}: the server sends Content-Encoding {encoding} though asked for identity")
    if expected is not None and response.length is not None:
        total = start + response.length
        if total > expected:
            raise Stalled(reasons.ArtifactTooLarge, f"{uri}: server sends {total} bytes, the manifest says {expected}")
        if total < expected:
            raise Stalled(reasons.ArtifactSizeMismatch, f"{uri}: server sends {total} bytes, the manifest says {expected}")
    resumable = response.status == 206 or response.getheader("Accept-Ranges", "").strip().lower() == "bytes"
    return Opened(_HttpBody(uri, response, sock, limits, deadline), start, resumable)


def _start_of_body(uri: str, host: str, response: http.client.HTTPResponse, offset: int, expected: int | None) -> int:
    code = response.status
    if code == 200:
        return 0  # a server that ignores Range sends everything again
    if code == 206:
        match = _CONTENT_RANGE.match(response.getheader("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise Stalled(reasons.ArtifactRangeInvalid, f"{uri}: asked for bytes from {offset}, the server sends "
                                                        f"Content-Range {response.getheader('Content-Range')!r}")
        if expected is not None and match.group(3) not in ("*", str(expected)):
            raise Stalled(reasons.ArtifactSizeMismatch, f"{uri}: the server's copy has {match.group(3)} bytes, the manifest says {expected}")
        return offset
    if code in (404, 410):
        raise Stalled(reasons.ArtifactNotFound, f"{uri}: HTTP {code}")
    if code in (408, 429) or code >= 500:
        raise unavailable(uri, "", code, response.getheader)
    if code == 416:
        raise Stalled(reasons.ArtifactRangeInvalid, f"{uri}: HTTP 416: the server has fewer than the {offset} bytes already received")
    if code == 407:
        raise Stalled(reasons.ArtifactProxyRejected, f"{uri}: HTTP 407: the proxy wants credentials; give them in the proxy URL of $http_proxy")
    if code in (401, 403):
        raise Stalled(reasons.ArtifactRequestRejected, f"{uri}: HTTP {code}: check the credentials this site has for {host} (fetch.auth)")
    raise Stalled(reasons.ArtifactRequestRejected, f"{uri}: HTTP {code}")


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
            raise Interrupted(reasons.ArtifactStalled, f"{self._uri}: no data for {self._limits.read_timeout:g}s "
                                                       f"after {self.received} bytes") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._deadline.check()
            raise Interrupted(reasons.ArtifactTruncated, f"{self._uri}: connection lost after {self.received} bytes: {_describe(exc)}") from exc
        if n == 0 and self._left:
            self._deadline.check()
            raise Interrupted(reasons.ArtifactTruncated, f"{self._uri}: the body ended after {self.received} bytes, "
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
            raise Interrupted(reasons.ArtifactStalled, f"{self._uri}: {self.received - then} bytes in {elapsed:.1f}s, below the "
                                                       f"minimum of {self._limits.min_rate} bytes/s")
        self._window = (time.monotonic(), self.received)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
