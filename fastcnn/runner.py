"""How a layer (or a whole model) runs: trace it to a graph, compile the graph
for the input shape and the mode, and run the Program; the Programs are
cached per (shape, mode, structure), most recently used first.

Inference calls are re-entrant: any number of threads may run the same
layer at once, each in a frame of its own. A training forward keeps its frame
for the backward pass that follows in the same thread; while a training call
runs, another thread's training call raises, and a backward whose forward ran
in another thread raises (training one model from two threads at once would
mix their activations).
"""
import threading

import numpy as np

from . import layers
from ._checks import as_float32, check_shape
from .compiler import PASSES, FrozenWeights, compile_graph
from .graph import Graph

__all__ = ["Runner", "trace"]

MAX_PROGRAMS = 3


def trace(layer, input_shape):
    """The graph of ``layer`` applied to an input of ``input_shape``."""
    graph = Graph(input_shape)
    graph.output = layer.trace(graph.input_value()).id
    return graph


def trace_layer(layer, x):
    """Add ``layer`` applied to the symbolic ``x`` to x's graph. A layer whose
    class overrides ``forward`` (other than a Module's, which is traced)
    becomes one node running its Python code."""
    cls = type(layer)
    if cls.forward is not layers.Layer.forward and not getattr(cls, "_forward_traces", False):
        y = layer.forward(np.zeros(x.shape, np.float32))
        return x.graph.add("layer", [x], layer=layer, shape=np.shape(y))
    return layer.trace(x)


class Runner:
    """The compiled Programs of one layer, and its pending training frame;
    ``frozen``: inference only, on weights that never change (fastcnn.freeze)."""

    def __init__(self, frozen=False):
        self.frozen = FrozenWeights() if frozen else None
        self.programs = []
        self.generation = -1            # layers.generation when programs[0] was last checked
        self.frame = self.program = self.owner = None
        self.busy = threading.RLock()       # taken (never waited on) by training calls
        self.passes = PASSES

    def find(self, layer, shape, training):
        generation = layers.generation
        if generation == self.generation and self.programs:
            prog = self.programs[0][1]      # no layer changed since it was checked
            if prog.training == training and prog.in_shape == shape:
                return prog
        key = layer.structure()
        for i, (k, prog) in enumerate(self.programs):
            if k == key and prog.training == training and prog.in_shape == shape:
                if i:
                    self.programs.insert(0, self.programs.pop(i))
                break
        else:
            prog = compile_graph(trace(layer, shape), training, self.passes, self.frozen)
            self.programs.insert(0, (key, prog))
            del self.programs[MAX_PROGRAMS:]
        self.generation = generation        # programs[0] holds for the layers as they were
        return prog

    def forward(self, layer, x):
        x = as_float32(x, "x")
        if self.frozen is not None and layer.training:
            raise ValueError(f"this {type(layer).__name__} was made by fastcnn.freeze() and runs "
                             f"inference only; it cannot run in training mode (train the "
                             f"original model, then freeze it again)")
        if not layer.training:
            self.frame = None               # (only training calls recycle frames)
            return self.find(layer, x.shape, False).forward(x)[0]
        with self.holding(layer):
            self.drop_frame()
            prog = self.find(layer, x.shape, True)
            out, frame = prog.forward(x)
            self.frame, self.program, self.owner = frame, prog, threading.get_ident()
        return out

    def backward(self, layer, grad_y, need_grad_input):
        dy = as_float32(grad_y, "grad_y")
        with self.holding(layer):           # the frame cannot change hands meanwhile
            frame, prog = self.frame, self.program
            if frame is None:
                raise RuntimeError(f"{type(layer).__name__}.backward() needs a forward pass "
                                   f"in training mode first (call layer.train() and layer(x))")
            if self.owner != threading.get_ident():
                raise RuntimeError(f"{type(layer).__name__}.backward(): the last training "
                                   f"forward pass ran in another thread; a model trains in "
                                   f"one thread at a time")
            check_shape(dy, prog.out_shape, "grad_y")
            return prog.backward(frame, dy, bool(need_grad_input))

    def drop_frame(self):
        """Forget the pending training frame; its program reuses it (the caller
        holds the training lock, so no frame is recycled twice)."""
        frame, self.frame = self.frame, None
        if frame is not None:
            self.program.recycle(frame)

    def holding(self, layer):
        return _Holding(self.busy, layer)


class _Holding:
    def __init__(self, lock, layer):
        self.lock, self.layer = lock, layer

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            raise RuntimeError(f"this {type(self.layer).__name__} is being trained by another "
                               f"thread; a model trains in one thread at a time (inference "
                               f"calls may run in any number of threads)")

    def __exit__(self, *exc):
        self.lock.release()
