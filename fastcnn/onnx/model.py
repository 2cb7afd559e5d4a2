"""The imported model: an ONNX graph as a :class:`fastcnn.Module`.

Its ``forward`` walks the ONNX nodes in topological order over symbolic
graph Values, so it is traced, compiled and run natively like any fastcnn
model. Each node goes through its converter (fastcnn/onnx/converters.py):
native layers where fastcnn has the op, numpy kernels run as Python layers
(fastcnn/onnx/kernels.py) otherwise. Nodes whose inputs are all constants
(shape arithmetic: Shape, Gather, Unsqueeze, Concat, ...) are evaluated while
tracing, so the compiled program holds only their results; reshapes of
activations are views.

Weights: every float initializer is a :class:`fastcnn.Parameter` (trained),
except the running statistics of batch normalization (buffers). The layers
share these objects, and ``state_dict`` is keyed by the initializer names.
A weight that reaches its op through other ops than reshapes (a Transpose,
say) is folded into a constant when traced: it is not trained
(``load_state_dict`` re-traces, so new values take effect).
"""
import base64
import os

import numpy as np

from ..graph import Value
from ..layers import Parameter
from ..module import Module
from . import require_onnx
from .converters import CONVERTERS, OPSET_MAX, OPSET_MIN, Builder, unsupported_reason

__all__ = ["OnnxModel", "read_model"]


