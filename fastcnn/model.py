"""Sequential: a stack of layers with fit / evaluate / predict / summary,
state dicts with PyTorch's key names, and save / load to one file.

File format (``model.save``): a numpy ``.npz`` archive (a zip of ``.npy``
arrays, each with a CRC-32), holding one array per parameter under its
state-dict key (``"0.weight"``, float32, bit for bit) and the array
``"__fastcnn_model__"``: the UTF-8 JSON description of the architecture
(format name and version, the layers' classes and constructor arguments).
It is read with ``allow_pickle=False``: loading never executes code.
"""
import json
import math
import os
import tempfile
import time
from collections import OrderedDict

import numpy as np

from ._checks import as_float32, as_int, check_shape
from ._native import Plan
from .layers import LAYERS, AvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid
from .losses import CrossEntropyLoss, get_loss
from .optim import LRScheduler, get_optimizer
from .progress import Progress

__all__ = ["Sequential", "History", "load"]

_ARCH_KEY = "__fastcnn_model__"
_FORMAT = "fastcnn-model"
_FORMAT_VERSION = 1


class History:
    """What ``fit`` returns: ``history.history`` maps each figure to its list
    of per-epoch values: ``loss``, ``accuracy`` (classification losses),
    ``images_per_sec``, and with validation data ``val_loss``,
    ``val_accuracy``; ``history.epoch`` lists the epoch numbers (1-based)."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class Sequential(Layer):
    """A model made of layers applied one after the other (``torch.nn.Sequential``).

    Args:
        *layers: the layers, as arguments or as one list.
        seed: if given, re-initialise every parameter (PyTorch's default
            scheme) from ``numpy.random.default_rng(seed)``, layer by layer:
            the same seed gives the same model. Otherwise the layers keep
            their own initialisation (from :func:`fastcnn.manual_seed`'s
            generator).

    Input shape:
        that of the first layer.

    Output shape:
        that of the last layer.

    Speed, memory and threads:
        The first pass of each input shape runs the layers one by one, which
        check everything. It also builds a plan (up to 3 are kept, most
        recently used first) that later passes of that shape run: the kernels
        called back to back from Cython on buffers allocated once, so a
        training step allocates nothing but its results. What ``forward`` and
        ``backward`` return is always a fresh array. A plan serves one call at
        a time: a second thread calling the same model meanwhile takes the
        checked path, which is correct but slower; training one model from
        two threads at once is not supported (as with the layers' own caches).
        Only fastcnn's own layer classes are planned (a subclass makes the
        whole model take the checked path). After a planned pass, a layer's
        own ``backward`` raises: back-propagate through the model.

    Example:
        >>> model = fastcnn.Sequential(
        ...     fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        ...     fastcnn.Flatten(), fastcnn.Linear(6 * 14 * 14, 10), seed=0)
        >>> history = model.fit(x_train, y_train, epochs=3, batch_size=64)
        >>> loss, accuracy = model.evaluate(x_test, y_test)
        >>> model.save("digits.fcnn"); same = fastcnn.load("digits.fcnn")
    """

    def __init__(self, *layers, seed=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes fastcnn layers. Received: "
                                f"{type(layer).__name__} at position {i}")
        self.layers = list(layers)
        self.optimizer = None
        self._input_shape = None
        self._plans, self._plan_used, self._layer_caches = [], None, False
        if seed is not None:
            self.reset_parameters(np.random.default_rng(as_int(seed, "seed")))

    # container ----------------------------------------------------------------
    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def add(self, layer):
        """Append a layer."""
        if not isinstance(layer, Layer):
            raise TypeError(f"add takes a fastcnn layer. Received: {type(layer).__name__}")
        self.layers.append(layer)
        self._plans = []

    def named_parameters(self, prefix=""):
        out = []
        for i, layer in enumerate(self.layers):
            out.extend(layer.named_parameters(f"{prefix}{i}."))
        return out

    def reset_parameters(self, rng=None):
        for layer in self.layers:
            layer.reset_parameters(rng)

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    # forward / backward -------------------------------------------------------
    # The first pass of each input shape goes through the layers, which check
    # everything; it also builds a plan (fastcnn._plan) that later passes of that
    # shape run: the kernels called back to back from Cython, every buffer reused.
    _MAX_PLANS = 3

    def forward(self, x):
        """Run every layer; in training mode each caches what backward needs."""
        if not self.layers:
            raise ValueError("the model has no layers")
        x = as_float32(x, "x")
        self._input_shape = x.shape[1:]
        self._plan_used = None
        plan = self._find_plan(x.shape)
        if plan is not None and plan.acquire():
            try:
                out = plan.forward(x)
            finally:
                plan.release()
            if self._layer_caches:      # stale now: backward goes through the plan
                for layer in self.layers:
                    _drop_cache(layer)
                self._layer_caches = False
            if self.training:
                self._plan_used = plan
            return out
        shapes = [x.shape]
        for layer in self.layers:
            x = layer(x)
            shapes.append(np.shape(x))
        self._layer_caches = True
        if plan is None and _planned(self.layers, self.training):
            self._add_plan(Plan(self.layers, shapes[0], self.training, shapes))
        return x

    def __getstate__(self):
        """Copies and pickles leave the plans behind (they are rebuilt on use)."""
        state = self.__dict__.copy()
        state["_plans"], state["_plan_used"] = [], None
        return state

    def _find_plan(self, shape):
        plans = self._plans
        if not plans:
            return None
        for i, plan in enumerate(plans):
            if plan.matches(self.layers, shape, self.training):
                if i:
                    plans.insert(0, plans.pop(i))      # most recently used first
                return plan
        return None

    def _add_plan(self, plan):
        plans = self._plans
        plans.insert(0, plan)
        del plans[self._MAX_PLANS:]

    def backward(self, grad_y, *, need_grad_input=True):
        """Back-propagate ``grad_y`` (the gradient of the loss with respect to
        the output): accumulates every parameter's ``.grad`` and returns the
        gradient of the input (None with ``need_grad_input=False``, which
        skips the work below the first layer with parameters)."""
        plan = self._plan_used
        if plan is not None:
            dy = as_float32(grad_y, "grad_y")
            check_shape(dy, plan.out_shape, "grad_y")
            if not plan.acquire():
                raise RuntimeError("the model is being run by another thread")
            try:
                return plan.backward(dy, bool(need_grad_input))
            finally:
                plan.release()
        first = 0
        if not need_grad_input:
            first = next((i for i, l in enumerate(self.layers) if l.parameters()),
                         len(self.layers))
        for i in range(len(self.layers) - 1, first - 1, -1):
            grad_y = self.layers[i].backward(grad_y, need_grad_input=need_grad_input or i > first)
        return grad_y if need_grad_input else None

    # training -----------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None, loss=None,
            validation_data=None, shuffle=True, seed=None, verbose=1, lr_scheduler=None,
            augment=None):
        """Train the model on ``(x, y)``.

        Args:
            x: inputs (N, ...), e.g. images (N, C, H, W); converted once to float32.
            y: targets: class labels (N,) for cross-entropy, arrays for MSE.
            epochs: passes over the data. Default 1.
            batch_size: images per step. Default 32.
            optimizer: an Optimizer over ``model.parameters()``, or a name
                ('adam', 'sgd', 'adamw'). Default: the optimizer of the last
                ``fit`` call, else Adam(lr=1e-3).
            loss: a Loss or a name ('cross_entropy', 'mse'). Default cross-entropy.
            validation_data: ``(x_val, y_val)`` evaluated after each epoch.
            shuffle: reshuffle the data every epoch. Default True.
            seed: seed of the shuffling (None: unpredictable).
            verbose: 0 silent, 1 live progress bar on a terminal (a line per
                epoch otherwise), 2 a line per epoch.
            lr_scheduler: an LRScheduler of the optimizer, stepped after each epoch.
            augment: data augmentation, a function ``augment(x, rng)`` called at
                the start of each epoch with the training inputs and fit's numpy
                Generator, returning new inputs of the same shape for that epoch
                (e.g. :func:`fastcnn.datasets.random_shift`). Default None.

        Returns:
            :class:`History`, per-epoch ``loss``, ``accuracy``,
            ``images_per_sec`` (and ``val_loss``, ``val_accuracy``).

        Raises:
            FloatingPointError: when the loss becomes NaN or infinite; the
                message names the epoch and batch, and the weights are those
                after the last good step (the failing step is not applied).
            ValueError, TypeError: for bad arguments.

        Example:
            >>> history = model.fit(x_train, y_train, epochs=5, batch_size=64,
            ...                     optimizer=fastcnn.Adam(model.parameters(), lr=2e-3),
            ...                     validation_data=(x_test, y_test))
            >>> history.history["val_accuracy"][-1]
        """
        epochs = _nonnegative_int(epochs, "epochs")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function (x, rng) -> x. "
                            f"Received: {type(augment).__name__}")
        batch_size = _positive_int(batch_size, "batch_size")
        verbose = as_int(verbose, "verbose")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        loss_fn = get_loss(CrossEntropyLoss() if loss is None else loss)
        x, y = _check_data(x, y, loss_fn)
        params = self.parameters()
        if not params:
            raise ValueError("the model has no parameters to train")
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None else "adam"
        optimizer = get_optimizer(optimizer, params)
        ours = {id(p) for p in params}
        if not any(id(p) in ours for p in optimizer.params):
            raise ValueError("the optimizer holds none of this model's parameters: build it "
                             "with model.parameters()")
        self.optimizer = optimizer
        if lr_scheduler is not None and not isinstance(lr_scheduler, LRScheduler):
            raise TypeError(f"lr_scheduler must be a fastcnn LRScheduler. "
                            f"Received: {type(lr_scheduler).__name__}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val). "
                                 f"Received: {type(validation_data).__name__}")
            validation_data = _check_data(*validation_data, loss_fn)

        n = x.shape[0]
        steps = -(-n // batch_size)
        rng = np.random.default_rng(seed)
        xb_buf = np.empty((min(batch_size, n),) + x.shape[1:], np.float32)
        yb_buf = np.empty((min(batch_size, n),) + y.shape[1:], y.dtype)
        history = History()
        progress = Progress(epochs, steps, verbose)
        self.train()
        try:
            for epoch in range(1, epochs + 1):
                x_epoch = x if augment is None else _augmented(augment, x, rng)
                order = rng.permutation(n) if shuffle else np.arange(n)
                progress.start_epoch(epoch)
                start = time.perf_counter()
                total_loss, correct = 0.0, 0
                for step in range(steps):
                    idx = order[step * batch_size:(step + 1) * batch_size]
                    xb, yb = xb_buf[:len(idx)], yb_buf[:len(idx)]
                    np.take(x_epoch, idx, axis=0, out=xb, mode="clip")
                    np.take(y, idx, axis=0, out=yb, mode="clip")
                    out = self.forward(xb)
                    batch_loss = loss_fn(out, yb)
                    if not math.isfinite(batch_loss):
                        raise FloatingPointError(
                            f"The loss became {batch_loss} at epoch {epoch}, batch {step + 1} "
                            f"(of {steps}); training stopped and the weights are those after "
                            f"the last good step. Try a lower learning rate, or check the data "
                            f"for NaN or infinite values.")
                    optimizer.zero_grad()
                    self.backward(loss_fn.backward(), need_grad_input=False)
                    optimizer.step()
                    total_loss += batch_loss * len(idx)
                    if loss_fn.accuracy is not None:
                        correct += int(np.count_nonzero(np.argmax(out, axis=1) == yb))
                    seen = step * batch_size + len(idx)
                    progress.update(step + 1, seen, total_loss / seen)
                seconds = time.perf_counter() - start
                logs = {"loss": total_loss / n}
                if loss_fn.accuracy is not None:
                    logs["accuracy"] = correct / n
                if validation_data is not None:
                    val_loss, val_acc = self.evaluate(*validation_data, loss=loss_fn)
                    logs["val_loss"] = val_loss
                    if val_acc is not None:
                        logs["val_accuracy"] = val_acc
                logs["images_per_sec"] = n / seconds if seconds > 0 else float("inf")
                history.append(epoch, logs)
                progress.end_epoch(seconds, logs)
                if lr_scheduler is not None:
                    lr_scheduler.step()
        finally:
            progress.close()
        return history

    def evaluate(self, x, y, batch_size=256, loss=None):
        """Loss and accuracy of the model on ``(x, y)``, in inference mode.

        Args:
            x: inputs (N, ...).
            y: targets (class labels (N,) for cross-entropy).
            batch_size: images per forward pass. Default 256.
            loss: a Loss or name; default cross-entropy.

        Returns:
            ``(loss, accuracy)``: floats, means over the N examples
            (accuracy is None for losses other than cross-entropy).

        Example:
            >>> loss, accuracy = model.evaluate(x_test, y_test)
        """
        loss_fn = get_loss(CrossEntropyLoss() if loss is None else loss)
        x, y = _check_data(x, y, loss_fn)
        batch_size = _positive_int(batch_size, "batch_size")
        total_loss, correct = 0.0, 0
        with _inference(self):
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                out = self.forward(xb)
                total_loss += loss_fn(out, yb) * len(xb)
                if loss_fn.accuracy is not None:
                    correct += int(np.count_nonzero(np.argmax(out, axis=1) == yb))
        n = x.shape[0]
        return total_loss / n, (correct / n if loss_fn.accuracy is not None else None)

    def predict(self, x, batch_size=256):
        """The model's outputs for ``x``, computed in batches in inference mode.

        Args:
            x: inputs (N, ...).
            batch_size: images per forward pass. Default 256.

        Returns:
            float32 array (N, ...) of outputs (logits for a classifier).

        Example:
            >>> labels = model.predict(x_test).argmax(axis=1)
        """
        x = as_float32(x, "x")
        batch_size = _positive_int(batch_size, "batch_size")
        result = None
        with _inference(self):
            for start in range(0, x.shape[0], batch_size):
                out = self.forward(x[start:start + batch_size])
                if result is None:
                    result = np.empty((x.shape[0],) + out.shape[1:], np.float32)
                result[start:start + out.shape[0]] = out
        return result

    # description --------------------------------------------------------------
    def summary(self, input_shape=None, print_fn=print):
        """Print each layer, its output shape and parameter count, and the totals.

        Args:
            input_shape: shape of one input without the batch, e.g. (1, 28, 28);
                default: that of the last data the model ran on.
            print_fn: called with each line. Default ``print``.

        Example:
            >>> model.summary(input_shape=(1, 28, 28))
        """
        if input_shape is None:
            input_shape = self._input_shape
        if input_shape is None:
            raise ValueError("summary() needs the input shape: pass input_shape=(C, H, W) "
                             "or run the model on data first")
        x = np.zeros((1,) + tuple(as_int(d, "input_shape") for d in input_shape), np.float32)
        rows = [("Layer (type)", "Output shape", "Params")]
        total = 0
        with _inference(self):
            for i, layer in enumerate(self.layers):
                x = layer(x)
                count = sum(p.size for p in layer.parameters())
                total += count
                rows.append((f"{i}: {layer!r}", str((None,) + x.shape[1:]), f"{count:,}"))
        w0 = max(len(r[0]) for r in rows) + 2
        w1 = max(len(r[1]) for r in rows) + 2
        rule = "=" * (w0 + w1 + 10)
        print_fn(f"Model: Sequential, input shape {(None,) + tuple(input_shape)}")
        print_fn(f"{rows[0][0]:<{w0}}{rows[0][1]:<{w1}}{rows[0][2]:>10}")
        print_fn(rule)
        for name, shape, count in rows[1:]:
            print_fn(f"{name:<{w0}}{shape:<{w1}}{count:>10}")
        print_fn(rule)
        print_fn(f"Total params: {total:,} ({total * 4 / 1024:,.1f} KiB)")

    def get_config(self):
        return {"layers": [_layer_config(layer) for layer in self.layers]}

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    # state dicts --------------------------------------------------------------
    def state_dict(self):
        """``OrderedDict`` of parameter name -> float32 array (a copy), with
        PyTorch's key names (``"0.weight"``, ``"0.bias"``, ``"3.weight"``, ...)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict):
        """Copy ``state_dict`` (name -> array) into the parameters, in place.

        Accepts the state dict of the equivalent ``torch.nn.Sequential``
        (tensors, or arrays from ``t.numpy()``). Everything is checked before
        anything is written.

        Raises:
            ValueError: naming the key, for a missing or unexpected key, a
                shape mismatch, or non-numeric values.
        """
        params = OrderedDict(self.named_parameters())
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
            if value.shape != p.data.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, but the "
                                 f"model's parameter {key!r} has shape {p.data.shape}")
            values[key] = value
        for key, p in params.items():
            p.data[...] = values[key]

    # files --------------------------------------------------------------------
    def save(self, path):
        """Write the architecture and the weights to one file, atomically.

        The file is written under a temporary name in the same directory and
        renamed over ``path`` when complete, so a crash never leaves a
        half-written file at ``path``. See the module docstring for the format.

        Args:
            path: file path (any name; ``.fcnn`` or ``.npz`` are customary).

        Example:
            >>> model.save("lenet.fcnn")
            >>> model2 = fastcnn.load("lenet.fcnn")
        """
        from . import __version__
        path = os.fspath(path)
        arch = {"format": _FORMAT, "version": _FORMAT_VERSION, "fastcnn": __version__,
                "model": _layer_config(self)}
        arrays = {_ARCH_KEY: np.frombuffer(json.dumps(arch).encode("utf-8"), np.uint8)}
        arrays.update(self.state_dict())
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
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


