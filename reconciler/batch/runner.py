"""One run of one batch deployment: every input file not yet done with these model bytes is read,
scored in batches of ``maxRecordsPerBatch`` through the onnxruntime session the site has active
for the deployment, and written as one JSON Lines result beside a JSON Lines of refused records.
With a drift monitor, each scored chunk's inputs and outputs count into the version's windows.

    <output>/<file>.out.jsonl      {"record": N, "version": V, "outputs": {NAME: VALUE}} per good record
    <output>/<file>.errors.jsonl   {"record": N, "error": MESSAGE} per refused record (absent: none)
    <input>/.failed/<file>         a file that failed as a whole more than ``maxRetries`` times
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import orjson

from reconciler import reasons
from reconciler.atomicfile import atomic_write_bytes, fsync_dir
from reconciler.batch.jobs import BatchJob
from reconciler.batch.ledger import Entry, Ledger, run_lock
from reconciler.batch.records import Chunk, FileRejected, RecordError, read_chunks
from reconciler.errors import ReconcilerError, Stalled
from reconciler.runtime.registry import Served
from reconciler.status.record import BatchRunSummary

log = logging.getLogger(__name__)

ASIDE = ".failed"
TEMP_PATTERN = ".*.tmp"  # atomic writes' temp files (atomicfile.py, _score_file)
Trigger = Literal["schedule", "manual"]
SCORED_AHEAD = 4  # chunks handed to the scoring thread before the first of them is written
SYNC_BYTES = 1 << 21  # the result written so far goes to disk every 2 MiB, while scoring goes on


class DriftCount(Protocol):
    """Where a run's inputs and outputs are counted against the version's reference profile
    (runtime.drift_counter.DriftMonitor, the one the site's serving counts into)."""

    def count(self, deployment: str, version: str, inputs: Mapping[str, np.ndarray],
              outputs: Mapping[str, np.ndarray], *, live: bool = True) -> None: ...


@dataclass
class _Tally:
    files: int = 0
    already_done: int = 0
    failed: int = 0
    moved_aside: int = 0
    records: int = 0
    record_errors: int = 0


def run_batch(job: BatchJob, served: Served, trigger: Trigger, scheduled_for: datetime | None = None,
              stop: threading.Event | None = None, drift: DriftCount | None = None) -> BatchRunSummary:
    """Raises ledger.RunInProgress when another run holds the lock; every other problem ends in
    the summary (a run-level one as state Failed with its reason). ``drift``: where the scored
    rows are counted (None: nowhere, as in a run by hand, which is no agent)."""
    started, clock = datetime.now(UTC), time.monotonic()
    tally = _Tally()
    with run_lock(job.folder):
        try:
            _run_files(job, served, tally, stop or threading.Event(), drift)
            reason, message = reasons.BatchRunFinished, ""
            state = "PartiallySucceeded" if tally.failed or tally.moved_aside or tally.record_errors else "Succeeded"
        except ReconcilerError as error:
            log.warning("%s: batch run stopped: %s", job.deployment, error, extra={"deployment": job.deployment})
            reason, message, state = error.reason, error.message, "Failed"
    return BatchRunSummary(
        state=state, trigger=trigger, scheduledFor=scheduled_for, started=started,
        durationSeconds=round(time.monotonic() - clock, 3), version=served.version, modelDigest=served.digest,
        files=tally.files, filesAlreadyDone=tally.already_done, filesFailed=tally.failed,
        filesMovedAside=tally.moved_aside, records=tally.records, recordErrors=tally.record_errors,
        reason=reason, message=message)


def input_files(job: BatchJob) -> list[Path]:
    """The inputs the glob matches, in name order, without those moved aside."""
    if not job.input_dir.is_dir():
        raise Stalled(reasons.BatchInputMissing, f"input directory {job.input_dir} does not exist")
    return sorted(path for path in job.input_dir.glob(job.spec.input.glob)
                  if path.is_file() and ASIDE not in path.relative_to(job.input_dir).parts)


def _run_files(job: BatchJob, served: Served, tally: _Tally, stop: threading.Event, drift: DriftCount | None
               ) -> None:
    ledger = Ledger(job.folder)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in job.output_dir.rglob(TEMP_PATTERN):  # outputs a crash cut short
        leftover.unlink(missing_ok=True)
    for path in input_files(job):
        if stop.is_set():
            break
        relative = path.relative_to(job.input_dir).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:  # gone or unreadable since the listing: the next run sees it again
            log.warning("%s: cannot read %s: %s", job.deployment, path, exc.strerror)
            tally.failed += 1
            continue
        entry = Entry(relative, "sha256:" + hashlib.sha256(data).hexdigest(), served.digest, served.version, "done")
        if (entry.input, entry.model) in ledger.done:
            tally.already_done += 1
            continue
        try:
            records, errors = _score_file(data, job, served, relative, drift)
        except FileRejected as rejected:
            _file_failed(job, ledger, entry, path, str(rejected), tally)
            continue
        ledger.append(_with(entry, records=records, errors=errors))
        tally.files, tally.records, tally.record_errors = tally.files + 1, tally.records + records, \
            tally.record_errors + errors


def _with(entry: Entry, **changes: object) -> Entry:
    return Entry(**{**entry.__dict__, "at": datetime.now(UTC).isoformat(), **changes})


def _file_failed(job: BatchJob, ledger: Ledger, entry: Entry, path: Path, reason: str, tally: _Tally) -> None:
    ledger.append(_with(entry, result="failed", reason=reason))
    tally.failed += 1
    tries = ledger.failures[(entry.input, entry.model)]
    if tries <= job.spec.max_retries:
        log.warning("%s: %s failed (try %d of %d): %s", job.deployment, entry.file, tries, job.spec.max_retries + 1,
                    reason, extra={"deployment": job.deployment, "reason": reasons.BatchFileFailed})
        return
    aside = job.input_dir / ASIDE / entry.file
    aside.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(aside.with_name(aside.name + ".reason.txt"), f"{reason}\n".encode())
    os.replace(path, aside)
    fsync_dir(aside.parent)
    ledger.append(_with(entry, result="movedAside", reason=reason))
    tally.moved_aside += 1
    log.error("%s: %s failed %d times, moved to %s: %s", job.deployment, entry.file, tries, aside, reason,
              extra={"deployment": job.deployment, "reason": reasons.BatchFileMovedAside})


def _score_file(data: bytes, job: BatchJob, served: Served, relative: str, drift: DriftCount | None
                ) -> tuple[int, int]:
    """Writes the file's results (temp file, fsync, rename); the counts of good and refused records.
    Each scored chunk's rows count into the version's drift windows as they are written."""
    names = [t.name for t in served.interface.outputs]
    refused: list[RecordError] = []
    target = job.output_dir / f"{relative}.out.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    good = 0
    try:
        with _SyncedWriter(fd) as out:
            chunks = read_chunks(data, job.spec.input, served.interface, job.spec.max_records_per_batch)
            for chunk, parts, failed in _scored_ahead(served, names, chunks):
                refused += chunk.errors + failed
                for part in parts:
                    out.write(_lines(served.version, names, part.records, part.outputs))
                    if drift is not None:
                        drift.count(job.deployment, served.version, part.feeds, dict(zip(names, part.outputs, strict=True)),
                                    live=False)
                    good += len(part.records)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    _write_errors(job.output_dir / f"{relative}.errors.jsonl", refused)
    return good, len(refused)


class _SyncedWriter:
    """A file written here and synced on a thread of its own every ``SYNC_BYTES``, so the disk works
    while the session scores and the fsync before the rename finds little left to write (a
    15 MB result's one fsync costs as much as an eighth of its scoring). A sync still running
    when the next is due is not waited for: the next write tries again."""

    def __init__(self, fd: int):
        self.file = os.fdopen(fd, "wb")
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-sync")
        self.syncing: Future | None = None
        self.unsynced = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.unsynced += len(data)
        if self.unsynced >= SYNC_BYTES and (self.syncing is None or self.syncing.done()):
            if self.syncing is not None:
                self.syncing.result()  # its OSError, if any, ends the file here
            self.file.flush()
            self.syncing, self.unsynced = self.pool.submit(os.fdatasync, self.file.fileno()), 0

    def __enter__(self) -> _SyncedWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            self.pool.shutdown(wait=True)
            if kind is None:
                if self.syncing is not None:
                    self.syncing.result()
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()


@dataclass(frozen=True)
class _Part:
    """Scored records: their inputs and the session's outputs, row for row."""

    records: list[int]
    feeds: Mapping[str, np.ndarray]
    outputs: list[np.ndarray]


def _scored_ahead(served: Served, names: list[str], chunks: Iterable[Chunk]
                  ) -> Iterator[tuple[Chunk, list[_Part], list[RecordError]]]:
    """Each chunk with its scored parts and the records onnxruntime refused. The session scores the
    next chunks on a second thread (onnxruntime lets go of the GIL) while this one reads records
    and writes text; ``SCORED_AHEAD`` chunks queued keep it busy while this thread waits for a core."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-score") as pool:
        ahead: deque[tuple[Chunk, Future | None]] = deque()
        for chunk in chunks:
            ahead.append((chunk, pool.submit(served.session.run, names, chunk.feeds) if chunk.records else None))
            if len(ahead) > SCORED_AHEAD:
                yield _finished(served, names, *ahead.popleft())
        while ahead:
            yield _finished(served, names, *ahead.popleft())


def _finished(served: Served, names: list[str], chunk: Chunk, scoring: Future | None
              ) -> tuple[Chunk, list[_Part], list[RecordError]]:
    if scoring is None:
        return chunk, [], []
    try:
        outputs = scoring.result()
    except Exception:  # noqa: BLE001 -- onnxruntime's errors share no narrower base: find the records at fault
        return chunk, *_one_by_one(served, names, chunk)
    return chunk, [_Part(chunk.records, chunk.feeds, outputs)], []


def _one_by_one(served: Served, names: list[str], chunk: Chunk) -> tuple[list[_Part], list[RecordError]]:
    parts, refused = [], []
    for i, record in enumerate(chunk.records):
        feeds = {name: feed[i:i + 1] for name, feed in chunk.feeds.items()}
        try:
            outputs = served.session.run(names, feeds)
        except Exception as exc:  # noqa: BLE001 -- see above
            refused.append(RecordError(record, f"onnxruntime refused the record: {exc}"))
            continue
        parts.append(_Part([record], feeds, outputs))
    return parts, refused


def _lines(version: str, names: list[str], records: list[int], outputs: list[np.ndarray]) -> bytes:
    """One JSON line per record. Writing the text costs more than the model's arithmetic (a float's
    text is dearer than its multiply-adds), so each output is written once, as a whole, by orjson
    (a float32 as the shortest text that reads back as the very float32); bools, NaN and infinities
    (no JSON numbers) go through json, one value at a time. The record numbers go in last, by one
    ``%`` over the chunk's text."""
    head = b'{"record": %d, "version": ' + _json_bytes(version) + b', "outputs": {'
    if len(outputs) == 1 and _finite(outputs[0]) and outputs[0].ndim in (1, 2) and records:
        return _one_output_lines(head + _json_bytes(names[0]) + b": ", outputs[0]) % tuple(records)
    line = head + b", ".join(_json_bytes(name) + b": %s" for name in names) + b"}}\n"
    rows = zip(records, *(_row_texts(output) for output in outputs), strict=True)
    return b"".join([line % row for row in rows])  # one template per line: the cheapest way to text


