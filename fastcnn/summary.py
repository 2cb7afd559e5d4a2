"""A model's summary: each layer, its output shape and parameter count."""
from ._checks import as_int
from .runner import trace

__all__ = ["summary"]


def summary(model, input_shape=None, print_fn=print):
    """Print each layer of ``model`` (a Sequential), its output shape and
    parameter count, and the totals. The shapes come from tracing the model's
    graph: nothing runs.

    Args:
        input_shape: shape of one input without the batch, e.g. (1, 28, 28);
            default: that of the last data the model ran on.
        print_fn: called with each line. Default ``print``.

    Example:
        >>> model.summary(input_shape=(1, 28, 28))
    """
    if input_shape is None:
        input_shape = model.input_shape
    if input_shape is None:
        raise ValueError("summary() needs the input shape: pass input_shape=(C, H, W) "
                         "or run the model on data first")
    input_shape = tuple(as_int(d, "input_shape") for d in input_shape)
    graph = trace(model, (1,) + input_shape)
    shapes = {}
    for node in graph.nodes:                    # the last node of each layer
        shapes[node.name.split(".")[0]] = graph.shapes[node.outputs[0]]
    rows = [("Layer (type)", "Output shape", "Params")]
    total = 0
    for i, layer in enumerate(model.layers):
        count = sum(p.size for p in layer.parameters())
        total += count
        rows.append((f"{i}: {layer!r}", str((None,) + shapes[str(i)][1:]), f"{count:,}"))
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    rule = "=" * (w0 + w1 + 10)
    print_fn(f"Model: Sequential, input shape {(None,) + input_shape}")
    print_fn(f"{rows[0][0]:<{w0}}{rows[0][1]:<{w1}}{rows[0][2]:>10}")
    print_fn(rule)
    for name, shape, count in rows[1:]:
        print_fn(f"{name:<{w0}}{shape:<{w1}}{count:>10}")
    print_fn(rule)
    print_fn(f"Total params: {total:,} ({total * 4 / 1024:,.1f} KiB)")
