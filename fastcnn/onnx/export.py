"""Export a fastcnn model to an ONNX file.

The model is traced in eval mode (dropout off, batch norm on its running
statistics) to fastcnn's graph (fastcnn.graph), and each graph node becomes
one ONNX node, or a few for an op ONNX lacks at the chosen opset (SiLU as
Sigmoid and Mul; GELU as its Erf or Tanh formula before opset 20). The
weights are initializers named by the model's state-dict keys
(``layer1.0.conv1.weight``); batch norm stays unfused (BatchNormalization
with the running statistics). Other constants (clip bounds, reshape targets)
are Constant nodes, so the initializers are exactly the state dict (less
batch norm's ``num_batches_tracked`` counters, which inference never reads).

The graph's input is ``"input"``, float32 of shape ("N", *input_shape), and its
output ``"output"``; the batch axis "N" is dynamic, so one file runs at any
batch size.
"""
import contextlib
import math
import os

import numpy as np

from .. import __version__
from .._checks import as_int, as_pair
from ..graph import Graph
from ..layers import Layer
from ..module import Module
from ..runner import trace_layer
from ..saving import write_atomically
from . import require_onnx

__all__ = ["export", "MIN_OPSET", "MAX_OPSET"]

MIN_OPSET, MAX_OPSET = 11, 21
_MAX_BYTES = 2 ** 31 - 1            # protobuf's limit on one serialized message


def export(model, path, input_shape=None, opset=17):
    """Write ``model`` (in eval mode) to ``path`` as an ONNX file.

    The file passes ``onnx.checker.check_model(full_check=True)`` and runs in
    ONNX Runtime with fastcnn's outputs; its batch axis is dynamic. It is
    written atomically, as ``model.save`` is: under a temporary name in the
    same directory, then renamed over ``path``. The model itself is left as it
    was (its training flags are set to eval while it is traced, then restored:
    do not export a model while another thread trains it).

    Args:
        model: a fastcnn Sequential, Module or layer made of fastcnn's layers:
            Conv2d, Linear, BatchNorm2d, the activations, the poolings
            (adaptive and global ones too), Flatten, Dropout and Identity
            (nothing in eval mode), residual sums; fastcnn.models' ResNets.
        path: the file to write (str or os.PathLike).
        input_shape: the shape of one input without the batch, e.g.
            (3, 224, 224); default: that of the last data a Sequential ran on.
        opset: the ONNX opset, from 11 to 21. Default 17.

    Returns:
        the ``onnx.ModelProto`` written.

    Raises:
        ImportError: without the onnx package (``pip install "fastcnn[onnx]"``).
        ValueError: for a bad ``input_shape`` or ``opset`` (naming the value),
            a shape the model does not accept, or layers with no ONNX
            equivalent (a layer with its own Python forward), all named in
            one message; nothing is written then.
        TypeError: if ``model`` is not a fastcnn layer or ``path`` not a path.

    Example:
        >>> model = fastcnn.models.resnet18(num_classes=10)
        >>> fastcnn.onnx.export(model, "resnet18.onnx", input_shape=(3, 224, 224))
    """
    if not isinstance(model, Layer):
        raise TypeError(f"export takes a fastcnn model or layer. Received: "
                        f"{type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike. Received: path={path!r}")
    onnx = require_onnx()
    shape = _input_shape(model, input_shape)
    opset = _opset(onnx, opset)
    with _eval_mode(model):
        graph = _trace(model, (1,) + shape)
        out_shape = graph.shapes[graph.output]
        out_shape2 = _trace(model, (2,) + shape).shapes[graph.output]
    proto = _Writer(onnx, model, graph, opset).model(_batch_dims(out_shape, out_shape2))
    if proto.ByteSize() > _MAX_BYTES:
        raise ValueError(f"the model is too large for one ONNX file ({proto.ByteSize()} "
                         f"bytes; the limit is 2 GiB)")
    data = proto.SerializeToString()
    onnx.checker.check_model(data, full_check=True)
    write_atomically(os.fspath(path), lambda f: f.write(data))
    return proto


def _input_shape(model, input_shape):
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError("export() needs the input shape: pass input_shape=(C, H, W) "
                             "(one input, without the batch)")
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints (one input "
                         f"without the batch). Received: input_shape={input_shape!r}")
    for d in input_shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"input_shape must hold ints. Received: input_shape={input_shape!r}")
        if d < 1:
            raise ValueError(f"input_shape must hold positive ints. "
                             f"Received: input_shape={input_shape!r}")
    return tuple(int(d) for d in input_shape)


