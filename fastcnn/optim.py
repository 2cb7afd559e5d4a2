"""Optimizers (SGD, Adam, AdamW) with torch.optim's semantics, and
learning-rate schedules with torch.optim.lr_scheduler's.

An optimizer keeps all its parameters in one contiguous buffer (each
``Parameter.data`` and ``.grad`` becomes a view of it), so that a step is a
single call of the fused native update (:func:`fastcnn.functional.sgd_update`,
:func:`fastcnn.functional.adam_update`) over every parameter at once, and
``zero_grad`` a single fill on fastcnn's threads. If a parameter's ``data``
or ``grad`` is replaced by another array, the optimizer notices and re-packs
(state is kept).
"""
import bisect
import math

import numpy as np

from . import functional as F
from ._native import zero_grad_
from ._checks import as_float, as_int, nonnegative_float, positive_int
from .layers import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer", "LRScheduler", "StepLR",
           "MultiStepLR", "ExponentialLR", "CosineAnnealingLR"]


class Optimizer:
    """Base class: holds the parameters (packed into one buffer) and ``lr``.

    Args:
        params: iterable of :class:`fastcnn.Parameter` (e.g. ``model.parameters()``).
        lr: learning rate (a float >= 0); schedulers change ``optimizer.lr``.
    """

    def __init__(self, params, lr):
        if isinstance(params, Parameter):
            raise TypeError("params must be an iterable of Parameters (e.g. model.parameters()). "
                            "Received: a single Parameter")
        unique, seen = [], set()
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"params must contain fastcnn Parameters. "
                                f"Received: an element of type {type(p).__name__}")
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        if not unique:
            raise ValueError("params must not be empty. Received: an empty parameter list")
        self.params = unique
        self.lr = nonnegative_float(lr, "lr")
        self.steps = 0
        self._data = self._grad = None
        self._pack()

    def _pack(self):
        sizes = [p.data.size for p in self.params]
        total = int(sum(sizes))
        data = np.empty(total, np.float32)
        grad = np.empty(total, np.float32)
        offset = 0
        for p, n in zip(self.params, sizes):
            shape = np.shape(p.data)
            if np.shape(p.grad) != shape:
                raise ValueError(f"a parameter's grad must have the shape of its data. "
                                 f"Received: data.shape={shape}, grad.shape={np.shape(p.grad)}")
            data[offset:offset + n] = np.ravel(p.data)
            grad[offset:offset + n] = np.ravel(p.grad)
            p.data = data[offset:offset + n].reshape(shape)
            p.grad = grad[offset:offset + n].reshape(shape)
            offset += n
        self._data, self._grad = data, grad
        self._views = [(p.data, p.grad) for p in self.params]

    def _flat(self):
        """The packed (data, grad) buffers, re-packing if a parameter was rebound."""
        for p, (d, g) in zip(self.params, self._views):
            if p.data is not d or p.grad is not g:
                self._pack()
                break
        return self._data, self._grad

    def zero_grad(self):
        """Set every parameter's gradient to zero."""
        zero_grad_(self._flat()[1])

    def step(self):
        """Update every parameter from its ``.grad``."""
        data, grad = self._flat()
        self.steps += 1
        try:
            self._update(data, grad)        # one native call: applied whole or not at all
        except BaseException:               # e.g. a KeyboardInterrupt before it started
            self.steps -= 1
            raise

    def _update(self, data, grad):
        raise NotImplementedError

    # state ------------------------------------------------------------------
    def _state_arrays(self):
        return {}

    def state_dict(self):
        """Hyper-parameters, step count and state buffers (copies), for resuming."""
        state = {"lr": self.lr, "steps": self.steps}
        state.update({k: v.copy() for k, v in self._state_arrays().items()})
        return state

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned (for the same parameters)."""
        self.lr = nonnegative_float(state["lr"], "lr")
        self.steps = as_int(state["steps"], "steps")
        for key, buf in self._state_arrays().items():
            value = np.asarray(state[key], np.float32)
            if value.shape != buf.shape:
                raise ValueError(f"optimizer state {key!r} must have shape {buf.shape}. "
                                 f"Received: shape {value.shape}")
            buf[...] = value


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (``torch.optim.SGD``).

    Args:
        params: iterable of Parameters.
        lr: learning rate.
        momentum: momentum factor (0 disables it). Default 0.
        dampening: dampening of the momentum. Default 0.
        weight_decay: L2 penalty added to the gradient. Default 0.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).

    Example:
        >>> opt = fastcnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> opt.zero_grad(); loss = loss_fn(model(x), y)
        >>> model.backward(loss_fn.backward()); opt.step()
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.momentum = nonnegative_float(momentum, "momentum")
        self.dampening = as_float(dampening, "dampening")
        self.weight_decay = nonnegative_float(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"Nesterov momentum needs momentum > 0 and dampening = 0. "
                             f"Received: momentum={momentum!r}, dampening={dampening!r}")
        super().__init__(params, lr)
        self._buf = np.zeros_like(self._data) if self.momentum else None

    def _update(self, data, grad):
        F.sgd_update(data, grad, self._buf, lr=self.lr, momentum=self.momentum,
                     dampening=self.dampening, weight_decay=self.weight_decay,
                     nesterov=self.nesterov, first_step=self.steps == 1)

    def _state_arrays(self):
        return {} if self._buf is None else {"momentum_buffer": self._buf}

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov})")


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``); with ``decoupled=True`` (or the class
    :class:`AdamW`) the weight decay is decoupled, as in ``torch.optim.AdamW``.

    Args:
        params: iterable of Parameters.
        lr: learning rate. Default 1e-3.
        betas: decay rates of the first and second moment estimates.
            Default (0.9, 0.999).
        eps: added to the denominator. Default 1e-8.
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW). Default 0.

    Example:
        >>> opt = fastcnn.Adam(model.parameters(), lr=1e-3)
    """
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of floats. Received: betas={betas!r}")
        b1, b2 = as_float(betas[0], "betas"), as_float(betas[1], "betas")
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1). Received: betas={betas!r}")
        self.betas = (b1, b2)
        self.eps = nonnegative_float(eps, "eps")
        self.weight_decay = nonnegative_float(weight_decay, "weight_decay")
        super().__init__(params, lr)
        self._exp_avg = np.zeros_like(self._data)
        self._exp_avg_sq = np.zeros_like(self._data)

    def _update(self, data, grad):
        F.adam_update(data, grad, self._exp_avg, self._exp_avg_sq, step=self.steps, lr=self.lr,
                      betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                      decoupled=self.decoupled)

    def _state_arrays(self):
        return {"exp_avg": self._exp_avg, "exp_avg_sq": self._exp_avg_sq}

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``); same arguments
    as :class:`Adam`, but ``weight_decay`` defaults to 1e-2 as in torch.

    Example:
        >>> opt = fastcnn.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    """
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer, params, lr=None):
    """An Optimizer from an instance (returned as is) or a name ('sgd', 'adam',
    'adamw') built over ``params`` (lr: given, else 1e-3 for Adam(W), 0.01 for SGD)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _OPTIMIZERS:
        cls = _OPTIMIZERS[optimizer.lower()]
        if lr is None:
            lr = 0.01 if cls is SGD else 1e-3
        return cls(params, lr=lr)
    raise ValueError(f"optimizer must be a fastcnn Optimizer or one of {sorted(_OPTIMIZERS)}. "
                     f"Received: optimizer={optimizer!r}")


