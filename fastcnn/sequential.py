"""Sequential: layers applied one after the other, as one model."""
import numpy as np

from ._checks import as_int
from .layers import Layer, changed
from .runner import trace_layer
from .saving import StateDict
from .summary import summary
from .training import Training

__all__ = ["Sequential"]


class Sequential(Layer, Training, StateDict):
    """A model made of layers applied one after the other (``torch.nn.Sequential``).

    Args:
        *layers: the layers, as arguments or as one list.
        seed: if given, re-initialise every parameter (PyTorch's default
            scheme) from ``numpy.random.default_rng(seed)``, layer by layer:
            the same seed gives the same model. Otherwise the layers keep
            their own initialisation (from :func:`fastcnn.manual_seed`'s
            generator).

    Input shape:
        that of the first layer.

    Output shape:
        that of the last layer.

    Speed, memory and threads:
        The model is traced to one graph of ops, compiled for each input
        shape and mode (up to 3 compiled graphs are kept, most recently used
        first) and run by the native executor: the kernels back to back
        from Cython, every activation in one planned arena per call. What
        ``forward`` and ``backward`` return is always a fresh array.
        Inference calls may run in any number of threads at once; a model
        trains in one thread at a time (a second thread's training call
        raises). A layer subclass that overrides ``forward`` runs its own
        Python code as one node of the graph. The layers' own ``backward``
        serves only their own forward: back-propagate through the model.

    Example:
        >>> model = fastcnn.Sequential(
        ...     fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        ...     fastcnn.Flatten(), fastcnn.Linear(6 * 14 * 14, 10), seed=0)
        >>> history = model.fit(x_train, y_train, epochs=3, batch_size=64)
        >>> loss, accuracy = model.evaluate(x_test, y_test)
        >>> model.save("digits.fcnn"); same = fastcnn.load("digits.fcnn")
    """

    def __init__(self, *layers, seed=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes fastcnn layers. Received: "
                                f"{type(layer).__name__} at position {i}")
        self.layers = LayerList(layers)
        if seed is not None:
            self.reset_parameters(np.random.default_rng(as_int(seed, "seed")))

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def add(self, layer):
        """Append a layer."""
        if not isinstance(layer, Layer):
            raise TypeError(f"add takes a fastcnn layer. Received: {type(layer).__name__}")
        self.layers.append(layer)

    def trace(self, x):
        if not self.layers:
            raise ValueError("the model has no layers")
        for i, layer in enumerate(self.layers):
            with x.graph.scope(i):
                x = trace_layer(layer, x)
        return x

    def structure(self):
        return (self, self.training, tuple([layer.structure() for layer in self.layers]))

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def named_parameters(self, prefix=""):
        out = []
        for i, layer in enumerate(self.layers):
            out.extend(layer.named_parameters(f"{prefix}{i}."))
        return out

    def named_buffers(self, prefix=""):
        return [b for i, layer in enumerate(self.layers)
                for b in layer.named_buffers(f"{prefix}{i}.")]

    def named_state(self, prefix=""):
        return [s for i, layer in enumerate(self.layers)
                for s in layer.named_state(f"{prefix}{i}.")]

    def reset_parameters(self, rng=None):
        for layer in self.layers:
            layer.reset_parameters(rng)

    def __setattr__(self, name, value):
        if name == "layers" and not isinstance(value, LayerList):
            value = LayerList(value)
        super().__setattr__(name, value)

    def train(self, mode=True):
        if self.training != bool(mode):
            self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    @property
    def input_shape(self):
        """The shape of one input (without the batch) of the last call, or None."""
        programs = self._runner().programs
        return programs[0][1].in_shape[1:] if programs else None

    def summary(self, input_shape=None, print_fn=print):
        """Print each layer, its output shape and parameter count, and the totals
        (see :func:`fastcnn.summary.summary`)."""
        summary(self, input_shape, print_fn)

    def get_config(self):
        from .saving import _layer_config
        return {"layers": [_layer_config(layer) for layer in self.layers]}

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


def _noting(method):
    def wrapper(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        changed()
        return out
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class LayerList(list):
    """A Sequential's list of layers: a list that notes every change (so the
    model's compiled graphs are re-checked)."""
    for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
                  "insert", "pop", "remove", "clear", "sort", "reverse"):
        locals()[_name] = _noting(getattr(list, _name))
    del _name
