"""Tiny ONNX graphs with gcage_fast's tensor names, for the TensorRT build tests (no torch export needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_graph(path: Path, kind: str = "base", precision: str = "fp32", seed: int = 0) -> Path:
    """Write a small valid graph: ``patches`` (N,3,224,224) -> ``probs`` (N,2), ``cam`` (N,7,7) for ``base``;
    ``head_input`` (N,4,224,224) -> ``p_fake`` (N,) for ``head``. ``fp16`` adds a float16 section (Cast there
    and back), ``int8`` a QuantizeLinear/DequantizeLinear pair on the input (``uint8``: the same
    with an unsigned, non-zero zero point, which TensorRT cannot run). ``seed`` changes the weights."""
    channels, in_name = (3, "patches") if kind == "base" else (4, "head_input")
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 2)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    nodes = []
    x = in_name
    if precision in ("int8", "uint8"):
        zero = np.array(0, dtype=np.int8) if precision == "int8" else np.array(128, dtype=np.uint8)
        inits += [numpy_helper.from_array(np.array(0.01, dtype=np.float32), "scale"),
                  numpy_helper.from_array(zero, "zero")]
        nodes += [helper.make_node("QuantizeLinear", [x, "scale", "zero"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xdq"])]
        x = "xdq"
    if precision == "fp16":
        nodes += [helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT)]
        x = "x32"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    if kind == "base":
        nodes += [helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
                  helper.make_node("MaxPool", [x], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
                  helper.make_node("ReduceMean", ["pooled", "axis1"], ["cam"], keepdims=0)]
        outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2]),
                   helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 7, 7])]
    else:
        nodes += [helper.make_node("ReduceMean", ["logits", "axis1"], ["mean"], keepdims=0),
                  helper.make_node("Sigmoid", ["mean"], ["p_fake"])]
        outputs = [helper.make_tensor_value_info("p_fake", TensorProto.FLOAT, ["batch"])]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info(in_name, TensorProto.FLOAT,
                                                                          ["batch", channels, 224, 224])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
