"""One file of a fleet repo parsed on its own: the manifests of a YAML file (each validated into
its model) or the flags of a flagd file, with the findings of that file alone. The loader joins
the files' parts (reconciler.manifests.loader)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.flags import FlagFile
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.findings import field_path, validation_findings
from reconciler.manifests.fleet import Finding, Origin
from reconciler.manifests.models import API_VERSION, Fleet, Model, Site, Strict
from reconciler.manifests.yamlreader import TAG, YamlLoader, child_of, line_col, malformed

FLAG_SUFFIX = ".flagd.json"
KINDS: dict[str, type[Strict]] = {"Fleet": Fleet, "Site": Site, "Model": Model, "Deployment": Deployment}
KNOWN_KINDS = ", ".join(sorted(KINDS))


@dataclass(frozen=True)
class Manifest:
    ident: tuple[str, str]  # (kind, name)
    model: Strict
    origin: Origin
    name_at: tuple[int, int]  # line and column of metadata.name, where a second definition is reported


@dataclass(frozen=True)
class Entry:
    """A flag or a shared evaluator of a flagd file; keys are unique across the repo."""

    key: str
    value: Any
    field: str  # e.g. flags.new-model, $evaluators.is-gpu
    line: int
    col: int


@dataclass(frozen=True)
class ParsedFile:
    """Everything one file contributes, independent of every other file."""

    path: str
    documents: int = 0
    manifests: tuple[Manifest, ...] = ()
    flags: tuple[Entry, ...] = ()
    evaluators: tuple[Entry, ...] = ()
    findings: tuple[Finding, ...] = ()


def parse_file(path: str, data: bytes) -> ParsedFile:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return ParsedFile(path, findings=(Finding(path, 1, 1, f"not UTF-8 text (byte {e.start})"),))
    if path.endswith(FLAG_SUFFIX):
        return _parse_flag_file(path, text)
    return _parse_yaml_file(path, text)


def _parse_yaml_file(path: str, text: str) -> ParsedFile:
    manifests: list[Manifest] = []
    findings: list[Finding] = []
    documents = 0
    loader = YamlLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is None:
                continue
            documents += 1
            if loader.duplicate_keys:
                findings.extend(
                    Finding(path, *line_col(key), f"duplicate key '{key.value}' (first at line {first})")
                    for key, first in loader.duplicate_keys
                )
                loader.duplicate_keys.clear()
                continue
            found = _manifest(path, node, data)
            if isinstance(found, Manifest):
                manifests.append(found)
            else:
                findings.extend(found)
    except yaml.YAMLError as e:
        findings.append(malformed(path, e))
    finally:
        loader.dispose()
    return ParsedFile(path, documents, tuple(manifests), findings=tuple(findings))


def _manifest(path: str, node: yaml.Node, data: Any) -> Manifest | list[Finding]:
    def refuse(at: yaml.Node, message: str, field: str | None = None) -> list[Finding]:
        return [Finding(path, *line_col(at), message, field=field)]

    if not isinstance(data, dict):
        return refuse(node, "a document is a mapping with apiVersion, kind, metadata and spec")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if api_version is None:
        return refuse(node, f"apiVersion: missing (expected {API_VERSION})", "apiVersion")
    if api_version != API_VERSION:
        message = f"apiVersion: unsupported apiVersion {api_version!r} (expected {API_VERSION})"
        return refuse(child_of(node, "apiVersion")[1] or node, message, "apiVersion")
    if kind is None:
        return refuse(node, f"kind: missing (known: {KNOWN_KINDS})", "kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return refuse(child_of(node, "kind")[1] or node, f"kind: unknown kind {kind!r} (known: {KNOWN_KINDS})", "kind")
    try:
        model = KINDS[kind].model_validate(data)
    except ValidationError as e:
        return validation_findings(path, node, KINDS[kind], e)
    name_node = child_of(child_of(node, "metadata")[1], "name")[1]
    return Manifest((kind, model.metadata.name), model, Origin(path, node.start_mark.line + 1), line_col(name_node))


def _parse_flag_file(path: str, text: str) -> ParsedFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return ParsedFile(path, 1, findings=(Finding(path, e.lineno, e.colno, f"malformed JSON: {e.msg}"),))
    root = _compose_json(text)
    try:
        flag_file = FlagFile.model_validate(data)
    except ValidationError as e:
        return ParsedFile(path, 1, findings=tuple(validation_findings(path, root, FlagFile, e)))

    def entries(section: str, items: dict[str, Any]) -> tuple[Entry, ...]:
        section_node = child_of(root, section)[1]
        return tuple(
            Entry(key, value, field_path([section, key]), *line_col(child_of(section_node, key)[0] or root))
            for key, value in items.items()
        )

    return ParsedFile(
        path, 1, flags=entries("flags", flag_file.flags), evaluators=entries("$evaluators", flag_file.evaluators)
    )


def _compose_json(text: str) -> yaml.Node:
    """JSON is YAML, so YAML nodes give JSON errors their line; lines fall back to 1 otherwise."""
    try:
        return yaml.compose(text, Loader=YamlLoader)
    except yaml.YAMLError:
        return yaml.MappingNode(TAG + "map", [], start_mark=yaml.Mark(None, 0, 0, 0, None, None))
