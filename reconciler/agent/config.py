"""Reading site.yaml: the file's problems refused as the manifests' are (file:line:col, did you
mean), command-line settings laid over it. The settings themselves are reconciler.settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.errors import UsageError
from reconciler.manifests.findings import error_findings
from reconciler.manifests.fleet import Finding
from reconciler.manifests.yamlreader import parse_yaml_document
from reconciler.settings import PathsFrom, SiteConfig


def load_site_config(path: Path, overrides: dict[str, object]) -> SiteConfig:
    """Read ``site.yaml`` (relative paths resolve against its folder) and apply CLI overrides.
    Problems of the file are refused as the manifests' are: file:line:col, and did you mean."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read site config {path}: {exc}") from exc
    node, raw, findings = parse_yaml_document(str(path), text)
    findings += [Finding(str(path), scalar.start_mark.line + 1, scalar.start_mark.column + 1,
                         "a NUL character cannot be in a setting (nor in a path)") for scalar in _with_nul(node)]
    if node is not None and not findings and not isinstance(raw, dict):
        findings = [Finding(str(path), 1, 1, "a site config is a mapping of settings")]
    if findings:
        raise UsageError(_render(findings))
    given = {k: v for k, v in overrides.items() if v not in (None, [])}
    command_line = frozenset(name for name, field in SiteConfig.model_fields.items() if field.alias in given)
    try:
        return SiteConfig.model_validate({**(raw or {}), **given}, by_name=False,
                                         context=PathsFrom(path.parent, command_line))
    except ValidationError as exc:
        from_file = [e for e in exc.errors(include_url=False) if not e["loc"] or e["loc"][0] not in given]
        problems = error_findings(str(path), node or _EMPTY, SiteConfig, from_file)
        from_command_line = [e for e in exc.errors(include_url=False) if e["loc"] and e["loc"][0] in given]
        raise UsageError("\n".join(filter(None, [_render(problems), _problems(from_command_line)]))) from None


def _with_nul(root: yaml.Node | None) -> list[yaml.ScalarNode]:
    """The scalars holding a NUL character, each node visited once (aliases may form cycles)."""
    found, seen, todo = [], set(), [root] if root is not None else []
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and "\0" in node.value:
            found.append(node)
        elif isinstance(node, yaml.MappingNode):
            todo += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
    return found


_EMPTY = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=yaml.Mark("", 0, 0, 0, None, None))


def _render(findings: list[Finding]) -> str:
    return "\n".join(finding.render() for finding in findings)


def _problems(errors: list[Any]) -> str:
    if not errors:
        return ""
    said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in errors)
    return f"invalid site settings (command line): {said}"


def build_site_config(values: dict[str, object], origin: str = "command line") -> SiteConfig:
    try:
        return SiteConfig.model_validate(values)
    except ValidationError as exc:
        raise UsageError(_problems(exc.errors(include_url=False)).replace("command line", origin)) from None
