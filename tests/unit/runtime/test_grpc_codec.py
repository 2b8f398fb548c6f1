"""The gRPC codec: every datatype in and out, typed contents and raw contents, and each malformed
request refused with a message that says what is wrong; the checked-in descriptor set is what the
pinned grpcio-tools generates from the vendored .proto, and speaks tritonclient's wire format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime import binary, grpc_codec, oip
from reconciler.runtime.grpc_codec import ModelInferRequest
from reconciler.runtime.oip import RequestError

# OIP datatype, the model's dtype, and values that span its range
VALUES = [
    ("BOOL", "bool", [True, False, False, True]),
    ("UINT8", "uint8", [0, 1, 200, 255]),
    ("INT8", "int8", [-128, -1, 0, 127]),
    ("INT16", "int16", [-32768, -2, 3, 32767]),
    ("INT32", "int32", [-(2**31), -5, 6, 2**31 - 1]),
    ("INT64", "int64", [-(2**63), -7, 8, 2**63 - 1]),
    ("FP16", "float16", [-1.5, 0.0, 0.25, 65504.0]),
    ("FP32", "float32", [-1.5, 0.0, 0.1, 3.4e38]),
    ("FP64", "float64", [-1.5, 0.0, 0.1, 1.7e308]),
]


def interface(dtype: str = "float32", shape: tuple[int, ...] = (-1, 2)) -> ModelInterface:
    return ModelInterface(
        inputs=[TensorSpec(name="x", dtype=dtype, shape=list(shape))],
        outputs=[TensorSpec(name="y", dtype=dtype, shape=list(shape))],
    )


def raw_request(datatype: str, array: np.ndarray, name: str = "x") -> ModelInferRequest:
    request = ModelInferRequest(model_name="m", id="r1")
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(binary.tensor_to_bytes(array))
    return request


def typed_request(datatype: str, shape: list[int], **contents: list) -> ModelInferRequest:
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=shape, contents=contents)
    return request


@pytest.mark.parametrize(("datatype", "dtype", "values"), VALUES)
def test_raw_inputs_of_every_datatype(datatype: str, dtype: str, values: list):
    array = np.array(values, dtype=dtype).reshape(2, 2)
    decoded = grpc_codec.decode_request(raw_request(datatype, array), interface(dtype))
    assert decoded.id == "r1" and decoded.output_names == ["y"]
    assert decoded.feeds["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.feeds["x"], array)


@pytest.mark.parametrize(("datatype", "dtype", "values"), [row for row in VALUES if row[0] != "FP16"])
def test_typed_contents_of_every_datatype_that_has_them(datatype: str, dtype: str, values: list):
    field = grpc_codec.CONTENTS_FIELD[datatype]
    decoded = grpc_codec.decode_request(typed_request(datatype, [2, 2], **{field: values}), interface(dtype))
    expected = np.array(values, dtype=dtype).reshape(2, 2)
    np.testing.assert_array_equal(decoded.feeds["x"], expected)
    assert decoded.feeds["x"].dtype == np.dtype(dtype) and decoded.id is None


@pytest.mark.parametrize(("datatype", "dtype", "values"), VALUES)
def test_outputs_go_back_as_raw_contents_of_every_datatype(datatype: str, dtype: str, values: list):
    array = np.array(values, dtype=dtype).reshape(2, 2)
    response = grpc_codec.encode_response("m", "2.0.0", "r1", {"y": array})
    [tensor] = response.outputs
    assert (response.model_name, response.model_version, response.id) == ("m", "2.0.0", "r1")
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("y", datatype, [2, 2])
    [raw] = response.raw_output_contents
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(2, 2), array)


def test_only_the_requested_outputs_in_the_order_asked():
    two = ModelInterface(
        inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 2])],
        outputs=[TensorSpec(name=name, dtype="float32", shape=[-1, 2]) for name in ("a", "b")],
    )
    request = raw_request("FP32", np.zeros((1, 2), np.float32))
    assert grpc_codec.decode_request(request, two).output_names == ["a", "b"]
    request.outputs.add(name="b")
    assert grpc_codec.decode_request(request, two).output_names == ["b"]


TEXTS = [[], [""], ["one"], ["", "two", "zw\u00f6lf"], ["\u00fc" * 300]]


@pytest.mark.parametrize("texts", TEXTS, ids=lambda texts: str(len(texts)))
def test_bytes_in_raw_and_typed_contents_and_out_with_4_byte_little_endian_lengths(texts: list[str]):
    """A string tensor: BYTES elements in, onnxruntime's str out, length-prefixed bytes back."""
    encoded = [text.encode() for text in texts]
    raw = b"".join(len(item).to_bytes(4, "little") + item for item in encoded)
    from_raw = raw_request("BYTES", np.array(encoded, dtype=object).reshape(1, -1))
    from_contents = typed_request("BYTES", [1, len(texts)], bytes_contents=encoded)
    for request in (from_raw, from_contents):
        [feed] = grpc_codec.decode_request(request, interface("string", (1, -1))).feeds.values()
        assert feed.dtype == object and feed.ravel().tolist() == texts
    response = grpc_codec.encode_response("m", "1", None, {"y": np.array(texts, dtype=object)})
    assert response.outputs[0].datatype == "BYTES" and response.raw_output_contents[0] == raw


