"""Artifact ingest (download + hash + signature check): >= 0.8 x hashlib.sha256 alone on the same bytes.

A 256 MiB artifact of random bytes and its cosign signature (a P-256 key made here) are served
over HTTP on 127.0.0.1 by a separate process (a small threaded server that answers with
os.sendfile and supports Range). In turns:
(a) baseline: hashlib.sha256 over the same file, read from the page cache in 4 MiB chunks (the
    file was just written and is being served, so it is cached: this is `sha256sum` on it);
(b) subject: ArtifactStore.ingest of the artifact over HTTP (stream to a temp file, hash, final
    fsync, rename into the store) + fetch_bytes of the signature + trust.verify_cosign.
Ratio = median(a) / median(b) (throughput of the ingest relative to bare hashing; higher is better).
Before each turn the previous blob is deleted and os.sync() settles the disk, outside the timing.
For context it also measures, in the same turns, the two other stages an ingest overlaps with the
hash: (c) the network alone (the same GET, bytes dropped) and (d) the disk alone (the same bytes
written from memory with direct I/O, two writes in flight, fsync). An ingest cannot beat the
slowest of (a), (c) and (d); the second ratio printed is against that slowest stage.

    .venv/bin/python bench/bench_ingest.py [--quick] [--repetitions N]"""

from __future__ import annotations

import hashlib
import http.client
import mmap
import multiprocessing
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.ingest.artifacts import ArtifactStore, fetch_bytes
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits
from reconciler.trust import (
    TrustedKey,
    generate_private_key,
    load_public_key,
    public_key_pem,
    sign_digest,
    verify_cosign,
)

TARGET = 0.8
SIZE = 256 << 20
READ_CHUNK = 4 << 20
LIMITS = FetchLimits(max_bytes=1 << 30, retries=1)


# --- the artifact server (its own process, so it does not share our GIL) -------------------------

class _SendfileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        if path.parent != self.server.root or not path.is_file():
            self.send_error(404)
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match.group(1)) if match and int(match.group(1)) < size else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.flush()
            offset = start
            while offset < size:
                offset += os.sendfile(self.connection.fileno(), fd, offset, size - offset)
        finally:
            os.close(fd)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _SendfileHandler)
        self.root = root


def _serve(root: str, ports: multiprocessing.Queue) -> None:
    server = _Server(Path(root))
    ports.put(server.server_address[1])
    server.serve_forever()


# --- the two sides ----------------------------------------------------------------------------------

def write_random_file(path: Path, size: int) -> bytes:
    """Random bytes, hashed as they are written; returns the raw SHA-256."""
    sha = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // READ_CHUNK):
            chunk = os.urandom(READ_CHUNK)
            sha.update(chunk)
            out.write(chunk)
    return sha.digest()


def bare_sha256(path: Path) -> bytes:
    sha = hashlib.sha256()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as source:
        while n := source.readinto(buffer):
            sha.update(view[:n])
    return sha.digest()


def network_only(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    try:
        connection.request("GET", "/model.onnx")
        response = connection.getresponse()
        buffer = memoryview(bytearray(READ_CHUNK))
        received = 0
        while n := response.readinto(buffer):
            received += n
        if received != SIZE:
            raise RuntimeError(f"the network baseline received {received} bytes")
    finally:
        connection.close()


def disk_only(path: Path) -> None:
    buffer = mmap.mmap(-1, READ_CHUNK)  # page-aligned, as direct I/O needs
    buffer.write(os.urandom(READ_CHUNK))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0), 0o600)
    try:
        with ThreadPoolExecutor(2) as writers:
            list(writers.map(lambda offset: os.pwrite(fd, buffer, offset), range(0, SIZE, READ_CHUNK)))
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()


def ingest_and_verify(store: ArtifactStore, artifact: Artifact, trusted: list[TrustedKey]) -> None:
    ingested = store.ingest(artifact, None, LIMITS)
    if not ingested.fetched:
        raise RuntimeError("the blob was already in the store: the subject did not download")
    verify_cosign(ingested.digest.raw, fetch_bytes(artifact.signature.uri, None, LIMITS), trusted)