def load(path):
    """Rebuild a model saved with ``Sequential.save``, bit for bit.

    Args:
        path: the file.

    Returns:
        a :class:`Sequential` (in training mode).

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
    try:
        model = _from_config(arch["model"])
        if not isinstance(model, Sequential):
            raise ValueError("the top-level record is not a Sequential")
        for key, value in arrays.items():
            if value.dtype != np.float32:
                raise ValueError(f"array {key!r} has dtype {value.dtype}, expected float32")
        model.load_state_dict(arrays)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path!r} is not a valid fastcnn model file: {exc}") from None
    return model


class _NotOurs(Exception):
    pass


def _layer_config(layer):
    name = type(layer).__name__
    if name not in LAYERS and not isinstance(layer, Sequential):
        raise TypeError(f"cannot save a layer of type {name}: only fastcnn's own layers "
                        f"({', '.join(sorted(LAYERS))}, Sequential) can be saved")
    return {"class": name, "config": layer.get_config()}


def _from_config(record):
    cls, config = record["class"], record["config"]
    if cls == "Sequential":
        return Sequential([_from_config(r) for r in config["layers"]])
    if cls not in LAYERS:
        raise ValueError(f"unknown layer class {cls!r}")
    return LAYERS[cls](**config)


class _inference:
    """Context: eval mode inside, the previous mode restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.mode = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.mode)


