"""One small converter per ONNX op: :data:`CONVERTERS` maps an op type to a
function ``f(b, *inputs) -> output`` run while the model is traced.

An input is a graph :class:`fastcnn.graph.Value` (an activation), a
:class:`fastcnn.Parameter` (a float initializer), a :class:`ParamView` (a
parameter reshaped by Unsqueeze and the like, still trained) or a numpy array
(a constant). A converter uses a native fastcnn layer or op kind when the op
and its attributes have one, and otherwise a numpy kernel of
fastcnn/onnx/kernels.py run as a Python layer (``b.kernel``), which also
folds nodes whose inputs are all constants. Swapping a fallback for a native
op is a change in one converter.
"""
import math

import numpy as np

from .. import layers as L
from ..graph import Value
from ..layers import Layer, Parameter
from . import kernels as K

__all__ = ["CONVERTERS", "Builder", "ParamView", "unsupported_reason", "OPSET_MIN",
           "OPSET_MAX"]

# Opsets 7 to 21 are the target. The later versions of the ops imported here
# (22: bfloat16; 23 to 25: float4, float8, 2-bit types; Cast 28: its float8
# conversions) only add element types or settings of types fastcnn does not
# import, so opsets up to 28 (onnx 1.23's) import as well.
OPSET_MIN, OPSET_MAX = 7, 28



class ParamView:
    """A Parameter seen in another shape (Unsqueeze / Reshape of a weight)."""
    __slots__ = ("param", "shape")

    def __init__(self, param, shape):
        self.param, self.shape = param, tuple(shape)

    @property
    def data(self):
        return self.param.data.reshape(self.shape)


def const(v):
    """The value of a constant input (a Parameter's current data)."""
    if isinstance(v, Value):
        raise ValueError("this input must be a constant (an initializer or computed from "
                         "constants), not computed from the model's input")
    return v.data if isinstance(v, (Parameter, ParamView)) else np.asarray(v)


def shape_of(v):
    return tuple(v.shape) if isinstance(v, (Value, ParamView)) else np.shape(const(v))


class KernelLayer(Layer):
    """A numpy kernel (fastcnn/onnx/kernels.py) as a Python layer. ``args``: per
    kernel input, ("x", j) the j-th traced input, ("p", Parameter or
    ParamView) a trained weight, or ("c", array) a constant."""

    def __init__(self, kernel, args):
        self.kernel, self.args = kernel, args

    @property
    def _params(self):
        return {str(i): a[1].param if isinstance(a[1], ParamView) else a[1]
                for i, a in enumerate(self.args) if a[0] == "p"}

    def _arrays(self, xs):
        return [xs[a[1]] if a[0] == "x" else a[1].data if a[0] == "p" else a[1]
                for a in self.args]

    def forward(self, *xs):
        y, saved = self.kernel.forward(*self._arrays(xs))
        # Kept for backward in training only (inference calls stay re-entrant); set
        # through __dict__: not a change of the layer's structure.
        self.__dict__["_saved"] = saved if self.training else None
        return np.asarray(y, np.float32)

    def backward(self, grad_y, *, need_grad_input=True):
        grads = self.kernel.backward(self._saved, np.asarray(grad_y, np.float32))
        n = 1 + max((a[1] for a in self.args if a[0] == "x"), default=-1)
        dxs = [None] * n
        for a, g in zip(self.args, grads):
            if g is None:
                continue
            if a[0] == "x":
                dxs[a[1]] = g if dxs[a[1]] is None else dxs[a[1]] + g
            elif a[0] == "p":
                p = a[1].param if isinstance(a[1], ParamView) else a[1]
                p.grad += np.asarray(g, np.float32).reshape(p.grad.shape)
        if not need_grad_input:
            return None
        dxs = [np.ascontiguousarray(d, np.float32) for d in dxs]
        return dxs[0] if n == 1 else tuple(dxs)

    def __repr__(self):
        return f"KernelLayer({type(self.kernel).__name__})"


