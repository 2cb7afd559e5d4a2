"""Layers: objects holding parameters, with a forward and a backward pass.

A layer is called on a batch, ``y = layer(x)``; in training mode the forward
pass keeps what the backward pass needs, and ``grad_x = layer.backward(grad_y)``
returns the gradient of the loss with respect to the input while accumulating
(``+=``) the gradients of the parameters into their ``.grad``.

A layer says which op it is (``trace``: it adds its node to a graph); the
layer, or a model of layers, runs as one compiled graph on the native
executor (fastcnn.runner, fastcnn.compiler, fastcnn/_executor.pxi).

Initialisation is PyTorch's default: weights and biases uniform in
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (Kaiming-uniform with a = sqrt(5)),
drawn from fastcnn's global generator (seed it with
:func:`fastcnn.manual_seed`) or from the ``rng`` given to
``reset_parameters``; :class:`fastcnn.Sequential` takes a ``seed`` too.
"""
import copy
import inspect
import itertools
import math

import numpy as np

from ._checks import as_float, as_int, as_pair, nonnegative_pair, positive_int, positive_pair
from .graph import Value
from .runner import Runner, trace_layer

__all__ = ["manual_seed", "Parameter", "Layer", "Conv2d", "Linear", "ReLU", "Sigmoid", "MaxPool2d",
           "AvgPool2d", "Flatten", "BatchNorm2d", "Tanh", "LeakyReLU", "Hardtanh", "ReLU6",
           "Hardsigmoid", "Hardswish", "SiLU", "GELU", "Identity", "Dropout", "AdaptiveAvgPool2d",
           "AdaptiveMaxPool2d", "GlobalAvgPool2d", "Softmax", "LogSoftmax"]


_generator = np.random.default_rng()

# Bumped whenever an attribute of any layer is set (a parameter, a sublayer, a
# mode) or a Sequential's list of layers changes: while it stands still, a
# compiled graph found for a layer needs no re-check of the layer's structure.
_changes = itertools.count()
generation = next(_changes)


def changed():
    """Note that some layer changed (compiled graphs are re-checked)."""
    global generation
    generation = next(_changes)


# fastcnn's own layer classes by name (what save / load can rebuild); each
# registers itself when defined (Layer.__init_subclass__).
LAYERS = {}


def manual_seed(seed):
    """Seed the generator that initialises new layers' parameters.

    After ``fastcnn.manual_seed(s)``, building the same layers in the same
    order gives the same parameters. (``Sequential(..., seed=s)`` gives the
    same model regardless of the global generator.)

    Args:
        seed: a non-negative integer.

    Example:
        >>> fastcnn.manual_seed(0); a = fastcnn.Linear(4, 2)
        >>> fastcnn.manual_seed(0); b = fastcnn.Linear(4, 2)
        >>> bool((a.weight.data == b.weight.data).all())
        True
    """
    global _generator
    seed = as_int(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be non-negative. Received: seed={seed}")
    _generator = np.random.default_rng(seed)


class Parameter:
    """A trainable array and its gradient.

    Attributes:
        data: float32 C-contiguous numpy array (PyTorch's shape).
        grad: float32 array of the same shape; backward passes accumulate
            into it (``+=``) until ``zero_grad()`` clears it.

    Code that changes a parameter should write into ``data`` in place
    (``p.data[...] = value``): optimizers may keep every parameter in one
    contiguous buffer, with ``data`` a view of it.
    """
    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.array(data, dtype=np.float32, order="C", copy=True)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        """Set the gradient to zero (in place)."""
        self.grad.fill(0.0)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape})"

    def __getstate__(self):
        """Pickles carry the data, not the gradient (as torch's do), so a model
        pickles at the size of its weights; unpickled, the gradient is zero."""
        return self.data

    def __setstate__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)

    def __deepcopy__(self, memo):
        """copy.deepcopy keeps the gradient too (as torch's does)."""
        twin = Parameter.__new__(Parameter)
        memo[id(self)] = twin
        twin.data, twin.grad = copy.deepcopy(self.data, memo), copy.deepcopy(self.grad, memo)
        return twin


