"""Where downloaded bytes go: a file written in whole chunks on helper threads, hashed in order.

The downloading thread fills a chunk buffer and hands it over; one thread hashes the chunks in
order, two more write them at their offsets. So receiving, hashing and writing each run at their
own pace, and an ingest costs about the slowest of the three, not their sum.

The file is written with O_DIRECT where the file system allows it. On a machine with few cores the
CPU is shared by the network receive, the hash and the writes; a buffered write spends CPU on a
second copy into the page cache and then on writeback, while a direct write is a DMA from the very
buffer the hash reads. Measured here (256 MiB over loopback, 2 cores): buffered writes plus a
final fsync took 1.3–2.4x as long as the direct writes, and varied far more. Direct I/O wants
block-aligned offsets and lengths: chunks are a multiple of ``ALIGNMENT`` long and sit at multiples
of the chunk size, only the last one is padded, and ``finish`` cuts the file to its real length.
A file system that refuses direct I/O (tmpfs, some network file systems) gets buffered writes.
What else was tried for the ingest, and how it measured, is in bench/README.md.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable

CHUNK_SIZE = 4 << 20  # large enough for efficient direct writes, small enough to stay in the L3 cache
BUFFERS = 6  # chunks in flight between the network, the hasher and the writers
WRITERS = 2  # two writes in flight keep a disk's queue busy; one leaves it idle between chunks
ALIGNMENT = 4096  # a multiple of every logical block size direct I/O may ask for
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux only; elsewhere the writes are buffered


def chunk_size_for(size: int) -> int:
    """A chunk that holds ``size`` bytes if that is smaller than CHUNK_SIZE, rounded up to ALIGNMENT."""
    return min(CHUNK_SIZE, -(-size // ALIGNMENT) * ALIGNMENT)


class Sink:
    """Chunks of one file, hashed in order and written at their offsets by helper threads.

    ``take`` gives an empty chunk buffer; ``put`` queues a filled one; ``drain`` waits until
    everything queued is hashed and written. A write error is kept and raised by the next
    ``take``, ``put`` or ``drain`` through ``wrap_error``, which turns it into the caller's error."""

    def __init__(self, fd: int, chunk_size: int, wrap_error: Callable[[OSError], Exception]):
        self._fd = fd
        self._wrap_error = wrap_error
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self.chunk_size = chunk_size
        self._buffers = [mmap.mmap(-1, chunk_size) for _ in range(BUFFERS)]  # page-aligned, as direct I/O needs
        for buffer in self._buffers:
            self._free.put(buffer)
        self.direct = _try_direct(fd, self._buffers[0])
        self.sha = hashlib.sha256()
        self._hashing: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._writing: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._error: OSError | None = None
        self._threads = [threading.Thread(target=self._hash_queued, name="artifact-hash", daemon=True)]
        self._threads += [threading.Thread(target=self._write_queued, name="artifact-write", daemon=True)
                          for _ in range(WRITERS)]
        for thread in self._threads:
            thread.start()

    def take(self) -> mmap.mmap:
        self._raise_error()
        return self._free.get()

    def give_back(self, buffer: mmap.mmap) -> None:
        self._free.put(buffer)

    def put(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        """Queue the first ``length`` bytes of ``buffer``, which belong at ``offset`` in the file."""
        self._raise_error()
        with self._idle:
            self._in_flight += 1
        self._hashing.put((buffer, length, offset))

    def drain(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)
        self._raise_error()

    def take_up(self, length: int) -> mmap.mmap:
        """Hash the whole chunks among the file's first ``length`` bytes, written by an earlier run,
        and return a chunk buffer holding the bytes after them, to be filled further and ``put`` at
        their offset. Call it before anything is queued."""
        whole = length - length % self.chunk_size
        buffer = self._free.get()
        try:
            with memoryview(buffer) as view:
                for offset in range(0, whole, self.chunk_size):
                    self._read(view, offset, self.chunk_size)
                    self.sha.update(view)
                self._read(view, whole, length - whole)
        except BaseException:
            self._free.put(buffer)
            raise
        return buffer

    def _read(self, view: memoryview, offset: int, length: int) -> None:
        # Whole blocks are asked for, as direct I/O needs; at the end of the file the read comes back short.
        asked = min(len(view), -(-length // ALIGNMENT) * ALIGNMENT)
        done = 0
        while done < length:
            n = os.preadv(self._fd, [view[done:asked]], offset + done)
            if n == 0:
                raise OSError(errno.EIO, f"the file ends at {offset + done} bytes, before {offset + length}")
            done += n

    def restart(self) -> None:
        """Forget everything hashed so far (the bytes start again from offset 0)."""
        self.drain()
        self.sha = hashlib.sha256()

    def finish(self, size: int) -> None:
        """Everything queued is on disk, and the file is ``size`` bytes long."""
        self.drain()
        try:
            if self.direct:
                os.ftruncate(self._fd, size)  # drops the padding of the last chunk
            os.fsync(self._fd)
        except OSError as exc:
            raise self._wrap_error(exc) from exc

    def close(self) -> None:
        self._hashing.put(None)
        for thread in self._threads:
            thread.join()
        # Not mmap.close(): a failed read's traceback may still hold a view of a chunk; the memory
        # goes with the last reference.
        self._buffers.clear()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._wrap_error(self._error) from self._error

    def _hash_queued(self) -> None:
        # Hashes before the write is queued, so the hash order is the chunk order whatever the writers do.
        while (item := self._hashing.get()) is not None:
            buffer, length, _ = item
            with memoryview(buffer) as view:
                self.sha.update(view[:length])
            self._writing.put(item)
        for _ in range(WRITERS):
            self._writing.put(None)

    def _write_queued(self) -> None:
        while (item := self._writing.get()) is not None:
            buffer, length, offset = item
            if self._error is None:
                try:
                    self._write(buffer, length, offset)
                except OSError as exc:
                    self._error = exc
            self._free.put(buffer)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _write(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        if self.direct and length % ALIGNMENT:
            padded = -(-length // ALIGNMENT) * ALIGNMENT
            buffer[length:padded] = bytes(padded - length)
            length = padded
        with memoryview(buffer) as view:
            written = 0
            while written < length:
                written += os.pwrite(self._fd, view[written:length], offset + written)


def _try_direct(fd: int, buffer: mmap.mmap) -> bool:
    """Switch ``fd`` to direct I/O if a first aligned write proves the file system takes it. The
    write puts back what the file holds there (a part file kept from an earlier run), unchanged."""
    if not _O_DIRECT:
        return False
    size = os.fstat(fd).st_size
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    with memoryview(buffer) as view:
        block = view[:ALIGNMENT]
        held = os.preadv(fd, [block], 0)
        block[held:] = bytes(ALIGNMENT - held)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
            os.pwrite(fd, block, 0)
            direct = True
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            direct = False
        block.release()
    os.ftruncate(fd, size)
    return direct
