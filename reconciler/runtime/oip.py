"""Open Inference Protocol v2 (KServe / Triton) REST codec: turns an inference request body (JSON,
or JSON followed by binary tensor data: binary.py) into numpy feeds checked against the model's
interface, and model outputs into the response body, each output as JSON or binary as the client
asked. Every way a request can be wrong raises RequestError with a message that names the tensor."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime.binary import BinaryFormatError, split_body, tensor_from_bytes, tensor_to_bytes

# OIP datatype -> numpy dtype; BYTES travel as numpy object arrays (of bytes in, str or bytes out).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items()}
# The manifest's TensorSpec.dtype (ONNX's element type names) -> OIP datatype.
_DATATYPE_OF_SPEC = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}

# The numpy kinds (bool, signed, unsigned, float, str) a JSON array may hold for each target kind:
# integers widen to floats, but a float never silently truncates into an integer tensor.
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "O": "O"}


class RequestError(ValueError):
    """The request is malformed or does not fit the model: the client's fault (HTTP 400)."""


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    binary_outputs: frozenset[str] = frozenset()  # the outputs to send as binary tensor data


@dataclass(frozen=True)
class Envelope:
    """A request body read as far as routing needs: its JSON document (id and parameters checked)
    and the binary tensor data after it. Its tensors are checked by decode_document, against the
    interface of the version the request is routed to."""

    document: dict[str, Any]
    binary: memoryview

    @property
    def routing_key(self) -> str | None:
        """The key that keeps a caller on one version (``parameters.routing_key``), if given."""
        return self.document.get("parameters", {}).get("routing_key")


def datatype(spec: TensorSpec) -> str:
    return _DATATYPE_OF_SPEC[spec.dtype]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": datatype(spec), "shape": list(spec.shape)}


def decode_request(body: bytes, interface: ModelInterface, header_length: str | None = None) -> InferenceRequest:
    return decode_document(parse_document(body, header_length), interface)


