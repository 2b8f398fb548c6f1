"""An artifact's files (ONNX external data): paths that stay beside the ONNX file, once each."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconciler.manifests.models import Artifact

DIGEST = "sha256:" + "a" * 64


def artifact(*paths: str) -> Artifact:
    return Artifact(uri="m/model.onnx", digest=DIGEST, size=1, signature={"uri": "m/model.sig"},
                    files=[{"path": path, "digest": DIGEST, "size": 1} for path in paths])


@pytest.mark.parametrize("paths", [(), ("weights.bin",), ("weights/part-0.bin", "weights/part-1.bin", "vocab.txt")])
def test_files_that_stay_beside_the_onnx_file_are_taken(paths: tuple[str, ...]) -> None:
    assert [f.path for f in artifact(*paths).files] == list(paths)


@pytest.mark.parametrize("paths,needle", [
    (("../weights.bin",), "without '..'"),
    (("w/../../x",), "without '..'"),
    (("/etc/passwd",), "empty parts"),
    (("./weights.bin",), "'.'"),
    (("w//x",), "empty parts"),
    (("w\\..\\x",), "relative path"),
    (("weights.bin", "weights.bin"), "unique: weights.bin"),
    (("w", "w/x"), "a directory of others: w"),
    (("model.onnx",), "the ONNX file itself"),
])
def test_a_path_that_leaves_collides_or_repeats_is_refused(paths: tuple[str, ...], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        artifact(*paths)
