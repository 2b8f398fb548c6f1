"""The binary tensor data extension's codec (runtime/binary.py, runtime/oip.py): bodies built by
hand the way Triton's extension defines them, decoded into the feeds a model gets; outputs encoded
as binary when asked; every malformed header, length or element refused with a message."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime import oip
from reconciler.runtime.binary import split_body, tensor_from_bytes, tensor_to_bytes

HEADER = "inference-header-content-length"


def interface(*specs: tuple[str, str, list[int]], outputs: tuple[str, ...] = ("y",)) -> ModelInterface:
    return ModelInterface(
        inputs=[TensorSpec(name=name, dtype=dtype, shape=shape) for name, dtype, shape in specs],
        outputs=[TensorSpec(name=name, dtype="float32", shape=[-1]) for name in outputs],
    )


def body(inputs: list[dict], blobs: list[bytes], **document: object) -> tuple[bytes, str]:
    header = json.dumps({"inputs": inputs, **document}).encode()
    return header + b"".join(blobs), str(len(header))


def binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def bytes_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


@pytest.mark.parametrize(
    "dtype, datatype, values",
    [
        ("bool", "BOOL", [[True, False], [False, True]]),
        ("uint8", "UINT8", [[0, 255], [7, 8]]),
        ("int8", "INT8", [[-128, 127], [0, 1]]),
        ("int16", "INT16", [[-32768, 32767], [1, 2]]),
        ("int32", "INT32", [[-(2**31), 2**31 - 1], [3, 4]]),
        ("int64", "INT64", [[-(2**63), 2**63 - 1], [5, 6]]),
        ("float16", "FP16", [[0.5, -2.0], [65504.0, 0.0]]),
        ("float32", "FP32", [[0.25, 3.0], [-1.5, 1e30]]),
        ("float64", "FP64", [[1e300, -1.0], [0.1, 2.0]]),
    ],
)
def test_each_fixed_size_datatype_decodes_from_little_endian_bytes(dtype: str, datatype: str, values: list):
    expected = np.asarray(values, dtype=dtype)
    raw = expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    content, length = body([binary_input("x", datatype, [2, 2], len(raw))], [raw])
    request = oip.decode_request(content, interface(("x", dtype, [-1, 2])), length)
    assert request.feeds["x"].dtype == np.dtype(dtype)
    assert request.feeds["x"].tolist() == expected.tolist()
    assert tensor_to_bytes(request.feeds["x"]) == raw


def test_bytes_elements_are_length_prefixed_and_reach_the_model_as_text():
    raw = bytes_elements(b"hello", b"", "grüße".encode())
    content, length = body([binary_input("s", "BYTES", [3], len(raw))], [raw])
    request = oip.decode_request(content, interface(("s", "string", [-1])), length)
    assert request.feeds["s"].dtype == object
    assert request.feeds["s"].tolist() == ["hello", "", "grüße"]
    assert tensor_to_bytes(request.feeds["s"]) == raw


def test_binary_and_json_inputs_mix_and_binary_ones_take_their_bytes_in_order():
    first, second = np.arange(4, dtype=np.int32), np.asarray([1.5, 2.5], dtype=np.float64)
    inputs = [
        binary_input("a", "INT32", [4], 16),
        {"name": "j", "datatype": "INT64", "shape": [2], "data": [7, 8]},
        binary_input("b", "FP64", [2], 16),
    ]
    content, length = body(inputs, [first.tobytes(), second.tobytes()])
    spec = interface(("a", "int32", [-1]), ("j", "int64", [-1]), ("b", "float64", [-1]))
    feeds = oip.decode_request(content, spec, length).feeds
    assert feeds["a"].tolist() == first.tolist()
    assert feeds["j"].tolist() == [7, 8]
    assert feeds["b"].tolist() == second.tolist()


@pytest.mark.parametrize(("data", "shape"), [
    (["a", "bé"], [2]),
    (["ends in NUL\x00", "\x00\x00", ""], [3]),  # a fixed-width numpy string would drop trailing NULs
    ([["a", "b\x00"], ["c", "d"]], [2, 2]),
])
def test_json_bytes_input_is_a_list_of_strings_kept_whole(data: list, shape: list[int]):
    content = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": shape, "data": data}]})
    feeds = oip.decode_request(content.encode(), interface(("s", "string", [-1] * len(shape)))).feeds
    assert feeds["s"].dtype == object and feeds["s"].tolist() == data


@pytest.mark.parametrize(("data", "shape", "message"), [
    (["a", 1], [2], "'data' holds values that are not BYTES"),
    ([["a", "b"], ["c"]], [2, 2], "not a rectangular array"),
    ([["a", "b"], "cd"], [2, 2], "not a rectangular array"),
    (["a", "b", "c"], [2], "shape [2] needs 2 values, got 3"),
])
def test_json_bytes_input_that_is_not_strings_of_the_shape_is_refused(data: list, shape: list[int], message: str):
    content = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": shape, "data": data}]})
    assert message in refused(content.encode(), None, interface(("s", "string", [-1] * len(shape))))


FOUR_FLOATS = np.zeros(4, dtype=np.float32).tobytes()
FLOAT_INPUT = interface(("x", "float32", [-1]))


def refused(content: bytes, header_length: str | None, spec: ModelInterface = FLOAT_INPUT) -> str:
    with pytest.raises(oip.RequestError) as caught:
        oip.decode_request(content, spec, header_length)
    return str(caught.value)


def good_body() -> tuple[bytes, str]:
    return body([binary_input("x", "FP32", [4], 16)], [FOUR_FLOATS])


@pytest.mark.parametrize(
    "header_length, message",
    [
        ("twelve", "must be a whole number of bytes, got 'twelve'"),
        ("-3", "does not fit a body of"),
        ("0", "raw binary request without a JSON header) is not supported"),
        ("100000", "Inference-Header-Content-Length 100000 does not fit a body of"),
        ("1.5", "must be a whole number of bytes"),
    ],
)
def test_a_malformed_header_length_is_refused(header_length: str, message: str):
    content, _ = good_body()
    assert message in refused(content, header_length)


def test_a_header_length_that_cuts_the_json_is_refused_as_invalid_json():
    content, length = good_body()
    assert "request body is not valid JSON" in refused(content, str(int(length) - 1))


def test_binary_data_without_the_header_length_says_the_header_is_needed():
    content, _ = good_body()
    assert "needs the Inference-Header-Content-Length header" in refused(content, None)


@pytest.mark.parametrize(
    "inputs, blobs, spec, message",
    [
        ([binary_input("x", "FP32", [4], 12)], [FOUR_FLOATS[:12]], FLOAT_INPUT,
         "shape [4] of float32 needs 16 bytes, got 12"),
        ([binary_input("x", "FP32", [4], 20)], [FOUR_FLOATS], FLOAT_INPUT,
         "binary_data_size 20 goes past the end of the binary data (16 bytes"),
        ([binary_input("x", "FP32", [4], 16)], [FOUR_FLOATS + b"\0"], FLOAT_INPUT,
         "1 bytes of binary data after the JSON header belong to no input"),
        ([binary_input("x", "FP32", [4], -1)], [FOUR_FLOATS], FLOAT_INPUT,
         "binary_data_size must be a non-negative integer, got -1"),
        ([binary_input("x", "FP32", [4], True)], [FOUR_FLOATS], FLOAT_INPUT,
         "binary_data_size must be a non-negative integer, got True"),
        ([{**binary_input("x", "FP32", [4], 16), "data": [0, 0, 0, 0]}], [FOUR_FLOATS], FLOAT_INPUT,
         "has both 'data' and binary_data_size"),
        ([binary_input("x", "INT32", [4], 16)], [FOUR_FLOATS], FLOAT_INPUT,
         "input 'x' has datatype FP32, got 'INT32'"),
        ([binary_input("b", "BOOL", [2], 2)], [b"\x01\x02"], interface(("b", "bool", [-1])),
         "BOOL elements must be the bytes 0 or 1"),
        ([binary_input("s", "BYTES", [2], 9)], [bytes_elements(b"abcde")], interface(("s", "string", [-1])),
         "BYTES element 1 has no 4-byte length (of 2 expected)"),
        ([binary_input("s", "BYTES", [1], 6)], [struct.pack("<I", 9) + b"ab"], interface(("s", "string", [-1])),
         "BYTES element 0 says 9 bytes but only 2 remain"),
        ([binary_input("s", "BYTES", [1], 8)], [bytes_elements(b"a") + b"zzz"], interface(("s", "string", [-1])),
         "3 bytes left after its 1 BYTES elements"),
        ([binary_input("s", "BYTES", [1], 5)], [bytes_elements(b"\xff")], interface(("s", "string", [-1])),
         "a BYTES element is not UTF-8 text"),
    ],
)
def test_malformed_binary_tensors_are_refused_with_the_tensor_named(
    inputs: list, blobs: list, spec: ModelInterface, message: str
):
    content, length = body(inputs, blobs)
    assert message in refused(content, length, spec)


@pytest.mark.parametrize(
    "document, message",
    [
        ({"parameters": {"binary_data_output": "yes"}}, "'parameters.binary_data_output' must be true or false"),
        ({"outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}, "parameters.binary_data must be true or false"),
        ({"outputs": [{"name": "y", "parameters": []}]}, "'outputs' must be a list of objects"),
    ],
)
def test_malformed_output_requests_are_refused(document: dict, message: str):
    content, length = body([binary_input("x", "FP32", [4], 16)], [FOUR_FLOATS], **document)
    assert message in refused(content, length)


TWO_OUTPUTS = interface(("x", "float32", [-1]), outputs=("y", "z"))


@pytest.mark.parametrize(
    "document, binary",
    [
        ({}, set()),
        ({"parameters": {"binary_data_output": True}}, {"y", "z"}),
        ({"outputs": [{"name": "z", "parameters": {"binary_data": True}}, {"name": "y"}]}, {"z"}),
        (
            {"parameters": {"binary_data_output": True},
             "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}]},
            {"z"},
        ),
    ],
)
def test_an_outputs_own_binary_data_overrides_the_requests_binary_data_output(document: dict, binary: set):
    content, length = body([binary_input("x", "FP32", [4], 16)], [FOUR_FLOATS], **document)
    assert oip.decode_request(content, TWO_OUTPUTS, length).binary_outputs == binary


def test_binary_outputs_follow_the_json_header_in_order_with_their_sizes():
    outputs = {
        "y": np.asarray([[1.0, 2.0]], dtype=np.float32),
        "t": np.asarray(["ab", "ç"], dtype=object),
        "j": np.asarray([True, False]),
    }
    content, header_length = oip.encode_response("m", "1", "r", outputs, frozenset({"y", "t"}))
    assert header_length is not None
    header = json.loads(content[:header_length])
    assert [tensor.get("parameters") for tensor in header["outputs"]] == [
        {"binary_data_size": 8}, {"binary_data_size": 12}, None
    ]
    assert header["outputs"][1]["datatype"] == "BYTES"
    assert header["outputs"][2]["data"] == [True, False]
    assert content[header_length:] == outputs["y"].tobytes() + bytes_elements(b"ab", "ç".encode())


def test_json_outputs_carry_bytes_as_text():
    content, header_length = oip.encode_response("m", "1", None, {"t": np.asarray([b"ab", "c"], dtype=object)})
    assert header_length is None
    assert json.loads(content)["outputs"][0]["data"] == ["ab", "c"]


def test_split_body_without_a_header_length_is_all_json():
    header, rest = split_body(b'{"a": 1}', None)
    assert header == b'{"a": 1}' and len(rest) == 0


def test_raw_bytes_decode_to_a_tensor_of_the_shape():
    array = tensor_from_bytes(np.arange(6, dtype=np.int16).tobytes(), np.dtype(np.int16), [2, 3], "x")
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]]
