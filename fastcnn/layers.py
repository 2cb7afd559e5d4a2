"""Layers: objects holding parameters, with a forward and a backward pass.

A layer is called on a batch, ``y = layer(x)``; the forward pass caches what
the backward pass needs, and ``grad_x = layer.backward(grad_y)`` returns the
gradient of the loss with respect to the input while accumulating (``+=``)
the gradients of the parameters into their ``.grad``. The work is done by
the native kernels of :mod:`fastcnn.functional`.

Initialisation is PyTorch's default: weights and biases uniform in
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (Kaiming-uniform with a = sqrt(5)),
drawn from fastcnn's global generator (seed it with
:func:`fastcnn.manual_seed`) or from the ``rng`` given to
``reset_parameters``; :class:`fastcnn.Sequential` takes a ``seed`` too.
"""
import inspect
import math

import numpy as np

from . import functional as F
from ._checks import as_float32, as_int, as_pair, nonnegative_pair, positive_int, positive_pair

__all__ = ["manual_seed", "Parameter", "Layer", "Conv2d", "Linear", "ReLU", "Sigmoid", "MaxPool2d",
           "AvgPool2d", "Flatten"]


_generator = np.random.default_rng()


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


class Layer:
    """Base class of every layer.

    Subclasses implement ``forward`` and ``backward``, list their parameters
    in ``_params`` (name -> Parameter, in PyTorch's order) and their
    constructor arguments in ``get_config()`` (used by ``save``/``load``).
    """
    training = True

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_y, *, need_grad_input=True):
        raise NotImplementedError

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

    def zero_grad(self):
        """Clear the gradient of every parameter."""
        for p in self.parameters():
            p.zero_grad()

    def reset_parameters(self, rng=None):
        """Re-initialise the parameters (PyTorch's default) from ``rng``, a
        ``numpy.random.Generator`` (default: fastcnn's global generator)."""

    # modes ----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (the default): caches what ``backward`` needs."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: ``backward`` is not available, some caching is skipped."""
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

    def _cached(self, value, what="backward"):
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.{what}() needs a forward pass in "
                               f"training mode first (call layer.train() and layer(x))")
        return value


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


