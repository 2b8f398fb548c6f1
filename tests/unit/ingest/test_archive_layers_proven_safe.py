"""A layer read to its end once and found safe is not read past the member again (the next file of
a multi-file model out of it stops at its own member); a layer refused is never taken as safe."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Iterator

import pytest

from reconciler.errors import Stalled
from reconciler.ingest.fetch import Opened
from reconciler.ingest.ociarchive import archive_member

BIG = os.urandom(8 << 20)  # past the 1 MiB the archive reader buffers ahead


def tar(*entries: tuple[str, bytes | None]) -> bytes:
    """(name, data), or (name, None) for a symbolic link out of the archive."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Counted:
    def __init__(self, data: bytes):
        self.data, self.read = data, 0

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), len(self.data) - self.read)
        view[:n] = self.data[self.read:self.read + n]
        self.read += n
        return n


def member(data: bytes, name: str, layer: str, max_bytes: int = 1 << 30) -> tuple[bytes, int]:
    """The member's bytes and how many bytes of the layer were read to get them."""
    body = Counted(data)

    @contextlib.contextmanager
    def source() -> Iterator[Opened]:
        yield Opened(body, start=0, resumable=False)

    with archive_member("oci://r/m:1#" + name, source(), name, None, max_bytes, layer) as opened:
        out = bytearray()
        chunk = memoryview(bytearray(1 << 16))
        while n := opened.body.readinto(chunk):
            out += chunk[:n]
    return bytes(out), body.read


def test_the_next_member_of_a_layer_proven_safe_stops_at_itself() -> None:
    layer = tar(("model.onnx", b"onnx"), ("weights.bin", BIG))
    digest = "sha256:" + "1" * 64

    assert member(layer, "weights.bin", digest) == (BIG, len(layer))
    got, read = member(layer, "model.onnx", digest)

    assert got == b"onnx" and read < len(BIG) // 4
    _, unproven = member(layer, "model.onnx", "sha256:" + "2" * 64)  # another digest proves nothing
    assert unproven == len(layer)


def test_a_layer_refused_is_refused_again_and_never_taken_as_safe() -> None:
    layer = tar(("model.onnx", b"onnx"), ("weights.bin", BIG), ("escape", None))
    digest = "sha256:" + "3" * 64
    for _ in range(2):
        with pytest.raises(Stalled) as refused:
            member(layer, "model.onnx", digest)
        assert refused.value.reason == "OciArchiveUnsafe"


def test_a_layer_proven_under_a_larger_limit_is_checked_again_under_a_smaller_one() -> None:
    layer = tar(("model.onnx", b"onnx"), ("weights.bin", BIG))
    digest = "sha256:" + "4" * 64
    member(layer, "weights.bin", digest)

    with pytest.raises(Stalled) as refused:
        member(layer, "model.onnx", digest, max_bytes=len(BIG) // 2)
    assert refused.value.reason == "ArtifactTooLarge"


def test_only_the_newest_layers_stay_proven() -> None:
    layer = tar(("model.onnx", b"onnx"), ("weights.bin", BIG))
    first = "sha256:" + "5" * 64
    member(layer, "weights.bin", first)
    for n in range(64):
        member(tar(("m", b"m")), "m", f"sha256:{n:064x}")

    _, read = member(layer, "model.onnx", first)
    assert read == len(layer)
