"""int8 for the ONNX embedder, with each token quantized on its own: batch-independent.

ONNX Runtime's dynamic quantization scales activations per tensor, so in a batch one text's
embedding depends on the texts beside it, and a request could route differently under load.
Here every `MatMul` by a weight matrix becomes: the row's largest magnitude sets its scale
(one row is one token of one text), the row is rounded to 8 bits, multiplied by the weights
quantized per output channel (`MatMulInteger`), and scaled back. A text's embedding is then
the same alone or in any batch. On one core it is 1.9x float32's batched throughput and
3.3x for a single text, at cosine >= 0.997 with float32 (benchmarks/NOTES.md, section 12).

Activations are unsigned (zero point 128). Weights are signed where the CPU has VNNI
(`vpdpbusd` has no intermediate saturation); elsewhere unsigned too, because x86's older
u8 x s8 instruction saturates 16-bit sums.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np


def signed_weights_are_exact() -> bool:
    """Whether u8 x s8 products cannot saturate here: VNNI on x86, and not x86 at all."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def quantize_rows(source: Path, target: Path, *, signed_weights: bool) -> None:
    """Write `source`'s graph to `target` with per-row int8 `MatMul`s (see the module)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer if len(i.dims) == 2}
    shared = {
        "q_eps": np.float32(1e-12),
        "q_inv127": np.float32(1 / 127),
        "q_offset": np.float32(128),
        "q_zero": np.uint8(128),
    }
    added = [numpy_helper.from_array(np.array(v), name) for name, v in shared.items()]
    nodes, replaced = [], set()
    for k, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # [in, out]
        w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale), -127, 127)
        p = f"q{k}_"
        b_inputs = [p + "w"]
        if signed_weights:
            added.append(numpy_helper.from_array(w_q.astype(np.int8), p + "w"))
        else:
            added.append(numpy_helper.from_array((w_q + 128).astype(np.uint8), p + "w"))
            b_inputs.append("q_zero")
        added.append(numpy_helper.from_array(w_scale, p + "ws"))
        x, y = node.input[0], node.output[0]
        make = helper.make_node
        nodes += [
            make("Abs", [x], [p + "abs"]),
            make("ReduceMax", [p + "abs"], [p + "max"], axes=[-1], keepdims=1),
            make("Max", [p + "max", "q_eps"], [p + "max1"]),
            make("Mul", [p + "max1", "q_inv127"], [p + "s"]),
            make("Div", [x, p + "s"], [p + "xs"]),
            make("Round", [p + "xs"], [p + "xr"]),
            make("Add", [p + "xr", "q_offset"], [p + "xo"]),
            make("Cast", [p + "xo"], [p + "xq"], to=TensorProto.UINT8),
            make("MatMulInteger", [p + "xq", b_inputs[0], "q_zero", *b_inputs[1:]], [p + "yi"]),
            make("Cast", [p + "yi"], [p + "yf"], to=TensorProto.FLOAT),
            make("Mul", [p + "yf", p + "s"], [p + "ys"]),
            make("Mul", [p + "ys", p + "ws"], [y]),
        ]
        replaced.add(node.input[1])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.save(model, str(target))
