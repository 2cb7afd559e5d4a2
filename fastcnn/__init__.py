"""fastcnn: convolutional networks on the CPU, with native C/OpenMP kernels."""
from ._config import get_num_threads, set_num_threads, sleeping_idle_threads

with sleeping_idle_threads():  # OpenMP reads its settings when the first kernel module loads
    from . import functional
from . import datasets, losses, models, optim
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d,
                     Dropout, Flatten, GELU, GlobalAvgPool2d, Hardsigmoid, Hardswish, Hardtanh,
                     Identity, Layer, LeakyReLU, Linear, MaxPool2d, Parameter, ReLU, ReLU6, SiLU,
                     Sigmoid, Tanh, manual_seed)
from .layers import LogSoftmax, Softmax
from .losses import CrossEntropyLoss, MSELoss
from .module import Module
from .graph import cat
from .saving import load
from .frozen import freeze
from .profiler import Profile, profile
from .sequential import Sequential
from .training import History
from .optim import SGD, Adam, AdamW
from ._native import empty_cache

from . import _threadpoolctl
from ._threadpoolctl import register_threadpoolctl

__version__ = "0.1.0"

_threadpoolctl.install()   # threadpoolctl limits fastcnn's threads, once both are imported

__all__ = ["functional", "datasets", "losses", "models", "optim", "get_num_threads", "set_num_threads",
           "manual_seed", "Parameter", "Layer", "Conv2d", "Linear", "ReLU", "Sigmoid",
           "MaxPool2d", "AvgPool2d", "BatchNorm2d", "Flatten", "Module", "Sequential",
           "Tanh", "LeakyReLU", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "SiLU", "GELU",
           "Identity", "Dropout", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "GlobalAvgPool2d",
           "History", "load", "freeze", "cat", "CrossEntropyLoss", "MSELoss", "SGD", "Adam", "AdamW",
           "register_threadpoolctl", "empty_cache", "profile", "Profile", "__version__",
           "Softmax", "LogSoftmax"]
