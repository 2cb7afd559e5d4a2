"""The compiler: a graph, a mode and an input shape become a Program of native steps.

    graph --passes--> rewritten graph --plan--> slots and offsets --> Program

Passes are rewrites of the graph, each switchable (``passes=``):

- ``fuse_relu_max_pool``: a ReLU whose only reader is a max pooling becomes
  part of it. In training the pooling applies the ReLU, pools its output and
  masks its backward scatter with it (one pass over the gradient instead of
  two); in inference it pools first and applies the ReLU to the pooled output
  (they commute: both are monotone, and a NaN stays a NaN), a quarter of the
  elements for a 2x2 window. In inference it runs after
  ``fuse_conv_activation``, which makes a ReLU after a convolution free: the
  pooling takes only the ReLUs left.
- ``fold_batch_norm`` (inference): a batch norm after a convolution becomes
  part of it: the convolution runs on weights and a bias folded anew on each
  call from the current parameters and statistics (where that costs less
  than the batch norm's pass over its input; see :func:`fold_batch_norm`).
- ``freeze_weights`` (inference of a frozen model, :func:`fastcnn.freeze`;
  not switchable): the weights never change, so every batch norm after a
  convolution is folded into it once, at compile time, profitable or not,
  and every convolution keeps what its paths derive from the weights
  (packed or transposed weights, Winograd's transformed filters) across
  calls; both are shared by the model's graphs of every input shape
  (:class:`FrozenWeights`).
- ``fuse_conv_activation`` (inference): a ReLU or hardtanh (ReLU6) whose
  only input is a convolution's output, read by nothing else, becomes the
  convolution's epilogue: each tile of the output is clamped as it is
  written, while in cache, instead of in a pass of its own.
- ``fuse_conv_chain`` (inference of a frozen model): a depthwise convolution
  with the 1x1 convolution that alone makes its input (an inverted residual
  block's expansion), and the 1x1 convolution that alone reads its output
  (the projection) if there is one, becomes one conv2d_chain step, run by
  strips of output rows so that the expanded tensor stays in the core's
  caches; only where that tensor is larger than a strip (CHAIN_MIN_BYTES per
  image: MobileNetV2's blocks at 112x112 and 56x56 at 224x224).
- ``in_place``: an op that may overwrite its input (an activation; the ReLU
  absorbed by a max pooling in training) takes its input's memory when
  nothing reads that input later, nor keeps it for backward; an activation's
  backward writes its input gradient over its output gradient.
- ``reuse_memory``: tensors whose lifetimes do not overlap share bytes of the
  arena (off: every tensor has its own bytes).

The memory plan. Each tensor (forward value, gradient, or a step's auxiliary
buffer such as max pooling's argmax indices) lives from the step that writes
it to the last step that reads it, on one timeline: forward step i at time i,
the copy of the output at n, backward step i at 2n - i, the copy of the input
gradient at 2n + 1. In training, what an op saves for its backward lives until
that backward. Views (flatten) and in-place ops join tensors into one slot;
slots are packed into one arena by size, largest first, each at the lowest
offset free over its lifetime. The caller's input and output gradient are
external slots: never written.
"""
import math

import numpy as np

from . import _native as E
from . import functional as F
from .ops import OPS, Folded

__all__ = ["PASSES", "compile_graph", "reference_run"]

PASSES = ("fuse_relu_max_pool", "fold_batch_norm", "fuse_conv_activation", "fuse_conv_chain",
          "in_place", "reuse_memory")


def compile_graph(graph, training, passes=PASSES, frozen=None):
    """The Program running ``graph`` in training (forward saves for backward)
    or inference mode, with the named passes applied; ``frozen``: a
    FrozenWeights, for inference on weights that never change
    (``freeze_weights``)."""
    unknown = set(passes) - set(PASSES)
    if unknown:
        raise ValueError(f"unknown passes {sorted(unknown)}; the passes are {PASSES}")
    if frozen is not None and training:
        raise ValueError("a frozen model runs inference only")
    if "fuse_relu_max_pool" in passes and training:
        graph = fuse_relu_max_pool(graph)
    if frozen is not None:
        graph = freeze_weights(fold_batch_norm(graph, only_profitable=False), frozen)
    elif "fold_batch_norm" in passes and not training:
        graph = fold_batch_norm(graph)
    if "fuse_conv_activation" in passes and not training:
        graph = fuse_conv_activation(graph)
    if "fuse_conv_chain" in passes and frozen is not None:
        graph = fuse_conv_chain(graph)
    if "fuse_relu_max_pool" in passes and not training:
        graph = fuse_relu_max_pool(graph)   # the ReLUs no convolution took
    return _Planner(graph, training, "in_place" in passes, "reuse_memory" in passes).program()