class Layer:
    """Base class of every layer.

    A layer adds its op(s) to a graph in ``trace(x)`` (``x`` a symbolic
    :class:`fastcnn.graph.Value`), lists its parameters in ``_params``
    (name -> Parameter, in PyTorch's order) and its constructor arguments in
    ``get_config()`` (used by ``save``/``load``). ``forward`` and ``backward``
    run the compiled graph. A subclass may instead override ``forward`` and
    ``backward`` with its own Python code (on numpy arrays); in a model it
    then runs as one node that calls them.
    """
    training = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("fastcnn.") and not cls.__name__.startswith("_"):
            LAYERS[cls.__name__] = cls

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        changed()

    def __call__(self, x):
        if isinstance(x, Value):
            with x.graph.layer_scope(self):
                return trace_layer(self, x)
        return self.forward(x)

    def forward(self, x):
        """The layer's output for the batch ``x`` (converted once to float32)."""
        return self._runner().forward(self, x)

    def backward(self, grad_y, *, need_grad_input=True):
        """Back-propagate ``grad_y`` through the last training forward pass:
        accumulates the parameters' ``.grad`` and returns the input gradient
        (None with ``need_grad_input=False``)."""
        return self._runner().backward(self, grad_y, need_grad_input)

    def trace(self, x):
        """Add this layer's op(s) applied to the symbolic ``x``; return the output Value."""
        raise NotImplementedError(f"{type(self).__name__} must define trace(x), or forward "
                                  f"and backward")

    def structure(self):
        """What a compiled graph of this layer depends on besides shapes: a
        replaced layer or parameter, a changed mode or argument compiles anew
        (compared when some layer has changed since the last call)."""
        return (self, self.training, tuple(self._params.values()),
                tuple(self._buffers.values()), self.get_config())

    def _runner(self):
        runner = self.__dict__.get("_runner_state")
        if runner is None:
            runner = self.__dict__["_runner_state"] = Runner(self.__dict__.get("_frozen", False))
        return runner

    def __getstate__(self):
        """Copies and pickles leave the compiled graphs behind (compiled again on use)."""
        state = self.__dict__.copy()
        state.pop("_runner_state", None)
        return state

    # sublayers ------------------------------------------------------------
    def children(self):
        """``[(name, layer)]``: the direct sublayers (none for a plain layer)."""
        return []

    def named_modules(self, prefix=""):
        """Every layer, this one first (named ``prefix``) and nested ones depth
        first, as ``(dotted name, layer)``, each once (``torch.nn.Module``'s
        order and names: ``"layer1.0.conv1"``)."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield name, layer
            dot = name + "." if name else ""
            stack.extend(reversed([(dot + n, c) for n, c in layer.children()]))

    def modules(self):
        """Every layer, this one first, nested ones depth first."""
        return (layer for _, layer in self.named_modules())

    # parameters -----------------------------------------------------------
    @property
    def _params(self):
        return {}

    def named_parameters(self, prefix=""):
        """``[(name, Parameter)]`` in PyTorch's order, names like ``"weight"``."""
        return [(prefix + name, p) for name, p in self._params.items() if p is not None]

    def parameters(self):
        """The layer's parameters, in PyTorch's order."""
        return [p for _, p in self.named_parameters()]

    @property
    def _buffers(self):
        return {}

    def named_buffers(self, prefix=""):
        """``[(name, array)]``: state that is not trained (batch norm's running
        statistics), with PyTorch's names."""
        return [(prefix + name, b) for name, b in self._buffers.items() if b is not None]

    def named_state(self, prefix=""):
        """``[(name, array)]``: every parameter's data and buffer, in the order
        of PyTorch's state dict (each layer's parameters, then its buffers)."""
        return [(n, p.data) for n, p in self.named_parameters(prefix)] + \
            self.named_buffers(prefix)

    def zero_grad(self):
        """Clear the gradient of every parameter."""
        for p in self.parameters():
            p.zero_grad()

    def reset_parameters(self, rng=None):
        """Re-initialise the parameters (PyTorch's default) from ``rng``, a
        ``numpy.random.Generator`` (default: fastcnn's global generator)."""

    # modes ----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (the default): forward keeps what ``backward`` needs."""
        if self.training != bool(mode):
            self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: ``backward`` is not available, nothing is kept."""
        return self.train(False)

    # description ----------------------------------------------------------
    def get_config(self):
        """The constructor arguments, as a JSON-serialisable dict."""
        return {}

    def __repr__(self):
        """The constructor call: required arguments positionally, others only
        when they differ from their defaults, e.g. ``Conv2d(1, 6, 5, padding=2)``."""
        params = inspect.signature(type(self).__init__).parameters
        args = []
        for key, value in self.get_config().items():
            default = params[key].default if key in params else inspect.Parameter.empty
            if default is inspect.Parameter.empty:
                args.append(repr(value))
            elif value != default:
                args.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"


def _uniform(rng, bound, shape):
    rng = _generator if rng is None else rng
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _padding_config(padding, name="padding"):
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{name} must be an int, a pair of ints, 'same' or 'valid'. "
                             f"Received: {name}={padding!r}")
        return padding
    pair = nonnegative_pair(padding, name)
    return pair[0] if pair[0] == pair[1] else pair


def _pair_config(value, name, check=positive_pair):
    pair = check(value, name)
    return pair[0] if pair[0] == pair[1] else pair


def _bool_config(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool. Received: {name}={value!r}")
    return bool(value)


class Conv2d(Layer):
    """2-d convolution (cross-correlation, as in PyTorch) over NCHW images.

    Args:
        in_channels: channels of the input, C.
        out_channels: channels of the output (number of filters), K.
        kernel_size: int or pair (R, S), the window.
        stride: int or pair, default 1.
        padding: int or pair (zero padding on each side), ``'valid'`` (0) or
            ``'same'`` (output as large as the input; stride 1 only). Default 0.
        dilation: int or pair, spacing between kernel taps. Default 1.
        groups: int dividing C and K; each group of K/groups output channels
            sees only its C/groups input channels (``groups=C``: depthwise).
            Default 1.
        bias: whether to add a learned bias per output channel. Default True.
        padding_mode: ``'zeros'`` only (as PyTorch's default).

    Attributes:
        weight: Parameter of shape (K, C / groups, R, S).
        bias: Parameter of shape (K,), or None.

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, K, P, Q) with P = (H + 2 ph - dh (R - 1) - 1) // sh + 1 and Q likewise.

    Raises:
        ValueError: groups not dividing C or K, dilation < 1, padding_mode
            other than 'zeros', 'same' padding with stride > 1.

    Example:
        >>> conv = fastcnn.Conv2d(1, 6, 5, padding=2)
        >>> conv(np.zeros((8, 1, 28, 28), np.float32)).shape
        (8, 6, 28, 28)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros"):
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = _pair_config(stride, "stride")
        self.padding = _padding_config(padding)
        self.dilation = _pair_config(dilation, "dilation")
        self.groups = positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups must divide in_channels ({self.in_channels}) and "
                             f"out_channels ({self.out_channels}). Received: groups={groups!r}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' (the only mode fastcnn has). "
                             f"Received: padding_mode={padding_mode!r}")
        if self.padding == "same" and positive_pair(stride, "stride") != (1, 1):
            raise ValueError(f"padding='same' needs stride 1. Received: stride={stride!r}")
        r, s = as_pair(self.kernel_size, "kernel_size")
        self.weight = Parameter(np.zeros((self.out_channels, self.in_channels // self.groups, r, s),
                                         np.float32))
        self.bias = Parameter(np.zeros(self.out_channels, np.float32)) if bias else None
        self.reset_parameters()

    @property
    def _params(self):
        return {"weight": self.weight, "bias": self.bias}

    def reset_parameters(self, rng=None):
        k, c, r, s = self.weight.shape
        bound = 1.0 / math.sqrt(c * r * s)
        self.weight.data[...] = _uniform(rng, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = _uniform(rng, bound, self.bias.shape)

    def trace(self, x):
        return x.graph.add("conv2d", [x], {"stride": self.stride, "padding": self.padding,
                                          "dilation": self.dilation, "groups": self.groups},
                           self._params)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                "bias": self.bias is not None}


class Linear(Layer):
    """Fully connected layer: ``y = x W^T + b``.

    Args:
        in_features: size of each input row, F.
        out_features: size of each output row, O.
        bias: whether to add a learned bias. Default True.

    Attributes:
        weight: Parameter of shape (O, F).
        bias: Parameter of shape (O,), or None.

    Input shape:
        (N, F) (any leading dimensions: (..., F)).

    Output shape:
        (N, O) ((..., O)).

    Example:
        >>> fc = fastcnn.Linear(400, 120)
        >>> fc(np.zeros((8, 400), np.float32)).shape
        (8, 120)
    """

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), np.float32))
        self.bias = Parameter(np.zeros(self.out_features, np.float32)) if bias else None
        self.reset_parameters()

    @property
    def _params(self):
        return {"weight": self.weight, "bias": self.bias}

    def reset_parameters(self, rng=None):
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight.data[...] = _uniform(rng, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = _uniform(rng, bound, self.bias.shape)

    def trace(self, x):
        return x.graph.add("linear", [x], params=self._params)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}


