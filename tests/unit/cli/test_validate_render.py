from __future__ import annotations

import json
from pathlib import Path

import pytest
from manifest_texts import GOOD_REPO, edit

from reconciler.cli.validate import render, validate_path
from reconciler.devtools.testing import write_tree
from reconciler.errors import UsageError
from reconciler.manifests.fleet import Finding

DIGEST_ERROR = Finding("models/m.yaml", 13, 19, "spec.versions[0].artifacts[0].digest: should be 'sha256:' …",
                       field="spec.versions[0].artifacts[0].digest")
TARGET_WARNING = Finding("deployments/d.yaml", 1, 1, "spec.targets: selects no site", "warning", "spec.targets")


@pytest.mark.parametrize(("findings", "files", "documents", "expected"), [
    ([], 5, 6, "ok: 6 documents in 5 files\n"),
    ([], 1, 1, "ok: 1 document in 1 file\n"),
    ([DIGEST_ERROR, TARGET_WARNING], 5, 6,
     "models/m.yaml:13:19: error: spec.versions[0].artifacts[0].digest: should be 'sha256:' …\n"
     "deployments/d.yaml:1:1: warning: spec.targets: selects no site\n"
     "1 error, 1 warning in 5 files\n"),
    ([DIGEST_ERROR, DIGEST_ERROR], 14, 20,
     "models/m.yaml:13:19: error: spec.versions[0].artifacts[0].digest: should be 'sha256:' …\n" * 2
     + "2 errors, 0 warnings in 14 files\n"),
])
def test_text_format(findings: list[Finding], files: int, documents: int, expected: str) -> None:
    assert render(findings, "text", files=files, documents=documents) == expected


@pytest.mark.parametrize(("findings", "valid"), [([], True), ([TARGET_WARNING], True), ([DIGEST_ERROR, TARGET_WARNING], False)])
def test_json_format_is_a_stable_object(findings: list[Finding], valid: bool) -> None:
    report = json.loads(render(findings, "json", files=5, documents=6))
    assert list(report) == ["valid", "errors", "warnings", "files", "documents", "findings"]
    assert report["valid"] is valid
    assert report["errors"] == sum(f.severity == "error" for f in findings)
    assert report["warnings"] == sum(f.severity == "warning" for f in findings)
    assert [list(f) for f in report["findings"]] == [["path", "line", "col", "severity", "message", "field"]] * len(findings)
    if findings:
        assert report["findings"][-1] == {"path": "deployments/d.yaml", "line": 1, "col": 1, "severity": "warning",
                                          "message": "spec.targets: selects no site", "field": "spec.targets"}


@pytest.mark.parametrize(("finding", "expected"), [
    (TARGET_WARNING,
     "::warning file=deployments/d.yaml,line=1,col=1,title=reconciler validate::spec.targets: selects no site"),
    (Finding("odd:dir,x/100%.yaml", 3, 4, "50% of\r\nwaves: a, b"),
     "::error file=odd%3Adir%2Cx/100%25.yaml,line=3,col=4,title=reconciler validate::50%25 of%0D%0Awaves: a, b"),
])
def test_github_format_escapes_workflow_commands(finding: Finding, expected: str) -> None:
    assert render([finding], "github", files=1).splitlines() == [expected, "0 errors, 1 warning in 1 file"
                                                                 if finding.severity == "warning" else
                                                                 "1 error, 0 warnings in 1 file"]


def test_validate_path_checks_references_once_every_document_loads(tmp_path: Path) -> None:
    dangling = edit("deployments/d.yaml", "model: m", "model: nope")
    write_tree(tmp_path, {**GOOD_REPO, **dangling, **edit("sites/stores.yaml", "name: store-2", "name: Store-2")})
    result, findings = validate_path(tmp_path)
    assert result.files == 5
    assert [(f.path, f.line, f.severity) for f in findings] == [("sites/stores.yaml", 14, "error")]
    assert findings[0].message.startswith("metadata.name: should be a DNS label")

    write_tree(tmp_path, {**GOOD_REPO, **dangling})
    _, findings = validate_path(tmp_path)
    # The finding points at the field at fault (issue 10), no longer at the document's first line.
    assert [(f.path, f.line, f.col, f.severity) for f in findings] == [("deployments/d.yaml", 6, 10, "error")]
    assert "model 'nope' is not defined" in findings[0].message


def test_validate_path_of_a_good_repo_is_ok(tmp_path: Path) -> None:
    result, findings = validate_path(write_tree(tmp_path, GOOD_REPO))
    assert findings == []
    assert render(findings, "text", files=result.files, documents=result.documents) == "ok: 6 documents in 5 files\n"


def test_validate_path_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        validate_path(tmp_path / "missing")
