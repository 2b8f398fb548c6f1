"""Loads a fleet repo: YAML manifests and flagd files become validated models plus findings that
name the file, line, column and field of every problem. Pydantic is the one validator; the schemas
in schemas/ are generated from the same models.

Parsing is the expensive part, so each file's result is cached by its content key (a git blob id):
an agent that keeps one DocumentCache re-parses only the files a commit changed. The files a load
does parse are read in one go where their source allows it (``RepoFile.read_many``), parsed with
the cyclic garbage collector paused, and then frozen out of its way (see ``load_tree``)."""

from __future__ import annotations

import dataclasses
import difflib
import gc
import hashlib
import json
import os
import re
import types as pytypes
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, StringConstraints, ValidationError

from reconciler.flags import FlagDefinition, FlagFile, FlagSet
from reconciler.manifests import types
from reconciler.manifests.fleet import Finding, FleetRepo, Origin
from reconciler.manifests.models import API_VERSION, KINDS, Strict

YAML_SUFFIXES = (".yaml", ".yml")
FLAG_SUFFIX = ".flagd.json"
MANIFEST_SUFFIXES = (*YAML_SUFFIXES, FLAG_SUFFIX)
KNOWN_KINDS = ", ".join(sorted(KINDS))


@dataclass(frozen=True, slots=True)  # slots: one object per file for the collector, not two
class RepoFile:
    path: str  # repo-relative, forward slashes
    key: str  # git blob id or content hash: equal keys mean equal content
    read: Callable[[], bytes]  # called only when the cache misses
    # Reads many files of one source at once: keys -> contents. When set, a load reads all its
    # cache misses with one call instead of calling ``read`` per file.
    read_many: Callable[[list[str]], dict[str, bytes]] | None = None


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


@dataclass
class LoadResult:
    repo: FleetRepo
    findings: list[Finding]
    files: int = 0
    documents: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


class DocumentCache:
    """Parsed files by path and content key. Keeps what the latest load used, so memory stays
    bounded by one tree while unchanged files are never parsed twice."""

    def __init__(self) -> None:
        self._parsed: dict[str, ParsedFile] = {}  # by content key and path
        self.misses = 0

    def parse_all(self, files: list[RepoFile]) -> list[ParsedFile]:
        """The parts of one load's files, in order: cached ones as they are, the others read (in
        bulk where their source can) and parsed."""
        keys = [f"{f.key}\0{f.path}" for f in files]
        cached = [self._parsed.get(key) for key in keys]
        contents = _read_in_bulk([f for f, part in zip(files, cached, strict=True) if part is None])
        parsed = [part or self._parse(file, contents) for file, part in zip(files, cached, strict=True)]
        self._parsed = dict(zip(keys, parsed, strict=True))
        return parsed

    def _parse(self, file: RepoFile, contents: dict[str, bytes]) -> ParsedFile:
        self.misses += 1
        data = contents.get(file.key)
        return parse_file(file.path, file.read() if data is None else data)


def is_manifest_path(path: str) -> bool:
    """YAML and flagd files, outside hidden directories such as .git/ and .github/."""
    return path.endswith(MANIFEST_SUFFIXES) and "/." not in "/" + path


def load_directory(root: Path, cache: DocumentCache | None = None) -> LoadResult:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            path = Path(directory, name).relative_to(root).as_posix()
            if is_manifest_path(path):
                data = Path(directory, name).read_bytes()
                files.append(RepoFile(path, hashlib.sha256(data).hexdigest(), lambda data=data: data))
    return load_tree(files, cache)


def load_tree(files: Iterable[RepoFile], cache: DocumentCache | None = None) -> LoadResult:
    """Loads the manifest files among ``files``, parsing only those ``cache`` lacks.

    The parsed models live as long as the cache, and a large repo has hundreds of thousands of
    them, which the cyclic collector would otherwise walk on every full collection for the rest
    of the process (up to two thirds of a warm agent load, measured). So a load that parsed more than
    a quarter of the tree (the share at which CPython itself finds a full collection worth it)
    ends with ``gc.collect()`` and ``gc.freeze()``, which act on the whole process. Collecting
    first means that no garbage is frozen, and frozen objects are still freed by reference
    counting once the cache drops them (the models hold no reference cycles). What is never
    collected is a reference cycle that was alive at a freeze and dies later: in an agent, only
    the few objects of requests in flight at that instant. Smaller changes leave their objects to
    the collector, which walks them cheaply with the bulk frozen out of its way."""
    cache = cache or DocumentCache()
    selected = sorted((f for f in files if is_manifest_path(f.path)), key=lambda f: f.path)
    misses_before = cache.misses
    with _collector_paused():
        result = _assemble(cache.parse_all(selected))
    if cache.misses - misses_before > len(selected) / 4:
        gc.collect()
        gc.freeze()
    return result