class Builder:
    """What a converter works with: the node's attributes and opset, and the
    model's layers (created on the first trace, the same ones after)."""

    def __init__(self, model, index, node):
        self.model, self.index, self.node, self.opset = model, index, node, model.opset
        self.count = 0
        self._attrs = None

    def attr(self, name, default=None):
        if self._attrs is None:
            from onnx import helper
            self._attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
        value = self._attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def layer(self, make, tag=""):
        """The node's layer number ``self.count`` (made by ``make()`` the first time)."""
        key = f"{self.index}_{self.node.op_type}_{self.count}{tag}"
        self.count += 1
        if key not in self.model._layers:
            self.model._layers[key] = make()
        return self.model._layers[key]

    def apply(self, layer, values):
        """Add ``layer`` applied to the traced ``values`` (one or several)."""
        if len(values) == 1:
            with np.errstate(all="ignore"):
                return layer(values[0])
        shapes = tuple(v.shape for v in values)
        with np.errstate(all="ignore"):         # (zeros: only the output shape counts)
            y = layer.forward(*[np.zeros(s, np.float32) for s in shapes])
        return values[0].graph.add("layer", values, {"in_shapes": shapes}, layer=layer,
                                   shape=np.shape(y))

    def kernel(self, kernel, *inputs):
        """Run a numpy kernel on the inputs: folded to a constant if none is
        traced, else a Python layer of the graph."""
        values, args = [], []
        for v in inputs:
            if isinstance(v, Value):
                ids = [u.id for u in values]
                if v.id not in ids:
                    values.append(v)
                args.append(("x", [u.id for u in values].index(v.id)))
            elif isinstance(v, (Parameter, ParamView)):
                args.append(("p", v))
            else:
                args.append(("c", const(v)))
        if not values:
            y, _ = kernel.forward(*[const(v) for v in inputs])
            return y
        tag = "_" + "_".join(str(np.shape(a[1])) for a in args if a[0] == "c")
        layer = self.layer(lambda: KernelLayer(kernel, args), tag)
        layer.args = args           # constants as folded now (weights may have been loaded)
        return self.apply(layer, values)

    def reshape(self, x, shape):
        """x in ``shape``: a view for an activation, a ParamView for a weight."""
        shape = tuple(int(d) for d in shape)
        if isinstance(x, Value):
            return x if shape == x.shape else x.graph.add("reshape", [x], {"shape": shape})
        if isinstance(x, (Parameter, ParamView)):
            return ParamView(x.param if isinstance(x, ParamView) else x, shape)
        return const(x).reshape(shape)


def _unary(name, native=None, a=0.0, b=0.0):
    """An activation: the native layer ``native()`` on activations, else the kernel."""
    def convert(bld, x, *rest):
        if isinstance(x, Value) and native is not None:
            return bld.layer(native)(x)
        return bld.kernel(K.Unary(name, a, b), x)
    return convert


def _pair(values, name):
    if len(values) != 2:
        raise ValueError(f"fastcnn imports 2-d {name} only (NCHW). Received: {list(values)}")
    return tuple(int(v) for v in values)


def _pads(b, x_shape, kernel, strides, dilations):
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = b.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = [int(v) for v in b.attr("pads", [0, 0, 0, 0])]
        return (p[0], p[1], p[2], p[3])
    if auto == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for i in range(2):
        size = x_shape[2 + i]
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return (begin[0], begin[1], end[0], end[1])


def _window(b, x_shape, kernel):
    strides = _pair(b.attr("strides", [1, 1]), "strides")
    dilations = _pair(b.attr("dilations", [1, 1]), "dilations")
    return strides, dilations, _pads(b, x_shape, kernel, strides, dilations)


def _symmetric(pads):
    return pads[0] == pads[2] and pads[1] == pads[3]


# -- convolution and pooling ------------------------------------------------------------

