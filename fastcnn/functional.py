"""Stateless numpy-in, numpy-out operations, with the meaning of torch.nn.functional.

Inputs are NCHW; any real dtype or memory order is converted once to
C-contiguous float32. Each forward function has a ``*_backward`` twin that
returns the gradients of its inputs (and parameters).
"""
from ._native import add, add_backward, dropout, dropout_backward
from ._native import mul, mul_backward, cat, cat_backward
from ._native import batch_norm2d, batch_norm2d_backward, batch_norm2d_fold
from ._native import relu, relu_backward, sigmoid, sigmoid_backward
from ._native import (gelu, gelu_backward, hardsigmoid, hardsigmoid_backward, hardswish,
                      hardswish_backward, hardtanh, hardtanh_backward, leaky_relu,
                      leaky_relu_backward, relu6, relu6_backward, silu, silu_backward, tanh,
                      tanh_backward)
from ._native import adam_update, sgd_update
from ._native import linear, linear_backward
from ._native import cross_entropy, cross_entropy_backward, cross_entropy_with_grad
from ._native import conv2d, conv2d_backward
from ._native import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "conv2d", "conv2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "linear", "linear_backward",
    "add", "add_backward", "dropout", "dropout_backward", "batch_norm2d", "batch_norm2d_backward",
    "mul", "mul_backward", "cat", "cat_backward", "batch_norm2d_fold",
    "relu", "relu_backward", "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward", "leaky_relu", "leaky_relu_backward", "hardtanh",
    "hardtanh_backward", "relu6", "relu6_backward", "hardsigmoid", "hardsigmoid_backward",
    "hardswish", "hardswish_backward", "silu", "silu_backward", "gelu", "gelu_backward",
    "cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad",
    "sgd_update", "adam_update",
]
