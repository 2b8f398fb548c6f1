"""JsonLogic's eager built-in operations on plain values: comparisons chained, arithmetic, ``in``,
strings and arrays, each with json-logic-js's coercions (from ``jsvalues``) so that odd input gives a
falsy, NaN or null result rather than an error. ``jsonlogic`` names them in its ``OPERATIONS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from reconciler.flags.jsvalues import parse_float, strict_equal, to_js_string, to_number

Operation = Callable[[list[Any], Any, Any], Any]
"""An eager operation: (evaluated arguments, current data, caller's scratch object) -> result."""


def argument(args: list[Any], index: int) -> Any:
    return args[index] if len(args) > index else None


def chain(compare: Callable[[Any, Any], bool]) -> Operation:
    """``<`` and ``<=`` take a third argument: ``{"<": [1, x, 10]}`` is 1 < x < 10."""

    def operation(args: list[Any], _data: Any, _scratch: Any) -> bool:
        if len(args) > 2:
            return compare(args[0], args[1]) and compare(args[1], args[2])
        return compare(argument(args, 0), argument(args, 1))

    return operation


def add(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    total: int | float = 0
    for value in args:
        total += parse_float(value)
    return total


def multiply(args: list[Any], _data: Any, _scratch: Any) -> int | float | None:
    if not args:
        return None
    product: int | float = 1
    for value in args:
        product *= parse_float(value)
    return product


def subtract(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    if len(args) < 2:
        return -to_number(argument(args, 0)) if args else math.nan
    return to_number(args[0]) - to_number(args[1])


def divide(args: list[Any], _data: Any, _scratch: Any) -> float:
    dividend, divisor = to_number(argument(args, 0)), to_number(argument(args, 1))
    if divisor == 0:  # JavaScript gives ±Infinity or NaN where Python would raise
        if dividend == 0 or dividend != dividend:
            return math.nan
        return math.copysign(math.inf, dividend) * math.copysign(1.0, divisor)
    return dividend / divisor


def remainder(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    dividend, divisor = to_number(argument(args, 0)), to_number(argument(args, 1))
    if isinstance(dividend, int) and isinstance(divisor, int) and divisor != 0:
        magnitude = abs(dividend) % abs(divisor)  # JavaScript keeps the dividend's sign
        return -magnitude if dividend < 0 else magnitude
    try:
        return math.fmod(dividend, divisor)
    except ValueError:  # zero divisor or infinite dividend
        return math.nan


def extreme(pick: Callable[..., Any], empty: float) -> Operation:
    def operation(args: list[Any], _data: Any, _scratch: Any) -> int | float:
        numbers = [to_number(value) for value in args]
        if any(number != number for number in numbers):
            return math.nan
        return pick(numbers) if numbers else empty

    return operation


def contains(args: list[Any], _data: Any, _scratch: Any) -> bool:
    needle, haystack = argument(args, 0), argument(args, 1)
    if isinstance(haystack, str):
        return bool(haystack) and to_js_string(needle) in haystack
    if isinstance(haystack, list):
        return any(strict_equal(needle, item) for item in haystack)
    return False


def cat(args: list[Any], _data: Any, _scratch: Any) -> str:
    return "".join("" if value is None else to_js_string(value) for value in args)


def _to_index(value: Any) -> int:
    number = to_number(value)
    if number != number:
        return 0
    return int(max(min(number, 2**53), -(2**53)))


def substr(args: list[Any], _data: Any, _scratch: Any) -> str:
    text = to_js_string(argument(args, 0))
    start = _to_index(argument(args, 1))
    text = text[max(len(text) + start, 0) :] if start < 0 else text[start:]
    if len(args) < 3:
        return text
    length = _to_index(args[2])
    return text[: max(len(text) + length, 0)] if length < 0 else text[:length]


def merge(args: list[Any], _data: Any, _scratch: Any) -> list[Any]:
    merged: list[Any] = []
    for value in args:
        if isinstance(value, list):
            merged.extend(value)
        else:
            merged.append(value)
    return merged
