"""Reading YAML the way Kubernetes tools do (``YamlLoader``), for manifests and site.yaml alike:
duplicate keys recorded, explicitly tagged bad values refused at their scalar, and the nodes'
lines and columns at hand for findings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from reconciler.manifests.fleet import Finding

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = TAG + "str", TAG + "map", TAG + "seq"
_PLAIN_SCALARS = frozenset(TAG + t for t in ("int", "float", "bool", "null"))


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
            if isinstance(key, yaml.ScalarNode) and key.tag != TAG + "merge":
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
            problem = f"{node.value!r} is not a valid {node.tag.removeprefix(TAG)}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from error

    return construct_or_refuse


for _name in ("int", "float", "bool", "timestamp"):
    YamlLoader.add_constructor(TAG + _name, _refusing_bad_values(YamlLoader.yaml_constructors[TAG + _name]))

YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in {TAG + t for t in ("bool", "int", "float", "timestamp")}]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
YamlLoader.add_implicit_resolver(
    TAG + "int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)$"), list("-+0123456789")
)
YamlLoader.add_implicit_resolver(
    TAG + "float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def parse_yaml_document(path: str, text: str) -> tuple[yaml.Node | None, Any, list[Finding]]:
    """A file of one YAML document (a site's settings), read as manifests are: its root node
    (None when empty), its data, and what is malformed in it, with line and column."""
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        return None, None, [malformed(path, e)]
    finally:
        loader.dispose()
    duplicates = [Finding(path, *line_col(key), f"duplicate key '{key.value}' (first at line {first})")
                  for key, first in loader.duplicate_keys]
    return node, data, duplicates


def malformed(path: str, error: yaml.YAMLError) -> Finding:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = f" ({error.context})" if error.context else ""
        return Finding(path, line, col, f"malformed YAML: {error.problem}{context}")
    return Finding(path, 1, 1, f"malformed YAML: {error}")


def child_of(node: yaml.Node | None, part: Any) -> tuple[yaml.Node | None, yaml.Node | None]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None, None


def line_col(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