def conv(b, x, w, bias=None):
    if len(shape_of(w)) != 4 or len(shape_of(x)) != 4:
        raise ValueError(f"fastcnn imports 2-d convolutions (NCHW) only. Received: input "
                         f"{shape_of(x)}, weight {shape_of(w)}")
    kernel = shape_of(w)[2:]
    strides, dilations, pads = _window(b, shape_of(x), kernel)
    groups = int(b.attr("group", 1))
    native = isinstance(x, Value) and isinstance(w, Parameter) and \
        (bias is None or isinstance(bias, Parameter))
    if not native:
        return b.kernel(K.Conv(strides, pads, dilations, groups), x, w,
                        *([] if bias is None else [bias]))
    if not _symmetric(pads):
        x = b.kernel(K.Pad([(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], 0.0), x)
        pads = (0, 0, 0, 0)
    extra = {"dilation": dilations, "groups": groups} if groups != 1 or dilations != (1, 1) \
        else {}

    def make():     # (built with groups channels: its own random init would be wasted)
        layer = L.Conv2d(groups, groups, kernel, strides, pads[:2], bias=bias is not None,
                         **extra)
        layer.in_channels, layer.out_channels = x.shape[1], w.shape[0]
        layer.weight, layer.bias = w, bias
        return layer
    return b.layer(make)(x)


def _pool(b, x, mode):
    if len(shape_of(x)) != 4:
        raise ValueError(f"fastcnn imports 2-d pooling (NCHW) only. Received: {shape_of(x)}")
    kernel = _pair(b.attr("kernel_shape"), "kernel_shape")
    strides, dilations, pads = _window(b, shape_of(x), kernel)
    ceil = bool(b.attr("ceil_mode", 0))
    include = bool(b.attr("count_include_pad", 0))
    shape = shape_of(x)
    if ceil and all(K.pool_out(shape[2 + i], kernel[i], strides[i], dilations[i], pads[i],
                               pads[2 + i], True) ==
                    K.pool_out(shape[2 + i], kernel[i], strides[i], dilations[i], pads[i],
                               pads[2 + i], False) for i in range(2)):
        ceil = False                # ceil_mode changes nothing for this input
    native = isinstance(x, Value) and _symmetric(pads) and \
        all(2 * pads[i] <= kernel[i] for i in range(2))
    if mode == "avg" and dilations != (1, 1):
        native = False
    if not native:
        return b.kernel(K.Pool(mode, kernel, strides, pads, dilations, ceil, include), x)
    extra = {"ceil_mode": True} if ceil else {}
    if mode == "max":
        if dilations != (1, 1):
            extra["dilation"] = dilations
        return b.layer(lambda: L.MaxPool2d(kernel, strides, pads[:2], **extra))(x)
    return b.layer(lambda: L.AvgPool2d(kernel, strides, pads[:2], count_include_pad=include,
                                       **extra))(x)


def max_pool(b, x):
    return _pool(b, x, "max")


def average_pool(b, x):
    return _pool(b, x, "avg")


def _global_pool(mode):
    def convert(b, x):
        shape = shape_of(x)
        if isinstance(x, Value) and len(shape) == 4:
            cls = L.MaxPool2d if mode == "max" else L.AvgPool2d
            return b.layer(lambda: cls(shape[2:], shape[2:], 0))(x)
        if mode == "avg":
            return b.kernel(K.ReduceMean(tuple(range(2, len(shape))), True), x)
        if len(shape) != 4:
            raise ValueError(f"fastcnn imports GlobalMaxPool on NCHW input only. "
                             f"Received: {shape}")
        return b.kernel(K.Pool("max", shape[2:], shape[2:], (0, 0, 0, 0)), x)
    return convert


def batch_norm(b, x, scale, bias, mean, var):
    if b.opset < 9 and not b.attr("spatial", 1):
        raise ValueError("BatchNormalization with spatial=0 is not supported")
    eps, momentum = float(b.attr("epsilon", 1e-5)), float(b.attr("momentum", 0.9))
    native = isinstance(x, Value) and len(x.shape) == 4 and \
        all(isinstance(p, Parameter) for p in (scale, bias)) and \
        all(isinstance(s, np.ndarray) and s.dtype == np.float32 and s.ndim == 1
            for s in (mean, var))
    if not native:
        return b.kernel(K.BatchNormInference(eps), x, scale, bias, mean, var)

    def make():
        layer = L.BatchNorm2d(x.shape[1], eps, 1.0 - momentum)
        layer.weight, layer.bias = scale, bias
        layer.running_mean, layer.running_var = mean, var
        return layer
    return b.layer(make)(x)


def lrn(b, x):
    return b.kernel(K.LRN(int(b.attr("size")), float(b.attr("alpha", 1e-4)),
                          float(b.attr("beta", 0.75)), float(b.attr("bias", 1.0))), x)


# -- activations ------------------------------------------------------------------------

def leaky_relu(b, x):
    alpha = float(b.attr("alpha", 0.01))
    return _unary("leaky_relu", lambda: L.LeakyReLU(alpha), alpha)(b, x)


def elu(b, x):
    return b.kernel(K.Unary("elu", float(b.attr("alpha", 1.0))), x)


def hard_sigmoid(b, x):
    alpha, beta = float(b.attr("alpha", 0.2)), float(b.attr("beta", 0.5))
    native = L.Hardsigmoid if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5 else None
    return _unary("hard_sigmoid", native, alpha, beta)(b, x)


def clip(b, x, lo=None, hi=None):
    if b.opset < 11:
        lo, hi = b.attr("min", -np.inf), b.attr("max", np.inf)
    lo = -np.inf if lo is None else float(const(lo))
    hi = np.inf if hi is None else float(const(hi))
    if lo == 0 and hi == np.inf:
        native = L.ReLU
    elif np.isfinite(lo) and np.isfinite(hi) and lo < hi:
        def native():
            return L.Hardtanh(lo, hi)
    else:
        native = None
    return _unary("clip", native, lo, hi)(b, x)


def gelu(b, x):
    approximate = b.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"Gelu's approximate must be 'none' or 'tanh'. "
                         f"Received: approximate={approximate!r}")
    name = "gelu" if approximate == "none" else "gelu_tanh"
    return _unary(name, lambda: L.GELU(approximate))(b, x)


