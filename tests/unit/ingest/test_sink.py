"""The chunked, threaded, direct-I/O write path of an ingest: every size around the alignment and
chunk boundaries lands byte for byte, with direct I/O and with the buffered fallback."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path

import pytest

from reconciler.ingest import sink
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.models import Artifact

CHUNK = 16 << 10  # small chunks: many of them in flight, and every buffer reused several times
SIZES = [1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * (sink.BUFFERS + 3) + 5]


@pytest.fixture(params=["direct", "buffered"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sink, "CHUNK_SIZE", CHUNK)
    if request.param == "buffered":
        monkeypatch.setattr(sink, "_O_DIRECT", 0)
    return request.param


def ingest(tmp_path: Path, data: bytes) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "m.onnx").write_bytes(data)
    wanted = Artifact(uri="m.onnx", digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data),
                      signature={"uri": "m.onnx.sig"})
    return ArtifactStore(tmp_path / "state").ingest(wanted, repo).path


@pytest.mark.parametrize("size", SIZES)
def test_every_size_lands_byte_for_byte(tmp_path: Path, mode: str, size: int) -> None:
    data = os.urandom(size)
    assert ingest(tmp_path, data).read_bytes() == data


def test_direct_io_is_used_where_the_file_system_takes_it(tmp_path: Path, mode: str) -> None:
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT)
    try:
        chunks = sink.Sink(fd, sink.chunk_size_for(100), OSError)
        try:
            assert chunks.direct == (mode == "direct" and hasattr(os, "O_DIRECT"))
        finally:
            chunks.close()
        assert os.fstat(fd).st_size == 0  # the probe leaves nothing behind
    finally:
        os.close(fd)


def test_a_file_system_refusing_direct_io_gets_buffered_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As tmpfs before Linux 6.6 or some network file systems do: EINVAL on the first direct write."""
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    real_pwrite = os.pwrite

    def refusing_pwrite(fd: int, data: bytes, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(sink, "CHUNK_SIZE", CHUNK)
    monkeypatch.setattr(os, "pwrite", refusing_pwrite)
    data = os.urandom(CHUNK * 3 + 7)
    assert ingest(tmp_path, data).read_bytes() == data


def test_chunk_sizes_are_aligned_and_hold_small_artifacts_whole() -> None:
    assert sink.chunk_size_for(1) == sink.ALIGNMENT
    assert sink.chunk_size_for(sink.ALIGNMENT + 1) == 2 * sink.ALIGNMENT
    assert sink.chunk_size_for(1 << 40) == sink.CHUNK_SIZE
    assert sink.CHUNK_SIZE % sink.ALIGNMENT == 0


TAKE_UP = [0, 1, 4095, 4096, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * 3 + 4097]


@pytest.mark.parametrize("length", TAKE_UP)
def test_take_up_hashes_the_whole_chunks_and_holds_the_rest_to_fill(tmp_path: Path, mode: str, length: int) -> None:
    """What a part file kept by a stopped download gives the next one: its whole chunks hashed, the
    bytes after them in the chunk buffer that is filled next (so later writes stay aligned)."""
    data = os.urandom(length)
    (tmp_path / "part").write_bytes(data)
    fd = os.open(tmp_path / "part", os.O_RDWR)
    try:
        chunks = sink.Sink(fd, sink.chunk_size_for(CHUNK * 10), OSError)
        try:
            buffer = chunks.take_up(length)
            whole = length - length % CHUNK
            assert chunks.sha.digest() == hashlib.sha256(data[:whole]).digest()
            assert buffer[: length - whole] == data[whole:]
        finally:
            chunks.close()
    finally:
        os.close(fd)


def test_take_up_of_a_file_shorter_than_asked_is_an_error(tmp_path: Path, mode: str) -> None:
    (tmp_path / "part").write_bytes(os.urandom(CHUNK + 100))
    fd = os.open(tmp_path / "part", os.O_RDWR)
    try:
        chunks = sink.Sink(fd, CHUNK, OSError)
        try:
            with pytest.raises(OSError):
                chunks.take_up(CHUNK + 2 * sink.ALIGNMENT)
        finally:
            chunks.close()
    finally:
        os.close(fd)