def parse_document(body: bytes, header_length: str | None = None) -> Envelope:
    """``body`` split at ``header_length`` (the Inference-Header-Content-Length header, if sent)
    into its JSON document, whose envelope (id, parameters) is checked here, and binary data."""
    try:
        header, binary = split_body(body, header_length)
    except BinaryFormatError as exc:
        raise RequestError(str(exc)) from None
    try:
        document = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if header_length is not None else " (binary tensor data needs the Inference-Header-Content-Length header)"
        raise RequestError(f"request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(document, dict):
        raise RequestError("request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be an object")
    if not isinstance(parameters.get("routing_key", ""), str):
        raise RequestError("'parameters.routing_key' must be a string")
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise RequestError("'parameters.binary_data_output' must be true or false")
    return Envelope(document, binary)


def decode_document(envelope: Envelope, interface: ModelInterface) -> InferenceRequest:
    document = envelope.document
    output_names, binary_outputs = _requested_outputs(
        document.get("outputs"), interface, document.get("parameters", {}).get("binary_data_output", False)
    )
    return InferenceRequest(
        id=document.get("id"),
        feeds=_decode_inputs(document.get("inputs"), interface, envelope.binary),
        output_names=output_names,
        binary_outputs=binary_outputs,
    )


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    binary_outputs: frozenset[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensor data, the length of its JSON header
    (the Inference-Header-Content-Length to send)."""
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = tensors = []
    binary: list[bytes] = []
    for name, array in outputs.items():
        if name in binary_outputs:
            raw = tensor_to_bytes(array)
            tensors.append({**_tensor_header(name, array), "parameters": {"binary_data_size": len(raw)}})
            binary.append(raw)
        else:
            tensors.append({**_tensor_header(name, array), "data": _json_data(array)})
    header = json.dumps(document, separators=(",", ":")).encode()
    if not binary:
        return header, None
    return b"".join([header, *binary]), len(header)


def _decode_inputs(inputs: object, interface: ModelInterface, binary: memoryview) -> dict[str, np.ndarray]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    specs = {spec.name: spec for spec in interface.inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError("each input must be an object with a string 'name'")
        name = tensor["name"]
        if name not in specs:
            raise RequestError(f"model has no input {name!r}; its inputs are: {', '.join(specs)}")
        if name in feeds:
            raise RequestError(f"input {name!r} is given more than once")
        shape = _checked_shape(tensor, specs[name])
        size = _binary_data_size(tensor)
        if size is None:
            feeds[name] = _decode_json_data(tensor, specs[name], shape)
            continue
        if offset + size > len(binary):
            raise RequestError(
                f"input {name!r}: binary_data_size {size} goes past the end of the binary data "
                f"({len(binary)} bytes after the JSON header, {offset} already taken by earlier inputs)"
            )
        feeds[name] = decode_tensor_bytes(specs[name], shape, binary[offset : offset + size])
        offset += size
    missing = [name for name in specs if name not in feeds]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(missing)}")
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input")
    return feeds


def decode_tensor_bytes(spec: TensorSpec, shape: list[int], data: memoryview | bytes) -> np.ndarray:
    """One input's raw bytes (binary tensor data, or gRPC's raw_input_contents) as the feed for
    ``spec``; ``shape`` is already checked against it (check_tensor)."""
    try:
        array = tensor_from_bytes(data, DATATYPES[datatype(spec)], shape, spec.name)
    except BinaryFormatError as exc:
        raise RequestError(str(exc)) from None
    if array.dtype.kind != "O":
        return array
    try:  # onnxruntime's string tensors take str: it would turn a bytes object into "b'...'"
        return np.array([element.decode() for element in array.ravel()], dtype=object).reshape(shape)
    except UnicodeDecodeError as exc:
        raise RequestError(f"input {spec.name!r}: a BYTES element is not UTF-8 text, which the model's "
                           f"string tensor needs: {exc}") from None


def check_tensor(spec: TensorSpec, given_datatype: object, shape: object) -> list[int]:
    """``shape`` as a list of dimensions, once the datatype and shape given for input ``spec``
    are shown to fit it."""
    name, expected_type = spec.name, datatype(spec)
    if given_datatype != expected_type:
        raise RequestError(f"input {name!r} has datatype {expected_type}, got {given_datatype!r}")
    if not _is_shape(shape):
        raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise RequestError(f"input {name!r} has shape {spec.shape} (-1: any size), got {shape}")
    return shape


def _checked_shape(tensor: dict[str, Any], spec: TensorSpec) -> list[int]:
    return check_tensor(spec, tensor.get("datatype"), tensor.get("shape"))


def _binary_data_size(tensor: dict[str, Any]) -> int | None:
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(f"input {tensor['name']!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(f"input {tensor['name']!r}: binary_data_size must be a non-negative integer, got {size!r}")
    if "data" in tensor:
        raise RequestError(f"input {tensor['name']!r} has both 'data' and binary_data_size; send one")
    return size


def _decode_json_data(tensor: dict[str, Any], spec: TensorSpec, shape: list[int]) -> np.ndarray:
    name, expected_type = spec.name, datatype(spec)
    if "data" not in tensor:
        raise RequestError(f"input {name!r} has no 'data' (nor parameters.binary_data_size)")
    target = DATATYPES[expected_type]
    try:
        values = _text_array(tensor["data"]) if target.kind == "O" else np.asarray(tensor["data"])
    except ValueError:
        raise RequestError(f"input {name!r}: 'data' is not a rectangular array") from None
    if values.size and (values.dtype.kind not in _ACCEPTED_KINDS[target.kind]
                        or (target.kind == "O" and not all(isinstance(value, str) for value in values.flat))):
        raise RequestError(f"input {name!r}: 'data' holds values that are not {expected_type}")
    needed = math.prod(shape)
    if values.size != needed:
        raise RequestError(f"input {name!r}: shape {shape} needs {needed} values, got {values.size}")
    if target.kind in "iu" and values.size and not _fits(values, target):
        raise RequestError(f"input {name!r}: 'data' has values outside the range of {expected_type}")
    return values.astype(target, copy=False).reshape(shape)


def _text_array(data: object) -> np.ndarray:
    """BYTES given as JSON strings, as an object array of those very strings: a numpy string array
    would drop their trailing NULs and turn numbers into text. ``ValueError`` when not rectangular."""
    values = np.empty(np.shape(data), dtype=object)
    values[...] = data
    return values


def _is_shape(shape: object) -> bool:
    return isinstance(shape, list) and all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    )


def _fits(values: np.ndarray, target: np.dtype) -> bool:
    limits = np.iinfo(target)
    return bool(values.min() >= limits.min and values.max() <= limits.max)


def _requested_outputs(
    outputs: object, interface: ModelInterface, binary_by_default: bool
) -> tuple[list[str], frozenset[str]]:
    """The outputs to compute, in order, and which of them go back binary: an output's own
    ``parameters.binary_data`` decides, else the request's ``binary_data_output``."""
    known = [spec.name for spec in interface.outputs]
    if outputs is None:
        return known, frozenset(known if binary_by_default else ())
    if not isinstance(outputs, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("parameters", {}), dict)
        for item in outputs
    ):
        raise RequestError("'outputs' must be a list of objects with a string 'name' (and object 'parameters')")
    names = [item["name"] for item in outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise RequestError(f"model has no output {unknown[0]!r}; its outputs are: {', '.join(known)}")
    binary = set()
    for item in outputs:
        wanted = item.get("parameters", {}).get("binary_data", binary_by_default)
        if not isinstance(wanted, bool):
            raise RequestError(f"output {item['name']!r}: parameters.binary_data must be true or false")
        if wanted:
            binary.add(item["name"])
    return list(dict.fromkeys(names)), frozenset(binary)


def _tensor_header(name: str, array: np.ndarray) -> dict[str, Any]:
    if array.dtype not in _DATATYPE_OF:
        raise TypeError(f"output {name!r} has dtype {array.dtype}, which this runtime cannot send")
    return {"name": name, "datatype": _DATATYPE_OF[array.dtype], "shape": list(array.shape)}


def _json_data(array: np.ndarray) -> list[Any]:
    if array.dtype.kind == "O":  # JSON carries BYTES as text
        return [element.decode() if isinstance(element, bytes) else str(element) for element in array.ravel()]
    return array.ravel().tolist()
