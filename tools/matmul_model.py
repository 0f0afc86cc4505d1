#!/usr/bin/env python3
"""Write a one-node ONNX MatMul model, [N, N] x [N, N] with a constant right operand,
so that reports can measure the machine's large-matrix-product FLOP rate with the
same ONNX Runtime that runs the models.

    python matmul_model.py OUT.onnx [N]
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1024
b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "b")
g = helper.make_graph(
    [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
    [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], [b])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, out)
