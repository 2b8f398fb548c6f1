"""What an ``oci://`` or ``oci-layout://`` URI names, and which layer of an OCI manifest holds the
artifact: the pure half of reading models from registries (no I/O; ``reconciler.ingest.ocisource``
does the talking).

    oci://REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:HEX][#FILE]
    oci-layout:///ABSOLUTE/PATH[:TAG][@sha256:HEX][#FILE]

A digest pins the manifest (a tag beside it is only a hint); a tag alone is allowed because the
Model document pins the artifact's own digest, which for a single-file layer is the layer's digest.
The layer is the one of that digest, else the one whose ``org.cncf.model.filepath`` or
``org.opencontainers.image.title`` is ``FILE``, else the only layer that can hold a model; when no
layer has the digest, ``FILE`` may be a member of a tar or tar+gzip layer (``ingest.ociarchive``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.types import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
MANIFEST_MAX_BYTES = 4 << 20
FILE_NAME_ANNOTATIONS = ("org.cncf.model.filepath", "org.opencontainers.image.title")
# Archives are not files: a single-file layer is what the manifest's digest pins.
_ARCHIVE = re.compile(r"(\.|\b)tar(\+\w+)?$|\.tar\.|\+gzip$|\+zstd$")
_NOT_A_MODEL = re.compile(r"\.(doc|code|dataset|license|chat\.template\.jinja)(\.|$)|simplesigning|sigstore")
_REPOSITORY = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class OciReference:
    """``registry`` is ``host[:port]`` (for oci-layout: the layout's directory), ``file`` the fragment."""

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None
    file: str | None

    @property
    def reference(self) -> str:
        """What the manifest is asked for by: its digest when pinned, else the tag."""
        return str(self.digest) if self.digest is not None else str(self.tag)


def parse_reference(uri: str) -> OciReference:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("oci", "oci-layout"):
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:…]")
    rest, _, file = rest.partition("#")
    rest, at, digest_text = rest.partition("@")
    digest = _digest(uri, digest_text) if at else None
    if scheme.lower() == "oci-layout":
        path, tag = _split_tag(rest)
        if not path.startswith("/"):
            raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: expected oci-layout:///absolute/path[:TAG][@sha256:…]")
        registry, repository = path, ""
    else:
        registry, slash, name = rest.partition("/")
        repository, tag = _split_tag(name)
        if not registry or not slash or not _REPOSITORY.match(repository):
            raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:…] "
                                                "with a lower-case repository name")
    if tag is not None and not _TAG.match(tag):
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: {tag!r} is not a valid tag")
    if tag is None and digest is None:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: names no manifest; add :TAG or @sha256:…")
    return OciReference(registry.lower() if scheme.lower() == "oci" else registry, repository, tag, digest, file or None)


def _split_tag(name: str) -> tuple[str, str | None]:
    if ":" in name.rsplit("/", 1)[-1]:
        head, _, tag = name.rpartition(":")
        return head, tag
    return name, None


def _digest(uri: str, text: str) -> Digest:
    try:
        return Digest(text)
    except ValueError:
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: {text!r} is not a sha256 digest") from None


