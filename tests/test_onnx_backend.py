"""ONNX's own conformance suite on fastcnn: the node tests of
``onnx.backend.test.BackendTest`` for every op fastcnn.onnx imports.

The node tests are built in memory from the onnx package's case definitions
(this onnx generates them on the fly; no data directory is needed). A test
is selected when its graph uses only ops fastcnn imports and it is named
after one of them, and it is in fastcnn's domain: float32 tensors in and
out, one output that depends on a float32 input, 2-d pooling, inference
mode. Every selected test must pass; ``test_selection_covers_every_op``
keeps the selection from shrinking unnoticed. (README.md lists the counts.)
"""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install \"fastcnn[onnx]\")")

from onnx.backend.test import BackendTest  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

from fastcnn.onnx.backend import FastcnnBackend  # noqa: E402
from fastcnn.onnx.converters import CONVERTERS  # noqa: E402


def _op_of(case):
    """The op a node test is about (its name starts with it), or None."""
    types = {n.op_type for n in case.model.graph.node}
    if not types or not types <= set(CONVERTERS):
        return None
    named = [t for t in types if case.name.startswith("test_" + t.lower())]
    if len(types) == 1 and not named and "_expanded" not in case.name:
        return next(iter(types))
    return max(named, key=len) if named else None


def _in_domain(case):
    """float32 in and out, one output depending on the input, 2-d pooling, inference."""
    g = case.model.graph
    if len(g.output) != 1 or "training" in case.name or \
            not all(i.type.HasField("tensor_type") for i in g.input):
        return False
    for inputs, outputs in case.data_sets:
        arrays = [np.asarray(a) for a in inputs]
        if not any(a.dtype == np.float32 and a.ndim and a.size for a in arrays):
            return False
        if any(np.asarray(o).dtype != np.float32 for o in outputs):
            return False
    for n in g.node:
        kernel = [a.ints for a in n.attribute if a.name == "kernel_shape"]
        if kernel and len(kernel[0]) != 2:
            return False
        if n.op_type in ("Shape", "Constant", "ConstantOfShape") and len(g.node) == 1:
            return False            # the output does not depend on any input
    return True


CASES = [c for c in load_model_tests(kind="node") if _op_of(c)]
SELECTED = {c.name: _op_of(c) for c in CASES if _in_domain(c)}

backend_test = BackendTest(FastcnnBackend, __name__)
backend_test.include("^(" + "|".join(sorted(SELECTED)) + ")_cpu$")
for _name, _case in backend_test.test_cases.items():
    for _test in [t for t in vars(_case) if t.startswith("test_")]:
        if _test[:-len("_cpu")] not in SELECTED:
            delattr(_case, _test)           # (not a skip each: they are out of scope)
    if any(t.startswith("test_") for t in vars(_case)):
        globals()[_name] = _case


def test_selection_covers_every_op():
    ops = set(SELECTED.values())
    missing = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
               "BatchNormalization", "LRN", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh",
               "Clip", "HardSigmoid", "HardSwish", "Elu", "Softmax", "LogSoftmax", "Gemm",
               "MatMul", "Add", "Sub", "Mul", "Div", "Sum", "Concat", "Flatten", "Reshape",
               "Transpose", "Squeeze", "Unsqueeze", "Dropout", "Identity", "Gather", "Pad",
               "ReduceMean"} - ops
    assert not missing, missing
    assert len(SELECTED) >= 180, len(SELECTED)
