"""The graph: tensors and the nodes (ops) between them.

A model becomes a graph by tracing: it is called on a symbolic :class:`Value`
(a tensor with a shape and no data) instead of an array, and every layer
adds the node(s) of its op(s). Shapes are concrete (the batch size included),
so tracing checks every shape; the compiler (fastcnn.compiler) then turns
the graph into steps for the executor.

Tensors are numbered: 0 is the graph's input. A node names its op kind (a
key of :data:`fastcnn.ops.OPS`, where each op family is defined once), its
input and output tensors, its attributes and its parameters
(name -> :class:`fastcnn.Parameter`), the dotted name of the layer that made
it (``"3"``, ``"layer1.0.conv1"``), and for a layer that runs its own
Python code, the layer itself.
"""
from ._native import _merge_cat_shape
from .ops import OPS

__all__ = ["Graph", "Node", "Value", "cat"]


def cat(tensors, dim=1):
    """Concatenate tensors along ``dim`` (``torch.cat``; channels by default).

    Works on the traced tensors inside a Module's ``forward`` (a cat node of
    the graph) and on numpy arrays (``fastcnn.functional.cat``).

    Args:
        tensors: a list or tuple of one or more tensors of one rank whose
            shapes agree except along ``dim``: all traced tensors of one
            graph, or all arrays.
        dim: the dim to join along, negative counting from the end. Default 1.

    Raises:
        TypeError: traced tensors mixed with arrays, or of different graphs.
        ValueError: shapes that do not concatenate (naming them), ``dim`` out of range.

    Example:
        >>> class Inception(fastcnn.Module):
        ...     def forward(self, x):
        ...         return fastcnn.cat([self.branch1(x), self.branch3(x)], dim=1)
    """
    if isinstance(tensors, (list, tuple)) and any(isinstance(t, Value) for t in tensors):
        graph = tensors[0].graph if isinstance(tensors[0], Value) else None
        bad = [type(t).__name__ for t in tensors
               if not isinstance(t, Value) or t.graph is not graph]
        if bad:
            raise TypeError(f"cat joins traced tensors of one graph, or arrays, not a mix. "
                            f"Received: {bad[0]} among traced tensors")
        d = _merge_cat_shape([t.shape for t in tensors], dim)[1]
        return graph.add("cat", list(tensors), attrs={"dim": d})
    from .functional import cat as cat_arrays
    return cat_arrays(tensors, dim)


class Value:
    """A symbolic tensor while tracing: its graph, its number and its shape."""
    __slots__ = ("graph", "id", "shape")

    def __init__(self, graph, tid, shape):
        self.graph, self.id, self.shape = graph, tid, tuple(shape)

    @property
    def ndim(self):
        return len(self.shape)

    def __add__(self, other):
        """``a + b`` while tracing: an add node (numpy broadcasting)."""
        return self.graph.add("add", [self, self._operand(other, "+")])

    def __radd__(self, other):
        """``0 + a`` is ``a`` (so ``sum(values)`` works); other left operands are refused."""
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self
        return self._operand(other, "+")

    def __mul__(self, other):
        """``a * b`` while tracing: a mul node (numpy broadcasting)."""
        return self.graph.add("mul", [self, self._operand(other, "*")])

    def __rmul__(self, other):
        return self._operand(other, "*")

    def _operand(self, other, symbol):
        if not isinstance(other, Value) or other.graph is not self.graph:
            raise TypeError(f"a traced tensor combines ({symbol}) only with another traced "
                            f"tensor of its graph. Received: {type(other).__name__}")
        return other

    def __bool__(self):
        raise TypeError("a traced tensor has no value: Python control flow that depends on "
                        "the data (if, while, and, or on a tensor) cannot be traced into a "
                        "graph; write it with layers, or branch on shapes and settings only")

    def __array__(self, *args, **kwargs):
        raise TypeError("a traced tensor has no value: numpy functions cannot run on it "
                        "while a model is traced; use fastcnn layers in forward")

    def __repr__(self):
        return f"Value(id={self.id}, shape={self.shape})"


