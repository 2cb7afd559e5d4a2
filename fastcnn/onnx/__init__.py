"""ONNX interchange: ``fastcnn.onnx.export(model, path, input_shape=(C, H, W))``
writes a fastcnn model as an ONNX file (fastcnn/onnx/export.py).

The ``onnx`` package is an optional dependency (``pip install "fastcnn[onnx]"``),
imported only when a function here is called: ``import fastcnn`` never needs it.
"""
__all__ = ["export"]


def require_onnx():
    """The onnx module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('fastcnn.onnx needs the onnx package: pip install "fastcnn[onnx]" '
                          '(or pip install onnx)') from exc
    return onnx


from .export import export  # noqa: E402  (after require_onnx, which export uses)