def fuse_relu_max_pool(graph):
    """Absorb each ReLU whose output only a max pooling reads into that pooling."""
    consumers = graph.consumers()
    nodes = list(graph.nodes)
    for i, node in enumerate(nodes):
        if node is None or node.op != "relu" or node.outputs[0] == graph.output:
            continue
        readers = consumers.get(node.outputs[0], [])
        if len(readers) == 1 and nodes[readers[0]].op == "max_pool2d" \
                and not nodes[readers[0]].attrs.get("relu"):
            pool = nodes[readers[0]]
            nodes[readers[0]] = pool.replace(inputs=node.inputs,
                                             attrs=dict(pool.attrs, relu=True))
            nodes[i] = None
    return graph.copy([n for n in nodes if n is not None])


def fold_batch_norm(graph, only_profitable=True):
    """Fold each inference batch_norm2d (with running statistics) whose input
    only it reads, made by a conv2d, into that convolution: one
    conv2d_batch_norm2d node, whose step scales the weights per output channel
    and shifts the bias on every call (w' = w * s, b' = (b - mean) * s + beta,
    s = gamma / sqrt(var + eps)). With ``only_profitable``, only where the
    weights to fold are fewer than the elements the batch norm would pass
    over (C*R*S < N*P*Q): else the fold costs more than it saves."""
    producer = {t: i for i, node in enumerate(graph.nodes) for t in node.outputs}
    consumers = graph.consumers()
    nodes = list(graph.nodes)
    for i, bn in enumerate(graph.nodes):
        if bn.op != "batch_norm2d" or bn.params.get("running_mean") is None:
            continue
        t = bn.inputs[0]
        j = producer.get(t)
        if j is None or nodes[j].op != "conv2d" or consumers[t] != [i] or t == graph.output:
            continue
        conv = nodes[j]
        w = conv.params["weight"].data.shape
        n, _, p, q = graph.shapes[t]
        if only_profitable and w[1] * w[2] * w[3] >= n * p * q:
            continue
        params = dict(conv.params, bn_weight=bn.params.get("weight"),
                      bn_bias=bn.params.get("bias"), running_mean=bn.params["running_mean"],
                      running_var=bn.params["running_var"])
        nodes[j] = conv.replace(op="conv2d_batch_norm2d", outputs=bn.outputs, params=params,
                                attrs=dict(conv.attrs, bn_eps=bn.attrs["eps"]))
        nodes[i] = None
        producer[bn.outputs[0]] = j      # a batch norm after this one finds the folded node
    return graph.copy([n for n in nodes if n is not None])


class FrozenWeights:
    """What a frozen model's compiled graphs share: folded weights and each
    convolution's PreparedWeights, made once per source arrays and found by
    their identity (the sources are held here, so no other object can take
    their ids)."""

    def __init__(self):
        self._kept = {}

    def get(self, sources, make):
        """make() the first time these source objects come, then the same result."""
        key = tuple(map(id, sources))
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = (tuple(sources), make())
        return kept[1]


def freeze_weights(graph, frozen):
    """For weights that never change (a frozen model's): each
    conv2d_batch_norm2d node becomes a conv2d on weights and a bias folded
    once (read-only arrays), and every conv2d gets the PreparedWeights of its
    weight array (attr ``prepared``), where its step keeps what the
    convolution paths derive from it; both kept in ``frozen`` (FrozenWeights)."""
    nodes = []
    for node in graph.nodes:
        if node.op == "conv2d_batch_norm2d":
            node = _folded_conv(node, frozen)
        if node.op == "conv2d":
            w = node.params["weight"].data
            node = node.replace(attrs=dict(node.attrs,
                                           prepared=frozen.get([w], E.PreparedWeights)))
        nodes.append(node)
    return graph.copy(nodes)


def _folded_conv(node, frozen):
    """The conv2d of a conv2d_batch_norm2d node on its weights folded once."""
    p = node.params
    names = ("weight", "bias", "bn_weight", "bn_bias")
    arrays = [None if p.get(k) is None else p[k].data for k in names]
    sources = arrays + [p["running_mean"], p["running_var"]]

    def fold():
        wf, bf = F.batch_norm2d_fold(*arrays, p["running_mean"], p["running_var"],
                                     node.attrs["bn_eps"])
        for a in (wf, bf):
            a.flags.writeable = False
        return Folded(wf), Folded(bf)

    wf, bf = frozen.get(sources, fold)
    attrs = {k: v for k, v in node.attrs.items() if k != "bn_eps"}
    return node.replace(op="conv2d", params={"weight": wf, "bias": bf}, attrs=attrs)


