"""Issue 15: `validate --artifacts` checks a version's reference profile as the sites do before the
merge: its bytes against the pinned digest and size, its signature against the trust roots, that it
is a reference profile, and that its features are columns of the model's tensors. Each broken
profile is refused at the profile's field with what to do; the good one passes. The fleets are the
real ones of test_artifact_check (ONNX models, cosign signatures by a real key)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reconciler.devtools.testing import write_tree
from reconciler.monitoring.profile import build_profile
from tests.integration.test_artifact_check import (
    KEY,
    MODEL,
    OTHER_KEY,
    Files,
    digest,
    good_fleet,
    run,
    signature,
    trust_key,  # noqa: F401 -- the fixture
)

PROFILE = "models/m/2.0.0/profile.json"
V2_SIGNATURE = "            uri: models/m/2.0.0/model.onnx.sig\n"
PROFILE_FIELD = "spec.versions[1].profile"


def profile_bytes(model: str = "m", version: str = "2.0.0", tensor: str = "x", width: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    columns = {"inputs": {tensor: rng.normal(size=(500, width))}, "outputs": {"y": rng.normal(size=(500, 1))}}
    return build_profile(model, version, columns).model_dump_json(indent=1).encode()


def profiled(content: bytes | None = None, *, pinned: bytes | None = None, signed_by=KEY,
             sig: bytes | None = None) -> Files:
    """The good fleet whose version 2.0.0 names a profile: ``content`` in the file, ``pinned`` (by
    default the same bytes) in the Model's digest and size, signed by ``signed_by`` (or ``sig``)."""
    content = profile_bytes() if content is None else content
    pinned = content if pinned is None else pinned
    files = good_fleet()
    entry = (f"      profile:\n        uri: {PROFILE}\n        digest: {digest(pinned)}\n        size: {len(pinned)}\n"
             f"        signature: {{uri: {PROFILE}.sig}}\n")
    assert files[MODEL].count(V2_SIGNATURE) == 1
    return {**files, MODEL: files[MODEL].replace(V2_SIGNATURE, V2_SIGNATURE + entry), PROFILE: content,
            f"{PROFILE}.sig": sig if sig is not None else signature(pinned, signed_by)}


def not_a_profile() -> bytes:
    text = json.loads(profile_bytes())
    text["inputs"][0]["edges"] = list(reversed(text["inputs"][0]["edges"]))
    return json.dumps(text).encode()


# (name, fleet, field at fault, words of the finding, words of what to do)
BROKEN: list[tuple[str, Callable[[], Files], str, str, str]] = [
    ("digest of other bytes", lambda: profiled(pinned=profile_bytes(version="1.0.0")),
     f"{PROFILE_FIELD}.digest", "ArtifactDigestMismatch", "set digest to its digest"),
    ("profile file missing", lambda: {k: v for k, v in profiled().items() if k != PROFILE},
     f"{PROFILE_FIELD}.uri", "no such file", "git add"),
    ("signed by a key no site trusts", lambda: profiled(signed_by=OTHER_KEY),
     f"{PROFILE_FIELD}.signature.uri", "SignatureInvalid", "key the sites trust"),
    ("signature missing", lambda: {k: v for k, v in profiled().items() if k != f"{PROFILE}.sig"},
     f"{PROFILE_FIELD}.signature.uri", "no such file", "reconciler sign"),
    ("not JSON", lambda: profiled(b"features,edges\n1,2\n"),
     f"{PROFILE_FIELD}.uri", "ProfileInvalid", "reconciler profile"),
    ("edges not increasing", lambda: profiled(not_a_profile()),
     f"{PROFILE_FIELD}.uri", "strictly increasing", "reconciler profile"),
    ("a tensor the model lacks", lambda: profiled(profile_bytes(tensor="features")),
     f"{PROFILE_FIELD}.uri", "reads input features, which the model does not have", "build the profile"),
    ("a column past the tensor's width", lambda: profiled(profile_bytes(width=3)),
     f"{PROFILE_FIELD}.uri", "reads column 2 of x", "build the profile"),
]


def validate(tmp_path: Path, files: Files, key: Path, capsys) -> tuple[int, dict]:
    repo = write_tree(tmp_path / "fleet", files)
    return run(capsys, "validate", str(repo), "--artifacts", "--trust-key", str(key), "--format", "json")


def test_a_good_profile_passes(tmp_path: Path, trust_key: Path, capsys) -> None:  # noqa: F811 -- the fixture
    code, report = validate(tmp_path, profiled(), trust_key, capsys)
    assert (code, report["errors"], report["warnings"]) == (0, 0, 0), report["findings"]


@pytest.mark.parametrize(("files", "field", "words", "todo"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_a_bad_profile_is_refused_at_its_field(tmp_path: Path, trust_key: Path, capsys,  # noqa: F811 -- the fixture
                                               files, field, words, todo) -> None:
    code, report = validate(tmp_path, files(), trust_key, capsys)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert code == 1 and errors, report
    assert [f["field"] for f in errors] == [field], errors  # the model itself still passes
    assert errors[0]["path"] == MODEL and words in errors[0]["message"] and todo in errors[0]["message"], errors


def test_the_profile_of_another_version_is_a_warning(tmp_path: Path, trust_key: Path, capsys) -> None:  # noqa: F811
    code, report = validate(tmp_path, profiled(profile_bytes(version="1.0.0")), trust_key, capsys)
    assert (code, report["errors"]) == (0, 0), report["findings"]
    [warning] = report["findings"]
    assert warning["field"] == f"{PROFILE_FIELD}.uri" and "profile of m 1.0.0, not of m 2.0.0" in warning["message"]