def _opset(onnx, opset):
    opset = as_int(opset, "opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}. "
                         f"Received: opset={opset}")
    if opset > onnx.defs.onnx_opset_version():
        raise ValueError(f"opset {opset} is newer than the installed onnx {onnx.__version__} "
                         f"knows (up to {onnx.defs.onnx_opset_version()}); upgrade onnx")
    return opset


def _sublayers(layer, prefix=""):
    """Every layer under ``layer`` (itself first), depth first, with its dotted name."""
    yield prefix.rstrip("."), layer
    if isinstance(layer, Module):
        children = layer.children()
    else:
        children = [(str(i), c) for i, c in enumerate(getattr(layer, "layers", ()))]
    for name, child in children:
        yield from _sublayers(child, f"{prefix}{name}.")


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode; every layer's own flag restored afterwards."""
    flags = [(layer, layer.training) for _, layer in _sublayers(model)]
    model.eval()
    try:
        yield
    finally:
        for layer, training in flags:
            if layer.training != training:
                layer.training = training


def _trace(model, input_shape):
    graph = Graph(input_shape)
    graph.output = trace_layer(model, graph.input_value()).id
    return graph


def _batch_dims(shape1, shape2):
    """The output's dims: ints where tracing at batch 1 and 2 agree, else the
    batch ("N", or "N*k" where the batch was merged with other dims)."""
    return [a if a == b else ("N" if a == 1 else f"N*{a}") for a, b in zip(shape1, shape2)]


class _Writer:
    """Builds the ONNX graph of a traced fastcnn graph, node by node."""

    def __init__(self, onnx, model, graph, opset):
        self.onnx, self.graph, self.opset = onnx, graph, opset
        self.state_names = {id(p): name for name, p in model.named_parameters()}
        self.state_names.update({id(b): name for name, b in model.named_buffers()})
        self.layer_names = {id(layer): name for name, layer in _sublayers(model)}
        self.nodes, self.initializers, self.used = [], {}, set()
        self.label = ""

    def model(self, out_dims):
        self._check_supported()
        for node in self.graph.nodes:
            self.label = self._label(node)
            EXPORTERS[node.op](self, node, [self.tensor(t) for t in node.inputs],
                               self.tensor(node.outputs[0]))
        if self.graph.output == self.graph.input:       # the model is the identity
            self.label = "identity"
            self.op("Identity", ["input"], ["output"])
        helper, float32 = self.onnx.helper, self.onnx.TensorProto.FLOAT
        in_dims = ["N"] + list(self.graph.shapes[self.graph.input][1:])
        onnx_graph = helper.make_graph(
            self.nodes, "fastcnn",
            [helper.make_tensor_value_info("input", float32, in_dims)],
            [helper.make_tensor_value_info("output", float32, out_dims)],
            list(self.initializers.values()))
        opsets = [helper.make_opsetid("", self.opset)]
        proto = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="fastcnn",
                                  producer_version=__version__,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        proto.doc_string = "exported by fastcnn.onnx.export (eval mode, batch norm unfused)"
        return proto

    def _check_supported(self):
        bad = []
        for node in self.graph.nodes:
            if node.op == "layer":
                layer = node.layer
                bad.append(f"layer {self.layer_names.get(id(layer), node.name)!r} "
                           f"({type(layer).__name__}: its own Python forward)")
            elif node.op not in EXPORTERS:
                bad.append(f"op {node.op!r} of layer {self._label(node)!r}")
            elif node.op == "pointwise" and node.attrs["kind"] not in POINTWISE:
                bad.append(f"activation {node.attrs['kind']!r} of layer {self._label(node)!r}")
        if bad:
            raise ValueError("cannot export to ONNX, no ONNX equivalent for: "
                             + "; ".join(bad) + ". Build these from fastcnn's own layers "
                             "to export the model")

    def _label(self, node):
        """The dotted name of the layer that made ``node`` (from its parameters'
        state-dict names where it has some), else its scope, else its op kind."""
        for p in node.params.values():
            name = self.state_names.get(id(p))
            if name is not None:
                return name.rpartition(".")[0] or node.op
        return node.name or node.op

    def tensor(self, tid):
        if tid == self.graph.input:
            return "input"
        return "output" if tid == self.graph.output else f"t{tid}"

    def fresh(self, hint):
        """A new tensor or node name, unique in the graph."""
        base = f"{self.label}/{hint}"
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def op(self, op_type, inputs, outputs=None, **attrs):
        """Append an ONNX node; returns its (first) output's name."""
        outputs = outputs or [self.fresh(op_type + ":0")]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs,
                                                     self.fresh(op_type), **attrs))
        return outputs[0]

    def const(self, value, dtype=np.float32):
        """A Constant node holding ``value``; returns its output's name."""
        array = np.asarray(value, dtype)
        return self.op("Constant", [], [self.fresh("const")],
                       value=self.onnx.numpy_helper.from_array(array))

    def param(self, node, key):
        """The initializer of ``node.params[key]`` (named by its state-dict key),
        or None when the node has no such parameter."""
        p = node.params.get(key)
        if p is None:
            return None
        array = getattr(p, "data", p)
        name = self.state_names.get(id(p)) or self.fresh(key)
        if name not in self.initializers:
            self.initializers[name] = self.onnx.numpy_helper.from_array(
                np.ascontiguousarray(array, np.float32), name)
        return name

    def shape(self, tid):
        return self.graph.shapes[tid]