def read_model(source):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto (ValueError
    for anything that is not a readable ONNX model)."""
    onnx = require_onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "the bytes given"
    elif isinstance(source, (str, os.PathLike)):
        where = repr(os.fspath(source))
        with open(source, "rb") as f:
            data = f.read()
    else:
        raise TypeError(f"fastcnn.onnx.load takes a path, bytes or an onnx.ModelProto. "
                        f"Received: {type(source).__name__}")
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:     # protobuf's DecodeError and friends
        raise ValueError(f"{where} is not a valid ONNX model (truncated or corrupt "
                         f"protobuf: {exc})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ValueError(f"{where} is not a valid ONNX model (no graph, or a graph "
                         f"without nodes)")
    if isinstance(source, (str, os.PathLike)) and _has_external_data(model):
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(model, os.path.dirname(os.path.abspath(source)))
    return model


def _has_external_data(model):
    return any(t.data_location == 1 for t in model.graph.initializer)


def _opset(model):
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else 1


class OnnxModel(Module):
    """An ONNX model as a fastcnn Module (made by :func:`fastcnn.onnx.load`).

    Args:
        model: an ``onnx.ModelProto`` (or its serialized bytes, or those bytes
            base64-encoded: the form ``get_config`` gives to ``save``).
    """

    def __init__(self, model):
        super().__init__()
        if isinstance(model, str):
            model = base64.b64decode(model.encode("ascii"))
        if isinstance(model, (bytes, bytearray)):
            model = read_model(bytes(model))
        self._proto = model
        self.opset = _opset(model)
        g = model.graph
        self._check_opset()
        self._weights = self._read_initializers(g)
        self._input, self._input_shape = self._find_input(g)
        self._output = self._find_output(g)
        self._nodes = self._schedule(g)
        self._check_supported()
        self._layers = {}
        self._check_trace()

    # -- reading and checking the graph ----------------------------------------------
    def _check_opset(self):
        if not OPSET_MIN <= self.opset <= OPSET_MAX:
            raise ValueError(f"ONNX opset {self.opset} is not supported; fastcnn imports "
                             f"opsets {OPSET_MIN} to {OPSET_MAX}")

    def _read_initializers(self, g):
        """name -> Parameter (float), float32 array (batch-norm statistics) or
        constant array (other types), in the file's order."""
        from onnx import numpy_helper
        stats = {n.input[i] for n in g.node if n.op_type == "BatchNormalization"
                 for i in (3, 4) if len(n.input) > i}
        weights = {}
        for t in g.initializer:
            if t.data_type == 1 and not _has_data(t):       # stripped by get_config
                array = np.zeros(tuple(t.dims), np.float32)
            else:
                array = numpy_helper.to_array(t)
            if array.dtype == np.float32 or array.dtype == np.float64:
                array = np.array(array, np.float32, order="C")
                weights[t.name] = array.copy() if t.name in stats else Parameter(array)
            else:
                weights[t.name] = array
        return weights

    def _find_input(self, g):
        inputs = [i for i in g.input if i.name not in self._weights]
        if len(inputs) != 1:
            raise ValueError(f"a fastcnn model has one input; this ONNX graph has "
                             f"{len(inputs)}: {[i.name for i in inputs]}")
        tt = inputs[0].type.tensor_type
        if not inputs[0].type.HasField("tensor_type") or tt.elem_type != 1:
            raise ValueError(f"the model's input {inputs[0].name!r} must be a float32 tensor. "
                             f"Received: elem_type={tt.elem_type} (see onnx.TensorProto)")
        dims = list(tt.shape.dim)
        if not tt.HasField("shape") or not dims:
            raise ValueError(f"the model's input {inputs[0].name!r} has no shape; fastcnn needs "
                             f"every dimension but the batch")
        rest = []
        for k, d in enumerate(dims[1:], 1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise ValueError(f"the model's input {inputs[0].name!r} has a dynamic dimension "
                                 f"{k} ({d.dim_param or '?'}); fastcnn supports a dynamic "
                                 f"batch dimension (the first) only")
            rest.append(d.dim_value)
        first = dims[0].dim_value if dims[0].HasField("dim_value") else 0
        self._batch = first if first > 0 else 1
        return inputs[0].name, tuple(rest)

    def _find_output(self, g):
        if len(g.output) != 1:
            raise ValueError(f"a fastcnn model has one output; this ONNX graph has "
                             f"{len(g.output)}: {[o.name for o in g.output]}")
        return g.output[0].name

    def _schedule(self, g):
        """The nodes the output depends on, in an order where each follows its
        inputs' producers (ValueError for a cycle or an input nobody makes)."""
        producer = {}
        for i, n in enumerate(g.node):
            for o in n.output:
                if o:
                    producer[o] = i
        known = set(self._weights) | {self._input}
        if self._output in known:
            raise ValueError("the graph's output does not depend on its input")
        order, state = [], {}

        def producers(j, reader):
            for name in g.node[j].input:
                if name == "" or name in known:
                    continue
                if name not in producer:
                    raise ValueError(f"{reader} reads {name!r}, which no node, initializer or "
                                     f"input provides (a missing initializer?)")
                yield producer[name]

        if self._output not in producer:
            raise ValueError(f"the graph output {self._output!r} is made by no node")
        root = producer[self._output]
        stack, state[root] = [(root, producers(root, f"node {_label(g.node[root])}"))], 1
        while stack:
            j, pending = stack[-1]
            for k in pending:
                if state.get(k) == 1:
                    raise ValueError(f"the ONNX graph has a cycle through node "
                                     f"{_label(g.node[k])}")
                if k not in state:
                    state[k] = 1
                    stack.append((k, producers(k, f"node {_label(g.node[k])}")))
                    break
            else:
                stack.pop()
                state[j] = 2
                order.append(j)
        return [g.node[i] for i in order]

    def _check_supported(self):
        """One error naming every op (with its nodes) fastcnn cannot import."""
        problems = {}
        used = {inp for n in self._nodes for inp in n.input} | {self._output}
        for n in self._nodes:
            reason = unsupported_reason(n, self.opset)
            if reason is None and any(o in used for o in n.output[1:]):
                reason = "outputs after the first"
            if reason is not None:
                problems.setdefault((n.op_type, reason), []).append(n.name or n.output[0])
        if problems:
            lines = [f"  {op} ({reason}): nodes {names}" for (op, reason), names
                     in sorted(problems.items())]
            raise ValueError(f"this ONNX model (opset {self.opset}) uses ops or attributes "
                             f"fastcnn cannot import:\n" + "\n".join(lines))

    def _check_trace(self):
        """Trace once (for the file's batch size, or 1): creates the layers and
        finds any shape error now."""
        from ..runner import trace
        trace(self, (self._batch,) + self._input_shape)

    # -- the forward pass --------------------------------------------------------------
    def forward(self, x):
        if tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(f"this ONNX model takes input of shape (N, "
                             f"{', '.join(map(str, self._input_shape))}). "
                             f"Received: x.shape={x.shape}")
        env = dict(self._weights)
        env[self._input] = x
        for i, node in enumerate(self._nodes):
            ins = [env[name] if name else None for name in node.input]
            try:
                outs = CONVERTERS[node.op_type](Builder(self, i, node), *ins)
            except (ValueError, TypeError, IndexError) as exc:
                raise ValueError(f"ONNX node {_label(node)}: {exc}") from None
            env[node.output[0]] = outs
        y = env[self._output]
        if not isinstance(y, Value):
            raise ValueError("the graph's output does not depend on its input")
        return y

    # -- fastcnn's Module interface ----------------------------------------------------
    def children(self):
        return list(self._layers.items())

    @property
    def _params(self):
        return {}

    def named_parameters(self, prefix=""):
        return [(prefix + name, w) for name, w in self._weights.items()
                if isinstance(w, Parameter)]

    def named_buffers(self, prefix=""):
        return [(prefix + name, w) for name, w in self._weights.items()
                if isinstance(w, np.ndarray) and w.dtype == np.float32]

    def named_state(self, prefix=""):
        return [(prefix + name, w.data if isinstance(w, Parameter) else w)
                for name, w in self._weights.items()
                if isinstance(w, Parameter) or w.dtype == np.float32]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.__dict__.pop("_runner_state", None)    # re-trace: constants folded from weights

    def get_config(self):
        """The graph without the weights (they go to the state dict), base64."""
        stripped = type(self._proto)()
        stripped.CopyFrom(self._proto)
        for t in stripped.graph.initializer:
            if t.name in self._weights and t.data_type in (1, 11):
                for field in ("raw_data", "float_data", "double_data"):
                    t.ClearField(field)
                t.data_type = 1
        return {"model": base64.b64encode(stripped.SerializeToString()).decode("ascii")}

    def __repr__(self):
        g = self._proto.graph
        return (f"OnnxModel({g.name or 'graph'!r}, opset {self.opset}, {len(self._nodes)} nodes, "
                f"input {self._input!r}: (N, {', '.join(map(str, self._input_shape))}))")


def _has_data(t):
    return bool(t.raw_data or t.float_data or t.double_data or t.data_location == 1)


def _label(node):
    return f"{node.name or node.output[0]!r} ({node.op_type})"
