"""A small, valid fleet repo as the files a user would write, for loader and semantics tests.
Tests derive bad repos from it with ``edit``; the line numbers they expect are the lines below."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from reconciler.manifests.loader import DocumentCache, LoadResult, RepoFile, load_tree

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64

FLEET = """\
apiVersion: reconciler/v1
kind: Fleet
metadata:
  name: demo
spec:
  pollInterval: 30s
  defaultRollout:
    waves:
      - name: first
        percent: 10
      - name: all
        percent: 100
"""

SITES = """\
# two stores
apiVersion: reconciler/v1
kind: Site
metadata:
  name: store-1
  labels: {tier: store, region: eu, arch: x86_64}
spec:
  maintenanceWindows:
    - {days: [mon, tue], start: 12:30, end: "14:00", timezone: Europe/Berlin}
---
apiVersion: reconciler/v1
kind: Site
metadata:
  name: store-2
  labels: {tier: store, region: us, arch: arm64}
"""

MODEL = f"""\
apiVersion: reconciler/v1
kind: Model
metadata:
  name: m
spec:
  interface:
    inputs: [{{name: x, dtype: float32, shape: [-1, 2]}}]
    outputs: [{{name: y, dtype: float32, shape: [-1, 1]}}]
  versions:
    - version: 1.0.0
      artifacts:
        - uri: models/m/1.0.0.onnx
          digest: {DIGEST_A}
          size: 120
          signature: {{uri: models/m/1.0.0.onnx.sig}}
      validation:
        - name: smoke
          inputs: {{x: [[1.0, 2.0]]}}
          expected: {{y: [[3.0]]}}
    - version: 1.1.0
      artifacts:
        - uri: models/m/1.1.0.onnx
          digest: {DIGEST_B}
          size: 130
          signature: {{uri: models/m/1.1.0.onnx.sig}}
          platform: {{arch: x86_64}}
"""

DEPLOYMENT = """\
apiVersion: reconciler/v1
kind: Deployment
metadata:
  name: d
spec:
  model: m
  version: 1.0.0
  enabled: {flag: d-enabled}
  targets:
    matchLabels: {tier: store}
  rollout:
    waves:
      - name: pilot
        selector: {matchLabels: {region: eu}}
      - name: half
        percent: 50
      - name: rest
        percent: 100
"""

FLAGS = """\
{
  "flags": {
    "d-enabled": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "d-version": {"state": "ENABLED", "variants": {"stable": "1.0.0", "next": "1.1.0"}, "defaultVariant": "stable"}
  }
}
"""

GOOD_REPO: dict[str, str | bytes] = {
    "fleet.yaml": FLEET,
    "sites/stores.yaml": SITES,
    "models/m.yaml": MODEL,
    "deployments/d.yaml": DEPLOYMENT,
    "flags/fleet.flagd.json": FLAGS,
    "README.md": "not a manifest: ignored\n",
    "models/m/1.0.0.onnx": b"\x08\x07",
}


def edit(path: str, old: str, new: str) -> dict[str, str | bytes]:
    """The good repo with one replacement in one file (which must happen exactly once)."""
    text = GOOD_REPO[path]
    assert isinstance(text, str) and text.count(old) == 1, f"{old!r} not once in {path}"
    return {path: text.replace(old, new)}


def repo_files(files: Mapping[str, str | bytes], reads: list[str] | None = None) -> list[RepoFile]:
    """Files as a git tree gives them; ``reads`` collects the path of every read() call."""

    def reader(path: str, data: bytes):
        def read() -> bytes:
            if reads is not None:
                reads.append(path)
            return data

        return read

    result = []
    for path, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        result.append(RepoFile(path, hashlib.sha1(data).hexdigest(), reader(path, data)))
    return result


def load(overrides: Mapping[str, str | bytes | None] | None = None, cache: DocumentCache | None = None) -> LoadResult:
    """Loads the good repo with files replaced (or removed, for None)."""
    files = {**GOOD_REPO, **(overrides or {})}
    return load_tree(repo_files({p: c for p, c in files.items() if c is not None}), cache)