# One exporter per op kind: (writer, node, input names, output name).

def _conv2d(w, node, ins, out):
    a = node.attrs
    _, _, r, s = node.params["weight"].data.shape
    dilation = as_pair(a.get("dilation", 1), "dilation")
    stride = as_pair(a["stride"], "stride")
    pads = _conv2d_pads(a["padding"], (r, s), dilation)
    inputs = [ins[0], w.param(node, "weight")]
    if node.params.get("bias") is not None:
        inputs.append(w.param(node, "bias"))
    w.op("Conv", inputs, [out], kernel_shape=[r, s], strides=list(stride), pads=pads,
         dilations=list(dilation), group=int(a.get("groups", 1)))


def _conv2d_pads(padding, kernel, dilation):
    """ONNX pads [top, left, bottom, right] of fastcnn's padding; 'same' puts
    the odd one at the end, as PyTorch does."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
    ph, pw = as_pair(padding, "padding")
    return [ph, pw, ph, pw]


def _linear(w, node, ins, out):
    weight, bias = w.param(node, "weight"), w.param(node, "bias")
    if len(w.shape(node.inputs[0])) == 2:
        w.op("Gemm", [ins[0], weight] + ([bias] if bias else []), [out], transB=1)
        return
    weight_t = w.op("Transpose", [weight], perm=[1, 0])
    if bias is None:
        w.op("MatMul", [ins[0], weight_t], [out])
    else:
        w.op("Add", [w.op("MatMul", [ins[0], weight_t]), bias], [out])


def _direct(op_type):
    """The ONNX op of the same meaning, on the same inputs, without attributes."""
    def export_direct(w, node, ins, out):
        w.op(op_type, ins, [out])
    return export_direct


def _pool2d(op_type):
    def export_pool(w, node, ins, out):
        a = node.attrs
        kernel = as_pair(a["kernel_size"], "kernel_size")
        stride = kernel if a["stride"] is None else as_pair(a["stride"], "stride")
        ph, pw = as_pair(a["padding"], "padding")
        dilation = as_pair(a.get("dilation", 1), "dilation")
        x = w.op("Relu", ins) if a.get("relu") else ins[0]
        global_pool = (kernel == stride == tuple(w.shape(node.inputs[0])[2:])
                       and (ph, pw) == (0, 0) and dilation == (1, 1))
        if global_pool:
            w.op("Global" + op_type, [x], [out])
            return
        attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=[ph, pw, ph, pw],
                     ceil_mode=int(bool(a.get("ceil_mode", False))))
        if op_type == "MaxPool":
            attrs["dilations"] = list(dilation)
        else:
            attrs["count_include_pad"] = int(a["count_include_pad"])
        w.op(op_type, [x], [out], **attrs)
    return export_pool


def _flatten(w, node, ins, out):
    rank = len(w.shape(node.inputs[0]))
    start, end = (d + rank if d < 0 else d for d in (node.attrs["start_dim"],
                                                      node.attrs["end_dim"]))
    if start == 1 and end == rank - 1:
        w.op("Flatten", ins, [out], axis=1)
        return
    # Reshape target: 0 copies a leading dim (the batch too), -1 is the merged one.
    target = [0] * start + [-1] + list(w.shape(node.outputs[0])[start + 1:])
    w.op("Reshape", [ins[0], w.const(target, np.int64)], [out])


def _batch_norm2d(w, node, ins, out):
    channels = w.shape(node.inputs[0])[1]
    scale, bias = w.param(node, "weight"), w.param(node, "bias")
    eps = float(node.attrs["eps"])
    if node.params.get("running_mean") is None:
        _batch_norm2d_batch_stats(w, ins[0], out, scale, bias, eps)
        return
    scale = scale or w.const(np.ones(channels))
    bias = bias or w.const(np.zeros(channels))
    w.op("BatchNormalization", [ins[0], scale, bias, w.param(node, "running_mean"),
                                w.param(node, "running_var")], [out], epsilon=eps)


def _batch_norm2d_batch_stats(w, x, out, scale, bias, eps):
    """Batch norm without running statistics normalizes with the batch's own
    mean and (biased) variance in eval mode too: written out with ReduceMean."""
    centered = w.op("Sub", [x, _reduce_mean(w, x, [0, 2, 3])])
    var = _reduce_mean(w, w.op("Mul", [centered, centered]), [0, 2, 3])
    std = w.op("Sqrt", [w.op("Add", [var, w.const(eps)])])
    if scale is None:
        w.op("Div", [centered, std], [out])
        return
    per_channel = w.const([-1, 1, 1], np.int64)
    y = w.op("Mul", [w.op("Div", [centered, std]), w.op("Reshape", [scale, per_channel])])
    w.op("Add", [y, w.op("Reshape", [bias, per_channel])], [out])


def _reduce_mean(w, x, axes):
    """ReduceMean keeping dims: axes an attribute before opset 18, an input from it."""
    if w.opset < 18:
        return w.op("ReduceMean", [x], axes=axes, keepdims=1)
    return w.op("ReduceMean", [x, w.const(axes, np.int64)], keepdims=1)


def _pointwise(w, node, ins, out):
    POINTWISE[node.attrs["kind"]](w, node.attrs, ins[0], out)


def _tanh(w, a, x, out):
    w.op("Tanh", [x], [out])


def _leaky_relu(w, a, x, out):
    w.op("LeakyRelu", [x], [out], alpha=float(a["a"]))


def _hardtanh(w, a, x, out):
    w.op("Clip", [x, w.const(a["a"]), w.const(a["b"])], [out])


def _hardsigmoid(w, a, x, out):
    w.op("HardSigmoid", [x], [out], alpha=1.0 / 6.0, beta=0.5)


def _hardswish(w, a, x, out):
    if w.opset >= 14:
        w.op("HardSwish", [x], [out])
    else:
        w.op("Mul", [x, w.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)], [out])


def _silu(w, a, x, out):
    w.op("Mul", [x, w.op("Sigmoid", [x])], [out])


def _gelu(w, a, x, out):
    """0.5 x (1 + erf(x / sqrt 2)); opset 20's Gelu where it exists."""
    if w.opset >= 20:
        w.op("Gelu", [x], [out], approximate="none")
        return
    erf = w.op("Erf", [w.op("Mul", [x, w.const(1.0 / math.sqrt(2.0))])])
    _half_x_times_one_plus(w, x, erf, out)


