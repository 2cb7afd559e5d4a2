"""fastcnn: convolutional networks on the CPU, with native C/OpenMP kernels."""
from ._config import get_num_threads, set_num_threads
from . import functional

__version__ = "0.1.0"

__all__ = ["functional", "get_num_threads", "set_num_threads", "__version__"]
