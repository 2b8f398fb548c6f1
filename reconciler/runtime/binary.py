"""The wire format of the Open Inference Protocol's binary tensor data extension (Triton, KServe):
a body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the tensors' raw
bytes, in the order the header lists the tensors that carry ``parameters.binary_data_size``.

A tensor's bytes are its elements little-endian, row major, without padding; BOOL is one byte (0
or 1); BYTES is each element as a 4-byte little-endian unsigned length and then its bytes. gRPC's
``raw_input_contents`` / ``raw_output_contents`` hold the same bytes, one entry per tensor, so
``tensor_from_bytes`` and ``tensor_to_bytes`` serve both protocols."""

from __future__ import annotations

import math
import struct

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
_LENGTH_PREFIX = struct.Struct("<I")


class BinaryFormatError(ValueError):
    """The body or a tensor's bytes do not follow the extension's format (HTTP 400)."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section after it; without the header the whole body is JSON."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length.strip(), 10)
    except ValueError:
        raise BinaryFormatError(
            f"Inference-Header-Content-Length must be a whole number of bytes, got {header_length!r}"
        ) from None
    if length == 0:
        raise BinaryFormatError(
            "Inference-Header-Content-Length 0 (a raw binary request without a JSON header) is not supported"
        )
    if not 0 < length <= len(body):
        raise BinaryFormatError(
            f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes"
        )
    view = memoryview(body)
    return body[:length], view[length:]


def tensor_from_bytes(data: memoryview | bytes, dtype: np.dtype, shape: list[int], name: str) -> np.ndarray:
    """The tensor of ``shape`` whose raw bytes are ``data``; BYTES (``dtype`` object) as bytes objects."""
    count = math.prod(shape)
    if dtype.kind == "O":
        return np.array(_split_bytes_elements(data, count, name), dtype=object).reshape(shape)
    needed = count * dtype.itemsize
    if len(data) != needed:
        raise BinaryFormatError(
            f"input {name!r}: shape {shape} of {dtype.name} needs {needed} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)
    if dtype.kind == "b" and array.size and array.view(np.uint8).max() > 1:
        raise BinaryFormatError(f"input {name!r}: BOOL elements must be the bytes 0 or 1")
    return array


def tensor_to_bytes(array: np.ndarray) -> bytes:
    """The raw bytes of ``array``; an object or string array as BYTES elements."""
    if array.dtype.kind in "OUS":
        return b"".join(_length_prefixed(element) for element in array.ravel())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _length_prefixed(element: object) -> bytes:
    raw = element.encode() if isinstance(element, str) else bytes(element)  # type: ignore[call-overload]
    return _LENGTH_PREFIX.pack(len(raw)) + raw


def _split_bytes_elements(data: memoryview | bytes, count: int, name: str) -> list[bytes]:
    elements, offset = [], 0
    for index in range(count):
        if offset + _LENGTH_PREFIX.size > len(data):
            raise BinaryFormatError(f"input {name!r}: BYTES element {index} has no 4-byte length (of {count} expected)")
        (length,) = _LENGTH_PREFIX.unpack_from(data, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(data):
            raise BinaryFormatError(
                f"input {name!r}: BYTES element {index} says {length} bytes but only {len(data) - offset} remain"
            )
        elements.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise BinaryFormatError(f"input {name!r}: {len(data) - offset} bytes left after its {count} BYTES elements")
    return elements