def _gelu_tanh(w, a, x, out):
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); opset 20's Gelu where it exists."""
    if w.opset >= 20:
        w.op("Gelu", [x], [out], approximate="tanh")
        return
    cube = w.op("Mul", [w.op("Mul", [x, x]), x])
    inner = w.op("Add", [x, w.op("Mul", [cube, w.const(0.044715)])])
    tanh = w.op("Tanh", [w.op("Mul", [inner, w.const(math.sqrt(2.0 / math.pi))])])
    _half_x_times_one_plus(w, x, tanh, out)


def _half_x_times_one_plus(w, x, t, out):
    one_plus = w.op("Add", [t, w.const(1.0)])
    w.op("Mul", [w.op("Mul", [x, one_plus]), w.const(0.5)], [out])


POINTWISE = {"tanh": _tanh,
             "leaky_relu": _leaky_relu, "hardtanh": _hardtanh, "hardsigmoid": _hardsigmoid,
             "hardswish": _hardswish, "silu": _silu, "gelu": _gelu, "gelu_tanh": _gelu_tanh}


def _softmax(w, node, ins, out):
    """Softmax / LogSoftmax over ``dim``. Before opset 13 ONNX's axis flattens
    every dim from it on, so a dim other than the last is moved last and back."""
    op_type = "LogSoftmax" if node.attrs.get("log") else "Softmax"
    rank = len(w.shape(node.inputs[0]))
    dim = node.attrs["dim"] % rank
    if w.opset >= 13 or dim == rank - 1:
        w.op(op_type, ins, [out], axis=dim)
        return
    perm = list(range(rank))
    perm[dim], perm[-1] = perm[-1], perm[dim]
    y = w.op(op_type, [w.op("Transpose", ins, perm=perm)], axis=rank - 1)
    w.op("Transpose", [y], [out], perm=perm)


def _cat(w, node, ins, out):
    w.op("Concat", ins, [out], axis=node.attrs["dim"] % len(w.shape(node.inputs[0])))


EXPORTERS = {"conv2d": _conv2d, "linear": _linear, "relu": _direct("Relu"),
             "sigmoid": _direct("Sigmoid"), "pointwise": _pointwise,
             "max_pool2d": _pool2d("MaxPool"), "avg_pool2d": _pool2d("AveragePool"),
             "flatten": _flatten, "batch_norm2d": _batch_norm2d, "add": _direct("Add"),
             "mul": _direct("Mul"), "cat": _cat, "softmax": _softmax}
