"""Publishing a model to an OCI registry (``reconciler push``): the file as a CNCF ModelPack
artifact (its config, the file as one ``weight.v1.raw`` layer named by ``org.cncf.model.filepath``,
artifactType ``application/vnd.cncf.model.manifest.v1+json``), so its layer digest is the file's
sha256; a model with external data files has one such layer per file, named by its path beside
the ONNX file, so each is pinned and signed like the ONNX file; and, given a key, cosign's signatures of the manifest in both its forms, so every cosign
release and every site reads them (``signature: {format: registry}``): a Sigstore bundle as a
referrer (v3), and the tag ``sha256-<hex>.sig`` (simple-signing payload, ECDSA P-256).
Uploads follow the distribution spec: POST an upload, PUT it with ``?digest=``; the registry's
token is asked for with the ``pull,push`` scope."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.errors import Stalled, Transient
from reconciler.ingest.fetch import Deadline
from reconciler.ingest.oci import OCI_INDEX, OCI_MANIFEST, parse_reference
from reconciler.ingest.ocisignatures import BUNDLE_TYPES, COSIGN_SIGNATURE, SIMPLE_SIGNING
from reconciler.ingest.ocisource import Registry
from reconciler.manifests.models import beside_path
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits
from reconciler.trust import signing

MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
_ANSWER_MAX_BYTES = 64 << 10


@dataclass(frozen=True)
class PushedFile:
    path: str  # beside the ONNX file, as its external data names it
    digest: Digest  # the file's, = its layer's
    size: int


@dataclass(frozen=True)
class Pushed:
    uri: str  # oci://REGISTRY/REPO:TAG@sha256:MANIFEST, what the Model document's artifact uri pins
    manifest: Digest
    digest: Digest  # the file's, = its layer's
    size: int
    signature_tag: str | None  # the cosign tag written, if signed
    files: tuple[PushedFile, ...] = ()  # the ONNX file's external data files, each a layer of its own


def push_model(path: Path, uri: str, limits: FetchLimits, key: ec.EllipticCurvePrivateKey | None = None,
               stop: CancelToken | None = None, files: Sequence[str] = ()) -> Pushed:
    """``files``: paths beside ``path`` (relative to its directory) that it loads as external data."""
    ref = parse_reference(uri)
    if ref.tag is None or ref.digest is not None or ref.file is not None or not uri.lower().startswith("oci://"):
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: push to oci://REGISTRY/REPOSITORY:TAG")
    named = {path.name: path} | {_beside(path, name): path.parent / name for name in files}
    registry = Registry(uri, ref.registry, ref.repository, limits, Deadline(limits.deadline, uri, stop), "pull,push")
    layers = [_upload_file(registry, name, file) for name, file in named.items()]
    config = json.dumps({"descriptor": {"name": ref.repository}, "config": {"format": "onnx"},
                         "modelfs": {"type": "layers", "diffIds": [layer["digest"] for layer in layers]}},
                        separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODEL_MANIFEST,
                "config": _upload_bytes(registry, config) | {"mediaType": MODEL_CONFIG}, "layers": layers}
    pinned, manifest_size = _put_manifest(registry, ref.tag, manifest)
    signature_tag = None
    if key is not None:
        reference = f"{ref.registry}/{ref.repository}"
        _attach_bundle(registry, key, reference, {"mediaType": OCI_MANIFEST, "digest": pinned, "size": manifest_size})
        signature_tag = _sign(registry, key, reference, pinned)
    main, *beside = layers
    return Pushed(f"oci://{ref.registry}/{ref.repository}:{ref.tag}@{pinned}", pinned, main["digest"], main["size"],
                  signature_tag, tuple(PushedFile(name, layer["digest"], layer["size"])
                                       for name, layer in zip(list(named)[1:], beside, strict=True)))


def _beside(model: Path, name: str) -> str:
    try:
        beside_path(name)
    except ValueError as exc:
        raise Stalled(reasons.ArtifactPathEscapes, f"{name}: {exc} (a file beside {model.name})") from None
    if name == model.name:
        raise Stalled(reasons.ArtifactUriInvalid, f"{name}: that is the ONNX file itself")
    return name


def _upload_file(registry: Registry, name: str, path: Path) -> dict:
    """The file as a ModelPack raw weight layer named ``name``."""
    digest, size = _file_digest(path)
    with path.open("rb") as file:
        layer = _upload(registry, file, digest, size)
    return layer | {"mediaType": WEIGHT_RAW, "annotations": {"org.cncf.model.filepath": name}}


def _attach_bundle(registry: Registry, key: ec.EllipticCurvePrivateKey, reference: str, subject: dict) -> None:
    """cosign v3's form: a Sigstore bundle (DSSE in-toto statement naming the manifest) pushed as a
    referrer of it; where the registry has no referrers API, listed in the fallback tag's index too."""
    signed = Digest(subject["digest"])
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                            "subject": [{"name": reference, "digest": {"sha256": signed.hex}}],
                            "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}},
                           separators=(",", ":")).encode()
    bundle = signing.statement_bundle(key, statement)
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope",
                   "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}
    referrer = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPES[0],
                "config": _upload_bytes(registry, b"{}") | {"mediaType": "application/vnd.oci.empty.v1+json"},
                "layers": [_upload_bytes(registry, bundle) | {"mediaType": BUNDLE_TYPES[0]}],
                "subject": subject, "annotations": annotations}
    digest, size = _put_manifest(registry, None, referrer)
    status, _, _ = registry.get(f"{registry.base}/referrers/{signed}", OCI_INDEX, _ANSWER_MAX_BYTES)
    if status == 200:
        return  # the registry lists its referrers itself
    tag = f"sha256-{signed.hex}"
    _, index = registry.manifest(tag, None, missing_ok=True)
    listed = [e for e in index.get("manifests") or [] if e.get("digest") != digest]
    _put_manifest(registry, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*listed, {
        "mediaType": OCI_MANIFEST, "digest": digest, "size": size, "artifactType": BUNDLE_TYPES[0],
        "annotations": annotations}]})