def _clamp_of(node):
    """The [lo, hi] an activation node clamps to, or None if it is no clamp."""
    if node.op == "relu":
        return (0.0, float("inf"))
    if node.op == "pointwise" and node.attrs["kind"] == "hardtanh":
        return (float(node.attrs.get("a", 0.0)), float(node.attrs.get("b", 0.0)))
    return None


def fuse_conv_activation(graph):
    """Make each inference ReLU / hardtanh whose input only it reads, made by a
    convolution (plain or with a folded batch norm), that convolution's
    epilogue: attr clamp = (lo, hi)."""
    producer = {t: i for i, node in enumerate(graph.nodes) for t in node.outputs}
    consumers = graph.consumers()
    nodes = list(graph.nodes)
    for i, act in enumerate(graph.nodes):
        clamp = _clamp_of(act)
        t = act.inputs[0] if clamp else None
        j = producer.get(t)
        if j is None or nodes[j].op not in ("conv2d", "conv2d_batch_norm2d") \
                or "clamp" in nodes[j].attrs or consumers[t] != [i] or t == graph.output:
            continue
        nodes[j] = nodes[j].replace(outputs=act.outputs, attrs=dict(nodes[j].attrs, clamp=clamp))
        nodes[i] = None
        producer[act.outputs[0]] = j     # an activation after this one finds the convolution
    return graph.copy([n for n in nodes if n is not None])


# The smallest depthwise input (per image) fuse_conv_chain fuses: more than
# one strip (csrc/conv2d_chain.c's STRIP_FLOATS, 1 MiB). A tensor of one
# strip gains nothing by strips, and the layers' own paths may run faster
# (frozen MobileNetV2 at batch 1, 1 thread, interleaved with onnxruntime:
# its 28x28 blocks, 602 KB, chained -0.009, -0.008, +0.023 ms each).
CHAIN_MIN_BYTES = 1 << 20


def _pointwise_conv(node):
    """Whether node is a plain 1x1 convolution (stride 1, no padding, one group)."""
    if node.op != "conv2d" or node.params["weight"].data.shape[2:] != (1, 1):
        return False
    a = node.attrs
    return all(_pair(a.get(k, d)) == (d, d) for k, d in
               (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)))


def _depthwise_conv(node, shapes):
    """Whether node is a depthwise convolution (one filter per channel,
    dilation 1) whose input is large enough to run by strips."""
    if node.op != "conv2d" or _pair(node.attrs.get("dilation", 1)) != (1, 1):
        return False
    x = shapes[node.inputs[0]]
    w = node.params["weight"].data.shape
    return node.attrs.get("groups", 1) == x[1] == w[0] and w[1] == 1 \
        and 4 * math.prod(x[1:]) >= CHAIN_MIN_BYTES


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def fuse_conv_chain(graph):
    """Each depthwise convolution (see CHAIN_MIN_BYTES) with the 1x1
    convolution that only it reads (expand), and the one that alone reads
    its output (project) if there is one, becomes a conv2d_chain node (attr
    links). A chain without an expansion would copy its input rows into the
    strips: frozen MobileNetV2's first block (depthwise 32 at 112x112, then
    32 -> 16) took 0.30 ms chained so, 0.27-0.31 layer by layer."""
    producer = {t: i for i, node in enumerate(graph.nodes) for t in node.outputs}
    consumers = graph.consumers()
    nodes = list(graph.nodes)
    for i, dw in enumerate(graph.nodes):
        if not _depthwise_conv(dw, graph.shapes):
            continue
        x, y = dw.inputs[0], dw.outputs[0]
        e = producer.get(x)
        expand = nodes[e] if e is not None and nodes[e] is not None \
            and _pointwise_conv(nodes[e]) and consumers[x] == [i] and x != graph.output else None
        readers = consumers.get(y, [])
        project = nodes[readers[0]] if len(readers) == 1 and y != graph.output \
            and _pointwise_conv(nodes[readers[0]]) else None
        if expand is None:
            continue
        last = project or dw
        nodes[i] = dw.replace(op="conv2d_chain", inputs=expand.inputs, outputs=last.outputs,
                              attrs={"links": (expand, dw, project)}, params={})
        nodes[e] = None
        if project is not None:
            nodes[readers[0]] = None
            producer[last.outputs[0]] = i
    return graph.copy([n for n in nodes if n is not None])


