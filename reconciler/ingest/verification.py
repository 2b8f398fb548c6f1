"""What a site proves of an artifact before it may serve it: the bytes, hashed while they stream
in, match the manifest's size and digest, and a signer the site trusts signed them. The agent
(``apply.py``) and ``reconciler validate --artifacts`` (``artifact_check.py``) run these same
functions, so a fleet that passes the check passes the sites' checks too.

Each step raises the site's own Stalled or Transient error. A file that is a Git LFS pointer
rather than the model is named as such: a site reads the Git tree, where only the pointer lives."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.errors import ReconcilerError, Stalled
from reconciler.ingest.artifacts import ArtifactStore, Ingested, fetch_bytes
from reconciler.ingest.fetch import RepoRoot
from reconciler.ingest.ocisignatures import registry_signature_count, verify_registry_signature
from reconciler.ingest.sources import file_uri
from reconciler.manifests.models import Artifact, ArtifactFile, ReferenceProfile, Signers
from reconciler.settings import FetchLimits
from reconciler.trust import TrustRoots, Verified, narrow, verify_artifact_signature

SIGNATURE_MAX_BYTES = 256 * 1024  # a keyless bundle is ~6 KiB; model-signing grows ~150 B a file
LFS_POINTER_MAX_BYTES = 1024  # the spec caps a pointer file at 1024 bytes
_SIZE_OR_DIGEST = frozenset({reasons.ArtifactSizeMismatch, reasons.ArtifactTooLarge, reasons.ArtifactDigestMismatch})
_LFS_POINTER = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\n(?:.*\n)*?oid (\S+)\nsize (\d+)\n")


@dataclass(frozen=True)
class LfsPointer:
    oid: str  # "sha256:<hex>"
    size: int


def verified_artifact(store: ArtifactStore, artifact: Artifact | ReferenceProfile, signers: Signers | None, roots: TrustRoots,
                      repo_root: RepoRoot, limits: FetchLimits, stop: CancelToken | None = None) -> Ingested:
    """The artifact's bytes in the store, and a signature over them by a signer the site trusts
    (narrowed, never widened, by the version's own ``signers``). A version's reference profile is
    pinned and signed like its artifact and takes the same way."""
    ingested = ingest(store, artifact, repo_root, limits, stop)
    verify_signature(ingested, artifact, signature_roots(roots, signers), repo_root, limits, stop)
    return ingested


def verified_model(store: ArtifactStore, artifact: Artifact, signers: Signers | None, roots: TrustRoots,
                   repo_root: RepoRoot, limits: FetchLimits, stop: CancelToken | None = None) -> Ingested:
    """``verified_artifact``, and for a model with files each file as well, in the model's directory
    (the path returned is its ONNX file there, which loads its external data beside it). Each file
    is signed by its own signature, else by the artifact's: a model_signing bundle that lists it
    under its path, or a registry signature of a manifest that has it as a layer (``push --file``)."""
    if not artifact.files:
        return verified_artifact(store, artifact, signers, roots, repo_root, limits, stop)
    files = ingest_files(store, artifact, repo_root, limits, stop)
    ingested = verified_artifact(store, artifact, signers, roots, repo_root, limits, stop)
    narrowed = signature_roots(roots, signers)
    for file in artifact.files:
        verify_signature(files[file.path], file_artifact(artifact, file), narrowed, repo_root, limits, stop,
                         file_name=file.path)
    return store.materialize(ingested, files)


def ingest_files(store: ArtifactStore, artifact: Artifact, repo_root: RepoRoot, limits: FetchLimits,
                 stop: CancelToken | None = None) -> dict[str, Ingested]:
    """The artifact's files in the store, each pinned as an artifact of its own, the largest first:
    out of one archive layer, it reads the layer to its end and proves it safe, so the ONNX file
    and the smaller files after it stop at their own member (``ingest.ociarchive``)."""
    largest_first = sorted(artifact.files, key=lambda file: file.size, reverse=True)
    return {file.path: ingest(store, file_artifact(artifact, file), repo_root, limits, stop) for file in largest_first}


def file_artifact(artifact: Artifact, file: ArtifactFile) -> Artifact:
    """The file as an artifact: where it is, what it must be, who signs it."""
    return Artifact(uri=file_uri(artifact.uri, file.path), digest=file.digest, size=file.size,
                    signature=file.signature or artifact.signature, platform=artifact.platform)


def ingest(store: ArtifactStore, artifact: Artifact | ReferenceProfile, repo_root: RepoRoot, limits: FetchLimits,
           stop: CancelToken | None = None) -> Ingested:
    try:
        return store.ingest(artifact, repo_root, limits, stop)
    except Stalled as error:
        pointer = lfs_pointer_at(artifact.uri, repo_root, limits) if error.reason in _SIZE_OR_DIGEST else None
        if pointer is None:
            raise
        raise Stalled(reasons.ArtifactIsLfsPointer, lfs_message(artifact, pointer)) from error


def signature_roots(roots: TrustRoots, signers: Signers | None) -> TrustRoots:
    return narrow(roots, signers.identities, signers.keys) if signers else roots


def signature_bytes(artifact: Artifact | ReferenceProfile, repo_root: RepoRoot, limits: FetchLimits,
                    stop: CancelToken | None = None) -> bytes:
    """The signature file; for signatures found in the registry, only that there is one."""
    if artifact.signature.format == "registry":
        registry_signature_count(artifact, limits, stop)
        return b""
    return fetch_bytes(artifact.signature.uri, repo_root, limits, SIGNATURE_MAX_BYTES, stop)


def verify_signature(ingested: Ingested, artifact: Artifact | ReferenceProfile, roots: TrustRoots, repo_root: RepoRoot,
                     limits: FetchLimits, stop: CancelToken | None = None, file_name: str | None = None) -> Verified:
    """``file_name``: the name a model_signing bundle lists the file under; default the last part of its URI."""
    if artifact.signature.format == "registry":
        return verify_registry_signature(artifact, roots, limits, stop)
    signature = signature_bytes(artifact, repo_root, limits, stop)
    return verify_artifact_signature(ingested.digest.raw, file_name or _file_name(artifact.uri), signature,
                                     artifact.signature.format, roots)


def _file_name(uri: str) -> str:
    """The last part of the URI's path; of an OCI URI's ``#FILE`` when it has one."""
    parts = urlsplit(uri)
    if parts.scheme.lower() in ("oci", "oci-layout") and parts.fragment:
        return posixpath.basename(parts.fragment)
    return PurePosixPath(parts.path).name


def lfs_pointer_at(uri: str, repo_root: RepoRoot, limits: FetchLimits) -> LfsPointer | None:
    """The Git LFS pointer at ``uri``, if the file there is one (read no further than a pointer can be)."""
    try:
        return parse_lfs_pointer(fetch_bytes(uri, repo_root, limits, LFS_POINTER_MAX_BYTES))
    except ReconcilerError:
        return None


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    match = _LFS_POINTER.match(data)
    if match is None:
        return None
    return LfsPointer(match.group(1).decode("ascii", "replace"), int(match.group(2)))


def lfs_message(artifact: Artifact, pointer: LfsPointer) -> str:
    same = " (the object the manifest pins)" if pointer.oid == artifact.digest else ""
    return (f"{artifact.uri}: this is a Git LFS pointer: the repository holds a pointer to {pointer.oid}"
            f"{same}, {pointer.size} bytes, not the model, and sites read only the Git tree; commit the file "
            f"itself (git lfs migrate export --include={artifact.uri}), or publish it over https and point uri there")