class Conv2d(Layer):
    """2-d convolution (cross-correlation, as in PyTorch) over NCHW images.

    Args:
        in_channels: channels of the input, C.
        out_channels: channels of the output (number of filters), K.
        kernel_size: int or pair (R, S), the window.
        stride: int or pair, default 1.
        padding: int or pair (zero padding on each side), ``'valid'`` (0) or
            ``'same'`` (output as large as the input; stride 1 only). Default 0.
        bias: whether to add a learned bias per output channel. Default True.

    Attributes:
        weight: Parameter of shape (K, C, R, S).
        bias: Parameter of shape (K,), or None.

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, K, P, Q) with P = (H + 2 ph - R) // sh + 1 and Q likewise.

    Example:
        >>> conv = fastcnn.Conv2d(1, 6, 5, padding=2)
        >>> conv(np.zeros((8, 1, 28, 28), np.float32)).shape
        (8, 6, 28, 28)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = _pair_config(stride, "stride")
        self.padding = _padding_config(padding)
        if self.padding == "same" and positive_pair(stride, "stride") != (1, 1):
            raise ValueError(f"padding='same' needs stride 1. Received: stride={stride!r}")
        r, s = as_pair(self.kernel_size, "kernel_size")
        self.weight = Parameter(np.zeros((self.out_channels, self.in_channels, r, s), np.float32))
        self.bias = Parameter(np.zeros(self.out_channels, np.float32)) if bias else None
        self._x = None
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

    def forward(self, x):
        x = as_float32(x, "x")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects input of shape (N, {self.in_channels}, H, W). "
                             f"Received: x.shape={x.shape}")
        self._x = x if self.training else None
        bias = self.bias.data if self.bias is not None else None
        return F.conv2d(x, self.weight.data, bias, self.stride, self.padding)

    def backward(self, grad_y, *, need_grad_input=True):
        x = self._cached(self._x)
        has_bias = self.bias is not None
        grad_x, _, _ = F.conv2d_backward(
            grad_y, x, self.weight.data, self.stride, self.padding, has_bias=has_bias,
            need_grad_input=need_grad_input, grad_weight=self.weight.grad,
            grad_bias=self.bias.grad if has_bias else None)
        return grad_x

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "bias": self.bias is not None}


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
        self._x = None
        self.reset_parameters()

    @property
    def _params(self):
        return {"weight": self.weight, "bias": self.bias}

    def reset_parameters(self, rng=None):
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight.data[...] = _uniform(rng, bound, self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = _uniform(rng, bound, self.bias.shape)

    def forward(self, x):
        x = as_float32(x, "x")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects input of shape (N, {self.in_features}). "
                             f"Received: x.shape={x.shape}")
        self._x = x if self.training else None
        bias = self.bias.data if self.bias is not None else None
        return F.linear(x, self.weight.data, bias)

    def backward(self, grad_y, *, need_grad_input=True):
        x = self._cached(self._x)
        has_bias = self.bias is not None
        grad_x, _, _ = F.linear_backward(
            grad_y, x, self.weight.data, has_bias=has_bias, need_grad_input=need_grad_input,
            grad_weight=self.weight.grad, grad_bias=self.bias.grad if has_bias else None)
        return grad_x

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}


class _Activation(Layer):
    """An element-wise activation whose gradient comes from its output."""

    def __init__(self):
        self._y = None

    def forward(self, x):
        y = self._function(x)
        self._y = y if self.training else None
        return y

    def backward(self, grad_y, *, need_grad_input=True):
        y = self._cached(self._y)
        return self._gradient(grad_y, y) if need_grad_input else None


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

    _function = staticmethod(F.relu)
    _gradient = staticmethod(F.relu_backward)


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

    _function = staticmethod(F.sigmoid)
    _gradient = staticmethod(F.sigmoid_backward)


class MaxPool2d(Layer):
    """2-d max pooling over NCHW images (floor mode; padding is -infinity).

    Args:
        kernel_size: int or pair, the window.
        stride: int or pair; default ``kernel_size``.
        padding: int or pair, implicit padding on each side (at most half
            the window). Default 0.

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - R) // sh + 1 and Q likewise.

    Example:
        >>> fastcnn.MaxPool2d(2)(np.zeros((8, 6, 28, 28), np.float32)).shape
        (8, 6, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = None if stride is None else _pair_config(stride, "stride")
        self.padding = _pair_config(padding, "padding", nonnegative_pair)
        self._indices = None
        self._input_shape = None

    def forward(self, x):
        if not self.training:
            self._indices = None
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        y, self._indices = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                        return_indices=True)
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_y, *, need_grad_input=True):
        indices = self._cached(self._indices)
        if not need_grad_input:
            return None
        return F.max_pool2d_backward(grad_y, indices, self._input_shape)

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


class AvgPool2d(Layer):
    """2-d average pooling over NCHW images (floor mode; zero padding).

    Args:
        kernel_size: int or pair, the window.
        stride: int or pair; default ``kernel_size``.
        padding: int or pair, zero padding on each side. Default 0.
        count_include_pad: whether the padded zeros count in the divisor
            (PyTorch's default, True).

    Input shape:
        (N, C, H, W).

    Output shape:
        (N, C, P, Q) with P = (H + 2 ph - R) // sh + 1 and Q likewise.

    Example:
        >>> fastcnn.AvgPool2d(2)(np.zeros((8, 6, 28, 28), np.float32)).shape
        (8, 6, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        self.kernel_size = _pair_config(kernel_size, "kernel_size")
        self.stride = None if stride is None else _pair_config(stride, "stride")
        self.padding = _pair_config(padding, "padding", nonnegative_pair)
        self.count_include_pad = bool(count_include_pad)
        self._input_shape = None

    def forward(self, x):
        self._input_shape = np.shape(x) if self.training else None
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)

    def backward(self, grad_y, *, need_grad_input=True):
        shape = self._cached(self._input_shape)
        if not need_grad_input:
            return None
        return F.avg_pool2d_backward(grad_y, shape, self.kernel_size, self.stride,
                                     self.padding, self.count_include_pad)

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "count_include_pad": self.count_include_pad}


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
        self._input_shape = None

    def forward(self, x):
        x = np.asarray(x)
        nd = x.ndim
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < nd:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) "
                             f"does not fit the input. Received: x.shape={x.shape}")
        self._input_shape = x.shape
        merged = math.prod(x.shape[start:end + 1])
        return x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:])

    def backward(self, grad_y, *, need_grad_input=True):
        shape = self._cached(self._input_shape)
        return np.reshape(grad_y, shape) if need_grad_input else None

    def get_config(self):
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}


LAYERS = {cls.__name__: cls for cls in (Conv2d, Linear, ReLU, Sigmoid, MaxPool2d,
                                        AvgPool2d, Flatten)}
