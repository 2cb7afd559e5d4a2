"""Losses: ``loss = loss_fn(output, target)`` returns a float, and
``loss_fn.backward()`` the gradient of that loss with respect to ``output``."""
import numpy as np

from . import functional as F
from ._checks import as_float32, check_shape

__all__ = ["Loss", "CrossEntropyLoss", "MSELoss", "get_loss"]


class Loss:
    """Base class: ``__call__(output, target) -> float``, then ``backward()``."""
    # True for losses of class labels against per-class scores (N, L): fit and
    # evaluate then also report accuracy, the fraction of rows whose argmax is
    # the label.
    classification = False

    def __init__(self):
        self._grad = None

    def __call__(self, output, target):
        return self.forward(output, target)

    def backward(self):
        """The gradient of the last computed loss with respect to the output."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a loss computed "
                               f"first: call loss_fn(output, target)")
        return self._grad

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy of logits against integer class labels, mean over
    the batch (``torch.nn.CrossEntropyLoss()``), computed stably by the native
    kernel; the forward call computes the gradient too.

    Input shape:
        output: logits (N, L); target: int labels (N,) in [0, L).

    Returns:
        float, the mean loss.

    Example:
        >>> loss_fn = fastcnn.CrossEntropyLoss()
        >>> loss = loss_fn(np.zeros((2, 10), np.float32), np.array([3, 7]))
        >>> round(loss, 4)              # log(10)
        2.3026
        >>> loss_fn.backward().shape
        (2, 10)
    """
    classification = True

    def forward(self, output, target):
        loss, self._grad = F.cross_entropy_with_grad(output, target)
        return float(loss)


class MSELoss(Loss):
    """Mean squared error over every element (``torch.nn.MSELoss()``).

    Input shape:
        output and target of the same shape (any).

    Returns:
        float, ``mean((output - target) ** 2)``.

    Example:
        >>> loss_fn = fastcnn.MSELoss()
        >>> loss_fn(np.array([[1.0, 2.0]]), np.array([[1.0, 4.0]]))
        2.0
    """

    def forward(self, output, target):
        out = as_float32(output, "output")
        tgt = as_float32(target, "target")
        check_shape(tgt, out.shape, "target")
        diff = out - tgt
        loss = float(np.dot(diff.ravel().astype(np.float64), diff.ravel()) / diff.size)
        diff *= np.float32(2.0 / diff.size)
        self._grad = diff
        return loss


_LOSSES = {"cross_entropy": CrossEntropyLoss, "crossentropy": CrossEntropyLoss,
           "categorical_crossentropy": CrossEntropyLoss, "mse": MSELoss}


def get_loss(loss):
    """A Loss from an instance (returned as is) or a name: 'cross_entropy', 'mse'."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _LOSSES:
        return _LOSSES[loss.lower()]()
    raise ValueError(f"loss must be a fastcnn Loss or one of {sorted(set(_LOSSES))}. "
                     f"Received: loss={loss!r}")
