"""Findings that point at the line: pydantic's errors followed through the YAML nodes to the field
they are about (``error_findings``), said in the words of the fleet language, and the findings of
checks across documents moved from a document's first line to their field's (``place_findings``)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types as pytypes
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, StringConstraints, ValidationError

from reconciler.manifests import types
from reconciler.manifests.fleet import Finding
from reconciler.manifests.yamlreader import TAG, YamlLoader, child_of, line_col

_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _pattern_of(alias: Any) -> str:
    return next(m.pattern for m in alias.__metadata__ if isinstance(m, StringConstraints))


_PATTERN_WORDS = {
    _pattern_of(types.DnsLabel): "a DNS label (lowercase letters, digits and '-', at most 63 characters)",
    types.DIGEST_PATTERN: "'sha256:' followed by 64 lowercase hex digits",
    _pattern_of(types.VersionString): "a version (letters, digits and '.+_-', starting with a letter or digit)",
    _pattern_of(types.FlagKey): "a flag key (letters, digits and '._-', starting with a letter or digit)",
    _pattern_of(types.LabelKey): "a label key ([prefix/]name, letters, digits and '-_.')",
    _pattern_of(types.LabelValue): "a label value (letters, digits and '-_.', at most 63 characters)",
}


@dataclass
class _Located:
    error: dict[str, Any]
    node: yaml.Node
    field: str
    union: tuple[Any, ...] | None  # loc of the union whose branch this error came from

    @property
    def is_type_mismatch(self) -> bool:
        return self.error["type"] in _TYPE_WORDS


def validation_findings(path: str, root: yaml.Node, model: type[BaseModel], error: ValidationError) -> list[Finding]:
    return error_findings(path, root, model, error.errors(include_url=False))


def error_findings(path: str, root: yaml.Node, model: type[BaseModel], errors: list[Any]) -> list[Finding]:
    """Findings for some of a ValidationError's ``errors()`` (say, those about values a file gave)."""
    located = [_locate(root, e) for e in errors]
    by_union: dict[tuple[Any, ...], list[_Located]] = defaultdict(list)
    findings = []
    for item in located:
        if item.union is None:
            findings.append(_finding(path, model, item))
        else:
            by_union[item.union].append(item)
    for branches in by_union.values():
        # The branch that got past the type check is the one the author meant; if none did, say
        # every shape the field accepts.
        meant = [b for b in branches if not b.is_type_mismatch]
        if meant:
            findings.extend(_finding(path, model, b) for b in meant)
        else:
            words = dict.fromkeys(_TYPE_WORDS[b.error["type"]] for b in branches)
            findings.append(_finding(path, model, branches[0], f"should be {' or '.join(words)}"))
    return sorted(findings, key=lambda f: (f.line, f.col))


def _locate(root: yaml.Node, error: dict[str, Any]) -> _Located:
    """Follows the error's loc through the YAML nodes. Parts with no node are pydantic's union
    branch tags, or, at the end of a 'missing' error, the absent field."""
    node, parts, union = root, [], None
    loc = error["loc"]
    for i, part in enumerate(loc):
        if part == "[key]":
            continue  # the key node was already selected below
        key_node, child = child_of(node, part)
        if child is None:
            if not (error["type"] == "missing" and i == len(loc) - 1) and union is None:
                union = tuple(loc[:i])
            continue
        parts.append(part)
        pointing_at_key = loc[i + 1 :] == ("[key]",) or (error["type"] == "extra_forbidden" and i == len(loc) - 1)
        node = key_node if pointing_at_key and key_node is not None else child
    if error["type"] == "missing":
        parts.append(loc[-1])
    return _Located(error, node, field_path(parts), union)


def field_path(parts: list[Any], prefix: str = "") -> str:
    """``spec.versions[0].validation[1].inputs["input:0"]``: parts joined onto ``prefix``."""
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part))}]"
    return text