# learning-rate schedules -------------------------------------------------------

class LRScheduler:
    """Base class of learning-rate schedules (torch.optim.lr_scheduler semantics).

    Building a scheduler records the optimizer's lr as the base lr and sets
    epoch 0; each ``step()`` (call it once per epoch, after the epoch's
    optimizer steps; ``fit`` does this for you) moves to the next epoch and
    sets ``optimizer.lr``.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastcnn Optimizer. "
                            f"Received: {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.get_lr(0)

    def get_lr(self, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr(self.last_epoch)

    def get_last_lr(self):
        """The learning rate set by the last step (a float)."""
        return self.optimizer.lr

    def state_dict(self):
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.get_lr(self.last_epoch)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs (``torch...StepLR``).

    Args:
        optimizer: the Optimizer.
        step_size: period of the decay, in epochs (>= 1).
        gamma: factor. Default 0.1.

    Example:
        >>> sched = fastcnn.optim.StepLR(opt, step_size=10, gamma=0.5)
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = nonnegative_float(gamma, "gamma")
        super().__init__(optimizer)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each epoch in ``milestones`` (``torch...MultiStepLR``).

    Example:
        >>> sched = fastcnn.optim.MultiStepLR(opt, milestones=[10, 15], gamma=0.1)
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones = sorted(as_int(m, "milestones") for m in milestones)
        self.gamma = nonnegative_float(gamma, "gamma")
        super().__init__(optimizer)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch (``torch...ExponentialLR``).

    Example:
        >>> sched = fastcnn.optim.ExponentialLR(opt, gamma=0.9)
    """

    def __init__(self, optimizer, gamma):
        self.gamma = nonnegative_float(gamma, "gamma")
        super().__init__(optimizer)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base lr to ``eta_min`` over ``T_max`` epochs
    (``torch...CosineAnnealingLR``, closed form):
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Example:
        >>> sched = fastcnn.optim.CosineAnnealingLR(opt, T_max=20)
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = positive_int(T_max, "T_max")
        self.eta_min = nonnegative_float(eta_min, "eta_min")
        super().__init__(optimizer)

    def get_lr(self, epoch):
        cos = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos
