"""Input files as batches of model inputs. A bad record (a line that is not JSON, a value of the
wrong shape) becomes a RecordError and the file goes on; a file nothing can be read from (a
missing CSV column, an .npy of the wrong shape, bytes that are no .npy) is refused as a whole
with FileRejected. A manifest that does not fit the model is neither: BatchMisfit stops the run
before any file is touched."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.batch import BatchInput
from reconciler.manifests.models import ModelInterface, TensorSpec


class FileRejected(Exception):
    """Nothing in this file can be scored; after the deployment's retries it is moved aside."""


class BatchMisfit(Stalled):
    def __init__(self, message: str):
        super().__init__(reasons.BatchInputMisfit, f"{message}; no file was touched: fix the Deployment's batch.input")


@dataclass(frozen=True)
class RecordError:
    record: int  # 0-based line (jsonl), data row (csv) or row (npy)
    message: str


@dataclass
class Chunk:
    """Up to ``max_records_per_batch`` records: the good ones stacked per input, the bad ones said why."""

    records: list[int] = field(default_factory=list)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)


def read_chunks(data: bytes, spec: BatchInput, interface: ModelInterface, size: int) -> Iterator[Chunk]:
    readers = {"jsonl": _jsonl, "csv": _csv, "npy": _npy}
    return readers[spec.format](data, spec, interface, size)


def _fits(tensor: TensorSpec, shape: tuple[int, ...]) -> bool:
    """A record's shape against the tensor's without its batch dimension (-1: any size)."""
    wanted = tensor.shape[1:]
    return len(shape) == len(wanted) and all(w in (-1, s) for w, s in zip(wanted, shape, strict=True))


def _shape_text(tensor: TensorSpec) -> str:
    return "[" + ", ".join("*" if d == -1 else str(d) for d in tensor.shape[1:]) + "]"


class _Stacker:
    """Collects good records into per-input lists and hands out full chunks."""

    def __init__(self, interface: ModelInterface, size: int):
        self.inputs, self.size = interface.inputs, size
        self.chunk = Chunk()
        self.values: dict[str, list[np.ndarray]] = {t.name: [] for t in self.inputs}

    def good(self, record: int, values: dict[str, np.ndarray]) -> Chunk | None:
        self.chunk.records.append(record)
        for name, value in values.items():
            self.values[name].append(value)
        return self.flush() if len(self.chunk.records) >= self.size else None

    def bad(self, record: int, message: str) -> None:
        self.chunk.errors.append(RecordError(record, message))

    def flush(self) -> Chunk | None:
        chunk = self.chunk
        if not chunk.records and not chunk.errors:
            return None
        if chunk.records:
            chunk.feeds = {name: np.stack(values) for name, values in self.values.items()}
        self.chunk, self.values = Chunk(), {t.name: [] for t in self.inputs}
        return chunk