def prelu(b, x, slope):
    return b.kernel(K.PRelu(), x, slope)


def _softmax(log):
    def convert(b, x):
        nd = len(shape_of(x))
        axis = int(b.attr("axis", 1 if b.opset < 13 else -1)) % nd
        coerce = b.opset < 13 and axis != nd - 1
        if isinstance(x, Value) and not coerce:
            cls = L.LogSoftmax if log else L.Softmax
            return b.layer(lambda: cls(axis))(x)
        return b.kernel(K.Softmax(axis, log, coerce), x)
    return convert


# -- dense ------------------------------------------------------------------------------

def gemm(b, a, w, c=None):
    alpha, beta = float(b.attr("alpha", 1.0)), float(b.attr("beta", 1.0))
    ta, tb = int(b.attr("transA", 0)), int(b.attr("transB", 0))
    native = isinstance(a, Value) and len(a.shape) == 2 and isinstance(w, Parameter) and \
        alpha == 1 and beta == 1 and not ta and tb and \
        (c is None or (isinstance(c, Parameter) and c.shape == (w.shape[0],)))
    if not native:
        kernel = K.Gemm(alpha, beta, ta, tb)
        return b.kernel(kernel, a, w, *([] if c is None else [c]))

    def make():                 # (built 1 x 1: its own random init would be wasted)
        layer = L.Linear(1, 1, bias=c is not None)
        layer.in_features, layer.out_features = w.shape[1], w.shape[0]
        layer.weight, layer.bias = w, c
        return layer
    return b.layer(make)(a)


def matmul(b, x, w):
    return b.kernel(K.MatMul(), x, w)


def _binary(op):
    def convert(b, x, y):
        if isinstance(x, Value) and isinstance(y, Value) and x.id != y.id \
                and op in ("Add", "Mul"):
            return x.graph.add(op.lower(), [x, y])
        return b.kernel(K.Binary(op), x, y)
    return convert


def sum_(b, *xs):
    if len(xs) > 1 and all(isinstance(x, Value) for x in xs) and \
            len({x.id for x in xs}) == len(xs):
        y = xs[0]
        for x in xs[1:]:
            y = y.graph.add("add", [y, x])
        return y
    return b.kernel(K.Sum(), *xs) if len(xs) > 1 else xs[0]


# -- layout -----------------------------------------------------------------------------

