"""Where an artifact's files are fetched from, and the model directory a site loads them from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.ingest.artifacts import ArtifactStore, Ingested
from reconciler.ingest.sources import file_uri
from reconciler.manifests.types import Digest
from reconciler.runtime.validation import external_data_folder


@pytest.mark.parametrize("artifact_uri,path,expected", [
    ("models/m/1.0/model.onnx", "weights.bin", "models/m/1.0/weights.bin"),
    ("model.onnx", "w/part 1.bin", "w/part 1.bin"),
    ("https://h.example/m/1.0/model.onnx?sig=x", "weights.bin", "https://h.example/m/1.0/weights.bin"),
    ("https://h.example/m/model.onnx", "w/part 1.bin", "https://h.example/m/w/part%201.bin"),
    ("file:///srv/m/model.onnx", "weights.bin", "file:///srv/m/weights.bin"),
    ("oci://r.example/m:1@sha256:" + "b" * 64 + "#model/model.onnx", "weights.bin",
     "oci://r.example/m:1@sha256:" + "b" * 64 + "#model/weights.bin"),
    ("oci://r.example/m:1#model.onnx", "w/x.bin", "oci://r.example/m:1#w/x.bin"),
    ("oci://r.example/m:1", "weights.bin", "oci://r.example/m:1#weights.bin"),
    ("oci-layout:///srv/layout:1#d/model.onnx", "weights.bin", "oci-layout:///srv/layout:1#d/weights.bin"),
])
def test_a_file_is_where_the_artifact_is_under_its_own_path(artifact_uri: str, path: str, expected: str) -> None:
    assert file_uri(artifact_uri, path) == expected


def blob(store: ArtifactStore, data: bytes) -> Ingested:
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    store.blobs.mkdir(parents=True, exist_ok=True)
    store.path_for(digest).write_bytes(data)
    return Ingested(store.path_for(digest), digest, len(data), fetched=False)


def test_a_model_with_files_loads_from_its_directory_of_links_and_a_blob_from_itself(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    single, main, weights, vocab = (blob(store, data) for data in (b"single", b"main", b"weights", b"vocab"))

    made = store.materialize(main, {"w/weights.bin": weights, "vocab.txt": vocab})

    directory = made.path.parent
    assert made.path == store.model_path(main.digest) and made.digest == main.digest
    assert sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()) == \
        ["model.onnx", "vocab.txt", "w/weights.bin"]
    assert (directory / "w" / "weights.bin").stat().st_ino == weights.path.stat().st_ino  # a link, not a copy
    assert external_data_folder(made.path) == directory
    assert store.model_path(single.digest) == single.path and external_data_folder(single.path) is None
    assert list(store.models.iterdir()) == [directory]  # nothing of the build left beside it


def test_a_model_directory_is_kept_when_it_holds_the_same_links_and_made_afresh_when_not(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    main, weights, other = (blob(store, data) for data in (b"main", b"weights", b"other"))
    first = store.materialize(main, {"a.bin": weights}).path.parent.stat().st_ino
    assert store.materialize(main, {"a.bin": weights}).path.parent.stat().st_ino == first

    made = store.materialize(main, {"b.bin": other})

    assert sorted(p.name for p in made.path.parent.iterdir()) == ["b.bin", "model.onnx"]
    assert [p.name for p in store.models.iterdir()] == [main.digest.hex]


def test_garbage_collection_keeps_the_blobs_of_a_kept_model_directory_and_removes_the_rest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    main, weights, unused = (blob(store, data) for data in (b"main", b"weights", b"unused"))
    made = store.materialize(main, {"w.bin": weights})

    assert store.garbage_collect({main.digest}) == [unused.digest]
    assert weights.path.exists() and (made.path.parent / "w.bin").read_bytes() == b"weights"

    assert sorted(store.garbage_collect(set())) == sorted([main.digest, weights.digest])
    assert list(store.models.iterdir()) == [] and store.model_path(main.digest) == store.path_for(main.digest)
