"""Open Inference Protocol v2 over gRPC: the protocol's messages (from the vendored .proto, see
proto/SOURCE.md) and the codec between them and numpy. A request's tensors, read from typed
``contents`` or from ``raw_input_contents``, go through the JSON codec's checks (oip.py), so both
protocols refuse the same mistakes with the same words; outputs go back as ``raw_output_contents``
(little-endian, row-major; BYTES elements each after a 4-byte little-endian length)."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from reconciler.manifests.models import ModelInterface
from reconciler.runtime import oip
from reconciler.runtime.oip import InferenceRequest, RequestError

SERVICE_NAME = "inference.GRPCInferenceService"
DESCRIPTOR_SET = Path(__file__).with_name("proto") / "grpc_predict_v2.binpb"


def _pool() -> descriptor_pool.DescriptorPool:
    """A pool of our own: the global one may already hold Triton's or KServe's copy of these names."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file:
        pool.AddSerializedFile(file.SerializeToString())
    return pool


POOL = _pool()
SERVICE = POOL.FindServiceByName(SERVICE_NAME)


def message_class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"inference.{name}"))


ModelInferRequest = message_class("ModelInferRequest")
ModelInferResponse = message_class("ModelInferResponse")

# The typed ``contents`` field that carries each datatype's values; FP16 has none (raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
_DATATYPE_OF = {dtype: name for name, dtype in oip.DATATYPES.items()}


def decode_request(request: Message, interface: ModelInterface) -> InferenceRequest:
    """``request`` (a ModelInferRequest) as numpy feeds that fit ``interface``; RequestError otherwise."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    tensors = [_tensor(tensor, raw[index] if raw else None) for index, tensor in enumerate(request.inputs)]
    outputs = [{"name": output.name} for output in request.outputs] or None
    return oip.decode_document({"id": request.id or None, "inputs": tensors, "outputs": outputs}, interface)


def routing_key(request: Message) -> str | None:
    """``parameters.routing_key`` as a string parameter, as REST takes it from its JSON."""
    parameter = request.parameters.get("routing_key")
    if parameter is None:
        return None
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise RequestError("parameter 'routing_key' must be a string_param")
    return parameter.string_param


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Mapping[str, np.ndarray]
) -> Message:
    response = ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for name, array in outputs.items():
        tensor = response.outputs.add(name=name, datatype=_datatype_of(name, array), shape=array.shape)
        response.raw_output_contents.append(raw_contents(tensor.datatype, array))
    return response


def raw_contents(datatype: str, array: np.ndarray) -> bytes:
    """The raw form of ``array``: little-endian elements in row-major order; BYTES length-prefixed."""
    if datatype == "BYTES":
        return join_bytes(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements from their raw form; refuses a length that runs past the end."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise RequestError(f"input {name!r}: BYTES raw contents end inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise RequestError(
                f"input {name!r}: BYTES element {len(items)} says {length} bytes, {len(raw) - offset} are left"
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _tensor(tensor: Message, raw: bytes | None) -> dict[str, Any]:
    """One input as the JSON codec's tensor object, its ``data`` already an array (or list)."""
    name, datatype = tensor.name, tensor.datatype
    document: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
    if raw is not None:
        if tensor.HasField("contents"):
            raise RequestError(f"input {name!r} has both contents and raw_input_contents; send one")
        document["data"] = _from_raw(name, datatype, document["shape"], raw)
    else:
        document["data"] = _from_contents(name, datatype, tensor.contents)
    return document


def _from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> Any:
    if datatype == "BYTES":
        return np.array(split_bytes(raw, name), dtype=object)
    dtype = oip.DATATYPES.get(datatype)
    if dtype is None or any(dim < 0 for dim in shape):
        return []  # the JSON codec refuses the datatype or the shape, saying what the model wants
    dtype = dtype.newbyteorder("<")
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes of raw contents, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _from_contents(name: str, datatype: str, contents: Message) -> list[Any]:
    wanted = CONTENTS_FIELD.get(datatype)
    if wanted is None:
        if datatype in oip.DATATYPES:
            raise RequestError(f"input {name!r}: {datatype} has no typed contents; send it as raw_input_contents")
        return []  # the JSON codec refuses the datatype, naming the one the model wants
    stray = [field.name for field, _ in contents.ListFields() if field.name != wanted]
    if stray:
        raise RequestError(f"input {name!r}: {datatype} values go in contents.{wanted}, got {', '.join(stray)}")
    return list(getattr(contents, wanted))


def _datatype_of(name: str, array: np.ndarray) -> str:
    if array.dtype == object:
        return "BYTES"
    if array.dtype not in _DATATYPE_OF:
        raise TypeError(f"output {name!r} has dtype {array.dtype}, which this runtime cannot send")
    return _DATATYPE_OF[array.dtype]
