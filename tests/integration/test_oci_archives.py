"""A file out of a tar or tar+gzip layer (an ORAS directory, a KitOps model layer) in Debian's
registry and in an OCI image layout, named with ``#PATH``; archives that could escape an
extraction (``..``, absolute paths, links out, devices), a member that is a link, of another size,
or archives that unpack past the site's limit are refused whole, and nothing reaches the store."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devtools.ociregistry import (
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    digest_of,
    registry_missing,
    running_registry,
)
from reconciler.errors import ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

MODEL = os.urandom(200_000)
ORAS_DIRECTORY = "application/vnd.oci.image.layer.v1.tar+gzip"
KITOPS_MODEL = "application/vnd.kitops.modelkit.model.v1.tar"


def tar(*entries: tuple[str, str, bytes | str], compress: bool = True) -> bytes:
    """``(name, kind, data or link target)``; kind is file, dir, symlink, hardlink or fifo."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind == "file":
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
            else:
                info.linkname = content if isinstance(content, str) else ""
                archive.addfile(info)
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


GOOD = tar(("model", "dir", ""), ("model/README.md", "file", b"# model\n"), ("model/model.onnx", "file", MODEL),
           ("model/latest.onnx", "symlink", "model.onnx"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("archives"), "none") as running:
        yield running


def push_archive(registry: Registry, repository: str, tag: str, data: bytes, media_type: str = ORAS_DIRECTORY) -> str:
    registry.push_blob(repository, b"{}")
    annotations = {"org.opencontainers.image.title": "model", "io.deis.oras.content.unpack": "true"} \
        if media_type == ORAS_DIRECTORY else {}
    layer = registry.push_blob(repository, data) | {"mediaType": media_type, "annotations": annotations}
    return registry.push_manifest(repository, tag, {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
                                                    "artifactType": "application/vnd.unknown.artifact.v1", "layers": [layer]})


def artifact(uri: str, data: bytes = MODEL, size: int | None = None) -> Artifact:
    return Artifact(uri=uri, digest=digest_of(data), size=len(data) if size is None else size, signature={"uri": "m.sig"})


def limits(host: str, **extra: object) -> FetchLimits:
    return FetchLimits(retries=1, oci={"plain_http": [host]}, **extra)


def test_a_file_out_of_an_oras_directory_and_a_kitops_tar(registry: Registry, tmp_path: Path) -> None:
    push_archive(registry, "models/dir", "1.0", GOOD)
    push_archive(registry, "models/kit", "1.0", tar(("model.onnx", "file", MODEL), compress=False), KITOPS_MODEL)
    for n, uri in enumerate((f"oci://{registry.host}/models/dir:1.0#model/model.onnx",
                             f"oci://{registry.host}/models/kit:1.0#model.onnx")):
        store = ArtifactStore(tmp_path / str(n))
        got = store.ingest(artifact(uri), None, limits(registry.host))
        assert got.fetched and got.path.read_bytes() == MODEL
        assert list(store.tmp.glob("*")) == []


def test_a_file_out_of_an_archive_in_an_oci_layout(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layer = {"mediaType": ORAS_DIRECTORY, "digest": digest_of(GOOD), "size": len(GOOD),
             "annotations": {"org.opencontainers.image.title": "model", "io.deis.oras.content.unpack": "true"}}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
                           "artifactType": "application/vnd.unknown.artifact.v1", "layers": [layer]}).encode()
    for blob in (GOOD, manifest, b"{}"):
        (layout / "blobs" / "sha256" / digest_of(blob).removeprefix("sha256:")).write_bytes(blob)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]}))
    store = ArtifactStore(tmp_path / "state")
    got = store.ingest(artifact(f"oci-layout://{layout}:1.0#model/model.onnx"), None, FetchLimits(retries=1))
    assert got.path.read_bytes() == MODEL


@pytest.mark.parametrize("name,data,member,reason,words", [
    ("dot-dot entry", tar(("model.onnx", "file", MODEL), ("../evil.sh", "file", b"#!/bin/sh\n")), "model.onnx",
     "OciArchiveUnsafe", "'../evil.sh' leaves the archive"),
    ("absolute entry", tar(("/etc/cron.d/evil", "file", b"x"), ("model.onnx", "file", MODEL)), "model.onnx",
     "OciArchiveUnsafe", "leaves the archive"),
    ("symlink out", tar(("model.onnx", "file", MODEL), ("data", "symlink", "../../etc")), "model.onnx",
     "OciArchiveUnsafe", "leaves the archive"),
    ("absolute symlink", tar(("etc", "symlink", "/etc"), ("model.onnx", "file", MODEL)), "model.onnx",
     "OciArchiveUnsafe", "links to /etc, outside the archive"),
    ("hard link out", tar(("model.onnx", "file", MODEL), ("passwd", "hardlink", "../etc/passwd")), "model.onnx",
     "OciArchiveUnsafe", "leaves the archive"),
    ("the member is a symlink", GOOD, "model/latest.onnx", "OciArchiveUnsafe", "is a symbolic link, not a file"),
    ("a device", tar(("pipe", "fifo", ""), ("model.onnx", "file", MODEL)), "model.onnx", "OciArchiveUnsafe",
     "is a special file"),
    ("no such member", GOOD, "model/other.onnx", "OciLayerNotFound", "has no file model/other.onnx"),
    ("member of another size", tar(("model.onnx", "file", MODEL + b"!")), "model.onnx", "ArtifactTooLarge",
     f"has {len(MODEL) + 1} bytes in the layer"),
    ("not an archive", gzip.compress(b"plain text, not a tar" * 100), "model.onnx", "OciArchiveInvalid", "not a tar"),
    ("the path asked for leaves", GOOD, "../model.onnx", "OciArchiveUnsafe", "leaves the archive"),
])
def test_unsafe_or_wrong_archives_are_refused(registry: Registry, tmp_path: Path, name: str, data: bytes, member: str,
                                              reason: str, words: str) -> None:
    repository = "models/bad-" + name.replace(" ", "-").replace("'", "")
    push_archive(registry, repository, "1.0", data)
    store = ArtifactStore(tmp_path / "state")
    with pytest.raises(ReconcilerError) as caught:
        store.ingest(artifact(f"oci://{registry.host}/{repository}:1.0#{member}"), None, limits(registry.host))
    assert caught.value.reason == reason, caught.value
    assert words in str(caught.value)
    assert list(store.blobs.glob("*")) == [] and list(store.tmp.glob("*")) == []


def test_an_archive_that_unpacks_past_the_limit_is_refused(registry: Registry, tmp_path: Path) -> None:
    bomb = tar(("zeros", "file", bytes(3 << 20)), ("model.onnx", "file", MODEL))  # ~3 KiB compressed
    push_archive(registry, "models/bomb", "1.0", bomb)
    store = ArtifactStore(tmp_path / "state")
    with pytest.raises(ReconcilerError) as caught:
        store.ingest(artifact(f"oci://{registry.host}/models/bomb:1.0#model.onnx"), None,
                     limits(registry.host, max_bytes=2 << 20))
    assert caught.value.reason == "ArtifactTooLarge" and "unpacks to more than" in str(caught.value)


def test_an_archive_without_a_path_is_not_taken_for_the_file(registry: Registry, tmp_path: Path) -> None:
    push_archive(registry, "models/unnamed", "1.0", GOOD)
    with pytest.raises(ReconcilerError) as caught:
        ArtifactStore(tmp_path).ingest(artifact(f"oci://{registry.host}/models/unnamed:1.0"), None, limits(registry.host))
    assert caught.value.reason == "OciLayerNotFound" and "name it with #PATH" in str(caught.value)