class FsyncClock:
    """Sums the time spent in os.fsync while installed (measuring only; the calls still happen)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._fsync = os.fsync

    def __enter__(self) -> FsyncClock:
        def timed_fsync(fd: int) -> None:
            start = time.perf_counter()
            try:
                self._fsync(fd)
            finally:
                self.seconds += time.perf_counter() - start

        os.fsync = timed_fsync
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.fsync = self._fsync


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=9, quick=5)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        served = Path(scratch) / "served"
        served.mkdir()
        digest = write_random_file(served / "model.onnx", SIZE)
        key = generate_private_key()
        (served / "model.onnx.sig").write_bytes(sign_digest(key, digest))
        trusted = [load_public_key(public_key_pem(key), "bench.pub")]

        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        server = context.Process(target=_serve, args=(str(served), ports), daemon=True)
        server.start()
        try:
            port = ports.get(timeout=30)
            url = f"http://127.0.0.1:{port}"
            artifact = Artifact(uri=f"{url}/model.onnx", digest=f"sha256:{digest.hex()}", size=SIZE,
                                signature={"uri": f"{url}/model.onnx.sig"})
            store = ArtifactStore(Path(scratch) / "state")

            def settle() -> None:
                store.garbage_collect(set())
                os.sync()

            if bare_sha256(served / "model.onnx") != digest:
                raise RuntimeError("the baseline hashed other bytes")
            base, subject, fsyncs, network, disk = [], [], [], [], []
            for turn in range(args.repetitions + 1):  # turn 0 warms up every side and is not counted
                settle()
                b = timed(lambda: bare_sha256(served / "model.onnx"))
                settle()
                with FsyncClock() as clock:
                    s = timed(lambda: ingest_and_verify(store, artifact, trusted))
                settle()
                n = timed(lambda: network_only(port))
                settle()
                d = timed(lambda: disk_only(Path(scratch) / "disk-baseline"))
                if turn:
                    base.append(b)
                    subject.append(s)
                    fsyncs.append(clock.seconds)
                    network.append(n)
                    disk.append(d)
        finally:
            server.terminate()
            server.join()

    base_stats, subject_stats, fsync_stats = Stats.of(base), Stats.of(subject), Stats.of(fsyncs)
    network_stats, disk_stats = Stats.of(network), Stats.of(disk)
    ratio = base_stats.median / subject_stats.median
    slowest = max(base_stats.median, network_stats.median, disk_stats.median)
    without_fsync = Stats.of([s - f for s, f in zip(subject, fsyncs, strict=True)])
    mib_s = SIZE / (1 << 20)
    print(f"ingest of {SIZE >> 20} MiB over HTTP on 127.0.0.1 vs hashlib.sha256 of the same bytes ({machine()})")
    print(f"  baseline  sha256 (page cache)       {base_stats.ms()}  {mib_s / base_stats.median:.0f} MiB/s")
    print(f"  subject   ingest + verify_cosign    {subject_stats.ms()}  {mib_s / subject_stats.median:.0f} MiB/s")
    print(f"            of which in fsync         {fsync_stats.ms()}")
    print(f"  context   network alone (GET)       {network_stats.ms()}  {mib_s / network_stats.median:.0f} MiB/s")
    print(f"            disk alone (direct, fsync) {disk_stats.ms()}  {mib_s / disk_stats.median:.0f} MiB/s")
    print(f"  ratio of medians {ratio:.2f} (target >= {TARGET}); "
          f"without the time in fsync {base_stats.median / without_fsync.median:.2f}; "
          f"vs the slowest single stage {slowest / subject_stats.median:.2f} (both for context only)")
    emit("ingest", ratio, f"ratio >= {TARGET}", ratio >= TARGET,
         f"{mib_s / subject_stats.median:.0f} MiB/s vs sha256 {mib_s / base_stats.median:.0f} MiB/s",
         baseline=base_stats.to_json(), subject=subject_stats.to_json(), fsync=fsync_stats.to_json(),
         ratio_without_fsync=round(base_stats.median / without_fsync.median, 3),
         network=network_stats.to_json(), disk=disk_stats.to_json(),
         ratio_to_slowest_stage=round(slowest / subject_stats.median, 3))


if __name__ == "__main__":
    main()
