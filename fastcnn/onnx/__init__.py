"""ONNX interchange: ``fastcnn.onnx.load`` turns an ONNX file into a fastcnn
model (it predicts, trains, saves, and runs through the same compiler and
executor as native models); ``fastcnn.onnx.export(model, path, input_shape)``
writes a fastcnn model as an ONNX file (fastcnn/onnx/export.py).

The ``onnx`` package is an optional dependency (``pip install "fastcnn[onnx]"``),
imported only when a function here is called: ``import fastcnn`` never needs it.
"""
__all__ = ["load", "export"]


def require_onnx():
    """The onnx module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('fastcnn.onnx needs the onnx package: pip install "fastcnn[onnx]" '
                          '(or pip install onnx)') from exc
    return onnx


def load(model):
    """Import an ONNX model as a fastcnn model.

    Args:
        model: a path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.

    Returns:
        a :class:`fastcnn.onnx.model.OnnxModel` (a ``fastcnn.Module``, in
        inference mode): ``model(x)``, ``predict``, ``fit``, ``backward``,
        ``save`` (``fastcnn.load`` reads it back), ``state_dict`` keyed by the
        ONNX initializer names.

    Raises:
        ImportError: without the onnx package.
        ValueError: for a file that is not a valid ONNX model (truncated or
            corrupt, a missing initializer, a cycle, a non-float input, dynamic
            dimensions other than the batch), or that uses ops or attributes
            fastcnn lacks (all of them listed, with node names and the opset).

    Example:
        >>> model = fastcnn.onnx.load("resnet18.onnx")
        >>> model(np.zeros((1, 3, 224, 224), np.float32)).shape
        (1, 1000)
    """
    require_onnx()
    from .model import OnnxModel, read_model
    return OnnxModel(read_model(model)).eval()


from .export import export  # noqa: E402  (after require_onnx, which export uses)
