"""What a batch deployment has done, in its folder of the state directory:

    <state>/batch/<deployment>/ledger.jsonl    one line per file outcome, appended and fsynced
    <state>/batch/<deployment>/run.lock        held while a run runs (flock: Forbid, across processes)
    <state>/batch/<deployment>/last-run.json   the newest run's summary, for the status record

A file is done exactly once per (input digest, model digest): its output is renamed into place
before its ledger line is written, so a crash in between only redoes the same file into the same
output; a crash before the rename leaves a temp file, which the next run removes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from reconciler.atomicfile import atomic_write_bytes, fsync_dir
from reconciler.status.record import BatchRunSummary

log = logging.getLogger(__name__)

Result = Literal["done", "failed", "movedAside"]


@dataclass(frozen=True)
class Entry:
    file: str  # relative to the input directory
    input: str  # "sha256:<hex>" of the bytes scored
    model: str  # "sha256:<hex>" of the model's bytes
    version: str
    result: Result
    records: int = 0
    errors: int = 0
    reason: str = ""
    at: str = ""


class RunInProgress(Exception):
    """Another run of this deployment holds the lock (concurrencyPolicy Forbid)."""


class Ledger:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "ledger.jsonl"
        self.done: set[tuple[str, str]] = set()
        self.failures: Counter[tuple[str, str]] = Counter()
        for entry in self._read():
            self._count(entry)

    def _count(self, entry: Entry) -> None:
        key = (entry.input, entry.model)
        if entry.result == "done":
            self.done.add(key)
        else:
            self.failures[key] += 1

    def _read(self) -> Iterator[Entry]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            try:
                yield Entry(**json.loads(line))
            except (ValueError, TypeError):
                # Only the last line can be torn (a crash mid-append); its file is simply done again.
                log.warning("%s:%d: unreadable ledger line skipped", self.path, number)

    def append(self, entry: Entry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            torn = end > 0 and os.pread(fd, 1, end - 1) != b"\n"
            os.write(fd, (b"\n" if torn else b"") + json.dumps(asdict(entry)).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.folder)  # the new file's name survives a power cut too
        self._count(entry)

    def entries(self) -> list[Entry]:
        return list(self._read())


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """This deployment's run lock, or RunInProgress at once; the kernel frees it if we die."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(f"a run of this deployment is in progress ({folder / 'run.lock'})") from None
        yield
    finally:
        os.close(fd)


def save_summary(folder: Path, summary: BatchRunSummary) -> None:
    atomic_write_bytes(folder / "last-run.json", summary.model_dump_json(indent=2).encode())


def load_summary(folder: Path) -> BatchRunSummary | None:
    try:
        return BatchRunSummary.model_validate_json((folder / "last-run.json").read_bytes())
    except (OSError, ValidationError):
        return None
