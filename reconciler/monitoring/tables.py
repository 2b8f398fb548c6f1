"""Example data as one array per tensor, parsed from the bytes of a file (PURE: bytes in, arrays
out; reading the file is the caller's). The format `reconciler profile` reads training data in and
sites read their local evaluation data in:

- ``.npy``: one [rows] or [rows, k] array, of the tensor the caller names;
- ``.csv``: a header naming columns ``TENSOR`` or ``TENSOR[i]``, one row per example;
- ``.jsonl`` / ``.ndjson``: one object per line, tensor name to a number or a list of numbers.

A column names a tensor of ``dtypes`` (the model's, plus e.g. a ``label``); anything else is
refused with ValueError, as is a row with other columns than the first."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

SUFFIXES = (".npy", ".csv", ".jsonl", ".ndjson")
_COLUMN = re.compile(r"^(?P<tensor>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")

__all__ = ["SUFFIXES", "read_tensors", "typed"]


def read_tensors(data: bytes, suffix: str, dtypes: Mapping[str, np.dtype], npy_tensor: str | None = None
                 ) -> dict[str, np.ndarray]:
    """The tensors in one file's bytes; ``npy_tensor`` names the array of an .npy file. ValueError
    says what is wrong (not the format, a column of no tensor, a ragged row)."""
    if suffix == ".npy":
        if npy_tensor is None:
            raise ValueError("an .npy file holds one array: name the tensor it is")
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # numpy takes other bytes for a pickle, which it refuses
            raise ValueError(f"not a .npy array of numbers: {exc}") from None
        return {npy_tensor: typed(npy_tensor, array, dtypes)}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    if suffix == ".csv":
        try:
            return _tables(csv.DictReader(io.StringIO(text, newline="")), dtypes)
        except csv.Error as exc:
            raise ValueError(f"unreadable CSV: {exc}") from None
    if suffix in (".jsonl", ".ndjson"):
        return _tables((_flat(json.loads(line)) for line in text.splitlines() if line.strip()), dtypes)
    raise ValueError(f"give .npy, .csv or .jsonl data, not {suffix or 'a file without a suffix'}")


def typed(name: str, values: Any, dtypes: Mapping[str, np.dtype]) -> np.ndarray:
    if name not in dtypes:
        raise ValueError(f"the model has no tensor named {name}")
    array = np.asarray(values).astype(dtypes[name])
    if array.ndim not in (1, 2):
        raise ValueError(f"{name} has {array.ndim} dimensions; [rows] or [rows, k] tensors only")
    return array


def _flat(document: object) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ValueError("each line must be a JSON object: tensor name to a number or a list")
    flat: dict[str, Any] = {}
    for tensor, value in document.items():
        if isinstance(value, list):
            flat |= {f"{tensor}[{i}]": v for i, v in enumerate(value)}
        else:
            flat[tensor] = value
    return flat


def _tables(rows: Iterator[Mapping[str, Any]], dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """Rows of ``TENSOR`` / ``TENSOR[i]`` columns as one array per tensor."""
    columns: dict[str, list[Any]] = {}
    for count, row in enumerate(rows):
        if count and row.keys() != columns.keys():
            raise ValueError(f"row {count + 1} has other columns than the first")
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value))
    grouped: dict[str, dict[int, list[Any]]] = {}
    for key, values in columns.items():
        found = _COLUMN.match(key or "")
        if found is None:
            raise ValueError(f"column {key!r} is not TENSOR or TENSOR[i]")
        grouped.setdefault(found["tensor"], {})[int(found["index"] or -1)] = values
    tensors = {}
    for tensor, by_index in grouped.items():
        if list(by_index) == [-1]:
            tensors[tensor] = typed(tensor, by_index[-1], dtypes)
        elif sorted(by_index) == list(range(len(by_index))):
            tensors[tensor] = typed(tensor, np.column_stack([by_index[i] for i in range(len(by_index))]), dtypes)
        else:
            raise ValueError(f"the columns of {tensor} must be {tensor}[0] ... {tensor}[k-1], with no gap")
    return tensors
