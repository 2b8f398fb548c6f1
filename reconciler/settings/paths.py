"""Where the relative paths of site settings resolve, decided once by the types of the fields that
hold them: a new path setting written as ``LocalPath`` or ``Location`` cannot forget to resolve.

Settings read from site.yaml resolve against its folder, which load_site_config passes as the
validation context (``PathsFrom``); those given on the command line, or built without a context,
resolve as a shell's do, against the working directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, ValidationInfo
from pydantic.alias_generators import to_camel

SETTINGS = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
"""Every settings model's: snake_case attributes, site.yaml's camelCase keys as their aliases."""


@dataclass(frozen=True)
class PathsFrom:
    """The validation context of settings read from a file: its folder, and the fields (by their
    attribute names) that the command line gave instead."""

    folder: Path
    command_line: frozenset[str] = frozenset()


def is_local_path(location: str) -> bool:
    """Whether git reads ``location`` as a path on this machine: neither a URL (``scheme://``) nor
    scp-like ``[user@]host:path`` (a colon before any slash)."""
    colon, slash = location.find(":"), location.find("/")
    return "://" not in location and (colon < 0 or 0 <= slash < colon)


def _folder(info: ValidationInfo) -> Path | None:
    origin = info.context
    if isinstance(origin, PathsFrom) and info.field_name not in origin.command_line:
        return origin.folder
    return None


def _resolved_path(value: Any, info: ValidationInfo) -> Any:
    # Values of the wrong type stay as they are, for validation to refuse with their line.
    folder = _folder(info)
    return str((folder / value).resolve()) if folder is not None and isinstance(value, str) and value else value


def _resolved_location(value: Any, info: ValidationInfo) -> Any:
    # git resolves a relative path against its own working directory (the cache's), never ours
    if not isinstance(value, str) or not value or not is_local_path(value):
        return value
    return str(((_folder(info) or Path()) / value).resolve())


LocalPath = Annotated[Path, BeforeValidator(_resolved_path)]
"""A file or folder on this machine; relative in site.yaml: against its folder."""

Location = Annotated[str, BeforeValidator(_resolved_location)]
"""A git repository: a URL, or a path made absolute (against site.yaml's folder, or ours)."""