class _Activation(Layer):
    """An element-wise activation (its op kind in ``_op``)."""

    def trace(self, x):
        return x.graph.add(self._op, [x])


class ReLU(_Activation):
    """Rectified linear unit, ``max(x, 0)`` element-wise.

    Input shape:
        any.

    Output shape:
        same as the input.

    Example:
        >>> fastcnn.ReLU()(np.array([[-1.0, 2.0]]))
        array([[0., 2.]], dtype=float32)
    """

    _op = "relu"


class Sigmoid(_Activation):
    """Logistic sigmoid, ``1 / (1 + exp(-x))`` element-wise.

    Input shape:
        any.

    Output shape:
        same as the input, values in [0, 1].

    Example:
        >>> fastcnn.Sigmoid()(np.array([[0.0]]))
        array([[0.5]], dtype=float32)
    """

    _op = "sigmoid"


class _Pointwise(Layer):
    """An element-wise activation of csrc/pointwise.c: ``_kind`` and its
    parameters ``_a``, ``_b`` (backward from the input)."""
    _kind = ""

    def _args(self):
        return {}

    def trace(self, x):
        return x.graph.add("pointwise", [x], dict(kind=self._kind, **self._args()))


class Tanh(_Pointwise):
    """Hyperbolic tangent, element-wise (``torch.nn.Tanh``). Input and output: any shape."""
    _kind = "tanh"


