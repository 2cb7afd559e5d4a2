"""fastcnn.profile: where a model's time goes, node by node of its compiled graph.

    with fastcnn.profile() as prof:
        model.fit(x, y, epochs=1)
    print(prof)                     # the nodes, slowest first
    prof.rows()                     # the same as a list of dicts

Every forward and backward call of a compiled model (Sequential, Module,
fastcnn.freeze, fastcnn.onnx.load) made inside the block, from any thread,
adds each step's wall-clock time to its node's row. A node is what the
compiler made of the layers: a convolution with its batch norm folded in and
its activation fused shows as one convolution node. Work outside the graph
(the loss, the optimizer's update, copying the batch) is not in the rows.
Timing costs two clock reads per step; nothing is timed outside the block.
"""
import contextlib
import threading

from . import _native

__all__ = ["Profile", "profile"]


class Profile:
    """The steps' times of the calls made while it was active, per node."""

    def __init__(self):
        self._rows = {}     # (name, op, output shape) -> [forward calls, s, backward calls, s]
        self._lock = threading.Lock()   # calls from several threads add to one row

    def _add(self, node, graph, backward, seconds):
        shape = graph.shapes[node.outputs[0]] if node.outputs else ()
        with self._lock:
            row = self._rows.setdefault((node.name or node.op, node.op, tuple(shape)),
                                        [0, 0.0, 0, 0.0])
            row[2 * bool(backward)] += 1
            row[2 * bool(backward) + 1] += seconds

    def rows(self):
        """One dict per node, slowest first: name, op, shape (of its output),
        forward_calls, forward_ms, backward_calls, backward_ms (totals over the
        calls) and share (of all the rows' time)."""
        total = sum(r[1] + r[3] for r in self._rows.values()) or 1.0
        out = [{"name": name, "op": op, "shape": shape,
                "forward_calls": r[0], "forward_ms": 1e3 * r[1],
                "backward_calls": r[2], "backward_ms": 1e3 * r[3],
                "share": (r[1] + r[3]) / total}
               for (name, op, shape), r in self._rows.items()]
        return sorted(out, key=lambda d: -(d["forward_ms"] + d["backward_ms"]))

    def total_ms(self):
        """All the rows' time, forward and backward, in milliseconds."""
        return 1e3 * sum(r[1] + r[3] for r in self._rows.values())

    def table(self, top=None):
        """The rows as aligned text, slowest first (only the `top` slowest if given)."""
        rows = self.rows()[:top]
        head = ("node", "op", "output", "fwd calls", "fwd ms", "bwd calls", "bwd ms", "share")
        body = [(r["name"], r["op"], "x".join(map(str, r["shape"])), str(r["forward_calls"]),
                 f"{r['forward_ms']:.3f}", str(r["backward_calls"]), f"{r['backward_ms']:.3f}",
                 f"{100 * r['share']:.1f}%") for r in rows]
        widths = [max(len(t[k]) for t in [head] + body) for k in range(len(head))]
        lines = ["  ".join(t[k].ljust(widths[k]) if k < 3 else t[k].rjust(widths[k])
                           for k in range(len(head))) for t in [head] + body]
        lines.append(f"total {self.total_ms():.3f} ms in {len(self._rows)} nodes")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


@contextlib.contextmanager
def profile():
    """Time every step of the compiled models' calls inside the block; yields
    the Profile that collects them (one active at a time; an inner block
    takes over until it ends)."""
    prof = Profile()
    previous = _native._set_profiler(prof)
    try:
        yield prof
    finally:
        _native._set_profiler(previous)
