"""``reconciler validate``: load a fleet repo directory, run the semantic checks (and, with
``--artifacts``, the sites' own checks of the artifacts: ``artifact_check.py``) and print the
findings for a person (text), a program (json) or a pull request (GitHub Actions annotations).
Every finding points at the line and column of the field at fault.

The json format is stable::

    {"valid": bool,          # no error findings (warnings do not fail)
     "errors": int, "warnings": int, "files": int, "documents": int,
     "findings": [{"path": str, "line": int, "col": int,        # 1-based
                   "severity": "error" | "warning", "message": str,
                   "field": str | null}]}                         # e.g. spec.versions[0].version
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from reconciler.cli.artifact_check import ArtifactOptions, ArtifactReport, check_artifacts
from reconciler.delivery import fleet_checks
from reconciler.errors import UsageError
from reconciler.manifests import semantics
from reconciler.manifests.findings import place_findings
from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.loader import LoadResult, load_directory

Format = Literal["text", "json", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "github")
ANNOTATION_TITLE = "reconciler validate"


def validate_path(root: Path, artifacts: ArtifactOptions | None = None,
                  now: datetime | None = None) -> tuple[LoadResult, list[Finding]]:
    """Every finding of the repo at ``root``, schema and semantic (and of the artifacts, with
    ``artifacts``), sorted by place."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    result = load_directory(root)
    check = (lambda repo: check_artifacts(repo, root, artifacts)) if artifacts is not None else None
    findings, _ = fleet_findings(result, lambda path: _read_or_none(root / path), now or datetime.now(UTC), check)
    return result, findings


def fleet_findings(loaded: LoadResult, read: Callable[[str], bytes | None], now: datetime,
                   artifact_check: Callable[[FleetRepo], ArtifactReport] | None = None,
                   ) -> tuple[list[Finding], ArtifactReport | None]:
    """The loader's findings, then the checks across documents, of the whole fleet and of its
    artifacts, each pointed at its field (``read`` gives a file's bytes by repo path)."""
    # A document that failed its schema is missing from the fleet, so cross-document checks would
    # only echo it as dangling references: they run once every document loads.
    if loaded.errors:
        return _by_place(loaded.findings), None
    checks = [*semantics.check(loaded.repo), *fleet_checks.check(loaded.repo, now)]
    report = artifact_check(loaded.repo) if artifact_check is not None else None
    if report is not None:
        checks += report.findings
    return _by_place([*loaded.findings, *place_findings(checks, read)]), report


def _by_place(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line, f.col))


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def render(findings: list[Finding], fmt: Format, *, files: int = 0, documents: int = 0) -> str:
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if fmt == "json":
        report = {
            "valid": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "files": files,
            "documents": documents,
            "findings": [
                {"path": f.path, "line": f.line, "col": f.col, "severity": f.severity, "message": f.message, "field": f.field}
                for f in findings
            ],
        }
        return json.dumps(report, indent=2) + "\n"
    if findings:
        summary = f"{_count(errors, 'error')}, {_count(warnings, 'warning')} in {_count(files, 'file')}"
    else:
        summary = f"ok: {_count(documents, 'document')} in {_count(files, 'file')}"
    line = _annotation if fmt == "github" else _text_line
    return "".join(line(f) + "\n" for f in findings) + summary + "\n"


def _text_line(f: Finding) -> str:
    return f"{f.path}:{f.line}:{f.col}: {f.severity}: {f.message}"


def _annotation(f: Finding) -> str:
    """A GitHub Actions workflow command; GitHub shows it on the file's line in the pull request."""
    properties = ",".join(
        f"{name}={_escape_property(str(value))}"
        for name, value in (("file", f.path), ("line", f.line), ("col", f.col), ("title", ANNOTATION_TITLE))
    )
    return f"::{f.severity} {properties}::{_escape_data(f.message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
