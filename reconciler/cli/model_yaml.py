"""Edits of people's Model files that keep everything they wrote: comments, quoting, line breaks,
key order, indentation. ruamel.yaml's round-trip loader says where each node is; the new version
is rendered in the file's own indentation style and spliced in after the last version as text, so
every line that was there stays byte for byte (a full re-dump would re-wrap long strings and
re-indent sequences). The result is read back and must be the old document plus the new version,
or nothing is written."""

from __future__ import annotations

import io
import json
import textwrap
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from reconciler import reasons
from reconciler.errors import Stalled

WIDTH = 4096  # never fold a long string: a folded line would be a line the user did not write


def append_version(text: str, model: str, entry: dict[str, Any]) -> str:
    """``text`` (a YAML file holding the Model ``model``) with ``entry`` appended to its versions."""
    documents = _load_all(text)
    index, document = _find_model(documents, model)
    versions = document["spec"]["versions"]
    if not isinstance(versions, CommentedSeq) or versions.fa.flow_style() or not versions:
        raise Stalled(reasons.ModelFileLayout, f"the versions of Model '{model}' are not a block list "
                                               "('- version: ...' lines); add-version appends to block lists only")
    lines = text.splitlines(keepends=True)
    last_line = versions.lc.item(len(versions) - 1)[0]
    dash_col = _dash_column(lines[last_line], versions.lc.item(len(versions) - 1)[1])
    insert_at = _end_of_item(lines, last_line, dash_col)
    key_col = document["spec"].lc.key("versions")[1]
    mapping_indent = key_col - document.lc.key("spec")[1] or 2
    block = textwrap.dedent(render_block([entry], mapping_indent, offset=dash_col - key_col))
    new_lines = [" " * dash_col + line if line.strip() else line for line in block.splitlines(keepends=True)]
    if insert_at and not lines[insert_at - 1].endswith("\n"):
        lines[insert_at - 1] += "\n"
    result = "".join(lines[:insert_at] + new_lines + lines[insert_at:])
    _check_only_appended(text, result, index, entry)
    return result


def render_block(value: Any, mapping_indent: int = 2, offset: int = 0) -> str:
    """``value`` as block YAML, with tensors and shapes on one line (``[[0.5, 1.0]]``), as the
    example fleet writes them."""
    yaml = YAML(typ="rt")
    yaml.width = WIDTH
    yaml.indent(mapping=mapping_indent, sequence=offset + 2, offset=offset)
    out = io.StringIO()
    yaml.dump(_styled(value), out)
    return out.getvalue()


def _styled(value: Any) -> Any:
    if isinstance(value, dict):
        styled = CommentedMap()
        for key, item in value.items():
            styled[key] = _styled(item)
        return styled
    if isinstance(value, list):
        styled = CommentedSeq(_styled(item) for item in value)
        if not any(isinstance(leaf, dict) for leaf in _leaves(value)):
            styled.fa.set_flow_style()
        return styled
    return value


def _leaves(value: list) -> list:
    return [leaf for item in value for leaf in (_leaves(item) if isinstance(item, list) else [item])]


def _load_all(text: str) -> list[Any]:
    try:
        return list(YAML(typ="rt").load_all(text))
    except YAMLError as exc:
        raise Stalled(reasons.ModelFileUnreadable, f"the Model file is not YAML ruamel.yaml can edit: {exc}") from None


def _find_model(documents: list[Any], model: str) -> tuple[int, CommentedMap]:
    for index, document in enumerate(documents):
        if (isinstance(document, CommentedMap) and document.get("kind") == "Model"
                and (document.get("metadata") or {}).get("name") == model):
            return index, document
    raise Stalled(reasons.UnknownModel, f"the file holds no Model named '{model}'")


def _dash_column(line: str, item_col: int) -> int:
    """The column of the ``-`` that opens a sequence item whose content starts at ``item_col``."""
    dash = line.rfind("-", 0, item_col)
    if dash < 0:
        raise Stalled(reasons.ModelFileLayout, "the last version does not start on a '- ' line; "
                                               "add-version appends to block lists only")
    return dash


def _end_of_item(lines: list[str], first: int, dash_col: int) -> int:
    """The index after the last line of the sequence item starting at ``first``: its content is
    indented deeper than its dash, and so are its own trailing comments; a comment at the dash's
    column or left of it introduces what follows."""
    end = first + 1
    for index in range(first + 1, len(lines)):
        stripped = lines[index].strip()
        indent = len(lines[index]) - len(lines[index].lstrip())
        if not stripped:
            continue
        if stripped.startswith(("---", "...")) and indent == 0:
            break
        if stripped.startswith("#"):
            if indent > dash_col:
                end = index + 1
            continue
        if indent <= dash_col:
            break
        end = index + 1
    return end


def _check_only_appended(before: str, after: str, index: int, entry: dict[str, Any]) -> None:
    """The edit's proof: every document reads as before, except that the Model gained ``entry``."""
    old = [_plain(d) for d in _load_all(before)]
    new = [_plain(d) for d in _load_all(after)]
    old[index]["spec"]["versions"].append(json.loads(json.dumps(entry)))
    if old != new:
        raise Stalled(reasons.ModelFileLayout, "appending the version would change more than the new version's "
                                               "lines (an unusual layout); add it by hand")


def _plain(document: Any) -> Any:
    return json.loads(json.dumps(document, default=str))