def _sign(registry: Registry, key: ec.EllipticCurvePrivateKey, reference: str, signed: Digest) -> str:
    """cosign's tag scheme: ``sha256-<hex>.sig``, one simple-signing layer."""
    payload = json.dumps({"critical": {"identity": {"docker-reference": reference},
                                       "image": {"docker-manifest-digest": signed},
                                       "type": "cosign container image signature"},
                          "optional": None}, separators=(",", ":")).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")
    layer = _upload_bytes(registry, payload) | {"mediaType": SIMPLE_SIGNING, "annotations": {COSIGN_SIGNATURE: signature}}
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
                         "os": "", "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}, "config": {}},
                        separators=(",", ":")).encode()
    tag = f"sha256-{signed.hex}.sig"
    _put_manifest(registry, tag, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": _upload_bytes(registry, config) | {"mediaType": "application/vnd.oci.image.config.v1+json"},
                                  "layers": [layer]})
    return tag


def _file_digest(path: Path) -> tuple[Digest, int]:
    sha = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                sha.update(chunk)
    except OSError as exc:
        raise Transient(reasons.ArtifactUnreadable, f"{path}: {exc.strerror}") from None
    return Digest.of(sha), path.stat().st_size


def _upload_bytes(registry: Registry, data: bytes) -> dict:
    return _upload(registry, data, Digest.of(hashlib.sha256(data)), len(data))


def _upload(registry: Registry, body: bytes | BinaryIO, digest: Digest, size: int) -> dict:
    status, _, _ = registry.call("HEAD", f"{registry.base}/blobs/{digest}", {}, None, 0)
    if status != 200:
        status, headers, answer = registry.call("POST", f"{registry.base}/blobs/uploads/", {"Content-Length": "0"}, b"",
                                                _ANSWER_MAX_BYTES)
        _expect(registry, status, 202, "an upload", answer)
        location = urljoin(registry.base + "/", headers.get("location", ""))
        if urlsplit(location).netloc != urlsplit(registry.base).netloc:
            raise Stalled(reasons.ArtifactRedirectRefused, f"{registry.uri}: the upload goes to another host, {urlsplit(location).netloc}")
        query = urlsplit(location).query
        url = location.split("?")[0] + "?" + "&".join(q for q in (query, urlencode({"digest": digest})) if q)
        status, _, answer = registry.call("PUT", url, {"Content-Type": "application/octet-stream",
                                                       "Content-Length": str(size)}, body, _ANSWER_MAX_BYTES)
        _expect(registry, status, 201, f"blob {digest}", answer)
    return {"digest": digest, "size": size}


def _put_manifest(registry: Registry, reference: str | None, manifest: dict) -> tuple[Digest, int]:
    """The manifest under ``reference`` (None: by its digest); its digest and size."""
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = Digest.of(hashlib.sha256(body))
    status, _, answer = registry.call("PUT", f"{registry.base}/manifests/{reference or digest}",
                                      {"Content-Type": manifest["mediaType"]}, body, _ANSWER_MAX_BYTES)
    _expect(registry, status, 201, f"manifest {reference or digest}", answer)
    return digest, len(body)


def _expect(registry: Registry, status: int, wanted: int, what: str, answer: bytes) -> None:
    if status != wanted:
        registry.refuse(status if status != 200 else 0, f"{what} ({answer[:200].decode('utf-8', 'replace')})")
