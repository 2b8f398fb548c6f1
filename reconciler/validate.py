"""``reconciler validate``: load a fleet repo directory, run the semantic checks and print the
findings for a person (text), a program (json) or a pull request (GitHub Actions annotations).

The json format is stable::

    {"valid": bool,          # no error findings (warnings do not fail)
     "errors": int, "warnings": int, "files": int, "documents": int,
     "findings": [{"path": str, "line": int, "col": int,        # 1-based
                   "severity": "error" | "warning", "message": str,
                   "field": str | null}]}                         # e.g. spec.versions[0].version
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from reconciler.errors import UsageError
from reconciler.manifests import semantics
from reconciler.manifests.fleet import Finding
from reconciler.manifests.loader import LoadResult, load_directory

Format = Literal["text", "json", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "github")
ANNOTATION_TITLE = "reconciler validate"


def validate_path(root: Path) -> tuple[LoadResult, list[Finding]]:
    """Every finding of the repo at ``root``, schema and semantic, sorted by place."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    result = load_directory(root)
    # A document that failed its schema is missing from the fleet, so cross-document checks would
    # only echo it as dangling references: they run once every document loads.
    findings = result.findings if result.errors else [*result.findings, *semantics.check(result.repo)]
    return result, sorted(findings, key=lambda f: (f.path, f.line, f.col))


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
