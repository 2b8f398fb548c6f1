"""Semantic versions as flagd's ``sem_ver`` operation reads them.

SemVer 2.0.0 ordering (pre-releases below their release, build metadata ignored) with flagd's
leniencies: a leading ``v`` or ``V``, the shorthands ``1`` and ``1.2`` for ``1.0.0`` and ``1.2.0``
(only without pre-release or build, as Go's x/mod/semver that flagd uses), and numbers in the context
read as their JavaScript text (``1.2`` -> ``1.2.0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from reconciler.flags.jsonlogic import OperationFailed
from reconciler.flags.jsvalues import to_js_string

_NUMBER = r"0|[1-9][0-9]*"
_IDENTIFIERS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION = re.compile(
    rf"({_NUMBER})(?:\.({_NUMBER})(?:\.({_NUMBER})(?:-({_IDENTIFIERS}))?(?:\+{_IDENTIFIERS})?)?)?"
)


class Version(NamedTuple):
    """Compares as SemVer precedence: ``pre`` is (1,) for a release, which sorts above any
    (0, identifiers...) of a pre-release."""

    major: int
    minor: int
    patch: int
    pre: tuple[Any, ...]


def _precedence(identifiers: str) -> tuple[Any, ...] | None:
    keys: list[tuple[int, int | str]] = []
    for identifier in identifiers.split("."):
        if identifier.isdigit():
            if len(identifier) > 1 and identifier.startswith("0"):
                return None  # SemVer forbids leading zeros in numeric identifiers
            keys.append((0, int(identifier)))
        else:
            keys.append((1, identifier))
    return (0, *keys)


def parse_version(value: Any) -> Version | None:
    """The version ``value`` denotes, or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = to_js_string(value)
    if text[:1] in ("v", "V"):
        text = text[1:]
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    precedence = (1,) if pre is None else _precedence(pre)
    if precedence is None:
        return None
    return Version(int(major), int(minor or 0), int(patch or 0), precedence)


_COMPARISONS: dict[str, Callable[[Version, Version], bool]] = {
    "=": lambda left, right: left == right,
    "!=": lambda left, right: left != right,
    "<": lambda left, right: left < right,
    "<=": lambda left, right: left <= right,
    ">": lambda left, right: left > right,
    ">=": lambda left, right: left >= right,
    "^": lambda left, right: left.major == right.major,
    "~": lambda left, right: left[:2] == right[:2],
}


def sem_ver(args: list[Any], _data: Any, _scratch: Any) -> bool:
    """``{"sem_ver": [version, operator, version]}``; anything malformed fails the operation."""
    if len(args) != 3:
        raise OperationFailed(f"sem_ver takes [version, operator, version], got {len(args)} arguments")
    left, operator, right = args
    compare = _COMPARISONS.get(operator) if isinstance(operator, str) else None
    if compare is None:
        raise OperationFailed(f"sem_ver operator {operator!r} is not one of {' '.join(_COMPARISONS)}")
    left_version, right_version = parse_version(left), parse_version(right)
    if left_version is None or right_version is None:
        bad = left if left_version is None else right
        raise OperationFailed(f"sem_ver: {bad!r} is not a semantic version")
    return compare(left_version, right_version)
