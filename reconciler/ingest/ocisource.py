"""Artifact bytes out of an OCI registry (the distribution API) or an OCI image layout directory.

The manifest is asked for with the full ``Accept`` list (a registry answers 404 to a client that does
not say it reads OCI manifests), its bytes are checked against the pinned digest, an image index is
resolved by the site's architecture, and the layer's blob is then read by ``http_source``: same
limits, proxy, stall checks and ``Range`` resume as any http artifact. A 401 is answered once per
request with the registry's challenge (a bearer token per scope, or basic credentials); the token
goes to the registry's host only, so a redirect to blob storage elsewhere never carries it.
Mirrors (``fetch.oci.mirrors``) are tried first; the bytes are verified the same wherever they come from."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlencode

from reconciler import reasons
from reconciler.errors import Stalled, Transient
from reconciler.ingest.fetch import Deadline, Opened, read_small, unavailable
from reconciler.ingest.httpsource import http_response, http_source
from reconciler.ingest.oci import (
    ACCEPT,
    INDEX_TYPES,
    MANIFEST_MAX_BYTES,
    OCI_INDEX,
    OciReference,
    choose_in_index,
    choose_layer,
    is_archive,
    parse_manifest,
    parse_reference,
)
from reconciler.ingest.ociarchive import archive_member
from reconciler.ingest.ociauth import (
    cached_token,
    forget_token,
    keep_token,
    parse_challenge,
    registry_credentials,
)
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits

T = TypeVar("T")
TOKEN_MAX_BYTES = 64 << 10
OAUTH_CLIENT_ID = "reconciler"
NESTED_INDEXES = 2
_MIRROR_FALLBACK = frozenset({reasons.ArtifactUnavailable, reasons.ArtifactNotFound, reasons.OciLayerNotFound})
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}


def site_arch(arch: str | None) -> str:
    """The architecture an image index is resolved for: the artifact's platform, else this machine's."""
    return arch or _GO_ARCH.get(platform.machine(), platform.machine())


def through_mirrors(uri: str, ref: OciReference, limits: FetchLimits, deadline: Deadline, ask: Callable[[Registry], T],
                    also_missing: frozenset[str] = frozenset()) -> T:
    """``ask``'s answer from the first of the registry's mirrors (``fetch.oci.mirrors``) that has
    what is asked, else from the registry itself. A mirror that is down or lacks it (or fails
    with a reason of ``also_missing``) passes on to the next; any other refusal is final."""
    hosts = [*limits.oci.mirrors.get(ref.registry, []), ref.registry]
    for host in hosts:
        try:
            return ask(Registry(uri, host, ref.repository, limits, deadline))
        except (Stalled, Transient) as exc:
            if host == hosts[-1] or exc.reason not in _MIRROR_FALLBACK | also_missing:
                raise
    raise AssertionError("unreachable: the registry itself is the last host")


@contextmanager
def oci_source(uri: str, limits: FetchLimits, deadline: Deadline, offset: int, expected: int | None,
               pinned: Digest | None, arch: str | None) -> Iterator[Opened]:
    ref = parse_reference(uri)
    registry, layer = through_mirrors(uri, ref, limits, deadline,
                                      lambda registry: (registry, registry.resolve(ref, pinned, site_arch(arch))[1]))
    if is_archive(layer):
        _check_size(uri, layer, None, limits.max_bytes)
        source = registry.blob(layer["digest"], 0, layer["size"])
        with archive_member(uri, source, str(ref.file), expected, limits.max_bytes, layer["digest"]) as opened:
            yield opened
        return
    _check_size(uri, layer, expected, limits.max_bytes)
    with registry.blob(layer["digest"], offset, expected) as opened:
        yield opened


def layout_blob(uri: str, pinned: Digest | None, arch: str | None) -> tuple[Path, str | None]:
    """The file of the artifact's layer in an OCI image layout directory (``oci-layout://``), and
    the path of the artifact in it when the layer is an archive."""
    ref = parse_reference(uri)
    root = Path(ref.registry)
    index = parse_manifest(uri, _read_small(uri, root / "index.json"), OCI_INDEX)
    descriptor = _layout_entry(uri, ref, index)
    for _ in range(NESTED_INDEXES + 1):
        body = _read_small(uri, _blob_path(root, descriptor["digest"]))
        manifest = parse_manifest(uri, _verified(uri, body, descriptor["digest"], None), descriptor.get("mediaType"))
        if manifest["mediaType"] not in INDEX_TYPES:
            layer = choose_layer(uri, ref, manifest, pinned)
            return _blob_path(root, layer["digest"]), ref.file if is_archive(layer) else None
        descriptor = choose_in_index(uri, manifest, site_arch(arch))
    raise Stalled(reasons.OciManifestInvalid, f"{uri}: image indexes nested deeper than {NESTED_INDEXES}")


def _layout_entry(uri: str, ref: OciReference, index: dict[str, Any]) -> dict[str, Any]:
    for entry in index.get("manifests") or []:
        name = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if entry.get("digest") == ref.digest or (ref.digest is None and name == ref.tag):
            return entry
    if ref.digest is not None:
        return {"digest": ref.digest}  # a manifest kept in the layout without a name in its index
    raise Stalled(reasons.ArtifactNotFound, f"{uri}: the layout's index.json names no manifest {ref.tag!r}")


def _blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / Digest(digest).hex


def _read_small(uri: str, path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            body = file.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise Stalled(reasons.ArtifactNotFound, f"{uri}: no {path}") from None
    except OSError as exc:
        raise Transient(reasons.ArtifactUnreadable, f"{uri}: {path}: {exc.strerror}") from None
    if len(body) > MANIFEST_MAX_BYTES:
        raise Stalled(reasons.OciManifestInvalid, f"{uri}: {path} is larger than {MANIFEST_MAX_BYTES} bytes")
    return body


def _verified(uri: str, body: bytes, pinned: str | None, announced: str | None) -> bytes:
    got = Digest.of(hashlib.sha256(body))
    for expected, who in ((pinned, "pinned"), (announced, "the registry says in Docker-Content-Digest")):
        if expected is not None and expected != got:
            raise Stalled(reasons.OciManifestDigestMismatch, f"{uri}: the manifest's bytes hash to {got}, {who} {expected}")
    return body


def _check_size(uri: str, layer: dict[str, Any], expected: int | None, max_bytes: int) -> None:
    size = layer["size"]
    if size > max_bytes:
        raise Stalled(reasons.ArtifactTooLarge, f"{uri}: layer {layer['digest']} has {size} bytes, more than this site's "
                                          f"limit of {max_bytes} (fetch.maxBytes)")
    if expected is not None and size != expected:
        reason = reasons.ArtifactTooLarge if size > expected else reasons.ArtifactSizeMismatch
        raise Stalled(reason, f"{uri}: layer {layer['digest']} has {size} bytes, the Model document says {expected}")


class Registry:
    """One repository of one registry, spoken to over the distribution API."""

    def __init__(self, uri: str, host: str, repository: str, limits: FetchLimits, deadline: Deadline,
                 actions: str = "pull"):
        self.uri = uri
        self.host = host
        self.limits = limits
        self.deadline = deadline
        scheme = "http" if host in limits.oci.plain_http else "https"
        self.origin = f"{scheme}://{host}"
        self.base = f"{self.origin}/v2/{repository}"
        self.scope = f"repository:{repository}:{actions}"
        self.credentials = registry_credentials(host, limits, scheme)
        token = cached_token(host, self.scope, self.credentials.who)
        self.authorization = f"Bearer {token}" if token else self.credentials.header

    def resolve(self, ref: OciReference, pinned: Digest | None, arch: str) -> tuple[Digest, dict[str, Any]]:
        """The digest of the manifest (or index) ``ref`` names, and the artifact's layer under it."""
        top, manifest = self.manifest(ref.reference, ref.digest)
        for _ in range(NESTED_INDEXES + 1):
            if manifest["mediaType"] not in INDEX_TYPES:
                return top, choose_layer(self.uri, ref, manifest, pinned)
            entry = choose_in_index(self.uri, manifest, arch)
            _, manifest = self.manifest(entry["digest"], entry["digest"])
        raise Stalled(reasons.OciManifestInvalid, f"{self.uri}: image indexes nested deeper than {NESTED_INDEXES}")

    def manifest(self, reference: str, pinned: str | None, missing_ok: bool = False) -> tuple[Digest, dict[str, Any]]:
        """The manifest's digest and content; with ``missing_ok``, a 404 gives an empty index."""
        status, headers, body = self.get(f"{self.base}/manifests/{reference}", ACCEPT, MANIFEST_MAX_BYTES)
        if status == 404 and missing_ok:
            return Digest.of(hashlib.sha256(b"")), {"mediaType": OCI_INDEX, "manifests": []}
        self.refuse(status, f"manifest {reference}", headers)
        _verified(self.uri, body, pinned, headers.get("docker-content-digest"))
        return Digest.of(hashlib.sha256(body)), parse_manifest(self.uri, body, headers.get("content-type"))

    def small_blob(self, digest: str, max_bytes: int) -> bytes:
        """A blob of a few KiB (a signature), whole and checked against its digest."""
        with self.blob(digest, 0, None) as opened:
            data = read_small(opened.body, max_bytes, f"{self.uri} (blob {digest})")
        if (got := Digest.of(hashlib.sha256(data))) != digest:
            raise Stalled(reasons.ArtifactDigestMismatch, f"{self.uri}: blob {digest} hashes to {got}")
        return data

    @contextmanager
    def blob(self, digest: str, offset: int, expected: int | None) -> Iterator[Opened]:
        # Registries send blobs on to their storage: followed, unless the site follows none, since
        # the bytes are checked against the digest; the token stays with the registry's host.
        redirects = "none" if self.limits.redirects == "none" else "any"
        limits = self.limits.model_copy(update={"redirects": redirects})
        own = {"Authorization": self.authorization} if self.authorization else {}
        with http_source(self.uri, limits, self.deadline, offset, expected,
                         headers_for=lambda netloc: own if netloc == self.host else {},
                         url=f"{self.base}/blobs/{digest}") as opened:
            yield opened

    def get(self, url: str, accept: str, max_bytes: int) -> tuple[int, dict[str, str], bytes]:
        return self.call("GET", url, {"Accept": accept}, None, max_bytes)

    def call(self, method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None,
             max_bytes: int) -> tuple[int, dict[str, str], bytes]:
        """One request, authenticated once if the registry answers 401 (a file body is sent again)."""
        for attempt in range(2):
            if attempt and hasattr(body, "seek"):
                body.seek(0)
            sent = headers | ({"Authorization": self.authorization} if self.authorization else {})
            with http_response(self.uri, url, self.limits, self.deadline, sent, method, body) as response:
                challenge = response.getheader("WWW-Authenticate") if response.status == 401 else None
                if response.status != 401:
                    body = response.read(max_bytes + 1)
                    if len(body) > max_bytes:
                        raise Stalled(reasons.OciManifestInvalid, f"{self.uri}: {url} answers more than {max_bytes} bytes")
                    return response.status, {k.lower(): v for k, v in response.getheaders()}, body
            if attempt:
                forget_token(self.host, self.scope, self.credentials.who)
                raise Stalled(reasons.OciAuthRejected, f"{self.uri}: {self.host} answers 401 again after authenticating; "
                                                 f"check the credentials this site has for it (fetch.auth, fetch.oci.dockerConfig)")
            self._authenticate(challenge)
        raise AssertionError("unreachable")

    def _authenticate(self, header: str | None) -> None:
        challenge = parse_challenge(self.uri, header)
        given = self.credentials.header
        if challenge.scheme == "basic" or given and given.startswith("Bearer "):
            if given is None:
                raise Stalled(reasons.ArtifactAuthMissing, f"{self.uri}: {self.host} wants credentials; give them in "
                                                     f"fetch.auth.{self.host} or fetch.oci.dockerConfig"
                                                     f"{' (an identity token needs a token service)' if self.credentials.who else ''}")
            self.authorization = given
            return
        scope = challenge.params.get("scope") or self.scope
        asked = {k: v for k, v in (("service", challenge.params.get("service")), ("scope", scope)) if v}
        status, headers, answer = self._ask_token(challenge.params["realm"], asked)
        if status in (401, 403):
            raise Stalled(reasons.OciAuthRejected, f"{self.uri}: the token service of {self.host} refused "
                                             f"{'the credentials' if self.credentials.who else 'an anonymous pull'} "
                                             f"with HTTP {status} for {scope}")
        self.refuse(status, "a token", headers)
        token = keep_token(self.host, self.scope, self.credentials.who, answer, self.uri)
        self.authorization = f"Bearer {token}"

    def _ask_token(self, realm: str, asked: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The token service's answer: GET with basic credentials (or none), or, for docker's
        identity token, the OAuth2 refresh-token grant (distribution's ``oauth.md``)."""
        if self.credentials.identity_token is not None:
            form = urlencode(asked | {"grant_type": "refresh_token", "client_id": OAUTH_CLIENT_ID,
                                      "refresh_token": self.credentials.identity_token}).encode()
            request = ("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, form)
        else:
            headers = {"Authorization": self.credentials.header} if self.credentials.header else {}
            request = ("GET", f"{realm}{'&' if '?' in realm else '?'}{urlencode(asked)}", headers, None)
        method, url, headers, body = request
        with http_response(self.uri, url, self.limits, self.deadline, headers, method, body) as response:
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(TOKEN_MAX_BYTES)

    def refuse(self, status: int, what: str, headers: dict[str, str] | None = None) -> None:
        """Nothing for a 200; else the error the status says (``headers``: the answer's, lowercased)."""
        if status == 200:
            return
        if status == 404:
            raise Stalled(reasons.ArtifactNotFound, f"{self.uri}: {self.host} has no {what} (HTTP 404)")
        if status in (408, 429) or status >= 500:
            raise unavailable(self.uri, f"{self.host} answers {what} with ", status,
                              lambda name: (headers or {}).get(name.lower()))
        raise Stalled(reasons.ArtifactRequestRejected, f"{self.uri}: {self.host} answers HTTP {status} for {what}")
