from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway.routing.onnx_int8 import quantize_rows, signed_weights_are_exact


def tiny_graph(path: Path, weight: np.ndarray) -> None:
    """h = x @ W (a MatMul by an initializer), y = h @ h^T (one between activations), and
    z = W + W (another reader of the weight, which must survive the rewrite)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", "tokens"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 3])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h", "ht"], ["y"]),
        helper.make_node("Add", ["W", "W"], ["z"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y, z], [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, {"x": x})]


@pytest.mark.parametrize("signed", [True, False])
def test_rows_are_quantized_on_their_own(tmp_path: Path, signed: bool) -> None:
    if signed and not signed_weights_are_exact():
        # Without VNNI, u8 x s8 products saturate: the embedder uses unsigned weights here.
        pytest.skip("signed int8 weights are exact only with VNNI (this CPU has none)")
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    tiny_graph(tmp_path / "float.onnx", weight)
    quantize_rows(tmp_path / "float.onnx", tmp_path / "int8.onnx", signed_weights=signed)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("MatMulInteger") == 1 and ops.count("MatMul") == 1  # activations stay

    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    x[1] *= 1000  # a loud text beside a quiet one
    exact_y, exact_z = run(tmp_path / "float.onnx", x)
    y, z = run(tmp_path / "int8.onnx", x)
    np.testing.assert_array_equal(z, exact_z)  # the weight another node reads is intact
    # Each text's result is the same alone as beside a text 1000x louder (per-row scales),
    # and close to float32's.
    alone = run(tmp_path / "int8.onnx", x[:1])[0]
    np.testing.assert_array_equal(alone, y[:1])
    h = x @ weight
    for row in range(2):
        error = np.abs(y[row] - exact_y[row]).max() / np.abs(h[row]).max() ** 2
        assert error < 0.05


def test_int8_activations_span_the_row(tmp_path: Path) -> None:
    """A row's largest magnitude maps to 127: a tiny row keeps its precision."""
    weight = np.eye(4, dtype=np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "eye", [x], [y],
        [numpy_helper.from_array(weight, "W")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "eye.onnx"))  # fmt: skip
    quantize_rows(tmp_path / "eye.onnx", tmp_path / "eye8.onnx", signed_weights=True)
    row = np.array([[1e-6, -2e-6, 0.5e-6, 0.0]], np.float32)
    (out,) = run(tmp_path / "eye8.onnx", row)
    np.testing.assert_allclose(out, row, atol=2e-6 / 127)
