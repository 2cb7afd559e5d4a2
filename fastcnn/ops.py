"""Op families, each defined once: its shape rule, what its forward saves for
the backward pass, whether its output may overwrite its input, the native
step that runs it (fastcnn/_executor.pxi), and a reference forward and backward
on the functional API (the plain walk the executor is tested against).

Layers say which op they are (``Layer.trace``); the graph, the compiler, the
executor and the reference walk all read :data:`OPS`, the one list of op kinds.

Attributes of each family (``node.attrs``):

========== ====================================================================
conv2d     stride, padding, dilation, groups (as Conv2d takes them; dilation and
           groups default to 1 when absent), clamp (lo, hi) when the compiler's
           fuse_conv_activation pass made a ReLU / hardtanh its epilogue
           (inference only); params weight, bias (or None)
linear     params weight, bias (or None)
relu       -
sigmoid    -
pointwise  kind (tanh, leaky_relu, hardtanh, hardsigmoid, hardswish, silu, gelu,
           gelu_tanh), a, b (leaky_relu's slope; hardtanh's min and max)
max_pool2d kernel_size, stride, padding, dilation (default 1), ceil_mode (default
           False); relu: a ReLU absorbed before it (a pass)
avg_pool2d kernel_size, stride, padding, ceil_mode (default False), count_include_pad
adaptive_max_pool2d, adaptive_avg_pool2d
           output_size (oh, ow): torch's adaptive windows (sizes that do not divide
           the input; the layers trace plain pooling when they do)
flatten    start_dim, end_dim (a view: no step runs)
reshape    shape: the output shape, batch included (a view: no step runs)
add        - (two inputs; numpy broadcasting)
mul        - (two inputs; numpy broadcasting)
cat        dim (a non-negative int; one or more inputs)
conv2d_batch_norm2d  a conv2d and the batch_norm2d after it, folded (the
           compiler's fold_batch_norm pass, inference only): conv2d's attrs and
           bn_eps; params weight, bias, bn_weight, bn_bias, running_mean, running_var
conv2d_chain  links: the conv2d nodes expand (1x1), depthwise, project
           (1x1, or None) run as one step by row strips (the compiler's
           fuse_conv_chain pass, a frozen model's inference only)
dropout    p (training only: its layer adds no node in inference)
batch_norm2d eps, momentum (None: cumulative average), num_features; params weight,
           bias, running_mean, running_var, num_batches_tracked (see BatchNorm2dOp)
softmax    dim (any, negative allowed), log (bool: log_softmax)
layer      a layer running its own Python forward / backward (``node.layer``);
           in_shapes: one shape per input, for a layer of several inputs
========== ====================================================================
"""
import math

import numpy as np

from . import _native as E
from ._native import _geometry, _pool2d_adaptive_shape, _pool2d_check_plane, _pool2d_shape
from ._native import _merge_broadcast_shape, _merge_cat_shape
from . import functional as F

__all__ = ["OpDef", "OPS"]


class OpDef:
    """One op family. ``saves``: what forward keeps for backward, a subset of
    ("input", "output"); ``in_place``: the output may take the input's memory;
    ``view``: the output is the input reshaped (nothing runs)."""
    kind = ""
    saves = ()
    in_place = False
    view = False

    def infer(self, attrs, params, x):
        """The output shape for an input of shape ``x``; ValueError if it does not fit."""
        raise NotImplementedError

    def step(self, node, slots, x, y, training):
        """The native step for ``node`` with input shape x, output shape y."""
        raise NotImplementedError

    def aux(self, node, x, y, training):
        """Extra slots the step needs: {name: (shape, dtype, kept for backward)}."""
        return {}

    def forward(self, node, x, training):
        """Reference forward: (y, saved) with the functional API."""
        raise NotImplementedError

    def backward(self, node, saved, dy, need_dx):
        """Reference backward: dx (or None); accumulates the parameters' .grad."""
        raise NotImplementedError