def parse_manifest(uri: str, body: bytes, content_type: str | None) -> dict[str, Any]:
    """The manifest or index as JSON; its ``mediaType`` must agree with what the registry says it is."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Stalled(reasons.OciManifestInvalid, f"{uri}: the registry's manifest is not JSON") from None
    if not isinstance(document, dict):
        raise Stalled(reasons.OciManifestInvalid, f"{uri}: the registry's manifest is not a JSON object")
    declared = document.get("mediaType") or (content_type or "").split(";")[0].strip()
    given = (content_type or declared).split(";")[0].strip()
    if declared != given or declared not in MANIFEST_TYPES + INDEX_TYPES:
        raise Stalled(reasons.OciManifestInvalid, f"{uri}: a manifest of type {declared!r} (served as {given!r}); "
                                            "expected an OCI or Docker v2 image manifest or index")
    document["mediaType"] = declared
    return document


def choose_in_index(uri: str, index: dict[str, Any], arch: str) -> dict[str, Any]:
    """The index entry for this site: the manifest for ``arch`` (linux or no OS), or the only one."""
    entries = [e for e in _descriptors(uri, index.get("manifests")) if not _NOT_A_MODEL.search(e.get("artifactType", ""))]
    if len(entries) == 1:
        return entries[0]
    fitting = [e for e in entries if _fits(e.get("platform"), arch)]
    if not fitting:
        offered = sorted({str((e.get("platform") or {}).get("architecture")) for e in entries})
        raise Stalled(reasons.OciPlatformMissing, f"{uri}: the image index has no manifest for architecture {arch} "
                                            f"(it has {', '.join(offered) or 'none'})")
    return fitting[0]


def _fits(platform: Any, arch: str) -> bool:
    if not isinstance(platform, dict):
        return False
    return platform.get("architecture") == arch and platform.get("os") in (None, "", "linux")


def choose_layer(uri: str, ref: OciReference, manifest: dict[str, Any], pinned: Digest | None) -> dict[str, Any]:
    """The layer holding the artifact. A pinned digest that no layer has means the manifest is not
    the artifact's (another artifact, or a tag moved since the version was published)."""
    layers = _descriptors(uri, manifest.get("layers"))
    if pinned is not None:
        for layer in layers:
            if layer["digest"] == pinned:
                return _single_file(uri, layer)
        if ref.file is not None and (archive := _archive_holding(layers, ref.file)) is not None:
            return archive
        where = f"tag {ref.tag}, now manifest" if ref.digest is None and ref.tag else "manifest"
        archives = "; its archive layers may hold the file: name it with #PATH" if any(map(is_archive, layers)) else ""
        raise Stalled(reasons.OciLayerNotFound, f"{uri}: {where} has no layer {pinned}: it is another artifact's"
                                          + (", or the tag moved" if ref.digest is None else "") + archives)
    if ref.file is not None:
        named = [la for la in layers
                 if any((la.get("annotations") or {}).get(name) == ref.file for name in FILE_NAME_ANNOTATIONS)]
        if not named:
            raise Stalled(reasons.OciLayerNotFound, f"{uri}: no layer is named {ref.file!r}")
        return _single_file(uri, named[0])
    # A signature object's one layer is what a URI that names it asks for.
    candidates = [la for la in layers if not _NOT_A_MODEL.search(la.get("mediaType", ""))] or layers
    if len(candidates) != 1:
        raise Stalled(reasons.OciLayerAmbiguous, f"{uri}: {len(candidates)} layers could hold the artifact; "
                                           "name one with #FILE or pin its digest")
    return _single_file(uri, candidates[0])


def is_archive(layer: dict[str, Any]) -> bool:
    """A tar or tar+gzip layer (KitOps, ModelPack ``.tar*``, an ORAS directory): the file is a member.
    ORAS writes raw files as "...layer.v1.tar" too; only its directory layers are archives."""
    media_type = layer.get("mediaType", "")
    oras_directory = (layer.get("annotations") or {}).get("io.deis.oras.content.unpack") == "true"
    return oras_directory or bool(_ARCHIVE.search(media_type)) and not media_type.endswith("image.layer.v1.tar")


def _archive_holding(layers: list[dict[str, Any]], file: str) -> dict[str, Any] | None:
    """The archive layer ``file`` is a member of: the one named by the path's first part, else the only one."""
    archives = [layer for layer in layers if is_archive(layer)]
    named = [la for la in archives
             if any(file.startswith(f"{(la.get('annotations') or {}).get(n, '').rstrip('/')}/") for n in FILE_NAME_ANNOTATIONS)]
    found = named if len(named) == 1 else archives
    return found[0] if len(found) == 1 else None


def _single_file(uri: str, layer: dict[str, Any]) -> dict[str, Any]:
    if is_archive(layer):
        raise Stalled(reasons.OciLayerUnsupported, f"{uri}: layer {layer['digest']} is an archive ({layer.get('mediaType')}); "
                                             "name the file in it with #PATH")
    return layer


def _descriptors(uri: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise Stalled(reasons.OciManifestInvalid, f"{uri}: the manifest lists no layers or manifests")
    found = []
    for entry in value:
        try:
            digest = Digest(entry["digest"])
            size = entry["size"]
        except (TypeError, KeyError, ValueError):
            raise Stalled(reasons.OciManifestInvalid, f"{uri}: a descriptor without a valid sha256 digest and size") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Stalled(reasons.OciManifestInvalid, f"{uri}: descriptor {digest} has no valid size")
        found.append({**entry, "digest": digest})
    return found
