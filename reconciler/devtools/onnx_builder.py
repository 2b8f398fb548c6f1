"""Tiny real ONNX models from numpy weights, deterministic byte for byte. Needs the ``onnx``
package (a dev dependency): sites never build models, they only load them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "softmax": "Softmax", "tanh": "Tanh"}


def dense_model(
    layers: Sequence[tuple[np.ndarray, np.ndarray, str | None]],
    input_name: str = "input",
    output_name: str = "output",
    graph_name: str = "dense",
) -> bytes:
    """A stack of fully connected layers: each (weights [in, out], bias [out], activation or None).
    Input and output are float32 with a dynamic batch dimension."""
    nodes, initializers = [], []
    current = input_name
    for index, (weights, bias, activation) in enumerate(layers):
        w_name, b_name = f"w{index}", f"b{index}"
        initializers += [
            numpy_helper.from_array(np.asarray(weights, dtype=np.float32), w_name),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), b_name),
        ]
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


def dense_reference(layers: Sequence[tuple[np.ndarray, np.ndarray, str | None]], x: np.ndarray) -> np.ndarray:
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
