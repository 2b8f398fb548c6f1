"""Appending a version to people's Model files: only the new version's lines are added, whatever
the file's layout, or the edit is refused and nothing is returned."""

from __future__ import annotations

import difflib
import textwrap

import pytest
import yaml

from reconciler.cli.model_yaml import append_version
from reconciler.errors import Stalled

DIGEST = "sha256:" + "c" * 64
ENTRY = {
    "version": "1.1.0",
    "artifacts": [{"uri": "models/m/1.1.0/model.onnx", "digest": DIGEST, "size": 42,
                   "signature": {"uri": "models/m/1.1.0/model.onnx.sig", "format": "cosign"}}],
    "validation": [{"name": "one", "inputs": {"x": [[0.5, 1.0]]}, "expected": {"y": [[0.25]]}, "tolerance": 0.0001}],
}

OFFSET_ZERO = """\
# yaml-language-server: $schema=../../schemas/model.schema.json
apiVersion: reconciler/v1
kind: Model
metadata:
  name: m     # the model's name
spec:
  description: 'A long description that a person folded
    by hand onto a second line'
  interface:
    inputs: [{name: x, dtype: float32, shape: [-1, 2]}]
    outputs: [{name: y, dtype: float32, shape: [-1, 1]}]
  versions:
  - version: 1.0.0   # the first release
    artifacts:
    - uri: models/m/1.0.0/model.onnx
      digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      size: 42
      signature: {uri: models/m/1.0.0/model.onnx.sig}
"""

OFFSET_TWO_WITH_TRAILER = """\
apiVersion: reconciler/v1
kind: Model
metadata:
    name: m
spec:
    versions:
      # oldest first
      - version: 1.0.0
        artifacts:
          - uri: a.onnx
            digest: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
            size: 42
            signature:
                uri: a.onnx.sig
        # a note about 1.0.0, inside it

    # about the interface, which follows
    interface:
        inputs:
          - {name: x, dtype: float32, shape: [-1, 2]}
        outputs:
          - {name: y, dtype: float32, shape: [-1, 1]}
"""

MULTI_DOCUMENT_NO_FINAL_NEWLINE = """\
apiVersion: reconciler/v1
kind: Model
metadata: {name: other}
spec:
  versions:
  - version: 9.0.0
---
apiVersion: reconciler/v1
kind: Model
metadata: {name: m}
spec:
  versions:
  - version: 1.0.0
    artifacts: []"""


@pytest.mark.parametrize("text", [OFFSET_ZERO, OFFSET_TWO_WITH_TRAILER, MULTI_DOCUMENT_NO_FINAL_NEWLINE],
                         ids=["offset-0", "offset-2-trailing-comments", "multi-document"])
def test_only_the_new_versions_lines_are_added(text: str) -> None:
    result = append_version(text, "m", ENTRY)
    before, after = text.rstrip("\n").splitlines(), result.splitlines()
    opcodes = [op for op in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert len(opcodes) == 1 and opcodes[0][0] == "insert", opcodes
    _, _, _, start, end = opcodes[0]
    assert yaml.safe_load(textwrap.dedent("\n".join(after[start:end]))) == [ENTRY]
    model = [d for d in yaml.safe_load_all(result) if d["metadata"]["name"] == "m"][0]
    assert model["spec"]["versions"][-1] == ENTRY
    first = next(line for line in before if line.lstrip().startswith("- version: 1.0.0"))
    assert after[start].index("- version: 1.1.0") == first.index("- version: 1.0.0")


def test_the_new_version_goes_before_comments_that_introduce_the_next_key() -> None:
    result = append_version(OFFSET_TWO_WITH_TRAILER, "m", ENTRY).splitlines()
    assert result.index("        # a note about 1.0.0, inside it") < result.index("      - version: 1.1.0")
    assert result.index("      - version: 1.1.0") < result.index("    # about the interface, which follows")


@pytest.mark.parametrize(("text", "reason"), [
    ("kind: Model\nmetadata: {name: m}\nspec:\n  versions: [{version: 1.0.0}]\n", "ModelFileLayout"),
    ("kind: Model\nmetadata: {name: other}\nspec:\n  versions:\n  - version: 1.0.0\n", "UnknownModel"),
    ("kind: Model\nmetadata: {name: m\n", "ModelFileUnreadable"),
])
def test_layouts_it_cannot_extend_are_refused(text: str, reason: str) -> None:
    with pytest.raises(Stalled) as refused:
        append_version(text, "m", ENTRY)
    assert refused.value.reason == reason
