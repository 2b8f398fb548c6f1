"""JavaScript's value semantics, as json-logic-js relies on them: truthiness (an empty array is false),
String(), Number(), parseFloat(), ``==``, ``===`` and the relational comparisons ``<`` and ``<=``.

Pure functions of plain JSON values (None, bool, int, float, str, list, dict); they never raise.
"""

from __future__ import annotations

import math
import re
from typing import Any


def truthy(value: Any) -> bool:
    if value is True or value is False:  # first: most values tested are the results of comparisons
        return value
    if value is None:
        return False
    if isinstance(value, list):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0 and value == value  # NaN is falsy in JavaScript
    if isinstance(value, str):
        return value != ""
    return True  # objects, even empty ones, are truthy in JavaScript


def to_js_string(value: Any) -> str:
    """JavaScript's String(value)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list):
        return ",".join("" if item is None else to_js_string(item) for item in value)
    return "[object Object]"


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")
_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")


def _number_from_text(text: str) -> int | float:
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    if _RADIX.fullmatch(text):
        return int(text, 0)
    if text in ("Infinity", "+Infinity", "-Infinity"):
        return -math.inf if text[0] == "-" else math.inf
    return math.nan


def to_number(value: Any) -> int | float:
    """JavaScript's Number(value)."""
    if isinstance(value, int | float):
        return int(value) if isinstance(value, bool) else value
    if value is None:
        return 0
    if isinstance(value, list):
        value = to_js_string(value)
    if isinstance(value, str):
        text = value.strip()
        return _number_from_text(text) if text else 0
    return math.nan


def parse_float(value: Any) -> int | float:
    """JavaScript's parseFloat(value): the longest numeric prefix of String(value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    match = _FLOAT_PREFIX.match(to_js_string(value).lstrip())
    if match is None:
        return math.nan
    return _number_from_text(match.group())


def _primitive(value: Any) -> Any:
    return to_js_string(value) if isinstance(value, list | dict) else value


def loose_equal(left: Any, right: Any) -> bool:
    """JavaScript's ``==``."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, list | dict) and isinstance(right, list | dict):
        return left is right
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return to_number(left) == to_number(right)


def strict_equal(left: Any, right: Any) -> bool:
    """JavaScript's ``===``: numbers by value, other primitives by type and value, objects by identity."""
    if isinstance(left, list | dict) or isinstance(right, list | dict):
        return left is right
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


def less(left: Any, right: Any) -> bool:
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left < right
    return to_number(left) < to_number(right)


def less_or_equal(left: Any, right: Any) -> bool:
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left <= right
    return to_number(left) <= to_number(right)