def _two_inputs_one_raw() -> ModelInferRequest:
    request = raw_request("FP32", np.zeros((1, 2), np.float32))
    request.inputs.add(name="z", datatype="FP32", shape=[1, 2])
    return request


def _raw_and_contents() -> ModelInferRequest:
    request = raw_request("FP32", np.zeros((1, 2), np.float32))
    request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    return request


def _raw_of_length(
    length: int, datatype: str = "FP32", shape: tuple[int, ...] = (1, 2), fill: bytes = b"\x01"
) -> ModelInferRequest:
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(fill * length)
    return request


def _bytes_raw(raw: bytes) -> ModelInferRequest:
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(raw)
    return request


def _with_output(name: str) -> ModelInferRequest:
    request = raw_request("FP32", np.zeros((1, 2), np.float32))
    request.outputs.add(name=name)
    return request


def _duplicated() -> ModelInferRequest:
    request = typed_request("FP32", [1, 2], fp32_contents=[1, 2])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2], contents={"fp32_contents": [1, 2]})
    return request


REFUSED = [
    ("no inputs", ModelInferRequest(model_name="m"), "float32", "'inputs' must be a non-empty list"),
    ("raw for some inputs", _two_inputs_one_raw(), "float32", "raw_input_contents has 1 entries for 2 inputs"),
    ("raw and contents", _raw_and_contents(), "float32", "input 'x' has both contents and raw_input_contents"),
    ("raw too short", _raw_of_length(7), "float32", "input 'x': shape [1, 2] of float32 needs 8 bytes, got 7"),
    ("raw too long", _raw_of_length(9), "float32", "needs 8 bytes, got 9"),
    ("BOOL neither 0 nor 1", _raw_of_length(2, "BOOL", fill=b"\x02"), "bool", "input 'x': BOOL elements must be the bytes 0 or 1"),
    ("raw of FP64 for FP32", _raw_of_length(16, "FP64"), "float32", "input 'x' has datatype FP32, got 'FP64'"),
    ("raw of a negative shape", _raw_of_length(8, "FP32", (-1, 2)), "float32", "'shape' must be a list of non-negative"),
    ("BYTES cut in a length", _bytes_raw(b"\x05\x00"), "string", "BYTES element 0 has no 4-byte length"),
    ("BYTES cut in a value", _bytes_raw(b"\x05\x00\x00\x00abc"), "string", "element 0 says 5 bytes but only 3 remain"),
    ("BYTES not text", _bytes_raw(b"\x01\x00\x00\x00\xff" * 2), "string", "a BYTES element is not UTF-8 text"),
    (
        "typed BYTES not text",
        typed_request("BYTES", [1, 2], bytes_contents=[b"ok", b"\xff"]),
        "string",
        "input 'x': a BYTES element is not UTF-8 text",
    ),
    ("BYTES for a number", _bytes_raw(b"\x01\x00\x00\x00a"), "float32", "input 'x' has datatype FP32, got 'BYTES'"),
    ("unknown datatype", typed_request("FP8", [1, 2]), "float32", "input 'x' has datatype FP32, got 'FP8'"),
    ("FP16 typed", typed_request("FP16", [1, 2]), "float16", "FP16 has no typed contents; send it as raw_input"),
    (
        "values in another field",
        typed_request("FP32", [1, 2], int_contents=[1, 2]),
        "float32",
        "FP32 values go in contents.fp32_contents, got int_contents",
    ),
    ("too few values", typed_request("FP32", [2, 2], fp32_contents=[1, 2]), "float32", "needs 4 values, got 2"),
    ("wrong shape", typed_request("FP32", [1, 3], fp32_contents=[1, 2, 3]), "float32", "has shape [-1, 2] (-1: any"),
    ("out of range", typed_request("INT8", [1, 2], int_contents=[1, 300]), "int8", "outside the range of INT8"),
    ("unsigned negative", typed_request("UINT8", [1, 2], uint_contents=[1, 2**32 - 1]), "uint8", "outside the range"),
    ("unknown input", ModelInferRequest(inputs=[{"name": "w", "datatype": "FP32", "shape": [1, 2]}]), "float32", "no input 'w'"),
    ("input twice", _duplicated(), "float32", "input 'x' is given more than once"),
    ("unknown output", _with_output("nope"), "float32", "model has no output 'nope'; its outputs are: y"),
]