def _json_bytes(text: str) -> bytes:
    """A JSON string, its ``%`` doubled for the line templates."""
    return json.dumps(text).encode().replace(b"%", b"%%")


def _one_output_lines(head: bytes, output: np.ndarray) -> bytes:
    """The lines of a model with one output of finite numbers, each row of it a number or a flat
    list: orjson's text of the whole output, its row separators turned into line breaks and heads
    (numbers hold no brackets, commas nor ``%``)."""
    rows = orjson.dumps(np.ascontiguousarray(output), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    between, joint = (b"],[", b"]}}\n" + head + b"[") if output.ndim == 2 else (b",", b"}}\n" + head)
    return head + rows.replace(between, joint) + b"}}\n"


def _row_texts(output: np.ndarray) -> list[bytes]:
    """The JSON text of each row (first dimension) of an output."""
    if not _finite(output):
        return [json.dumps(row).encode() for row in output.tolist()]
    whole = orjson.dumps(np.ascontiguousarray(output), option=orjson.OPT_SERIALIZE_NUMPY)
    if len(output) == 0:
        return []
    if output.ndim == 1:
        return whole[1:-1].split(b",")
    if output.ndim == 2:  # numbers hold no brackets: rows are what lies between "],["
        return [b"[" + row + b"]" for row in whole[2:-2].split(b"],[")]
    return [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in np.ascontiguousarray(output)]


def _finite(output: np.ndarray) -> bool:
    """Ints and finite floats, whose repr is JSON (a bool's, a NaN's or a string's is not)."""
    return output.dtype.kind in "iu" or (output.dtype.kind == "f" and bool(np.isfinite(output).all()))


def _write_errors(path: Path, refused: Iterable[RecordError]) -> None:
    lines = "".join(json.dumps({"record": e.record, "error": e.message}) + "\n"
                    for e in sorted(refused, key=lambda e: e.record))
    if lines:
        atomic_write_bytes(path, lines.encode())
    else:
        path.unlink(missing_ok=True)  # the errors of an earlier model's run of this file
