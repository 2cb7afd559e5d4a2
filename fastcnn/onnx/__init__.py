"""ONNX interchange: ``fastcnn.onnx.export(model, path, input_shape=(C, H, W))``.

The onnx package is an optional extra: ``pip install "fastcnn[onnx]"``
(``import fastcnn`` never imports it).
"""
import importlib

try:
    importlib.import_module("onnx")
except ImportError as exc:
    raise ImportError('fastcnn.onnx needs the onnx package: pip install "fastcnn[onnx]"') \
        from exc

from .export import export

__all__ = ["export"]