@pytest.mark.parametrize(("request_", "dtype", "message"), [row[1:] for row in REFUSED], ids=[row[0] for row in REFUSED])
def test_malformed_requests_are_refused_clearly(request_: ModelInferRequest, dtype: str, message: str):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        grpc_codec.decode_request(request_, interface(dtype))


def test_routing_key_is_a_string_parameter():
    request = ModelInferRequest(parameters={"routing_key": {"string_param": "caller-7"}})
    assert grpc_codec.routing_key(request) == "caller-7"
    assert grpc_codec.routing_key(ModelInferRequest()) is None
    with pytest.raises(RequestError, match="'routing_key' must be a string_param"):
        grpc_codec.routing_key(ModelInferRequest(parameters={"routing_key": {"int64_param": 7}}))


def test_an_output_of_a_type_the_protocol_lacks_is_an_error_not_a_guess():
    with pytest.raises(TypeError, match="output 'y' has dtype complex64"):
        grpc_codec.encode_response("m", "1", None, {"y": np.zeros(2, np.complex64)})


def test_every_datatype_of_the_rest_codec_has_its_typed_contents_but_fp16():
    assert set(oip.DATATYPES) - set(grpc_codec.CONTENTS_FIELD) == {"FP16"}


def test_the_checked_in_descriptor_set_is_what_the_pinned_grpcio_tools_generates(tmp_path: Path):
    proto = grpc_codec.DESCRIPTOR_SET.with_suffix(".proto")
    out = tmp_path / "regenerated.binpb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name],
        check=True,
    )
    assert out.read_bytes() == grpc_codec.DESCRIPTOR_SET.read_bytes()


def test_the_service_speaks_tritonclients_wire_format():
    """Every RPC we serve, with the same request and response types, and every field of those
    messages with the same number and type in Triton's grpc_service.proto (tritonclient's)."""
    from tritonclient.grpc import service_pb2

    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert theirs.full_name == grpc_codec.SERVICE.full_name == "inference.GRPCInferenceService"
    for method in grpc_codec.SERVICE.methods:
        other = theirs.methods_by_name[method.name]
        for ours_type, their_type in ((method.input_type, other.input_type), (method.output_type, other.output_type)):
            _assert_same_fields(ours_type, their_type)


def _assert_same_fields(ours, theirs) -> None:
    assert ours.full_name == theirs.full_name
    their_fields = {field.name: field for field in theirs.fields}
    for field in ours.fields:
        other = their_fields[field.name]
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), field.full_name
        if field.message_type is not None:
            _assert_same_fields(field.message_type, other.message_type)
