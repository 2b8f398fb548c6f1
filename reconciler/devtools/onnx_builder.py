"""Tiny real ONNX models from numpy weights, deterministic byte for byte. Needs the ``onnx``
package (a dev dependency): sites never build models, they only load them."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "softmax": "Softmax", "tanh": "Tanh"}


Layers = Sequence[tuple[np.ndarray, np.ndarray, str | None]]
# (initializers, nodes, output name): how one layer's weights enter the graph
EncodedWeights = tuple[list[onnx.TensorProto], list[onnx.NodeProto], str]
INT8_MAX = 127  # symmetric quantization: -127..127, so negating a weight never overflows


def dense_model(
    layers: Layers,
    input_name: str = "input",
    output_name: str = "output",
    graph_name: str = "dense",
) -> bytes:
    """A stack of fully connected layers: each (weights [in, out], bias [out], activation or None).
    Input and output are float32 with a dynamic batch dimension."""
    return _dense_graph(layers, input_name, output_name, graph_name, _float_weights)


def quantized_dense_model(
    layers: Layers,
    input_name: str = "input",
    output_name: str = "output",
    graph_name: str = "dense-int8",
) -> bytes:
    """The network of ``dense_model`` with its weights stored as int8, one scale per output
    column, and dequantized in the graph (DequantizeLinear before each Gemm): about a quarter of
    the weight bytes. Biases stay float32. What it computes is ``quantized_dense_reference``."""
    return _dense_graph(layers, input_name, output_name, graph_name, _int8_weights)


def quantize_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8: ``weights ≈ q * scale`` with ``scale[column]`` chosen so the
    column's largest magnitude maps to 127 (an all-zero column gets scale 1)."""
    w = np.asarray(weights, dtype=np.float32)
    peak = np.abs(w).max(axis=0)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantized_layers(layers: Layers) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    """The weights an int8 model really computes with: q * scale in float32, as DequantizeLinear does."""
    dequantized = []
    for weights, bias, activation in layers:
        q, scale = quantize_weights(weights)
        dequantized.append((q.astype(np.float32) * scale, np.asarray(bias, dtype=np.float32), activation))
    return dequantized


def quantized_dense_reference(layers: Layers, x: np.ndarray) -> np.ndarray:
    """``quantized_dense_model`` in numpy, independently of onnxruntime."""
    return dense_reference(dequantized_layers(layers), x)


def _float_weights(name: str, weights: np.ndarray) -> EncodedWeights:
    return [numpy_helper.from_array(np.asarray(weights, dtype=np.float32), name)], [], name


def _int8_weights(name: str, weights: np.ndarray) -> EncodedWeights:
    q, scale = quantize_weights(weights)
    q_name, scale_name = f"{name}_int8", f"{name}_scale"
    dequantize = helper.make_node("DequantizeLinear", [q_name, scale_name], [name], axis=1)
    return [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, scale_name)], [dequantize], name


def _dense_graph(
    layers: Layers,
    input_name: str,
    output_name: str,
    graph_name: str,
    encode_weights: Callable[[str, np.ndarray], EncodedWeights],
) -> bytes:
    nodes, initializers = [], []
    current = input_name
    for index, (weights, bias, activation) in enumerate(layers):
        weight_initializers, weight_nodes, w_name = encode_weights(f"w{index}", weights)
        b_name = f"b{index}"
        initializers += [*weight_initializers, numpy_helper.from_array(np.asarray(bias, dtype=np.float32), b_name)]
        nodes += weight_nodes
        is_last = index == len(layers) - 1
        gemm_out = output_name if is_last and activation is None else f"gemm{index}"
        nodes.append(helper.make_node("Gemm", [current, w_name, b_name], [gemm_out]))
        current = gemm_out
        if activation is not None:
            act_out = output_name if is_last else f"act{index}"
            attrs = {"axis": -1} if activation == "softmax" else {}
            nodes.append(helper.make_node(_ACTIVATIONS[activation], [current], [act_out], **attrs))
            current = act_out
    n_in = np.asarray(layers[0][0]).shape[0]
    n_out = np.asarray(layers[-1][0]).shape[1]
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_out])],
        initializers,
    )
    return _serialize(graph)


def dense_reference(layers: Layers, x: np.ndarray) -> np.ndarray:
    """The same network in numpy: expected outputs computed independently of onnxruntime."""
    out = np.asarray(x, dtype=np.float64)
    for weights, bias, activation in layers:
        out = out @ np.asarray(weights, dtype=np.float64) + np.asarray(bias, dtype=np.float64)
        if activation == "relu":
            out = np.maximum(out, 0)
        elif activation == "sigmoid":
            out = 1 / (1 + np.exp(-out))
        elif activation == "tanh":
            out = np.tanh(out)
        elif activation == "softmax":
            shifted = np.exp(out - out.max(axis=-1, keepdims=True))
            out = shifted / shifted.sum(axis=-1, keepdims=True)
    return out.astype(np.float32)


# The manifest's TensorSpec.dtype names -> ONNX element types.
ELEMENT_TYPES = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "string": TensorProto.STRING,
}


def echo_model(dtypes: Sequence[str], width: int = 2) -> bytes:
    """One input ``x_<dtype>`` [batch, width] per element type, each returned unchanged as
    ``y_<dtype>``: every datatype a client can send, checked value for value."""
    inputs, outputs, nodes = [], [], []
    for dtype in dtypes:
        inputs.append(helper.make_tensor_value_info(f"x_{dtype}", ELEMENT_TYPES[dtype], ["batch", width]))
        outputs.append(helper.make_tensor_value_info(f"y_{dtype}", ELEMENT_TYPES[dtype], ["batch", width]))
        nodes.append(helper.make_node("Identity", [f"x_{dtype}"], [f"y_{dtype}"]))
    return _serialize(helper.make_graph(nodes, "echo", inputs, outputs))


def custom_op_model(domain: str = "com.example.untrusted") -> bytes:
    """A model whose only node is in an unregistered custom-op domain."""
    node = helper.make_node("Mystery", ["input"], ["output"], domain=domain)
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    return _serialize(graph, extra_opsets=[helper.make_opsetid(domain, 1)])


def external_data_model(weights: np.ndarray, location: str = "weights.bin") -> bytes:
    """A Gemm model whose weights live in an external file (which is not shipped)."""
    tensor = numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "w0")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    tensor.ClearField("raw_data")
    node = helper.make_node("MatMul", ["input", "w0"], ["output"])
    n_in, n_out = weights.shape
    graph = helper.make_graph(
        [node],
        "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [tensor],
    )
    return _serialize(graph, check=False)


def split_external_data(model: bytes, location: str = "weights.bin") -> tuple[bytes, dict[str, bytes]]:
    """``model`` with all its initializers moved into one external file at ``location`` (relative
    to the ONNX file, as ``onnx.save_model(save_as_external_data=True)`` writes it): the ONNX
    file's bytes and the files beside it, by path."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / location).parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(onnx.load_from_string(model), root / "model.onnx", save_as_external_data=True,
                        all_tensors_to_one_file=True, location=location, size_threshold=0)
        return (root / "model.onnx").read_bytes(), {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "model.onnx"}


def _serialize(graph: onnx.GraphProto, extra_opsets: Sequence = (), check: bool = True) -> bytes:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), *extra_opsets],
        producer_name="reconciler-devtools",
        producer_version="1",
    )
    model.ir_version = 8  # readable by every onnxruntime we support
    if check and not extra_opsets:
        onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)