def _check_data(x, y, loss_fn):
    x = as_float32(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch dimension and at least one more. "
                         f"Received: x.shape={x.shape}")
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must have the same number of examples. "
                         f"Received: x.shape={x.shape}, y.shape={y.shape}")
    if isinstance(loss_fn, CrossEntropyLoss):
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"y must be integer class labels of shape (N,) for cross-entropy. "
                             f"Received: y.shape={y.shape}, dtype={y.dtype}")
        y = np.ascontiguousarray(y, np.int64)
    else:
        y = as_float32(y, "y")
    return x, y


def _augmented(augment, x, rng):
    out = as_float32(augment(x, rng), "augment(x, rng)")
    if out.shape != x.shape:
        raise ValueError(f"augment must return an array of the input's shape {x.shape}. "
                         f"Received: shape {out.shape}")
    return out


def _positive_int(value, name):
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")
    return v


def _nonnegative_int(value, name):
    v = as_int(value, name)
    if v < 0:
        raise ValueError(f"{name} must be non-negative. Received: {name}={value!r}")
    return v



_PLANNED = (Conv2d, Linear, ReLU, Sigmoid, MaxPool2d, AvgPool2d, Flatten)


def _planned(layers, training):
    """Whether a plan can run these layers: fastcnn's own layer classes (not
    subclasses, which may override forward), all in the model's mode."""
    return all(type(layer) in _PLANNED and layer.training == training for layer in layers)


def _drop_cache(layer):
    """Forget what a layer's own forward cached (a plan pass made it stale), so a
    direct ``layer.backward`` raises instead of using old activations."""
    for name in ("_x", "_y", "_indices", "_input_shape"):
        if hasattr(layer, name):
            setattr(layer, name, None)
