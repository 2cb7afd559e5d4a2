"""Module: models written as Python code, in the manner of torch.nn.Module.

A subclass sets its layers (and any other Modules, and Parameters) as
attributes in ``__init__`` and writes ``forward(x)`` with them, e.g. a
residual block ``return self.relu(self.conv2(self.relu(self.conv1(x))) + x)``.
That ``forward`` runs once per input shape and mode on a symbolic tensor
(tracing, as torch.fx and jax.jit do): each layer called on it adds its op
to a graph, ``a + b`` adds a sum; the graph is then compiled and run natively,
like a Sequential. Parameters are named by attribute path, as in PyTorch
(``layer1.0.conv1.weight``), so state dicts move between the two.

Tracing sees operations on tensors, not Python decisions: code whose control
flow depends on the data (``if x.max() > 0``) cannot be traced, and says so.
"""
import numpy as np

from .graph import Value
from .layers import Layer, Parameter
from .saving import StateDict
from .training import Training

__all__ = ["Module"]


class Module(Layer, Training, StateDict):
    """Base class of models written as Python code (``torch.nn.Module``).

    Subclasses call ``super().__init__()``, assign layers, Modules and
    Parameters as attributes, and define ``forward(x)`` on them. The model
    then has everything a Sequential has: ``model(x)``, ``backward``,
    ``fit`` / ``evaluate`` / ``predict``, ``parameters``, ``state_dict`` /
    ``load_state_dict`` with PyTorch's names, ``train`` / ``eval``.

    Example:
        >>> class Block(fastcnn.Module):
        ...     def __init__(self, c):
        ...         super().__init__()
        ...         self.conv1 = fastcnn.Conv2d(c, c, 3, padding=1)
        ...         self.relu = fastcnn.ReLU()
        ...         self.conv2 = fastcnn.Conv2d(c, c, 3, padding=1)
        ...     def forward(self, x):
        ...         return self.relu(self.conv2(self.relu(self.conv1(x))) + x)
        >>> block = Block(8)
        >>> block(np.zeros((2, 8, 16, 16), np.float32)).shape
        (2, 8, 16, 16)
    """

    _forward_traces = True      # forward is what tracing runs (fastcnn.runner.trace_layer)

    def __init__(self):
        pass

    def __call__(self, x):
        if isinstance(x, Value):
            with x.graph.layer_scope(self):
                return self.trace(x)
        return self._runner().forward(self, x)

    def forward(self, x):
        """The model's computation on a symbolic tensor ``x`` (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(x)")

    def trace(self, x):
        with x.graph.naming(self.children()):
            y = self.forward(x)
        if not isinstance(y, Value) or y.graph is not x.graph:
            raise TypeError(f"{type(self).__name__}.forward must return the result of layers "
                            f"applied to its input. Received: {type(y).__name__}")
        return y

    def children(self):
        """``[(name, layer)]``: the layers and Modules set as attributes, in order."""
        return [(name, v) for name, v in vars(self).items()
                if isinstance(v, Layer) and not name.startswith("_")]

    @property
    def _params(self):
        return {name: v for name, v in vars(self).items()
                if isinstance(v, Parameter) and not name.startswith("_")}

    def named_parameters(self, prefix=""):
        out = super().named_parameters(prefix)
        for name, child in self.children():
            out.extend(child.named_parameters(f"{prefix}{name}."))
        return out

    def named_buffers(self, prefix=""):
        return [b for name, child in self.children()
                for b in child.named_buffers(f"{prefix}{name}.")]

    def named_state(self, prefix=""):
        own = [(prefix + n, p.data) for n, p in self._params.items()]
        return own + [s for name, child in self.children()
                      for s in child.named_state(f"{prefix}{name}.")]

    def structure(self):
        return (self, self.training, tuple(self._params.values()),
                tuple([(name, child.structure()) for name, child in self.children()]))

    def train(self, mode=True):
        if self.training != bool(mode):
            self.training = bool(mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def reset_parameters(self, rng=None):
        for _, child in self.children():
            child.reset_parameters(rng)

    def __repr__(self):
        inner = "".join(f"\n  ({name}): " + repr(child).replace("\n", "\n  ")
                        for name, child in self.children())
        return f"{type(self).__name__}({inner}\n)" if inner else f"{type(self).__name__}()"


class _Replay(Module):
    """A user's Module loaded from a file (fastcnn.load): its layers, rebuilt for
    the state dict's names, and, at the top, its saved graph, whose ops are
    replayed on the traced input (its own class is not needed)."""

    @classmethod
    def from_record(cls, record, build):
        model = cls()
        object.__setattr__(model, "_name", record["name"])
        for name, shape in record["params"]:
            setattr(model, name, Parameter(np.zeros(shape, np.float32)))
        for name, child in record["children"]:
            setattr(model, name, build(child))
        nodes = record.get("nodes")
        object.__setattr__(model, "_nodes", None if nodes is None else [
            dict(node, attrs=_tuples(node["attrs"])) for node in nodes])
        object.__setattr__(model, "_io", (record.get("input"), record.get("output")))
        object.__setattr__(model, "_input_shape", tuple(record.get("input_shape", ())))
        return model

    def forward(self, x):
        if self._nodes is None:
            raise TypeError(f"{self._name} was saved as part of its parent's graph; it "
                            f"does not run alone")
        if x.shape[1:] != self._input_shape:
            raise ValueError(f"{self._name} was saved traced for inputs of shape "
                             f"(N,) + {self._input_shape} (its layers may have been sized "
                             f"for them). Received: x.shape={x.shape}")
        objs = dict(self.named_parameters() + self.named_buffers())
        values = {self._io[0]: x}
        for node in self._nodes:
            inputs = [values[t] for t in node["inputs"]]
            if node["op"] == "dropout" and not self.training:
                values[node["outputs"][0]] = inputs[0]      # as Dropout adds in inference
                continue
            params = {n: None if key is None else objs[key] for n, key in node["params"].items()}
            values[node["outputs"][0]] = x.graph.add(node["op"], inputs, node["attrs"], params)
        return values[self._io[1]]

    def __repr__(self):
        return super().__repr__().replace(type(self).__name__, self._name, 1)


def _tuples(value):
    """JSON's lists back to the tuples they were (attrs hold no lists)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