class Conv2dOp(OpDef):
    kind = "conv2d"
    saves = ("input",)

    @staticmethod
    def _geometry(attrs, x, w):
        return _geometry(x, w, attrs["stride"], attrs["padding"], attrs.get("dilation", 1),
                         attrs.get("groups", 1))

    def infer(self, attrs, params, x):
        w = params["weight"].data.shape
        groups = attrs.get("groups", 1)
        if len(x) != 4 or x[1] != w[1] * groups:
            raise ValueError(f"Conv2d expects input of shape (N, {w[1] * groups}, H, W). "
                             f"Received: x.shape={x}")
        g = self._geometry(attrs, x, w)
        return (g[0], g[4], g[11], g[12])

    def step(self, node, slots, x, y, training):
        w = node.params["weight"].data.shape
        return E.ConvStep(node, slots, self._geometry(node.attrs, x, w))

    def _args(self, node):
        a = node.attrs
        return a["stride"], a["padding"], a.get("dilation", 1), a.get("groups", 1)

    def forward(self, node, x, training):
        w, b = node.params["weight"], node.params.get("bias")
        y = F.conv2d(x, w.data, None if b is None else b.data, *self._args(node))
        if "clamp" in node.attrs:           # a fused activation (inference)
            lo, hi = node.attrs["clamp"]
            y = np.where(y < lo, np.float32(lo), y)
            y = np.where(y > hi, np.float32(hi), y)
        return y, x

    def backward(self, node, x, dy, need_dx):
        w, b = node.params["weight"], node.params.get("bias")
        dx, _, _ = F.conv2d_backward(
            dy, x, w.data, *self._args(node), has_bias=b is not None,
            need_grad_input=need_dx, grad_weight=w.grad, grad_bias=None if b is None else b.grad)
        return dx


class LinearOp(OpDef):
    kind = "linear"
    saves = ("input",)

    def infer(self, attrs, params, x):
        out_features, in_features = params["weight"].data.shape
        if len(x) < 1 or x[-1] != in_features:
            raise ValueError(f"Linear expects input of shape (N, {in_features}). "
                             f"Received: x.shape={x}")
        return x[:-1] + (out_features,)

    def step(self, node, slots, x, y, training):
        return E.LinearStep(node, slots, math.prod(x[:-1]))

    def forward(self, node, x, training):
        w, b = node.params["weight"], node.params.get("bias")
        return F.linear(x, w.data, None if b is None else b.data), x

    def backward(self, node, x, dy, need_dx):
        w, b = node.params["weight"], node.params.get("bias")
        dx, _, _ = F.linear_backward(
            dy, x, w.data, has_bias=b is not None, need_grad_input=need_dx,
            grad_weight=w.grad, grad_bias=None if b is None else b.grad)
        return dx


class _ActivationOp(OpDef):
    saves = ("output",)
    in_place = True
    _sigmoid = False

    def infer(self, attrs, params, x):
        return x

    def step(self, node, slots, x, y, training):
        return E.ActivationStep(node, slots, math.prod(x), self._sigmoid)

    def forward(self, node, x, training):
        y = (F.sigmoid if self._sigmoid else F.relu)(x)
        return y, y

    def backward(self, node, y, dy, need_dx):
        if not need_dx:
            return None
        return (F.sigmoid_backward if self._sigmoid else F.relu_backward)(dy, y)


class ReLUOp(_ActivationOp):
    kind = "relu"


class SigmoidOp(_ActivationOp):
    kind = "sigmoid"
    _sigmoid = True


class PointwiseOp(OpDef):
    """The activations of csrc/pointwise.c; attrs: kind (tanh, leaky_relu, hardtanh,
    hardsigmoid, hardswish, silu, gelu, gelu_tanh) and its parameters a, b."""
    kind = "pointwise"
    saves = ("input",)
    in_place = True

    def infer(self, attrs, params, x):
        return x

    def step(self, node, slots, x, y, training):
        return E.PointwiseStep(node, slots, math.prod(x))

    def forward(self, node, x, training):
        a = node.attrs
        return E.pointwise(a["kind"], x, a.get("a", 0.0), a.get("b", 0.0)), x

    def backward(self, node, x, dy, need_dx):
        a = node.attrs
        if not need_dx:
            return None
        return E.pointwise_backward(a["kind"], dy, x, a.get("a", 0.0), a.get("b", 0.0))


def _pool_input(x):
    if len(x) != 4:
        raise ValueError(f"x must be 4-dimensional (N, C, H, W). Received: x.shape={x}")
    _pool2d_check_plane(x, "x.shape")
    return x


def _pool_geometry(attrs):
    """kernel_size, stride, padding, dilation, ceil_mode of a pooling node."""
    return (attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs.get("dilation", 1),
            attrs.get("ceil_mode", False))


class _Pool2dOp(OpDef):
    _avg = False

    def infer(self, attrs, params, x):
        d = _pool2d_shape(_pool_input(x), *_pool_geometry(attrs))
        return (d["N"], d["C"], d["P"], d["Q"])

    def step(self, node, slots, x, y, training):
        return E.PoolStep(node, slots, _pool2d_shape(x, *_pool_geometry(node.attrs)), self._avg,
                          training)


class MaxPool2dOp(_Pool2dOp):
    kind = "max_pool2d"

    def aux(self, node, x, y, training):
        if not training:    # values only (maxpool2d_forward_inference)
            return {}
        slots = {"indices": (y, np.int32, True)}
        if node.attrs.get("relu"):
            slots["relu"] = (x, np.float32, True)
        return slots

    def forward(self, node, x, training):
        a = node.attrs
        if a.get("relu"):
            x = F.relu(x)
        y, idx = F.max_pool2d(x, *_pool_geometry(a), return_indices=True)
        return y, (idx, x)

    def backward(self, node, saved, dy, need_dx):
        if not need_dx:
            return None
        idx, x = saved
        dx = F.max_pool2d_backward(dy, idx, x.shape)
        return F.relu_backward(dx, x) if node.attrs.get("relu") else dx


class AvgPool2dOp(_Pool2dOp):
    kind = "avg_pool2d"
    _avg = True

    def forward(self, node, x, training):
        a = node.attrs
        return F.avg_pool2d(x, a["kernel_size"], a["stride"], a["padding"],
                            a.get("ceil_mode", False), a["count_include_pad"]), x.shape

    def backward(self, node, shape, dy, need_dx):
        a = node.attrs
        if not need_dx:
            return None
        return F.avg_pool2d_backward(dy, shape, a["kernel_size"], a["stride"], a["padding"],
                                     a.get("ceil_mode", False), a["count_include_pad"])


class _AdaptivePool2dOp(OpDef):
    _avg = False

    def infer(self, attrs, params, x):
        d = _pool2d_adaptive_shape(_pool_input(x), attrs["output_size"])
        return (d["N"], d["C"], d["P"], d["Q"])

    def step(self, node, slots, x, y, training):
        return E.PoolStep(node, slots, _pool2d_adaptive_shape(x, node.attrs["output_size"]),
                          self._avg, training)


class AdaptiveMaxPool2dOp(_AdaptivePool2dOp):
    kind = "adaptive_max_pool2d"

    def aux(self, node, x, y, training):
        return {"indices": (y, np.int32, training)}

    def forward(self, node, x, training):
        y, idx = F.adaptive_max_pool2d(x, node.attrs["output_size"], return_indices=True)
        return y, (idx, x.shape)

    def backward(self, node, saved, dy, need_dx):
        idx, shape = saved
        return F.max_pool2d_backward(dy, idx, shape) if need_dx else None


class AdaptiveAvgPool2dOp(_AdaptivePool2dOp):
    kind = "adaptive_avg_pool2d"
    _avg = True

    def forward(self, node, x, training):
        return F.adaptive_avg_pool2d(x, node.attrs["output_size"]), x.shape

    def backward(self, node, shape, dy, need_dx):
        return F.adaptive_avg_pool2d_backward(dy, shape) if need_dx else None


class FlattenOp(OpDef):
    kind = "flatten"
    view = True

    def infer(self, attrs, params, x):
        nd = len(x)
        start = attrs["start_dim"] + nd if attrs["start_dim"] < 0 else attrs["start_dim"]
        end = attrs["end_dim"] + nd if attrs["end_dim"] < 0 else attrs["end_dim"]
        if not 0 <= start <= end < nd:
            raise ValueError(f"Flatten(start_dim={attrs['start_dim']}, "
                             f"end_dim={attrs['end_dim']}) does not fit the input. "
                             f"Received: x.shape={x}")
        return x[:start] + (math.prod(x[start:end + 1]),) + x[end + 1:]

    def forward(self, node, x, training):
        return x.reshape(self.infer(node.attrs, node.params, x.shape)), x.shape

    def backward(self, node, shape, dy, need_dx):
        return dy.reshape(shape) if need_dx else None


class ReshapeOp(OpDef):
    """The input's elements in another shape (attr ``shape``, all dimensions
    given): a view, as flatten."""
    kind = "reshape"
    view = True

    def infer(self, attrs, params, x):
        shape = tuple(attrs["shape"])
        if math.prod(shape) != math.prod(x):
            raise ValueError(f"reshape to {shape} does not fit the input. Received: x.shape={x}")
        return shape

    def forward(self, node, x, training):
        return x.reshape(node.attrs["shape"]), x.shape

    def backward(self, node, shape, dy, need_dx):
        return dy.reshape(shape) if need_dx else None


class BatchNorm2dOp(OpDef):
    """Batch normalization. Params: weight, bias (None without affine),
    running_mean, running_var, num_batches_tracked (None without running
    statistics: then the batch's statistics in both modes). In training the
    forward keeps the batch's mean and inverse std (aux slots; the reference
    walk saves them beside the input) and the backward uses them."""
    kind = "batch_norm2d"
    saves = ("input",)

    def infer(self, attrs, params, x):
        C = params["weight"].data.shape[0] if params.get("weight") is not None else \
            attrs["num_features"]
        if len(x) != 4 or x[1] != C:
            raise ValueError(f"BatchNorm2d expects input of shape (N, {C}, H, W). "
                             f"Received: x.shape={x}")
        return x

    def aux(self, node, x, y, training):
        return {name: ((x[1],), np.float32, training and name != "var")
                for name in ("mean", "var", "invstd")}

    def step(self, node, slots, x, y, training):
        return E.BatchNormStep(node, slots, x, training)

    def forward(self, node, x, training):
        p, a = node.params, node.attrs
        w, b = p.get("weight"), p.get("bias")
        batch = training or p.get("running_mean") is None
        if batch and training and p.get("running_mean") is not None:
            p["num_batches_tracked"][...] += 1
        momentum = a["momentum"]
        if momentum is None and p.get("num_batches_tracked") is not None:
            momentum = 1.0 / int(p["num_batches_tracked"])
        out = F.batch_norm2d(x, p.get("running_mean") if training or not batch else None,
                             p.get("running_var") if training or not batch else None,
                             None if w is None else w.data, None if b is None else b.data,
                             training=batch, momentum=momentum or 0.0, eps=a["eps"],
                             return_stats=batch)
        # saved: the input and the batch's mean and invstd (as the step's aux slots)
        return (out[0], (x,) + out[1:]) if batch else (out, (x, None, None))

    def backward(self, node, saved, dy, need_dx):
        x, mean, invstd = saved
        w, b = node.params.get("weight"), node.params.get("bias")
        dx, gw, gb = F.batch_norm2d_backward(
            dy, x, None if w is None else w.data, node.attrs["eps"], need_grad_input=need_dx,
            grad_weight=None if w is None else w.grad, grad_bias=None if b is None else b.grad,
            mean=mean, invstd=invstd)
        return dx


