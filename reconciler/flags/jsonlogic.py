"""JsonLogic (https://jsonlogic.com), the language of flagd targeting rules.

Written here rather than taken from PyPI: json-logic and json-logic-qubit are unmaintained, and
panzi-json-logic (the one flagd's Python provider uses) departs from json-logic-js in loose equality
(null == 0), string conversion (True -> "True") and division by zero (raises); none of them lets a
custom operation report back to its caller, which ``fractional`` needs to mark a SPLIT.

Semantics follow json-logic-js, because flagd's rules are written against it: JavaScript truthiness
except that an empty array is false; ``==`` with JavaScript coercion; ``+`` and ``*`` through
parseFloat; ``-``, ``/``, ``%`` and the comparisons through Number(). Built-in operations never raise on
odd input: they return a falsy, NaN or null value, as flagd documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Operation = Callable[[list[Any], Any, Any], Any]
"""An eager operation: (evaluated arguments, current data, caller's scratch object) -> result."""


class UnknownOperation(ValueError):
    """The rule names an operation nobody provides."""


class OperationFailed(Exception):
    """Raised by a custom operation whose arguments make no sense; the caller decides what follows."""


def truthy(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value)
    if value is None or value is False:
        return False
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
_INDEX = re.compile(r"0|[1-9][0-9]*")  # "01" is a property name, not an index, in JavaScript
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


def _less(left: Any, right: Any) -> bool:
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left < right
    return to_number(left) < to_number(right)


def _less_or_equal(left: Any, right: Any) -> bool:
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        return left <= right
    return to_number(left) <= to_number(right)


def _arg(args: list[Any], index: int) -> Any:
    return args[index] if len(args) > index else None


def _chain(compare: Callable[[Any, Any], bool]) -> Operation:
    """``<`` and ``<=`` take a third argument: ``{"<": [1, x, 10]}`` is 1 < x < 10."""

    def operation(args: list[Any], _data: Any, _scratch: Any) -> bool:
        if len(args) > 2:
            return compare(args[0], args[1]) and compare(args[1], args[2])
        return compare(_arg(args, 0), _arg(args, 1))

    return operation


def _var(args: list[Any], data: Any, _scratch: Any) -> Any:
    path, fallback = _arg(args, 0), _arg(args, 1)
    if path is None or path == "":
        return data
    node = data
    for part in to_js_string(path).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _INDEX.fullmatch(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return fallback
    return node


def _missing(args: list[Any], data: Any, _scratch: Any) -> list[Any]:
    names = args[0] if args and isinstance(args[0], list) else args
    return [name for name in names if _var([name], data, None) in (None, "")]


def _missing_some(args: list[Any], data: Any, _scratch: Any) -> list[Any]:
    names = _arg(args, 1) if isinstance(_arg(args, 1), list) else []
    absent = _missing([names], data, None)
    return [] if len(names) - len(absent) >= to_number(_arg(args, 0)) else absent


def _add(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    total: int | float = 0
    for value in args:
        total += parse_float(value)
    return total


def _multiply(args: list[Any], _data: Any, _scratch: Any) -> int | float | None:
    if not args:
        return None
    product: int | float = 1
    for value in args:
        product *= parse_float(value)
    return product


def _subtract(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    if len(args) < 2:
        return -to_number(_arg(args, 0)) if args else math.nan
    return to_number(args[0]) - to_number(args[1])


def _divide(args: list[Any], _data: Any, _scratch: Any) -> float:
    dividend, divisor = to_number(_arg(args, 0)), to_number(_arg(args, 1))
    if divisor == 0:  # JavaScript gives ±Infinity or NaN where Python would raise
        if dividend == 0 or dividend != dividend:
            return math.nan
        return math.copysign(math.inf, dividend) * math.copysign(1.0, divisor)
    return dividend / divisor


def _remainder(args: list[Any], _data: Any, _scratch: Any) -> int | float:
    dividend, divisor = to_number(_arg(args, 0)), to_number(_arg(args, 1))
    if isinstance(dividend, int) and isinstance(divisor, int) and divisor != 0:
        magnitude = abs(dividend) % abs(divisor)  # JavaScript keeps the dividend's sign
        return -magnitude if dividend < 0 else magnitude
    try:
        return math.fmod(dividend, divisor)
    except ValueError:  # zero divisor or infinite dividend
        return math.nan


def _extreme(pick: Callable[..., Any], empty: float) -> Operation:
    def operation(args: list[Any], _data: Any, _scratch: Any) -> int | float:
        numbers = [to_number(value) for value in args]
        if any(number != number for number in numbers):
            return math.nan
        return pick(numbers) if numbers else empty

    return operation


def _contains(args: list[Any], _data: Any, _scratch: Any) -> bool:
    needle, haystack = _arg(args, 0), _arg(args, 1)
    if isinstance(haystack, str):
        return bool(haystack) and to_js_string(needle) in haystack
    if isinstance(haystack, list):
        return any(strict_equal(needle, item) for item in haystack)
    return False


def _cat(args: list[Any], _data: Any, _scratch: Any) -> str:
    return "".join("" if value is None else to_js_string(value) for value in args)


def _to_index(value: Any) -> int:
    number = to_number(value)
    if number != number:
        return 0
    return int(max(min(number, 2**53), -(2**53)))


def _substr(args: list[Any], _data: Any, _scratch: Any) -> str:
    text = to_js_string(_arg(args, 0))
    start = _to_index(_arg(args, 1))
    text = text[max(len(text) + start, 0) :] if start < 0 else text[start:]
    if len(args) < 3:
        return text
    length = _to_index(args[2])
    return text[: max(len(text) + length, 0)] if length < 0 else text[:length]


def _merge(args: list[Any], _data: Any, _scratch: Any) -> list[Any]:
    merged: list[Any] = []
    for value in args:
        if isinstance(value, list):
            merged.extend(value)
        else:
            merged.append(value)
    return merged


OPERATIONS: Mapping[str, Operation] = {
    "var": _var,
    "missing": _missing,
    "missing_some": _missing_some,
    "==": lambda args, _d, _s: loose_equal(_arg(args, 0), _arg(args, 1)),
    "!=": lambda args, _d, _s: not loose_equal(_arg(args, 0), _arg(args, 1)),
    "===": lambda args, _d, _s: strict_equal(_arg(args, 0), _arg(args, 1)),
    "!==": lambda args, _d, _s: not strict_equal(_arg(args, 0), _arg(args, 1)),
    "!": lambda args, _d, _s: not truthy(_arg(args, 0)),
    "!!": lambda args, _d, _s: truthy(_arg(args, 0)),
    "<": _chain(_less),
    "<=": _chain(_less_or_equal),
    ">": lambda args, _d, _s: _less(_arg(args, 1), _arg(args, 0)),
    ">=": lambda args, _d, _s: _less_or_equal(_arg(args, 1), _arg(args, 0)),
    "max": _extreme(max, -math.inf),
    "min": _extreme(min, math.inf),
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _remainder,
    "in": _contains,
    "cat": _cat,
    "substr": _substr,
    "merge": _merge,
}
"""The eager built-in operations; callers extend a copy of this mapping with their own."""


# Operations that decide themselves which arguments to evaluate, and in which data.
Control = Callable[[list[Any], Any, Mapping[str, Operation], Any], Any]


def _if(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> Any:
    for index in range(0, len(args) - 1, 2):
        if truthy(apply(args[index], data, operations, scratch)):
            return apply(args[index + 1], data, operations, scratch)
    return apply(args[-1], data, operations, scratch) if len(args) % 2 else None


def _and(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> Any:
    value = None
    for arg in args:
        value = apply(arg, data, operations, scratch)
        if not truthy(value):
            return value
    return value


def _or(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> Any:
    value = None
    for arg in args:
        value = apply(arg, data, operations, scratch)
        if truthy(value):
            return value
    return value


def _items(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> list[Any]:
    items = apply(args[0], data, operations, scratch) if args else None
    return items if isinstance(items, list) else []


def _map(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> list[Any]:
    logic = _arg(args, 1)
    return [apply(logic, item, operations, scratch) for item in _items(args, data, operations, scratch)]


def _filter(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> list[Any]:
    logic = _arg(args, 1)
    items = _items(args, data, operations, scratch)
    return [item for item in items if truthy(apply(logic, item, operations, scratch))]


def _all(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> bool:
    logic = _arg(args, 1)
    items = _items(args, data, operations, scratch)
    return bool(items) and all(truthy(apply(logic, item, operations, scratch)) for item in items)


def _reduce(args: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> Any:
    logic = _arg(args, 1)
    accumulator = apply(args[2], data, operations, scratch) if len(args) > 2 else None
    items = apply(args[0], data, operations, scratch) if args else None
    if not isinstance(items, list):
        return accumulator
    for item in items:
        accumulator = apply(logic, {"current": item, "accumulator": accumulator}, operations, scratch)
    return accumulator


_CONTROL: Mapping[str, Control] = {
    "if": _if,
    "?:": _if,
    "and": _and,
    "or": _or,
    "map": _map,
    "filter": _filter,
    "reduce": _reduce,
    "all": _all,
    "none": lambda args, data, ops, scratch: not _filter(args, data, ops, scratch),
    "some": lambda args, data, ops, scratch: bool(_filter(args, data, ops, scratch)),
}


def apply(
    logic: Any, data: Any, operations: Mapping[str, Operation] = OPERATIONS, scratch: Any = None
) -> Any:
    """Evaluate ``logic`` against ``data``. ``scratch`` is handed, untouched, to every eager operation so
    that custom operations can leave notes for the caller. Raises UnknownOperation for an unknown name
    (call ``check`` first to find those regardless of which branches run), and lets OperationFailed
    from custom operations through."""
    if isinstance(logic, dict):
        if len(logic) != 1:
            return logic  # only a single-key object is an operation; others are data
        [(name, raw)] = logic.items()
        args = raw if isinstance(raw, list) else [raw]
        control = _CONTROL.get(name)
        if control is not None:
            return control(args, data, operations, scratch)
        operation = operations.get(name)
        if operation is None:
            raise UnknownOperation(name)
        return operation(_evaluated(args, data, operations, scratch), data, scratch)
    if isinstance(logic, list):
        return _evaluated(logic, data, operations, scratch)
    return logic


def _evaluated(items: list[Any], data: Any, operations: Mapping[str, Operation], scratch: Any) -> list[Any]:
    # Scalars are most arguments; skipping the call for them makes evaluation markedly faster.
    return [
        apply(item, data, operations, scratch) if isinstance(item, dict | list) else item for item in items
    ]


def check(logic: Any, operations: Mapping[str, Operation] = OPERATIONS) -> None:
    """Raise UnknownOperation if any operation anywhere in ``logic`` is unknown."""
    if isinstance(logic, dict) and len(logic) == 1:
        [(name, raw)] = logic.items()
        if name not in _CONTROL and name not in operations:
            raise UnknownOperation(name)
        check(raw, operations)
    elif isinstance(logic, list):
        for item in logic:
            check(item, operations)