def _read_in_bulk(files: list[RepoFile]) -> dict[str, bytes]:
    """Contents by key of the files whose source reads many at once, one call per source: a
    read per file would wait for the source (a git process) to be scheduled again each time."""
    keys_by_reader: dict[Callable[[list[str]], dict[str, bytes]], list[str]] = defaultdict(list)
    for file in files:
        if file.read_many is not None:
            keys_by_reader[file.read_many].append(file.key)
    contents: dict[str, bytes] = {}
    for read_many, keys in keys_by_reader.items():
        contents.update(read_many(keys))
    return contents


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsing allocates objects that nearly all stay alive (the models), so collections during a
    load would only walk the growing cache again and again (a fifth of a cold load, measured).
    Restores only what it changed: overlapping loads in two threads leave the collector on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _assemble(parsed: list[ParsedFile]) -> LoadResult:
    """Joins the files' parts. Runs on every load, so it reuses the parts' objects instead of
    allocating per document: on a large repo, fresh objects would wake the cyclic garbage collector,
    which then walks every cached model."""
    tables: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    origins: dict[tuple[str, str], Origin] = {}
    flags: dict[str, FlagDefinition] = {}
    evaluators: dict[str, Any] = {}
    defined_at: dict[str, str] = {}  # field path of a flag or evaluator -> path:line
    findings: list[Finding] = []
    for part in parsed:
        findings.extend(part.findings)
        for m in part.manifests:
            kind, name = m.ident
            first = origins.get(m.ident)
            if first is not None:
                message = f"{kind} '{name}' is already defined at {first.path}:{first.line}"
            elif kind == "Fleet" and tables["Fleet"]:
                other = origins[("Fleet", next(iter(tables["Fleet"])))]
                message = f"a repo has one Fleet; another is defined at {other.path}:{other.line}"
            else:
                origins[m.ident] = m.origin
                tables[kind][name] = m.model
                continue
            findings.append(Finding(part.path, *m.name_at, f"metadata.name: {message}", field="metadata.name"))
        for table, entries in ((flags, part.flags), (evaluators, part.evaluators)):
            for entry in entries:
                first_at = defined_at.get(entry.field)
                if first_at is None:
                    defined_at[entry.field] = f"{part.path}:{entry.line}"
                    table[entry.key] = entry.value
                else:
                    message = f"{entry.field}: '{entry.key}' is already defined at {first_at}"
                    findings.append(Finding(part.path, entry.line, entry.col, message, field=entry.field))
    fleets = list(tables["Fleet"].values())
    repo = FleetRepo(
        fleet=fleets[0] if fleets else None,
        sites=tables["Site"],
        models=tables["Model"],
        deployments=tables["Deployment"],
        flags=FlagSet(flags=flags, evaluators=evaluators),
        origins=origins,
    )
    return LoadResult(repo, findings, files=len(parsed), documents=sum(p.documents for p in parsed))


# --- one file -----------------------------------------------------------------------------------

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
_PLAIN_SCALARS = frozenset(_TAG + t for t in ("int", "float", "bool", "null"))


class _NotPlain(Exception):
    """A document that needs PyYAML's general construction."""