class Node:
    """One op application: ``outputs = op(inputs; attrs, params)``."""
    __slots__ = ("op", "inputs", "outputs", "attrs", "params", "name", "layer")

    def __init__(self, op, inputs, outputs, attrs, params, name="", layer=None):
        self.op, self.inputs, self.outputs = op, tuple(inputs), tuple(outputs)
        self.attrs, self.params = dict(attrs), dict(params)
        self.name, self.layer = name, layer

    def replace(self, **changes):
        """A copy with some fields changed (passes never edit a node in place)."""
        fields = {k: getattr(self, k) for k in self.__slots__}
        fields.update(changes)
        return Node(**fields)

    def __repr__(self):
        return (f"Node({self.op!r}, {list(self.inputs)} -> {list(self.outputs)}"
                + (f", {self.attrs}" if self.attrs else "")
                + (f", name={self.name!r}" if self.name else "") + ")")


class Graph:
    """Tensors (their shapes) and nodes in the order they were traced."""

    def __init__(self, input_shape):
        self.shapes = [tuple(input_shape)]      # tensor id -> shape
        self.nodes = []
        self.input, self.output = 0, 0
        self._scope = []
        self._naming = []       # per Module being traced: id(child layer) -> attribute name

    def input_value(self):
        return Value(self, self.input, self.shapes[self.input])

    def add(self, kind, inputs, attrs=None, params=None, layer=None, shape=None):
        """Append a node of op ``kind`` on the symbolic ``inputs``; returns its
        output Value. The op's shape rule checks the inputs (ValueError);
        ``shape`` is given only for a 'layer' node, whose layer computed it."""
        attrs, params = dict(attrs or {}), dict(params or {})
        if shape is None:
            shape = OPS[kind].infer(attrs, params, *[v.shape for v in inputs])
        tid = len(self.shapes)
        self.shapes.append(tuple(shape))
        self.nodes.append(Node(kind, [v.id for v in inputs], [tid], attrs, params,
                               ".".join(self._scope), layer))
        return Value(self, tid, shape)

    def scope(self, name):
        """Context naming the nodes added inside it (nested: ``"layer1.0"``)."""
        return _Scope(self, str(name))

    def naming(self, children):
        """Context in which a Module's forward is traced: its ``children``
        ([(name, layer)]) called in it get their names as scopes (layer_scope)."""
        return _Naming(self, {id(layer): name for name, layer in children})

    def layer_scope(self, layer):
        """The scope of a layer called on a symbolic tensor: its attribute name
        in the Module being traced (none outside a Module, or for a layer that
        is not one of its attributes)."""
        return self.scope(self._naming[-1].get(id(layer), "") if self._naming else "")

    def consumers(self):
        """tensor id -> indices of the nodes that read it."""
        out = {}
        for i, node in enumerate(self.nodes):
            for t in node.inputs:
                out.setdefault(t, []).append(i)
        return out

    def copy(self, nodes=None):
        g = Graph(self.shapes[self.input])
        g.shapes, g.nodes = list(self.shapes), list(self.nodes if nodes is None else nodes)
        g.input, g.output = self.input, self.output
        return g

    def __repr__(self):
        lines = [f"Graph(input {self.input}: {self.shapes[self.input]}"]
        for node in self.nodes:
            lines.append(f"  {node}  # {[self.shapes[t] for t in node.outputs]}")
        lines.append(f"  output {self.output}: {self.shapes[self.output]})")
        return "\n".join(lines)


class _Scope:
    def __init__(self, graph, name):
        self.graph, self.name = graph, name

    def __enter__(self):
        if self.name:
            self.graph._scope.append(self.name)

    def __exit__(self, *exc):
        if self.name:
            self.graph._scope.pop()


class _Naming:
    def __init__(self, graph, names):
        self.graph, self.names = graph, names

    def __enter__(self):
        self.graph._naming.append(self.names)

    def __exit__(self, *exc):
        self.graph._naming.pop()
