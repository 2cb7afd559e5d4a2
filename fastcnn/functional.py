"""Stateless numpy-in, numpy-out operations, with the meaning of torch.nn.functional.

Inputs are NCHW; any real dtype or memory order is converted once to
C-contiguous float32. Each forward function has a ``*_backward`` twin that
returns the gradients of its inputs (and parameters).
"""
from ._activation import relu, relu_backward, sigmoid, sigmoid_backward
from ._pool2d import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