class LeakyReLU(_Pointwise):
    """``x`` where x > 0, else ``negative_slope * x`` (``torch.nn.LeakyReLU``).

    Args:
        negative_slope: the slope below 0. Default 0.01.
    """
    _kind = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        self.negative_slope = as_float(negative_slope, "negative_slope")

    def _args(self):
        return {"a": self.negative_slope}

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Hardtanh(_Pointwise):
    """x clamped to [min_val, max_val] (``torch.nn.Hardtanh``).

    Args:
        min_val, max_val: the bounds, min_val < max_val. Default -1, 1.
    """
    _kind = "hardtanh"

    def __init__(self, min_val=-1.0, max_val=1.0):
        self.min_val, self.max_val = as_float(min_val, "min_val"), as_float(max_val, "max_val")
        if self.min_val >= self.max_val:
            raise ValueError(f"min_val must be below max_val. Received: min_val={min_val!r}, "
                             f"max_val={max_val!r}")

    def _args(self):
        return {"a": self.min_val, "b": self.max_val}

    def get_config(self):
        return {"min_val": self.min_val, "max_val": self.max_val}


class ReLU6(_Pointwise):
    """x clamped to [0, 6] (``torch.nn.ReLU6``)."""
    _kind = "hardtanh"

    def _args(self):
        return {"a": 0.0, "b": 6.0}