def _record_values(raw: object, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One JSON record as arrays, or ValueError saying what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError(f"a record is a JSON object of named inputs, not {type(raw).__name__}")
    names = [t.name for t in inputs]
    missing, unknown = [n for n in names if n not in raw], sorted(set(raw) - set(names))
    if missing or unknown:
        raise ValueError("; ".join(filter(None, [missing and f"missing input(s) {', '.join(missing)}",
                                                 unknown and f"unknown input(s) {', '.join(unknown)}"]))
                         + f" (the model takes {', '.join(names)})")
    return {t.name: _array(raw[t.name], t) for t in inputs}


def _array(value: object, tensor: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=tensor.dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input {tensor.name}: not {tensor.dtype} values of shape {_shape_text(tensor)} ({exc})") from None
    if not _fits(tensor, array.shape):
        raise ValueError(f"input {tensor.name}: shape {list(array.shape)} does not fit {_shape_text(tensor)}")
    return array


def _jsonl(data: bytes, spec: BatchInput, interface: ModelInterface, size: int) -> Iterator[Chunk]:
    """Chunks of ``size`` lines, each stacked in one go when all its records are well formed (one
    numpy conversion per input for the chunk), else read record by record to say which are not."""
    numbered = [(number, line) for number, line in enumerate(data.splitlines()) if line.strip()]
    for start in range(0, len(numbered), size):
        parsed, errors = [], []
        for number, line in numbered[start:start + size]:
            try:
                parsed.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                errors.append(RecordError(number, f"not JSON: {exc}"))
        yield _stacked(parsed, interface.inputs, errors) or _record_by_record(parsed, interface, errors)


def _stacked(parsed: list[tuple[int, object]], inputs: list[TensorSpec], errors: list[RecordError]) -> Chunk | None:
    """The records as one chunk when every one names exactly the model's inputs and their values
    stack into the inputs' shapes; None when any does not."""
    names = {t.name for t in inputs}
    if not all(isinstance(raw, dict) and raw.keys() == names for _, raw in parsed):
        return None
    try:
        feeds = {t.name: np.asarray([raw[t.name] for _, raw in parsed], dtype=t.dtype) for t in inputs}
    except (TypeError, ValueError):  # ragged, or a value that is no number of the dtype
        return None
    if not parsed or not all(_fits(t, feeds[t.name].shape[1:]) for t in inputs):
        return None
    return Chunk(records=[number for number, _ in parsed], feeds=feeds, errors=errors)


def _record_by_record(parsed: list[tuple[int, object]], interface: ModelInterface, errors: list[RecordError]
                      ) -> Chunk:
    stacker = _Stacker(interface, len(parsed) + 1)
    for number, raw in parsed:
        try:
            values = _record_values(raw, interface.inputs)
        except ValueError as exc:
            stacker.bad(number, str(exc))
            continue
        stacker.good(number, values)
    chunk = stacker.flush() or Chunk()
    chunk.errors += errors
    return chunk


def _csv(data: bytes, spec: BatchInput, interface: ModelInterface, size: int) -> Iterator[Chunk]:
    tensors = _csv_tensors(spec, interface)
    try:
        rows = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = next(rows, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileRejected(f"not a UTF-8 CSV file: {exc}") from None
    if header is None:
        raise FileRejected("empty CSV file: no header row")
    where = {name: i for i, name in enumerate(header)}
    absent = [c for columns in spec.columns.values() for c in columns if c not in where]
    if absent:
        raise FileRejected(f"the header lacks column(s) {', '.join(absent)} (it has {', '.join(header)})")
    picks = {name: [where[c] for c in columns] for name, columns in spec.columns.items()}
    stacker = _Stacker(interface, size)
    try:
        for number, row in enumerate(rows):
            if not row:
                continue
            try:
                if len(row) != len(header):
                    raise ValueError(f"{len(row)} fields, the header has {len(header)}")
                values = {name: _array([row[i] for i in picks[name]], tensors[name]) for name in picks}
            except ValueError as exc:
                stacker.bad(number, str(exc))
                continue
            full = stacker.good(number, values)
            if full is not None:
                yield full
    except csv.Error as exc:
        raise FileRejected(f"unreadable CSV: {exc}") from None
    last = stacker.flush()
    if last is not None:
        yield last


def _csv_tensors(spec: BatchInput, interface: ModelInterface) -> dict[str, TensorSpec]:
    """Each model input once, as one flat row of columns of the right length."""
    tensors = {t.name: t for t in interface.inputs}
    if set(spec.columns) != set(tensors):
        raise BatchMisfit(f"batch.input.columns names {', '.join(sorted(spec.columns))}; the model takes "
                          f"{', '.join(sorted(tensors))}")
    for name, columns in spec.columns.items():
        wanted = tensors[name].shape[1:]
        if len(wanted) != 1 or wanted[0] not in (-1, len(columns)):
            raise BatchMisfit(f"input {name} is {_shape_text(tensors[name])} per record; {len(columns)} CSV "
                              f"column(s) make a flat row of {len(columns)}")
    return tensors


def _npy(data: bytes, spec: BatchInput, interface: ModelInterface, size: int) -> Iterator[Chunk]:
    if len(interface.inputs) != 1:
        raise BatchMisfit(f"format npy holds one array; the model takes {len(interface.inputs)} inputs")
    tensor = interface.inputs[0]
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileRejected(f"not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim == 0 or not _fits(tensor, array.shape[1:]):
        raise FileRejected(f"array of shape {list(getattr(array, 'shape', []))}: its rows do not fit input "
                           f"{tensor.name} {_shape_text(tensor)}")
    if not np.can_cast(array.dtype, tensor.dtype, casting="same_kind"):
        raise FileRejected(f"array of {array.dtype} cannot become input {tensor.name} of {tensor.dtype}")
    rows = array.astype(tensor.dtype, copy=False)
    for start in range(0, len(rows), size):
        part = rows[start:start + size]
        yield Chunk(records=list(range(start, start + len(part))), feeds={tensor.name: part})