class DropoutOp(OpDef):
    """Dropout in training (in inference its layer adds no node); attrs: p."""
    kind = "dropout"
    in_place = True

    def infer(self, attrs, params, x):
        return x

    def step(self, node, slots, x, y, training):
        return E.DropoutStep(node, slots, x)

    def forward(self, node, x, training):
        y, mask = F.dropout(x, node.attrs["p"], return_mask=True)
        return y, mask

    def backward(self, node, mask, dy, need_dx):
        return F.dropout_backward(dy, mask) if need_dx else None


class AddOp(OpDef):
    """The element-wise sum of two tensors with numpy broadcasting (a residual
    connection; a per-channel shift)."""
    kind = "add"
    in_place = True         # the planner lets it overwrite an input of the output's shape
    _mul = False

    def infer(self, attrs, params, a, b):
        return _merge_broadcast_shape(a, b, self.kind)

    def step(self, node, slots, xs, y, training):
        return E.MergeStep(node, slots, xs[0], xs[1], self._mul)

    def forward(self, node, xs, training):
        return F.add(*xs), tuple(x.shape for x in xs)

    def backward(self, node, shapes, dy, need_dx):
        return F.add_backward(dy, *shapes) if need_dx else (None, None)


class MulOp(AddOp):
    """The element-wise product of two tensors with numpy broadcasting
    (squeeze-and-excitation: (N, C, 1, 1) weights times (N, C, H, W) maps)."""
    kind = "mul"
    saves = ("input",)
    _mul = True

    def forward(self, node, xs, training):
        return F.mul(*xs), xs

    def backward(self, node, xs, dy, need_dx):
        return F.mul_backward(dy, *xs) if need_dx else (None, None)


class CatOp(OpDef):
    """The concatenation of one or more tensors along attr ``dim`` (DenseNet,
    Inception)."""
    kind = "cat"

    def infer(self, attrs, params, *shapes):
        return _merge_cat_shape(shapes, attrs["dim"])[0]

    def step(self, node, slots, xs, y, training):
        shapes = xs if len(node.inputs) > 1 else (xs,)
        return E.CatStep(node, slots, shapes, node.attrs["dim"])

    def forward(self, node, xs, training):
        xs = xs if isinstance(xs, tuple) else (xs,)
        return F.cat(xs, node.attrs["dim"]), [x.shape[node.attrs["dim"]] for x in xs]

    def backward(self, node, sizes, dy, need_dx):
        if not need_dx:
            return (None,) * len(sizes) if len(sizes) > 1 else None
        dxs = F.cat_backward(dy, sizes, node.attrs["dim"])
        return tuple(dxs) if len(dxs) > 1 else dxs[0]


class Conv2dBatchNormOp(Conv2dOp):
    """A conv2d with the batch_norm2d after it folded in (inference only; the
    compiler's fold_batch_norm pass makes it). Params: the convolution's
    weight and bias (or None) and the batch norm's bn_weight, bn_bias (or
    None), running_mean, running_var; attrs: the convolution's and bn_eps."""
    kind = "conv2d_batch_norm2d"
    saves = ()

    def aux(self, node, x, y, training):
        w = node.params["weight"].data.shape
        return {"folded_weight": (w, np.float32, False),
                "folded_bias": ((w[0],), np.float32, False)}

    def step(self, node, slots, x, y, training):
        return E.FoldedConvStep(node, slots, super().step(node, slots, x, y, training))

    def forward(self, node, x, training):
        p = node.params
        w, b = p["weight"], p.get("bias")
        gamma, beta = p.get("bn_weight"), p.get("bn_bias")
        wf, bf = F.batch_norm2d_fold(w.data, None if b is None else b.data,
                                     None if gamma is None else gamma.data,
                                     None if beta is None else beta.data,
                                     p["running_mean"], p["running_var"], node.attrs["bn_eps"])
        folded = node.replace(params=dict(p, weight=Folded(wf), bias=Folded(bf)))
        return super().forward(folded, x, training)[0], None

    def backward(self, node, saved, dy, need_dx):
        raise TypeError("a folded conv2d + batch_norm2d runs in inference only")


class Conv2dChainOp(OpDef):
    """An expand 1x1 convolution, a depthwise one and a project 1x1 one as one
    step, run by strips of output rows (a frozen model's inference; the
    compiler's fuse_conv_chain pass makes it). Attrs: ``links``, the three
    conv2d nodes (project may be None)."""
    kind = "conv2d_chain"

    def infer(self, attrs, params, x):
        for link in attrs["links"]:
            if link is not None:
                x = _CONV.infer(link.attrs, link.params, x)
        return x

    def step(self, node, slots, x, y, training):
        steps, none = [], {"x": -1, "y": -1, "dx": -1, "dy": -1}
        for link in node.attrs["links"]:
            out = x if link is None else _CONV.infer(link.attrs, link.params, x)
            steps.append(None if link is None else _CONV.step(link, none, x, out, False))
            x = out
        return E.ChainStep(node, slots, *steps)

    def forward(self, node, x, training):
        for link in node.attrs["links"]:
            if link is not None:
                x = _CONV.forward(link, x, False)[0]
        return x, None

    def backward(self, node, saved, dy, need_dx):
        raise TypeError("a conv2d chain runs in inference only")


_CONV = Conv2dOp()


class Folded:
    """Folded weights in the place of a Parameter (steps and reference_run
    read ``.data``)."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class SoftmaxOp(OpDef):
    """softmax (log_softmax with attr log) along attr dim; the backward reads the output."""
    kind = "softmax"
    saves = ("output",)

    def infer(self, attrs, params, x):
        E._softmax_dims(x, attrs["dim"])
        return x

    def step(self, node, slots, x, y, training):
        return E.SoftmaxStep(node, slots, tuple(x))

    def forward(self, node, x, training):
        a = node.attrs
        y = (F.log_softmax if a["log"] else F.softmax)(x, a["dim"])
        return y, y

    def backward(self, node, y, dy, need_dx):
        a = node.attrs
        if not need_dx:
            return None
        return (F.log_softmax_backward if a["log"] else F.softmax_backward)(dy, y, a["dim"])


class LayerOp(OpDef):
    """A layer whose class overrides forward (and backward) in Python. Its
    input and output stay intact until its backward (the layer may keep
    views of them)."""
    kind = "layer"
    saves = ("input", "output")

    def infer(self, attrs, params, x):
        raise TypeError("a 'layer' node's shape comes from running the layer")

    def step(self, node, slots, x, y, training):
        return E.LayerStep(node, slots, x, y)

    def forward(self, node, x, training):
        xs = x if "in_shapes" in node.attrs else (x,)
        return np.asarray(node.layer.forward(*xs), np.float32), None

    def backward(self, node, saved, dy, need_dx):
        return node.layer.backward(dy, need_grad_input=need_dx)


OPS = {op.kind: op for op in (Conv2dOp(), LinearOp(), ReLUOp(), SigmoidOp(), PointwiseOp(),
                              MaxPool2dOp(), AvgPool2dOp(), AdaptiveMaxPool2dOp(),
                              AdaptiveAvgPool2dOp(), FlattenOp(), ReshapeOp(), BatchNorm2dOp(),
                              DropoutOp(), AddOp(), MulOp(), CatOp(), Conv2dBatchNormOp(),
                              Conv2dChainOp(), SoftmaxOp(),
                              LayerOp())}
