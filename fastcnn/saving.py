"""State dicts with PyTorch's key names, and save / load to one file.

File format (``model.save``): a numpy ``.npz`` archive (a zip of ``.npy``
arrays, each with a CRC-32), holding one array per parameter under its
state-dict key (``"0.weight"``, float32, bit for bit) and the array
``"__fastcnn_model__"``: the UTF-8 JSON description of the architecture
(format name and version, the layers' classes and constructor arguments).
It is read with ``allow_pickle=False``: loading never executes code.
"""
import json
import os
import tempfile
from collections import OrderedDict

import numpy as np

from .layers import LAYERS

__all__ = ["StateDict", "load"]

_ARCH_KEY = "__fastcnn_model__"
_FORMAT = "fastcnn-model"
_FORMAT_VERSION = 1


class StateDict:
    """state_dict / load_state_dict / save for a model with named parameters."""

    # state dicts --------------------------------------------------------------
    def state_dict(self):
        """``OrderedDict`` of name -> array (a copy): every parameter (float32)
        and buffer (batch norm's running statistics), with PyTorch's key names
        (``"0.weight"``, ``"0.bias"``, ``"1.running_mean"``, ...)."""
        return OrderedDict((name, a.copy()) for name, a in self.named_state())

    def load_state_dict(self, state_dict):
        """Copy ``state_dict`` (name -> array) into the parameters, in place.

        Accepts the state dict of the equivalent ``torch.nn.Sequential``
        (tensors, or arrays from ``t.numpy()``). Everything is checked before
        anything is written.

        Raises:
            ValueError: naming the key, for a missing or unexpected key, a
                shape mismatch, or non-numeric values.
        """
        params = OrderedDict(self.named_state())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if missing or unexpected:
            raise ValueError("state_dict does not match the model: "
                             + (f"missing keys {missing}" if missing else "")
                             + ("; " if missing and unexpected else "")
                             + (f"unexpected keys {unexpected}" if unexpected else ""))
        values = {}
        for key, p in params.items():
            value = state_dict[key]
            if hasattr(value, "detach") and hasattr(value, "numpy"):
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.dtype.kind not in "fiu":
                raise ValueError(f"state_dict[{key!r}] must hold real numbers. "
                                 f"Received: dtype={value.dtype}")
            if value.shape != p.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, but the "
                                 f"model's parameter {key!r} has shape {p.shape}")
            values[key] = value
        for key, p in params.items():
            p[...] = values[key]

    def save(self, path, input_shape=None):
        """Write the architecture and the weights to one file, atomically.

        A model of fastcnn's own layers is stored as their classes and
        constructor arguments. A Module subclass of your own is stored as its
        traced graph (the ops its forward applies, with their attributes and
        the state-dict names of their parameters) and its layers; loading
        rebuilds both, without your class, and runs the graph on inputs of
        the traced shape, any batch size.

        The file is written under a temporary name in the same directory and
        renamed over ``path`` when complete (after an fsync; the directory is
        synced after the rename), so a crash never leaves a half-written file
        at ``path``: it holds the previous file or the new one. A process
        killed (SIGKILL, power loss) in the middle of a save may leave its
        temporary file behind, a hidden sibling named ``.<name>.<random>.tmp``,
        which is safe to delete. See the module docstring for the format.

        Args:
            path: file path (any name; ``.fcnn`` or ``.npz`` are customary).
            input_shape: one input's shape without the batch, e.g. (3, 32, 32),
                to trace a Module subclass of your own with; default the
                shape of the model's last call.

        Example:
            >>> model.save("lenet.fcnn")
            >>> model2 = fastcnn.load("lenet.fcnn")
        """
        from . import __version__
        path = os.fspath(path)
        arch = {"format": _FORMAT, "version": _FORMAT_VERSION, "fastcnn": __version__,
                "model": _top_record(self, input_shape)}
        arrays = {_ARCH_KEY: np.frombuffer(json.dumps(arch).encode("utf-8"), np.uint8)}
        arrays.update(self.state_dict())
        write_atomically(path, lambda f: np.savez(f, **arrays))


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it and
    rename it over ``path``: ``path`` holds the old file or the new one, never
    a part (a process killed mid-write leaves the previous file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_directory(directory)


def load(path):
    """Rebuild a model saved with ``Sequential.save``, bit for bit.

    Args:
        path: the file.

    Returns:
        the model (in training mode): a :class:`Sequential`, a model of
        fastcnn's own classes, or for a Module subclass of your own a
        Module running its saved graph, with the same state-dict names; an
        imported ONNX model (fastcnn.onnx.model.OnnxModel, which needs onnx).

    Raises:
        ValueError: naming the path, if the file is not a fastcnn model,
            is corrupt or truncated, or was written by a newer format.
        FileNotFoundError: if it does not exist.

    Example:
        >>> model = fastcnn.load("lenet.fcnn")
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):      # a plain .npy array
            raise _NotOurs()
        with archive:
            if _ARCH_KEY not in archive.files:
                raise _NotOurs()
            arch = json.loads(bytes(archive[_ARCH_KEY]).decode("utf-8"))
            arrays = {k: archive[k] for k in archive.files if k != _ARCH_KEY}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _NotOurs:
        raise ValueError(f"{path!r} is not a fastcnn model file (no architecture record "
                         f"{_ARCH_KEY!r}); save models with model.save(path)") from None
    except Exception as exc:  # zip, npy, json and unicode errors of damaged files
        # numpy reports any file that is neither zip nor npy as "pickled data".
        detail = ("not a numpy archive" if "pickle" in str(exc)
                  else f"{type(exc).__name__}: {exc}")
        raise ValueError(f"{path!r} is not a readable fastcnn model file (corrupt, truncated "
                         f"or foreign): {detail}") from None
    if not isinstance(arch, dict) or arch.get("format") != _FORMAT:
        raise ValueError(f"{path!r} is not a fastcnn model file (unknown format record)")
    if arch.get("version") != _FORMAT_VERSION:
        raise ValueError(f"{path!r} uses model file format version {arch.get('version')!r}; "
                         f"this fastcnn reads version {_FORMAT_VERSION}")
    from .sequential import Sequential
    try:
        model = _from_config(arch["model"])
        from .module import Module
        if not isinstance(model, (Sequential, Module)):
            raise ValueError("the top-level record is not a Sequential or a Module")
        expected = dict(model.named_state())
        for key, value in arrays.items():
            want = expected[key].dtype if key in expected else np.dtype(np.float32)
            if value.dtype != want:
                raise ValueError(f"array {key!r} has dtype {value.dtype}, expected {want}")
        model.load_state_dict(arrays)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path!r} is not a valid fastcnn model file: {exc}") from None
    return model


def _sync_directory(directory):
    """Make a rename in ``directory`` durable (POSIX); a no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _NotOurs(Exception):
    pass


def _layer_config(layer):
    name = type(layer).__name__
    if LAYERS.get(name) is not type(layer):
        raise TypeError(f"cannot save a layer of type {name}: only fastcnn's own layers "
                        f"({', '.join(sorted(LAYERS))}) can be saved")
    return {"class": name, "config": layer.get_config()}


def _from_config(record):
    if record["class"] == "Module":
        from .module import _Replay
        return _Replay.from_record(record, _from_config)
    cls, config = record["class"], record["config"]
    if cls == "Sequential":
        from .sequential import Sequential
        return Sequential([_from_config(r) for r in config["layers"]])
    if cls == "OnnxModel":                  # an imported ONNX model (needs the onnx package)
        from .onnx.model import OnnxModel
        return OnnxModel(**config)
    if cls not in LAYERS:
        raise ValueError(f"unknown layer class {cls!r}")
    return LAYERS[cls](**config)




# ---- Module subclasses of the user's own: layers and traced graph -------------------

def _top_record(model, input_shape):
    from .module import Module
    if LAYERS.get(type(model).__name__) is type(model) or not isinstance(model, Module):
        return _layer_config(model)
    return _module_record(model, input_shape)


def _module_record(model, input_shape):
    """The record of a user's Module: its layers (``_tree_record``) and the graph
    its forward traces in training mode (so that dropout is in it), with each
    parameter named by its state-dict key."""
    from .runner import trace
    if input_shape is None:
        runner = model.__dict__.get("_runner_state")
        if runner is None or not runner.programs:
            raise TypeError(f"cannot save a layer of type {type(model).__name__} before it "
                            f"has run: call it on a batch once, or pass "
                            f"input_shape=(C, H, W) to save")
        input_shape = runner.programs[0][1].in_shape[1:]
    layers = list(_all_layers(model))
    modes = [layer.training for layer in layers]
    try:
        for layer in layers:
            layer.training = True
        graph = trace(model, (1,) + tuple(input_shape))
    finally:
        for layer, mode in zip(layers, modes):
            layer.training = mode
    keys = {id(obj): key for key, obj in model.named_parameters() + model.named_buffers()}
    nodes = []
    for node in graph.nodes:
        if node.op == "layer":
            raise TypeError(f"cannot save a layer of type {type(node.layer).__name__} inside "
                            f"{type(model).__name__}: it runs its own Python forward")
        missing = [n for n, obj in node.params.items() if obj is not None and id(obj) not in keys]
        if missing:
            raise TypeError(f"cannot save {type(model).__name__}: its graph uses parameters "
                            f"that are not its own ({node.op} {missing})")
        nodes.append({"op": node.op, "inputs": list(node.inputs), "outputs": list(node.outputs),
                      "attrs": node.attrs,
                      "params": {n: None if obj is None else keys[id(obj)]
                                 for n, obj in node.params.items()}})
    record = _tree_record(model)
    record.update(nodes=nodes, input=graph.input, output=graph.output,
                  input_shape=list(input_shape))
    return record


def _tree_record(layer):
    """A layer for the state dict only (its graph is the parent's): fastcnn's own
    classes by their config, Sequentials and the user's Modules by their children."""
    from .module import Module
    from .sequential import Sequential
    if type(layer) is Sequential:
        return {"class": "Sequential", "config": {"layers": [_tree_record(x) for x in layer]}}
    if LAYERS.get(type(layer).__name__) is type(layer) or not isinstance(layer, Module):
        return _layer_config(layer)
    return {"class": "Module", "name": type(layer).__name__,
            "params": [[name, list(p.shape)] for name, p in layer._params.items()],
            "children": [[name, _tree_record(child)] for name, child in layer.children()]}


def _all_layers(layer):
    yield layer
    children = [c for _, c in layer.children()] if hasattr(layer, "children") else \
        list(getattr(layer, "layers", []))
    for child in children:
        yield from _all_layers(child)
