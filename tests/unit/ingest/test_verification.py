"""The artifact checks the agent and ``validate --artifacts`` share: a Git LFS pointer in place
of the model is named as such, wherever the site meets it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.errors import Stalled
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.verification import LfsPointer, ingest, parse_lfs_pointer
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

MODEL = b"\x08\x07 pretend this is an ONNX model" * 10
OID = "sha256:" + hashlib.sha256(MODEL).hexdigest()
POINTER = f"version https://git-lfs.github.com/spec/v1\noid {OID}\nsize {len(MODEL)}\n".encode()


@pytest.mark.parametrize(("data", "expected"), [
    (POINTER, LfsPointer(OID, len(MODEL))),
    (b"version https://git-lfs.github.com/spec/v1\next-0-foo sha256:ab\noid sha256:cd\nsize 7\n", LfsPointer("sha256:cd", 7)),
    (POINTER.replace(b"\n", b"\r\n"), None),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:cd\n", None),
    (MODEL, None),
    (b"", None),
])
def test_lfs_pointers_are_recognised(data: bytes, expected: LfsPointer | None) -> None:
    assert parse_lfs_pointer(data) == expected


@pytest.mark.parametrize(("digest", "size", "same"), [(OID, len(MODEL), True), ("sha256:" + "0" * 64, 999, False)])
def test_a_site_that_meets_an_lfs_pointer_says_so_and_stores_nothing(tmp_path: Path, digest, size, same) -> None:
    (tmp_path / "repo" / "models").mkdir(parents=True)
    (tmp_path / "repo" / "models" / "model.onnx").write_bytes(POINTER)
    artifact = Artifact(uri="models/model.onnx", digest=digest, size=size, signature={"uri": "models/model.onnx.sig"})
    store = ArtifactStore(tmp_path / "state")
    with pytest.raises(Stalled) as refused:
        ingest(store, artifact, tmp_path / "repo", FetchLimits(retries=1))
    assert refused.value.reason == "ArtifactIsLfsPointer"
    assert "this is a Git LFS pointer" in refused.value.message and "git lfs migrate export" in refused.value.message
    assert ("the object the manifest pins" in refused.value.message) == same
    assert not store.has(digest) and not list(store.tmp.glob("*"))


def test_a_real_model_with_a_wrong_size_is_not_called_a_pointer(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "model.onnx").write_bytes(MODEL)
    artifact = Artifact(uri="model.onnx", digest=OID, size=len(MODEL) + 1, signature={"uri": "model.onnx.sig"})
    with pytest.raises(Stalled) as refused:
        ingest(ArtifactStore(tmp_path / "state"), artifact, tmp_path / "repo", FetchLimits(retries=1))
    assert refused.value.reason == "ArtifactSizeMismatch"
