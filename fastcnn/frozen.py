"""fastcnn.freeze: an inference-only snapshot of a model, for deployment.

A model's parameters are numpy arrays that may change between any two calls
(an optimizer step, ``p.data[...] = v``), so each inference call derives
anew what the kernels need from them: a batch norm folded into the
convolution before it, weight blocks transposed, Winograd filters
transformed. A frozen copy's weights cannot change, so it derives them once,
on its first call, and keeps them for every input shape (as an ONNX Runtime
session or ``torch.jit.freeze`` does).
"""
import copy

import numpy as np

from .layers import Layer, Parameter

__all__ = ["freeze"]


def freeze(model):
    """An inference-only copy of ``model`` whose weights never change.

    The copy holds its own read-only copies of the parameters and buffers
    (batch norm's running statistics), taken now: later changes to ``model``
    do not reach it, and writing into its arrays raises. Its compiled graphs
    fold every batch norm into the convolution before it once and keep each
    convolution's transposed or transformed weights across calls, so
    inference costs less, most at small batches. It runs ``model(x)``,
    ``predict``, ``evaluate`` and ``summary`` like the original (outputs
    equal within float32 rounding: the folding and the kernels' summation
    order may differ), and saves like it; in training mode (``train()``,
    ``fit``) it raises ``ValueError``.

    Args:
        model: a fastcnn layer or model (``Sequential``, ``Module``, a model
            from ``fastcnn.models`` or ``fastcnn.onnx.load``).

    Returns:
        The frozen copy, in eval mode.

    Example:
        >>> service_model = fastcnn.freeze(model)
        >>> labels = service_model.predict(images).argmax(axis=1)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"freeze() takes a fastcnn layer or model. Received: "
                        f"{type(model).__name__}")
    twin = copy.deepcopy(model)
    if hasattr(twin, "optimizer"):
        twin.optimizer = None           # it would write into the frozen weights
    twin.eval()
    seen = set()
    for layer in twin.modules():
        for _, p in layer.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                _freeze_parameter(p)
        for _, b in layer.named_buffers():
            b.flags.writeable = False
    twin.__dict__["_frozen"] = True      # its runner compiles frozen graphs
    twin.__dict__.pop("_runner_state", None)
    return twin


def _freeze_parameter(p):
    """Make p (in place: every layer holding it sees the change) a
    _FrozenParameter: its array read-only (the copy's own: deepcopy made it),
    its gradient a read-only zero that takes no memory."""
    data = np.ascontiguousarray(p.data, dtype=np.float32)
    data.flags.writeable = False
    p.data = data
    p.grad = np.broadcast_to(np.float32(0.0), data.shape)
    p.__class__ = _FrozenParameter


class _FrozenParameter(Parameter):
    """A parameter whose array is read-only and cannot be replaced (the
    frozen graph keeps what it derived from that very array)."""
    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"a frozen model's parameters cannot change (fastcnn.freeze); "
                             f"change the original model and freeze it again. Received: "
                             f"{name} = {type(value).__name__}")

    def zero_grad(self):
        """Nothing to clear: a frozen model has no gradients."""

    def __deepcopy__(self, memo):
        return self                     # immutable: copies share it

    def __reduce__(self):
        return _frozen_parameter, (self.data,)


def _frozen_parameter(data):
    """Unpickle a _FrozenParameter."""
    p = Parameter(data)
    _freeze_parameter(p)
    return p