def _finding(path: str, model: type[BaseModel], item: _Located, message: str | None = None) -> Finding:
    message = message or _describe(model, item.error)
    shown = _shown_value(item.node, item.field)
    kind = item.error["type"]
    already_said = kind in ("missing", "extra_forbidden") or (kind == "value_error" and str(shown) in message)
    if shown is not None and not already_said:
        message += f" (got {shown})"
        if kind == "string_type":
            message += "; quote it to keep it a string"
    where = f"{item.field}: " if item.field else ""
    return Finding(path, *line_col(item.node), where + message, field=item.field or None)


def _describe(model: type[BaseModel], error: dict[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown field ({hint})" if allowed else "unknown field"
    if kind in _TYPE_WORDS:
        return f"should be {_TYPE_WORDS[kind]}"
    if kind == "string_pattern_mismatch" and error["ctx"]["pattern"] in _PATTERN_WORDS:
        return f"should be {_PATTERN_WORDS[error['ctx']['pattern']]}"
    return error["msg"].removeprefix("Value error, ").removeprefix("Input ").replace(" after validation", "")


def _shown_value(node: yaml.Node, field: str) -> str | None:
    """The value as written, to be echoed in the finding, or None. A refusal is printed in CI logs and
    pull-request comments: a field meant to NAME a secret (``tokenEnv``, ``passwordEnv``) that holds
    the secret itself is the mistake being refused, so it is never echoed, nor a URL's password."""
    if not isinstance(node, yaml.ScalarNode) or len(node.value) > 60 or _SECRET_FIELD.search(field):
        return None
    value = _URL_PASSWORD.sub(r"\1***@", node.value)
    return repr(value) if node.tag == TAG + "str" else value


_SECRET_FIELD = re.compile(r"(token|password|secret)[^.\[]*$", re.IGNORECASE)  # the last part of the path
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names the model accepts at ``loc`` (pydantic's loc, union tags included)."""
    tp: Any = model
    for part in loc:
        tp = _step(_unwrap(tp), part)
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) is Annotated:
        return _unwrap(get_args(tp)[0])
    if get_origin(tp) in (Union, pytypes.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _step(tp: Any, part: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return next((f.annotation for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
    origin = get_origin(tp)
    if origin is list:
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    if origin in (Union, pytypes.UnionType):
        return next((a for a in get_args(tp) if getattr(a, "__name__", None) == part), None)
    return None


# --- pointing findings at their field -----------------------------------------------------------

_FIELD_PART = re.compile(r'\.?([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def place_findings(findings: Iterable[Finding], read: Callable[[str], bytes | None]) -> list[Finding]:
    """Checks across documents know a document (its first line) and a field path; this points
    each such finding at the field's own line and column, reading again only the files that have
    findings (``read`` gives a file's bytes, or None). A field the document leaves out (a default)
    is pointed at the nearest enclosing field it has."""
    roots: dict[str, dict[int, yaml.Node]] = {}
    placed = []
    for finding in findings:
        if finding.field is None:
            placed.append(finding)
            continue
        if finding.path not in roots:
            roots[finding.path] = _document_roots(read(finding.path))
        root = roots[finding.path].get(finding.line)
        if root is None:
            placed.append(finding)
            continue
        line, col = line_col(_field_node(root, finding.field))
        placed.append(dataclasses.replace(finding, line=line, col=col))
    return placed


def _document_roots(data: bytes | None) -> dict[int, yaml.Node]:
    """Each document's root node by its first line, as ``Origin.line`` names documents."""
    if data is None:
        return {}
    loader = YamlLoader(data.decode("utf-8-sig", "replace"))
    roots = {}
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                roots[node.start_mark.line + 1] = node
    except yaml.YAMLError:
        pass  # a file that no longer parses keeps its findings where they were
    finally:
        loader.dispose()
    return roots


def _field_node(root: yaml.Node, field: str) -> yaml.Node:
    """The value of a scalar field, the key of a mapping or list field (where it starts to be
    written), or the deepest enclosing field present."""
    node, key = root, None
    for match in _FIELD_PART.finditer(field):
        name, index, quoted = match.groups()
        part: Any = int(index) if index is not None else json.loads(quoted) if quoted is not None else name
        key_node, child = child_of(node, part)
        if child is None:
            break
        node, key = child, key_node
    if key is not None and not isinstance(node, yaml.ScalarNode):
        return key
    return node