def concat(b, *xs):
    axis = int(b.attr("axis")) % len(shape_of(xs[0]))
    if all(isinstance(x, Value) for x in xs) and len({x.id for x in xs}) == len(xs):
        return xs[0].graph.add("cat", list(xs), {"dim": axis})
    return b.kernel(K.Concat(axis), *xs)


def reshape(b, x, shape=None):
    target = b.attr("shape") if shape is None else [int(v) for v in const(shape)]
    in_shape, allowzero = shape_of(x), int(b.attr("allowzero", 0))
    dims = [in_shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(in_shape) // known if known else 0
    if math.prod(dims) != math.prod(in_shape):
        raise ValueError(f"cannot reshape {in_shape} to {list(target)}")
    return b.reshape(x, dims)


def flatten(b, x):
    shape = shape_of(x)
    axis = int(b.attr("axis", 1))
    axis += len(shape) if axis < 0 else 0
    return b.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:])))


def _axes(b, axes):
    return [int(a) for a in (b.attr("axes") if axes is None else const(axes))] \
        if axes is not None or b.attr("axes") is not None else None


def squeeze(b, x, axes=None):
    shape, axes = shape_of(x), _axes(b, axes)
    drop = {a % len(shape) for a in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
    if any(shape[a] != 1 for a in drop):
        raise ValueError(f"Squeeze axes {sorted(drop)} are not all of size 1 in {shape}")
    return b.reshape(x, [d for i, d in enumerate(shape) if i not in drop])


def unsqueeze(b, x, axes=None):
    shape, axes = list(shape_of(x)), _axes(b, axes)
    n = len(shape) + len(axes)
    for a in sorted(a % n for a in axes):
        shape.insert(a, 1)
    return b.reshape(x, shape)


def transpose(b, x):
    perm = b.attr("perm")
    return b.kernel(K.Transpose(None if perm is None else tuple(int(p) for p in perm)), x)


def identity(b, x, *rest):
    return x


def dropout(b, x, ratio=None, training_mode=None):
    p = float(b.attr("ratio", 0.5)) if b.opset < 12 else \
        (0.5 if ratio is None else float(const(ratio)))
    if not isinstance(x, Value) or p == 0.0:
        return x
    return b.layer(lambda: L.Dropout(min(p, 0.999)))(x)


def pad(b, x, pads=None, value=None, axes=None):
    mode = b.attr("mode", "constant")
    if mode != "constant":
        raise ValueError(f"Pad mode {mode!r} is not supported (constant only)")
    nd = len(shape_of(x))
    if b.opset < 11:
        p, v = b.attr("pads"), float(b.attr("value", 0.0))
    else:
        p, v = [int(i) for i in const(pads)], 0.0 if value is None else float(const(value))
    axes = list(range(nd)) if axes is None else [int(a) % nd for a in const(axes)]
    pairs = [(0, 0)] * nd
    for k, a in enumerate(axes):
        pairs[a] = (int(p[k]), int(p[k + len(axes)]))
    return b.kernel(K.Pad(pairs, v), x)


def reduce_mean(b, x, axes=None):
    shape = shape_of(x)
    if b.opset >= 18:
        axes = None if axes is None else [int(a) for a in const(axes)]
        if not axes and b.attr("noop_with_empty_axes", 0):
            return x
    else:
        axes = b.attr("axes")
    keep = bool(b.attr("keepdims", 1))
    norm = None if not axes else sorted(int(a) % len(shape) for a in axes)
    if isinstance(x, Value) and len(shape) == 4 and norm == [2, 3] and keep:
        return _global_pool("avg")(b, x)
    return b.kernel(K.ReduceMean(None if norm is None else tuple(norm), keep), x)


# -- constants and shapes ---------------------------------------------------------------

def constant(b):
    from onnx import numpy_helper
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        v = b.attr(name)
        if v is None:
            continue
        if name == "value":
            return numpy_helper.to_array(v)
        return np.array(v, np.float32 if "float" in name else np.int64)
    raise ValueError("Constant needs value, value_float(s) or value_int(s)")


def constant_of_shape(b, shape):
    from onnx import numpy_helper
    v = b.attr("value")
    fill = numpy_helper.to_array(v).reshape(-1) if v is not None else np.zeros(1, np.float32)
    return np.full([int(d) for d in const(shape)], fill[0], fill.dtype)


def shape(b, x):
    s = np.array(shape_of(x), np.int64)
    start, end = int(b.attr("start", 0)), b.attr("end")
    return s[start:None if end is None else int(end)]


def slice_(b, x, starts=None, ends=None, axes=None, steps=None):
    if b.opset < 10:
        starts, ends, axes = b.attr("starts"), b.attr("ends"), b.attr("axes")
    nd = len(shape_of(x))
    starts, ends = [int(v) for v in const(starts)], [int(v) for v in const(ends)]
    axes = range(len(starts)) if axes is None else [int(a) % nd for a in const(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in const(steps)]
    slices = [slice(None)] * nd
    for a, start, end, step in zip(axes, starts, ends, steps):
        slices[a] = slice(start, None if step < 0 and end < -shape_of(x)[a] else end, step)
    return b.kernel(K.Slice(tuple(slices)), x)


_CAST_TYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}


def cast(b, x):
    to = int(b.attr("to"))
    if isinstance(x, Value):
        if to != 1:
            raise ValueError(f"fastcnn's activations are float32; Cast to type {to} of one "
                             f"is not supported")
        return x
    if to not in _CAST_TYPES:
        raise ValueError(f"Cast of a constant to type {to} is not supported")
    return const(x).astype(_CAST_TYPES[to])


def gather(b, data, indices):
    return b.kernel(K.Gather(int(b.attr("axis", 0)) % len(shape_of(data))), data,
                    const(indices))


CONVERTERS = {
    "Conv": conv, "MaxPool": max_pool, "AveragePool": average_pool,
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
    "BatchNormalization": batch_norm, "LRN": lrn,
    "Relu": _unary("relu", L.ReLU), "Sigmoid": _unary("sigmoid", L.Sigmoid),
    "Tanh": _unary("tanh", L.Tanh), "LeakyRelu": leaky_relu, "PRelu": prelu,
    "Clip": clip, "HardSigmoid": hard_sigmoid, "HardSwish": _unary("hard_swish", L.Hardswish),
    "Elu": elu, "Softmax": _softmax(False), "LogSoftmax": _softmax(True), "Gelu": gelu,
    "Sqrt": _unary("sqrt"), "Erf": _unary("erf"),
    "Gemm": gemm, "MatMul": matmul,
    "Add": _binary("Add"), "Sub": _binary("Sub"), "Mul": _binary("Mul"),
    "Div": _binary("Div"), "Sum": sum_,
    "Concat": concat, "Flatten": flatten, "Reshape": reshape, "Transpose": transpose,
    "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Dropout": dropout, "Identity": identity,
    "Constant": constant, "ConstantOfShape": constant_of_shape, "Shape": shape,
    "Gather": gather, "Pad": pad, "ReduceMean": reduce_mean, "Slice": slice_, "Cast": cast,
}

_AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "")


def unsupported_reason(node, opset):
    """Why fastcnn cannot import ``node`` (None if it can), from its type and attributes."""
    if node.domain not in ("", "ai.onnx"):
        return f"domain {node.domain!r}"
    if node.op_type not in CONVERTERS:
        return "op"
    attrs = {a.name: a for a in node.attribute}
    if "auto_pad" in attrs and attrs["auto_pad"].s.decode() not in _AUTO_PAD:
        return f"auto_pad={attrs['auto_pad'].s.decode()}"
    if "kernel_shape" in attrs and len(attrs["kernel_shape"].ints) != 2:
        return "kernel_shape of other than 2 dimensions"
    if node.op_type == "Pad" and "mode" in attrs and attrs["mode"].s.decode() != "constant":
        return f"mode={attrs['mode'].s.decode()}"
    if node.op_type == "MaxPool" and attrs.get("storage_order") and attrs["storage_order"].i:
        return "storage_order=1"
    if node.op_type == "Constant" and not set(attrs) & {"value", "value_float", "value_floats",
                                                        "value_int", "value_ints"}:
        return f"attribute {sorted(attrs)}"
    return None
