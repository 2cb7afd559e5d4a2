"""Training and inference loops (Keras' fit / evaluate / predict), for any
model made of layers, and the History that fit returns."""
import math
import time

import numpy as np

from ._checks import as_float32, as_int, nonnegative_int, positive_int
from .losses import CrossEntropyLoss, get_loss
from .optim import LRScheduler, get_optimizer
from .progress import Progress

__all__ = ["History", "Training"]


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


class Training:
    """fit / evaluate / predict for a model (a Layer with parameters) that
    runs ``forward`` and ``backward`` on batches."""
    optimizer = None

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

        Data-parallel: with a :class:`fastcnn.distributed.DistributedOptimizer`
        on more than one MPI rank, every rank draws the same shuffle (rank 0's
        seed), trains on its slice of each global batch of ``batch_size``,
        and the loss and accuracy are those of the whole batch; only rank 0
        prints. Call fit on every rank (fastcnn.distributed says more).

        Returns:
            :class:`History`, per-epoch ``loss``, ``accuracy``,
            ``images_per_sec`` (and ``val_loss``, ``val_accuracy``).

        Raises:
            FloatingPointError: when the loss becomes NaN or infinite; the
                message names the epoch and batch, and the weights are those
                after the last good step (the failing step is not applied).
            ValueError, TypeError: for bad arguments.

        Interrupted: any exception raised mid-epoch (by the loss, an
        ``augment`` function, a layer of Python code, or a KeyboardInterrupt)
        propagates as it is; the weights and the optimizer's state are those
        after the last finished step (a step's update is one native call, so
        it is applied whole or not at all), and the model stays usable: the
        next ``fit``, ``predict`` or training call works (tests/test_longrun.py).

        Example:
            >>> history = model.fit(x_train, y_train, epochs=5, batch_size=64,
            ...                     optimizer=fastcnn.Adam(model.parameters(), lr=2e-3),
            ...                     validation_data=(x_test, y_test))
            >>> history.history["val_accuracy"][-1]
        """
        epochs = nonnegative_int(epochs, "epochs")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function (x, rng) -> x. "
                            f"Received: {type(augment).__name__}")
        batch_size = positive_int(batch_size, "batch_size")
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
        par = _data_parallel(optimizer)
        rng = np.random.default_rng(par.common_seed(seed))
        xb_buf = np.empty((min(batch_size, n),) + x.shape[1:], np.float32)
        yb_buf = np.empty((min(batch_size, n),) + y.shape[1:], y.dtype)
        history = History()
        progress = Progress(epochs, steps, verbose if par.rank == 0 else 0)
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
                    mine = par.shard(idx)          # idx itself in one process
                    xb, yb = xb_buf[:len(mine)], yb_buf[:len(mine)]
                    np.take(x_epoch, mine, axis=0, out=xb, mode="clip")
                    np.take(y, mine, axis=0, out=yb, mode="clip")
                    batch_sum, batch_correct = 0.0, 0
                    if len(mine):
                        out = self(xb)
                        batch_sum = loss_fn(out, yb) * len(mine)
                        if loss_fn.classification:
                            batch_correct = int(np.count_nonzero(np.argmax(out, axis=1) == yb))
                    batch_sum, batch_correct = par.reduce_sums(batch_sum, batch_correct)
                    batch_loss = batch_sum / len(idx)
                    if not math.isfinite(batch_loss):
                        raise FloatingPointError(
                            f"The loss became {batch_loss} at epoch {epoch}, batch {step + 1} "
                            f"(of {steps}); training stopped and the weights are those after "
                            f"the last good step. Try a lower learning rate, or check the data "
                            f"for NaN or infinite values.")
                    optimizer.zero_grad()
                    if len(mine):
                        scale = par.loss_grad_scale(len(mine), len(idx))
                        grad_out = loss_fn.backward()
                        self.backward(grad_out if scale == 1 else grad_out * np.float32(scale),
                                      need_grad_input=False)
                    optimizer.step()
                    total_loss += batch_sum
                    correct += int(batch_correct)
                    seen = step * batch_size + len(idx)
                    progress.update(step + 1, seen, total_loss / seen)
                par.end_epoch(self)
                seconds = time.perf_counter() - start
                logs = {"loss": total_loss / n}
                if loss_fn.classification:
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

        After a data-parallel ``fit`` (the model's optimizer is a
        DistributedOptimizer on several ranks) it is collective: call it on
        every rank; each evaluates its share of the rows, all get the result.

        Example:
            >>> loss, accuracy = model.evaluate(x_test, y_test)
        """
        loss_fn = get_loss(CrossEntropyLoss() if loss is None else loss)
        x, y = _check_data(x, y, loss_fn)
        batch_size = positive_int(batch_size, "batch_size")
        n = x.shape[0]
        par = _data_parallel(self.optimizer)
        mine = par.rows(n)                          # all of x in one process
        x, y = x[mine], y[mine]
        total_loss, correct = 0.0, 0
        with _inference(self):
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                out = self(xb)
                total_loss += loss_fn(out, yb) * len(xb)
                if loss_fn.classification:
                    correct += int(np.count_nonzero(np.argmax(out, axis=1) == yb))
        total_loss, correct = par.reduce_sums(total_loss, correct)
        return total_loss / n, (correct / n if loss_fn.classification else None)

    def predict(self, x, batch_size=256):
        """The model's outputs for ``x``, computed in batches in inference mode.

        Args:
            x: inputs (N, ...).
            batch_size: images per forward pass. Default 256.

        Returns:
            float32 array (N, ...) of outputs (logits for a classifier).

        After a data-parallel ``fit`` it is collective, like ``evaluate``:
        each rank computes its share of the rows and all get every row.

        Example:
            >>> labels = model.predict(x_test).argmax(axis=1)
        """
        x = as_float32(x, "x")
        batch_size = positive_int(batch_size, "batch_size")
        par = _data_parallel(self.optimizer)
        if par.size > 1 and x.shape[0] >= par.size:
            part = self._predict_local(x[par.rows(x.shape[0])], batch_size)
            return par.gather_rows(part, x.shape[0])
        return self._predict_local(x, batch_size)

    def _predict_local(self, x, batch_size):
        result = None
        with _inference(self):
            if x.shape[0] <= batch_size:
                return self(x)                  # a fresh array already
            for start in range(0, x.shape[0], batch_size):
                out = self(x[start:start + batch_size])
                if result is None:
                    result = np.empty((x.shape[0],) + out.shape[1:], np.float32)
                result[start:start + out.shape[0]] = out
        return result


class _LocalData:
    """fit / evaluate / predict in one process: every batch is all this
    process's (fastcnn.distributed._DataParallel is the many-rank twin)."""
    rank, size = 0, 1

    def rows(self, n):
        return slice(0, n)

    def shard(self, idx):
        return idx

    def common_seed(self, seed):
        return seed

    def reduce_sums(self, *values):
        return values

    def loss_grad_scale(self, local, total):
        return 1

    def end_epoch(self, model):
        pass


_LOCAL = _LocalData()


def _data_parallel(optimizer):
    """The data-parallel helper of a DistributedOptimizer on several ranks,
    else the one-process one."""
    return getattr(optimizer, "data_parallel", None) or _LOCAL


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
