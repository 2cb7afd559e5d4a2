"""fastcnn as an ONNX backend (``onnx.backend.base.Backend``), so that ONNX's
own conformance suite (``onnx.backend.test.BackendTest``) runs on it.

A fastcnn model has one input, a float32 tensor whose first dimension is the
batch. For a graph with several inputs, :meth:`FastcnnRep.run` makes the
first float32 input the model's input and binds the others to the values
given, as initializers (constants), then imports the graph with
:func:`fastcnn.onnx.load` and runs it.
"""
import numpy as np

from . import require_onnx

require_onnx()

from onnx import numpy_helper  # noqa: E402
from onnx.backend.base import Backend, BackendRep  # noqa: E402

__all__ = ["FastcnnBackend", "FastcnnRep", "prepare", "run_model", "supports_device"]


class FastcnnRep(BackendRep):
    """A prepared ONNX model; ``run(inputs)`` imports it for those inputs and runs it."""

    def __init__(self, model):
        self.model = model

    def bind(self, inputs):
        """(ModelProto with every input but one bound to its value, that input's value)."""
        from .model import read_model
        model = read_model(self.model.SerializeToString())
        g = model.graph
        initialized = {t.name for t in g.initializer}
        graph_inputs = [i for i in g.input if i.name not in initialized]
        if isinstance(inputs, dict):
            inputs = [inputs[i.name] for i in graph_inputs]
        if len(inputs) != len(graph_inputs):
            raise ValueError(f"the model has {len(graph_inputs)} inputs; "
                             f"{len(inputs)} values were given")
        arrays = [np.asarray(a) for a in inputs]
        chosen = next((k for k, a in enumerate(arrays) if a.dtype == np.float32 and a.ndim),
                      None)
        if chosen is None:
            raise ValueError("fastcnn runs models on a float32 input with a batch dimension; "
                             "this model has none")
        for k, (info, a) in enumerate(zip(graph_inputs, arrays)):
            if k == chosen:
                dims = info.type.tensor_type.shape.dim
                del dims[:]
                for n in a.shape:
                    dims.add().dim_value = n
            else:
                g.initializer.append(numpy_helper.from_array(a, info.name))
        return model, arrays[chosen]

    def run(self, inputs, **kwargs):
        from . import load
        model, x = self.bind(inputs)
        return (load(model)(x),)


class FastcnnBackend(Backend):
    """The ONNX backend interface, on fastcnn (CPU only)."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        return FastcnnRep(model)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device):
        return str(device).upper() == "CPU"


prepare = FastcnnBackend.prepare
run_model = FastcnnBackend.run_model
supports_device = FastcnnBackend.supports_device