class Hardsigmoid(_Pointwise):
    """0 below -3, 1 above 3, x / 6 + 1/2 between (``torch.nn.Hardsigmoid``)."""
    _kind = "hardsigmoid"


class Hardswish(_Pointwise):
    """``x * hardsigmoid(x)`` (``torch.nn.Hardswish``)."""
    _kind = "hardswish"


class SiLU(_Pointwise):
    """``x * sigmoid(x)`` (``torch.nn.SiLU``, swish)."""
    _kind = "silu"


class GELU(_Pointwise):
    """Gaussian error linear unit (``torch.nn.GELU``).

    Args:
        approximate: 'none' (exact, with erf) or 'tanh'. Default 'none'.
    """

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh'. "
                             f"Received: approximate={approximate!r}")
        self.approximate = approximate

    @property
    def _kind(self):
        return "gelu" if self.approximate == "none" else "gelu_tanh"

    def get_config(self):
        return {"approximate": self.approximate}


class Dropout(Layer):
    """Dropout (``torch.nn.Dropout``): in training, each element is zeroed with
    probability p and the others scaled by 1 / (1 - p); in inference the
    identity (no node, no copy). Masks come from fastcnn's seeded generator
    (:func:`fastcnn.manual_seed`), so two runs with the same seed match.

    Args:
        p: the probability of zeroing, in [0, 1). Default 0.5.
    """

    def __init__(self, p=0.5):
        self.p = as_float(p, "p")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"p must be in [0, 1). Received: p={p!r}")

    def trace(self, x):
        if not self.training or self.p == 0.0:
            return x
        return x.graph.add("dropout", [x], {"p": self.p})

    def get_config(self):
        return {"p": self.p}


class Softmax(Layer):
    """Softmax along ``dim`` (``torch.nn.Softmax``): ``exp(x - max) / sum``,
    numerically stable; the lines along ``dim`` sum to 1.

    Args:
        dim: the axis to normalize over (required; negative counts from the end).

    Input shape:
        any, with at least ``dim`` + 1 dimensions.

    Output shape:
        same as the input.

    Example:
        >>> fastcnn.Softmax(dim=1)(np.zeros((2, 4), np.float32))
        array([[0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25]], dtype=float32)
    """
    _log = False

    def __init__(self, dim):
        self.dim = as_int(dim, "dim")

    def trace(self, x):
        return x.graph.add("softmax", [x], {"dim": self.dim, "log": self._log})

    def get_config(self):
        return {"dim": self.dim}


class LogSoftmax(Softmax):
    """Log-softmax along ``dim`` (``torch.nn.LogSoftmax``): ``(x - max) -
    log(sum(exp(x - max)))``, numerically stable.

    Args:
        dim: the axis to normalize over (required; negative counts from the end).

    Input shape:
        any, with at least ``dim`` + 1 dimensions.

    Output shape:
        same as the input.

    Example:
        >>> fastcnn.LogSoftmax(dim=-1)(np.zeros((1, 2), np.float32))
        array([[-0.6931472, -0.6931472]], dtype=float32)
    """
    _log = True


class Identity(Layer):
    """Returns its input (``torch.nn.Identity``): no node, no copy in a model."""

    def trace(self, x):
        return x


class MaxPool2d(Layer):
    """2-d max pooling over NCHW images (padding is -infinity), as ``torch.nn.MaxPool2d``.

    Args:
        kernel_size: int or pair, the window.
        stride: int or pair; default ``kernel_size``.
        padding: int or pair, implicit padding on each side (at most half
            the window). Default 0.
        dilation: int or pair, the spacing of the window's taps. Default 1.
        ceil_mode: round the output size up instead of down (a last, clipped
            window that starts inside the image or its left padding).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - dh (R - 1) - 1) / sh + 1 rounded
        down (up with ceil_mode) and Q likewise.

    Example:
        >>> fastcnn.MaxPool2d(2)(np.zeros((8, 6, 28, 28), np.float32)).shape
        (8, 6, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = None if stride is None else _pair_config(stride, "stride")
        self.padding = _pair_config(padding, "padding", nonnegative_pair)
        self.dilation = _pair_config(dilation, "dilation")
        self.ceil_mode = _bool_config(ceil_mode, "ceil_mode")

    def trace(self, x):
        return x.graph.add("max_pool2d", [x], self.get_config())

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "ceil_mode": self.ceil_mode}


class AvgPool2d(Layer):
    """2-d average pooling over NCHW images (zero padding), as ``torch.nn.AvgPool2d``.

    Args:
        kernel_size: int or pair, the window.
        stride: int or pair; default ``kernel_size``.
        padding: int or pair, zero padding on each side. Default 0.
        ceil_mode: round the output size up instead of down (a last, clipped
            window that starts inside the image or its left padding).
        count_include_pad: whether the padded zeros count in the divisor
            (PyTorch's default, True; a ceil-mode window is clipped to the
            padded image).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - R) / sh + 1 rounded down (up with
        ceil_mode) and Q likewise.

    Example:
        >>> fastcnn.AvgPool2d(2)(np.zeros((8, 6, 28, 28), np.float32)).shape
        (8, 6, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = None if stride is None else _pair_config(stride, "stride")
        self.padding = _pair_config(padding, "padding", nonnegative_pair)
        self.ceil_mode = _bool_config(ceil_mode, "ceil_mode")
        self.count_include_pad = _bool_config(count_include_pad, "count_include_pad")

    def trace(self, x):
        return x.graph.add("avg_pool2d", [x], self.get_config())

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "ceil_mode": self.ceil_mode,
                "count_include_pad": self.count_include_pad}


class _AdaptivePool2d(Layer):
    """Pooling to a fixed output size, with torch's windows: rows
    [floor(i H / oh), ceil((i + 1) H / oh)), columns likewise. When the output
    size divides the input's, these are the windows of a plain pooling with
    window = stride = input / output, and it is traced as that (the fast
    kernels); otherwise as the adaptive op."""
    _op = ""

    def __init__(self, output_size):
        self.output_size = _pair_config(output_size, "output_size")

    def trace(self, x):
        if len(x.shape) != 4:
            raise ValueError(f"{type(self).__name__} expects input of shape (N, C, H, W). "
                             f"Received: x.shape={x.shape}")
        (oh, ow), (h, w) = as_pair(self.output_size, "output_size"), x.shape[2:]
        if h % oh or w % ow:
            return x.graph.add("adaptive_" + self._op, [x], {"output_size": (oh, ow)})
        window = (h // oh, w // ow)
        attrs = {"kernel_size": window, "stride": window, "padding": 0}
        if self._op == "avg_pool2d":
            attrs["count_include_pad"] = True
        return x.graph.add(self._op, [x], attrs)

    def get_config(self):
        return {"output_size": self.output_size}


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Average pooling to ``output_size`` (``torch.nn.AdaptiveAvgPool2d``): output
    (i, j) is the mean of rows [floor(i H / oh), ceil((i + 1) H / oh)) and the
    columns likewise, for any output size.

    Args:
        output_size: int or pair (oh, ow).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, oh, ow).

    Example:
        >>> fastcnn.AdaptiveAvgPool2d((2, 3))(np.zeros((8, 4, 7, 7), np.float32)).shape
        (8, 4, 2, 3)
    """
    _op = "avg_pool2d"


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Max pooling to ``output_size`` (``torch.nn.AdaptiveMaxPool2d``), with the
    windows of AdaptiveAvgPool2d, for any output size."""
    _op = "max_pool2d"


class GlobalAvgPool2d(AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d(1)``: the mean of each channel's plane, (N, C, 1, 1)."""

    def __init__(self):
        super().__init__(1)

    def get_config(self):
        return {}


class Flatten(Layer):
    """Flattens dimensions ``start_dim`` to ``end_dim`` into one (a view, no copy).

    Args:
        start_dim: first dimension to flatten. Default 1 (keep the batch).
        end_dim: last dimension to flatten. Default -1.

    Input shape:
        (N, C, H, W) (any, with at least ``start_dim + 1`` dimensions).

    Output shape:
        (N, C * H * W) with the defaults.

    Example:
        >>> fastcnn.Flatten()(np.zeros((8, 16, 5, 5), np.float32)).shape
        (8, 400)
    """

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim = as_int(start_dim, "start_dim")
        self.end_dim = as_int(end_dim, "end_dim")

    def trace(self, x):
        return x.graph.add("flatten", [x], self.get_config())

    def get_config(self):
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}


class BatchNorm2d(Layer):
    """Batch normalization over the channels of NCHW images (``torch.nn.BatchNorm2d``).

    In training, each channel is normalized with the batch's mean and
    (biased) variance, then scaled and shifted; the running statistics are
    updated, ``r = (1 - momentum) r + momentum batch`` with the variance
    unbiased, and ``num_batches_tracked`` counted. In inference the running
    statistics are used. Backward is native.

    Args:
        num_features: channels, C.
        eps: added to the variance. Default 1e-5.
        momentum: update factor of the running statistics; None for their
            cumulative average. Default 0.1.
        affine: learn a scale (weight, init 1) and shift (bias, init 0). Default True.
        track_running_stats: keep running statistics (else the batch's are
            used in inference too). Default True.

    Attributes:
        weight, bias: Parameters (C,), or None.
        running_mean, running_var: float32 arrays (C,) (init 0 and 1), or None.
        num_batches_tracked: int64 array of shape (), or None.

    Input shape:
        (N, C, H, W).

    Output shape:
        same as the input.

    Example:
        >>> bn = fastcnn.BatchNorm2d(16)
        >>> bn(np.random.rand(8, 16, 5, 5)).shape
        (8, 16, 5, 5)
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        self.num_features = positive_int(num_features, "num_features")
        self.eps = _positive_float(eps, "eps")
        self.momentum = None if momentum is None else _unit_float(momentum, "momentum")
        c = self.num_features
        self.weight = Parameter(np.ones(c, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(c, np.float32)) if affine else None
        track = bool(track_running_stats)
        self.running_mean = np.zeros(c, np.float32) if track else None
        self.running_var = np.ones(c, np.float32) if track else None
        self.num_batches_tracked = np.zeros((), np.int64) if track else None

    @property
    def _params(self):
        return {"weight": self.weight, "bias": self.bias}

    @property
    def _buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var,
                "num_batches_tracked": self.num_batches_tracked}

    def reset_parameters(self, rng=None):
        if self.weight is not None:
            self.weight.data[...] = 1.0
            self.bias.data[...] = 0.0
        if self.running_mean is not None:
            self.running_mean[...] = 0.0
            self.running_var[...] = 1.0
            self.num_batches_tracked[...] = 0

    def trace(self, x):
        return x.graph.add("batch_norm2d", [x],
                           {"eps": self.eps, "momentum": self.momentum,
                            "num_features": self.num_features},
                           dict(self._params, **self._buffers))

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.weight is not None,
                "track_running_stats": self.running_mean is not None}


def _positive_float(value, name):
    v = as_float(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")
    return v


def _unit_float(value, name):
    v = as_float(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (or None). Received: {name}={value!r}")
    return v