class YamlLoader(_Base):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader read the way Kubernetes tools read YAML (closer to YAML 1.2): only
    true/false are booleans and there are no base-60 numbers or timestamps, so ``start: 12:30``,
    ``gpu: yes`` and ``date: 2024-05-01`` stay the strings their authors meant. Where PyYAML
    silently keeps the last of two equal keys, this loader records them in ``duplicate_keys``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[yaml.Node, int]] = []  # (second key, line of the first)

    def construct_document(self, node: yaml.Node) -> Any:
        # PyYAML's constructor is general (any tag, aliases, recursion, merge keys) and pure
        # Python: it took about half of the YAML time, measured. Manifests are plain trees, which
        # are built here directly; any other document goes PyYAML's way, so the result is
        # always PyYAML's.
        try:
            return self._construct_plain(node, set())
        except (_NotPlain, RecursionError):
            return super().construct_document(node)

    def _construct_plain(self, node: yaml.Node, collections: set[int]) -> Any:
        """A tree of str-keyed mappings, sequences and plain scalars: each node met once (an alias
        would meet one twice, and aliases of aliases can stand for exponentially many nodes), and
        no key twice (PyYAML's way reports it)."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            if node.tag in _PLAIN_SCALARS:
                return self.yaml_constructors[node.tag](self, node)
            raise _NotPlain
        if id(node) in collections:
            raise _NotPlain
        collections.add(id(node))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [self._construct_plain(item, collections) for item in node.value]
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            mapping: dict[str, Any] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                    raise _NotPlain  # merge keys (<<) among them
                mapping[key.value] = self._construct_plain(value, collections)
            if len(mapping) < len(node.value):
                raise _NotPlain
            return mapping
        raise _NotPlain

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Before merge keys (<<) are expanded: overriding a merged key is legitimate.
        first_line: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _TAG + "merge":
                if key.value in first_line:
                    self.duplicate_keys.append((key, first_line[key.value]))
                first_line.setdefault(key.value, key.start_mark.line + 1)
        super().flatten_mapping(node)


def _refusing_bad_values(construct: Callable[[Any, yaml.ScalarNode], Any]) -> Callable[[Any, yaml.ScalarNode], Any]:
    """PyYAML reads explicitly tagged scalars (``size: !!int 12x``) with Python's own parsers,
    whose errors are not YAML errors; this makes them one, at the scalar."""

    def construct_or_refuse(loader: Any, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, KeyError, AttributeError) as error:
            problem = f"{node.value!r} is not a valid {node.tag.removeprefix(_TAG)}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from error

    return construct_or_refuse


for _name in ("int", "float", "bool", "timestamp"):
    YamlLoader.add_constructor(_TAG + _name, _refusing_bad_values(YamlLoader.yaml_constructors[_TAG + _name]))

YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in {_TAG + t for t in ("bool", "int", "float", "timestamp")}]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
YamlLoader.add_implicit_resolver(
    _TAG + "int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)$"), list("-+0123456789")
)
YamlLoader.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


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
                    Finding(path, *_line_col(key), f"duplicate key '{key.value}' (first at line {first})")
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
        findings.append(_malformed(path, e))
    finally:
        loader.dispose()
    return ParsedFile(path, documents, tuple(manifests), findings=tuple(findings))


def parse_yaml_document(path: str, text: str) -> tuple[yaml.Node | None, Any, list[Finding]]:
    """A file of one YAML document (a site's settings), read as manifests are: its root node
    (None when empty), its data, and what is malformed in it, with line and column."""
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        return None, None, [_malformed(path, e)]
    finally:
        loader.dispose()
    duplicates = [Finding(path, *_line_col(key), f"duplicate key '{key.value}' (first at line {first})")
                  for key, first in loader.duplicate_keys]
    return node, data, duplicates


def _malformed(path: str, error: yaml.YAMLError) -> Finding:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = f" ({error.context})" if error.context else ""
        return Finding(path, line, col, f"malformed YAML: {error.problem}{context}")
    return Finding(path, 1, 1, f"malformed YAML: {error}")


def _manifest(path: str, node: yaml.Node, data: Any) -> Manifest | list[Finding]:
    def refuse(at: yaml.Node, message: str, field: str | None = None) -> list[Finding]:
        return [Finding(path, *_line_col(at), message, field=field)]

    if not isinstance(data, dict):
        return refuse(node, "a document is a mapping with apiVersion, kind, metadata and spec")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if api_version is None:
        return refuse(node, f"apiVersion: missing (expected {API_VERSION})", "apiVersion")
    if api_version != API_VERSION:
        message = f"apiVersion: unsupported apiVersion {api_version!r} (expected {API_VERSION})"
        return refuse(_child(node, "apiVersion")[1] or node, message, "apiVersion")
    if kind is None:
        return refuse(node, f"kind: missing (known: {KNOWN_KINDS})", "kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return refuse(_child(node, "kind")[1] or node, f"kind: unknown kind {kind!r} (known: {KNOWN_KINDS})", "kind")
    try:
        model = KINDS[kind].model_validate(data)
    except ValidationError as e:
        return validation_findings(path, node, KINDS[kind], e)
    name_node = _child(_child(node, "metadata")[1], "name")[1]
    return Manifest((kind, model.metadata.name), model, Origin(path, node.start_mark.line + 1), _line_col(name_node))


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
        section_node = _child(root, section)[1]
        return tuple(
            Entry(key, value, field_path([section, key]), *_line_col(_child(section_node, key)[0] or root))
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
        return yaml.MappingNode(_TAG + "map", [], start_mark=yaml.Mark(None, 0, 0, 0, None, None))


# --- pydantic errors to findings ----------------------------------------------------------------

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
    _pattern_of(types.Sha256Digest): "'sha256:' followed by 64 lowercase hex digits",
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
        key_node, child = _child(node, part)
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


def _child(node: yaml.Node | None, part: Any) -> tuple[yaml.Node | None, yaml.Node | None]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None, None


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
    shown = _shown_value(item.node)
    kind = item.error["type"]
    already_said = kind in ("missing", "extra_forbidden") or (kind == "value_error" and str(shown) in message)
    if shown is not None and not already_said:
        message += f" (got {shown})"
        if kind == "string_type":
            message += "; quote it to keep it a string"
    where = f"{item.field}: " if item.field else ""
    return Finding(path, *_line_col(item.node), where + message, field=item.field or None)


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


def _shown_value(node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or len(node.value) > 60:
        return None
    return repr(node.value) if node.tag == _TAG + "str" else node.value


def _line_col(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


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
        line, col = _line_col(_field_node(root, finding.field))
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
        key_node, child = _child(node, part)
        if child is None:
            break
        node, key = child, key_node
    if key is not None and not isinstance(node, yaml.ScalarNode):
        return key
    return node