class _Planner:
    """Lifetimes, slots (tensors joined by views and in-place ops), offsets, steps."""

    def __init__(self, graph, training, in_place, reuse):
        self.graph, self.training = graph, training
        self.in_place, self.reuse = in_place, reuse
        self.n = len(graph.nodes)
        self.life, self.nbytes, self.parent = {}, {}, {}
        self.external = {("t", graph.input)}
        if training:
            self.external.add(("g", graph.output))
        self.readers = graph.consumers()
        for i, node in enumerate(graph.nodes):
            if len(set(node.inputs)) < len(node.inputs):
                raise NotImplementedError(f"node {node} reads one tensor twice")

    # -- lifetimes ---------------------------------------------------------------
    def backward_time(self, i):
        return 2 * self.n - i

    def use(self, key, time, shape=None, dtype=np.float32):
        if key not in self.life:
            self.life[key] = [time, time]
            self.parent[key] = key
            nbytes = int(np.prod(shape if shape is not None else self.shape(key)))
            self.nbytes[key] = nbytes * np.dtype(dtype).itemsize
        else:
            span = self.life[key]
            span[0], span[1] = min(span[0], time), max(span[1], time)

    def shape(self, key):
        return self.graph.shapes[key[1]]           # ("t" | "g" | "p", tensor, ...)

    def lifetimes(self):
        g, n = self.graph, self.n
        self.use(("t", g.input), -1)
        for i, node in enumerate(g.nodes):
            op = OPS[node.op]
            for t in node.inputs:
                self.use(("t", t), i)
            for t in node.outputs:
                self.use(("t", t), i)
            saved = (node.inputs if "input" in op.saves else ()) + \
                    (node.outputs if "output" in op.saves else ())
            for name, (shape, dtype, kept) in self.aux_of(i).items():
                self.use(("a", i, name), i, shape, dtype)
                if kept and self.training:
                    self.use(("a", i, name), self.backward_time(i))
            if self.training:
                for t in saved:
                    self.use(("t", t), self.backward_time(i))
                for t in node.inputs + node.outputs:
                    self.use(("g", t), self.backward_time(i), self.graph.shapes[t])
                for t in node.inputs:
                    self.use(self.dx_key(i, t), self.backward_time(i), self.graph.shapes[t])
        self.use(("t", g.output), n)
        if self.training:
            self.use(("g", g.input), 2 * n + 1)

    def dx_key(self, i, t):
        """Where node i's backward writes the gradient of its input t: the
        tensor's gradient itself when node i is the last reader of t (its
        backward runs first), else a partial gradient added to it right after."""
        return ("g", t) if self.readers[t][-1] == i else ("p", t, i)

    def aux_of(self, i):
        node = self.graph.nodes[i]
        return OPS[node.op].aux(node, *self.io_shapes(node), self.training)

    def io_shapes(self, node):
        """(input shape, or the tuple of the input shapes of a node with several
        inputs; output shape)."""
        shapes = tuple(self.graph.shapes[t] for t in node.inputs)
        return shapes[0] if len(shapes) == 1 else shapes, self.graph.shapes[node.outputs[0]]

    # -- slots -------------------------------------------------------------------
    def root(self, key):
        while self.parent[key] != key:
            key = self.parent[key]
        return key

    def join(self, a, b):
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        if rb in self.external:             # an external slot stays the root
            ra, rb = rb, ra
        self.parent[rb] = ra
        span_a, span_b = self.life[ra], self.life[rb]
        span_a[0], span_a[1] = min(span_a[0], span_b[0]), max(span_a[1], span_b[1])
        self.nbytes[ra] = max(self.nbytes[ra], self.nbytes[rb])

    def free_after(self, key, time):
        """Whether the slot of ``key`` is internal and nothing reads it after ``time``."""
        r = self.root(key)
        return r not in self.external and self.life[r][1] <= time

    def join_views_and_in_place(self):
        for i, node in enumerate(self.graph.nodes):
            op = OPS[node.op]
            x, y = node.inputs[0], node.outputs[0]
            if op.view:
                self.join(("t", x), ("t", y))
                if self.training:
                    self.join(self.dx_key(i, x), ("g", y))
                continue
            if not self.in_place:
                continue
            if op.in_place and self.free_after(("t", x), i) \
                    and self.graph.shapes[x] == self.graph.shapes[y]:
                self.join(("t", x), ("t", y))
            if self.training and op.in_place and len(node.inputs) == 1 \
                    and self.root(("g", y)) not in self.external:
                self.join(("g", y), self.dx_key(i, x))
            if ("a", i, "relu") in self.life and self.free_after(("t", x), i):
                self.join(("t", x), ("a", i, "relu"))

    def offsets(self, roots):
        """Arena offset of each internal slot (in the order of ``roots``), and the size."""
        internal = [r for r in roots if r not in self.external]
        size = {r: -(-self.nbytes[r] // E.ARENA_ALIGN) * E.ARENA_ALIGN for r in internal}
        placed, offset, end = [], {}, 0
        for r in sorted(internal, key=lambda r: (-size[r], roots.index(r))):
            at = 0
            if self.reuse:
                first, last = self.life[r]
                busy = sorted((offset[q], offset[q] + size[q]) for q in placed
                              if self.life[q][0] <= last and first <= self.life[q][1])
                for lo, hi in busy:
                    if at + size[r] <= lo:
                        break
                    at = max(at, hi)
            else:
                at = end
            offset[r] = at
            end = max(end, at + size[r])
            placed.append(r)
        return offset, end

    # -- the program -------------------------------------------------------------
    def program(self):
        self.lifetimes()
        self.join_views_and_in_place()
        roots = []
        for key in self.life:
            r = self.root(key)
            if r not in roots:
                roots.append(r)
        offset, arena = self.offsets(roots)
        slot_of = {r: k for k, r in enumerate(roots)}

        def slot(key):
            return slot_of[self.root(key)] if key in self.life else -1

        g = self.graph
        steps, accumulate = [], []
        for i, node in enumerate(g.nodes):
            op = OPS[node.op]
            if op.view:
                continue
            y = node.outputs[0]
            slots = {"y": slot(("t", y)), "dy": slot(("g", y))}
            for j, x in enumerate(node.inputs):
                suffix = str(j) if j else ""
                slots["x" + suffix] = slot(("t", x))
                slots["dx" + suffix] = slot(self.dx_key(i, x))
            for name in self.aux_of(i):
                slots[name] = slot(("a", i, name))
            steps.append(op.step(node, slots, *self.io_shapes(node), self.training))
            accumulate.append([(slot(("g", x)), slot(self.dx_key(i, x)),
                                int(np.prod(g.shapes[x])))
                               for x in node.inputs
                               if self.training and self.dx_key(i, x)[0] == "p"])
        io = {"in_shape": g.shapes[g.input], "out_shape": g.shapes[g.output],
              "x": slot(("t", g.input)), "y": slot(("t", g.output)),
              "dx": slot(("g", g.input)), "dy": slot(("g", g.output))}
        io["y_is_x"] = io["y"] == io["x"]
        io["dx_is_dy"] = self.training and io["dx"] == io["dy"]
        return E.Program(g, steps, [offset.get(r, -1) for r in roots], arena, io,
                         self.training, accumulate)


def reference_run(graph, x, dy=None, training=True, need_grad_input=True):
    """The plain walk of ``graph``: each node's reference forward (the
    functional API) in order, then, if ``dy`` is given, each node's reference
    backward in reverse, summing the gradients of tensors read by several
    nodes. Returns (output, input gradient or None); parameter gradients are
    accumulated. The oracle the executor is tested against."""
    values, saved = {graph.input: x}, {}
    for i, node in enumerate(graph.nodes):
        op = OPS[node.op]
        ins = [values[t] for t in node.inputs]
        values[node.outputs[0]], saved[i] = op.forward(
            node, ins[0] if len(ins) == 1 else tuple(ins), training)
    out = values[graph.output]
    if dy is None:
        return out, None
    grads = {graph.output: dy}
    first = 0
    if not need_grad_input:
        first = next((i for i, n in enumerate(graph.nodes)
                      if n.params or (n.layer is not None and n.layer.parameters())),
                     len(graph.nodes))
    for i in range(len(graph.nodes) - 1, first - 1, -1):
        node = graph.nodes[i]
        need = need_grad_input or i > first
        dxs = OPS[node.op].backward(node, saved[i], grads[node.outputs[0]], need)
        if len(node.inputs) == 1:
            dxs = (dxs,)
        for t, dx in zip(node.inputs, dxs):
            if need:
                grads[t] = dx if t not in grads else F.add(grads[t], dx)
    return out, grads.get(graph.input) if need_grad_input else None
