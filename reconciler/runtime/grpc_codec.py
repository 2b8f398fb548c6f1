"""Open Inference Protocol v2 over gRPC: the protocol's messages (from the vendored .proto, see
proto/SOURCE.md) and the codec between them and numpy. A request is read as the REST codec's
envelope (oip.py): typed ``contents`` as a tensor's JSON ``data``, ``raw_input_contents`` as binary
tensor data (binary.py: the same bytes, little-endian, row-major, BYTES elements each after a 4-byte
little-endian length), so both protocols check the same things and refuse with the same words.
Outputs go back as ``raw_output_contents``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from reconciler.manifests.models import ModelInterface
from reconciler.runtime import binary, oip
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
_DATATYPE_OF = {dtype: name for name, dtype in oip.DATATYPES.items()}


def decode_request(request: Message, interface: ModelInterface) -> InferenceRequest:
    """``request`` (a ModelInferRequest) as numpy feeds that fit ``interface``; RequestError otherwise."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    document = {
        "id": request.id or None,
        "inputs": [_tensor(tensor, raw[index] if raw else None) for index, tensor in enumerate(request.inputs)],
        "outputs": [{"name": output.name} for output in request.outputs] or None,
    }
    return oip.decode_document(oip.Envelope(document, memoryview(b"".join(raw))), interface)


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
        response.outputs.add(name=name, datatype=_datatype_of(name, array), shape=array.shape)
        response.raw_output_contents.append(binary.tensor_to_bytes(array))
    return response


def _tensor(tensor: Message, raw: bytes | None) -> dict[str, Any]:
    """One input as the REST codec's tensor object: its raw contents as binary data, or its typed
    contents as JSON data."""
    name, datatype = tensor.name, tensor.datatype
    document: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
    if raw is not None:
        if tensor.HasField("contents"):
            raise RequestError(f"input {name!r} has both contents and raw_input_contents; send one")
        document["parameters"] = {"binary_data_size": len(raw)}
    else:
        document["data"] = _from_contents(name, datatype, tensor.contents)
    return document


def _from_contents(name: str, datatype: str, contents: Message) -> list[Any]:
    wanted = CONTENTS_FIELD.get(datatype)
    if wanted is None:
        if datatype in oip.DATATYPES:
            raise RequestError(f"input {name!r}: {datatype} has no typed contents; send it as raw_input_contents")
        return []  # the REST codec refuses the datatype, naming the one the model wants
    stray = [field.name for field, _ in contents.ListFields() if field.name != wanted]
    if stray:
        raise RequestError(f"input {name!r}: {datatype} values go in contents.{wanted}, got {', '.join(stray)}")
    values = list(getattr(contents, wanted))
    if datatype != "BYTES":
        return values
    try:  # JSON carries BYTES as text, and so the REST codec takes them
        return [value.decode() for value in values]
    except UnicodeDecodeError as exc:
        raise RequestError(f"input {name!r}: a BYTES element is not UTF-8 text: {exc}") from None


def _datatype_of(name: str, array: np.ndarray) -> str:
    if array.dtype.kind in "US":
        return "BYTES"
    if array.dtype not in _DATATYPE_OF:
        raise TypeError(f"output {name!r} has dtype {array.dtype}, which this runtime cannot send")
    return _DATATYPE_OF[array.dtype]
