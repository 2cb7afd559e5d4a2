"""Pictures of what a CNN does: training curves, filters, the feature maps
after every stage, predictions.

matplotlib is an optional extra: ``pip install "fastcnn[viz]"``. Importing
fastcnn never imports it; it is imported when a function here is called.

The pictures are drawn on ``matplotlib.figure.Figure`` objects with the Agg
canvas, never through pyplot: they work headless, never open a window and
leave the user's backend alone. Each function returns its Figure (shown
inline by Jupyter) and saves it when given ``path=`` (PNG or SVG, by the
file's extension).

Where to draw: ``plot_history`` is one Axes' worth of curves and takes
``ax=`` (loss on ``ax``, accuracy on a twin right-hand axis). The other
pictures are grids of panels; they take ``fig=``, a Figure or SubFigure
(``fig.subfigures(...)``) to fill, instead of ``ax=``. Without either, a new
Figure is made.

Example:
    >>> from fastcnn import viz
    >>> history = model.fit(x_train, y_train, epochs=5, validation_data=(x_test, y_test))
    >>> viz.plot_history(history, path="history.png")
    >>> viz.plot_filters(model[0], path="filters.png")
    >>> viz.plot_feature_maps(model, x_test[0], path="maps.png")
    >>> viz.plot_predictions(model, x_test[:25], y_test[:25], path="predictions.svg")
"""
import math
import os

import numpy as np

__all__ = ["plot_history", "plot_filters", "plot_feature_maps", "plot_predictions", "INSTALL"]

INSTALL = 'pip install "fastcnn[viz]"'
DPI = 100
FORMATS = (".png", ".svg")


# --- matplotlib, figures and files ------------------------------------------------

def _figure_class():
    """matplotlib's Figure class, or an ImportError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"fastcnn.viz needs matplotlib, an optional extra: {INSTALL}") from exc
    return Figure


def require():
    """Raise ImportError (saying ``pip install "fastcnn[viz]"``) unless
    matplotlib can be imported; the CLI checks this before training."""
    _figure_class()


def _check_path(path):
    if path is None:
        return None
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise ValueError(f"path must end in .png or .svg. Received: path={path!r}")
    return path


def _new_figure(width, height):
    """A Figure on an Agg canvas (no pyplot: no window, no global state)."""
    Figure = _figure_class()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _target(fig, width, height):
    """The Figure or SubFigure to draw into: ``fig`` or a new one."""
    if fig is None:
        return _new_figure(width, height)
    _figure_class()
    if not hasattr(fig, "add_subplot") or not hasattr(fig, "suptitle"):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure. "
                        f"Received: {type(fig).__name__}")
    return fig


def _root(fig):
    """The top-level Figure of a Figure or SubFigure."""
    root = getattr(fig, "figure", None)
    return fig if root is None else root


def _finish(fig, path, dpi=DPI):
    root = _root(fig)
    if path is not None:
        root.savefig(path, dpi=dpi)
    return root


def _grid(fig, count, ncols):
    """``count`` Axes in rows of ``ncols``, ticks off."""
    nrows = max(1, math.ceil(count / ncols))
    axes = []
    spec = fig.add_gridspec(nrows, ncols)
    for i in range(count):
        ax = fig.add_subplot(spec[i // ncols, i % ncols])
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    return axes


# --- training curves -----------------------------------------------------------------

def plot_history(history, ax=None, path=None, validation=None, fig=None):
    """Loss and accuracy per epoch, for training and (when present) validation.

    Args:
        history: what ``fit`` returns (a :class:`fastcnn.History`), or its
            ``history`` dict (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        ax: a matplotlib Axes to draw on: the loss on it, the accuracy on a twin
            axis at the right. Default: a new figure with a loss panel and an
            accuracy panel side by side.
        path: save the figure there (``.png`` or ``.svg``).
        validation: True: draw the validation curves (an error when the
            history has none); False: training curves only; None (default):
            validation curves when the history has them.
        fig: a Figure or SubFigure to draw the two panels into (not with ``ax``).

    Returns:
        the matplotlib Figure.

    Raises:
        ValueError: a history without ``loss``, or ``validation=True`` on a
            history fitted without ``validation_data``.
        TypeError: ``history`` is neither a History nor a dict.
        ImportError: matplotlib is missing (``pip install "fastcnn[viz]"``).

    Example:
        >>> viz.plot_history(model.fit(x, y, epochs=5, validation_data=(xv, yv)), path="h.png")
    """
    path = _check_path(path)
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(f"plot_history takes a fastcnn.History or its history dict. "
                        f"Received: {type(history).__name__}")
    if not logs.get("loss"):
        raise ValueError(f"the history has no 'loss' values (was the model fitted?). "
                         f"Received keys: {sorted(logs)}")
    has_val = bool(logs.get("val_loss"))
    if validation and not has_val:
        raise ValueError("validation=True, but the history has no validation values "
                         "('val_loss'): fit with validation_data=(x_val, y_val) to get them. "
                         f"Received keys: {sorted(logs)}")
    show_val = has_val if validation is None else bool(validation)
    epochs = list(getattr(history, "epoch", None) or range(1, len(logs["loss"]) + 1))
    has_acc = any(v is not None for v in logs.get("accuracy") or [])
    if ax is not None and fig is not None:
        raise ValueError("pass ax= or fig=, not both")

    if ax is not None:
        _figure_class()
        loss_ax = ax
        acc_ax = ax.twinx() if has_acc else None
        target = ax.figure
    else:
        target = _target(fig, 9 if has_acc else 5, 3.6)
        panels = target.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
        loss_ax, acc_ax = panels[0], (panels[1] if has_acc else None)

    def curves(axis, key, label, color):
        axis.plot(epochs, logs[key], "-o", color=color, markersize=3, label=f"training {label}")
        if show_val and logs.get("val_" + key):
            axis.plot(epochs, logs["val_" + key], "--s", color=color, markersize=3, alpha=0.8,
                      label=f"validation {label}")
        axis.set_ylabel(label)

    curves(loss_ax, "loss", "loss", "tab:blue")
    loss_ax.set_xlabel("epoch")
    if acc_ax is not None:
        curves(acc_ax, "accuracy", "accuracy", "tab:orange")
        acc_ax.set_xlabel("epoch")
    if ax is not None:
        handles, labels = loss_ax.get_legend_handles_labels()
        if acc_ax is not None:
            more = acc_ax.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        loss_ax.legend(handles, labels, fontsize=8)
        loss_ax.set_title("training history")
    else:
        loss_ax.set_title("loss")
        loss_ax.legend(fontsize=8)
        if acc_ax is not None:
            acc_ax.set_title("accuracy")
            acc_ax.legend(fontsize=8)
    if len(epochs) < 15:
        for axis in (loss_ax, acc_ax):
            if axis is not None:
                axis.set_xticks(epochs)
    return _finish(target, path)


# --- filters ---------------------------------------------------------------------------

def plot_filters(conv_layer, fig=None, path=None, rgb=False, max_filters=64, cmap="RdBu_r"):
    """The filters of a convolution as small images, on one color scale.

    Zero is the middle of the scale (white with the default colormap), which
    runs from ``-m`` to ``+m``, ``m`` the largest absolute weight; a colorbar
    marks it. With one input channel the K filters form a grid; with C > 1,
    one row per filter and one column per input channel (K x C images), or
    with ``rgb=True`` and C == 3 one color image per filter (the three
    channels as red, green, blue; mid-gray is zero).

    Args:
        conv_layer: a :class:`fastcnn.Conv2d` (weight (K, C, R, S)), e.g. ``model[0]``.
        fig: a Figure or SubFigure to draw into. Default: a new figure.
        path: save the figure there (``.png`` or ``.svg``).
        rgb: draw C == 3 filters as color images. Default False.
        max_filters: draw at most this many filters (the first ones). Default 64.
        cmap: the colormap. Default ``"RdBu_r"`` (blue negative, red positive).

    Returns:
        the matplotlib Figure. Its Axes: one per image, then the colorbar's
        (none with ``rgb=True``).

    Raises:
        TypeError: ``conv_layer`` is not a Conv2d.
        ValueError: ``rgb=True`` on a layer whose input is not 3 channels.

    Example:
        >>> viz.plot_filters(model[0], path="filters.png")
    """
    from .layers import Conv2d
    if not isinstance(conv_layer, Conv2d):
        hint = " (for a model, pass one of its layers, e.g. model[0])" \
            if hasattr(conv_layer, "layers") else ""
        raise TypeError(f"plot_filters takes a fastcnn.Conv2d layer{hint}. "
                        f"Received: {type(conv_layer).__name__}")
    path = _check_path(path)
    w = np.asarray(conv_layer.weight.data, np.float32)
    k_all, c, r, s = w.shape
    if rgb and c != 3:
        raise ValueError(f"rgb=True needs a convolution with 3 input channels. "
                         f"Received: in_channels={c}")
    if not isinstance(max_filters, int) or max_filters < 1:
        raise ValueError(f"max_filters must be a positive int. Received: max_filters={max_filters!r}")
    w = w[:max_filters]
    k = w.shape[0]
    m = float(np.abs(w).max()) or 1.0
    shown = f"first {k} of {k_all}" if k < k_all else f"{k}"

    if c == 1 or rgb:
        ncols = min(k, 8)
        nrows = math.ceil(k / ncols)
        target = _target(fig, 1.1 * ncols + (0.2 if rgb else 1.2), 1.1 * nrows + 0.6)
        axes = _grid(target, k, ncols)
        for i, ax in enumerate(axes):
            if rgb:
                ax.imshow(np.clip(w[i].transpose(1, 2, 0) / (2 * m) + 0.5, 0, 1),
                          interpolation="nearest")
            else:
                image = ax.imshow(w[i, 0], cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
            ax.set_title(f"{i}", fontsize=8)
    else:
        target = _target(fig, 0.8 * c + 1.6, 0.8 * k + 0.8)
        axes = _grid(target, k * c, c)
        for i in range(k):
            for j in range(c):
                ax = axes[i * c + j]
                image = ax.imshow(w[i, j], cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
                if i == 0:
                    ax.set_title(f"in {j}", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"filter {i}", fontsize=8)
    if rgb:
        target.suptitle(f"{conv_layer!r}: {shown} filters {r}x{s}, RGB "
                        f"(gray = 0, full color = +/-{m:.3g})", fontsize=9)
    else:
        target.colorbar(image, ax=axes, shrink=0.8, label="weight")
        target.suptitle(f"{conv_layer!r}: {shown} filters {r}x{s}"
                        + (f" x {c} input channels" if c > 1 else ""), fontsize=9)
    return _finish(target, path)


# --- feature maps ----------------------------------------------------------------------

def plot_feature_maps(model, x, fig=None, path=None, max_channels=64, ncols=4, cmap="viridis"):
    """One input image followed by the maps after every stage of a Sequential.

    The layers run one at a time in inference mode (the model's and each
    layer's mode are restored afterwards). Each panel is titled with the
    layer and its output shape (without the batch), so padding, pooling and
    flattening show: a stage's channels are tiled side by side on one color
    scale; a flat output (Flatten, Linear) is drawn as a strip, or as bars
    when it has at most 16 values (e.g. the class scores).

    Args:
        model: a :class:`fastcnn.Sequential`.
        x: one input, (C, H, W) or (1, C, H, W).
        fig: a Figure or SubFigure to draw into. Default: a new figure.
        path: save the figure there (``.png`` or ``.svg``).
        max_channels: show at most this many channels of a stage. Default 64.
        ncols: panels per row. Default 4.
        cmap: the colormap of the maps. Default ``"viridis"``.

    Returns:
        the matplotlib Figure, one Axes per panel (``len(model) + 1``).

    Raises:
        TypeError: ``model`` is not a Sequential.
        ValueError: ``x`` is not one image, or the model does not take its
            shape (the message gives the expected and the received shape).

    Example:
        >>> viz.plot_feature_maps(model, x_test[0], path="maps.png")
    """
    from .runner import trace
    from .sequential import Sequential
    if not isinstance(model, Sequential):
        raise TypeError(f"plot_feature_maps takes a fastcnn.Sequential. "
                        f"Received: {type(model).__name__}")
    path = _check_path(path)
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image, (C, H, W) or (1, C, H, W). "
                         f"Received: x.shape={x.shape}")
    if not model.layers:
        raise ValueError("the model has no layers")
    try:
        trace(model, x.shape)
    except ValueError as exc:
        raise ValueError(f"the model does not take this input: expected shape "
                         f"{_expected_shape(model)}, received {x.shape[1:]} ({exc})") from None
    _figure_class()
    from matplotlib.ticker import AutoLocator

    stages = [("input", x)]
    modes = (model.training, [layer.training for layer in model.layers])
    model.eval()
    try:
        out = x
        for i, layer in enumerate(model.layers):
            out = layer(out)
            stages.append((f"{i}: {layer!r}", out))
    finally:
        model.train(modes[0])
        for layer, mode in zip(model.layers, modes[1]):
            layer.train(mode)

    ncols = min(ncols, len(stages))
    nrows = math.ceil(len(stages) / ncols)
    target = _target(fig, 2.6 * ncols, 2.5 * nrows)
    axes = _grid(target, len(stages), ncols)
    for ax, (name, value) in zip(axes, stages):
        value = value[0]
        ax.set_title(f"{name}\n{tuple(value.shape)}", fontsize=8)
        if value.ndim == 3:
            _draw_maps(ax, value[:max_channels], cmap)
            if value.shape[0] > max_channels:
                ax.set_xlabel(f"first {max_channels} of {value.shape[0]} channels", fontsize=7)
        elif value.ndim == 1 and value.size <= 16:
            colors = ["tab:blue"] * value.size
            colors[int(np.argmax(value))] = "tab:red"
            ax.bar(np.arange(value.size), value, color=colors)
            ax.axhline(0, color="gray", linewidth=0.5)
            ax.set_xticks(np.arange(value.size))
            ax.yaxis.set_major_locator(AutoLocator())
            ax.tick_params(labelsize=7)
            ax.set_xlabel("largest in red", fontsize=7)
        else:
            ax.imshow(value.reshape(1, -1), cmap=cmap, aspect="auto", interpolation="nearest")
            ax.set_xlabel(f"{value.size} values", fontsize=7)
    return _finish(target, path)


def _draw_maps(ax, maps, cmap):
    """The channels (C, H, W) tiled in a near-square grid, 1-pixel gaps."""
    c, h, w = maps.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    tiled = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    for i in range(c):
        r0, c0 = (i // cols) * (h + 1), (i % cols) * (w + 1)
        tiled[r0:r0 + h, c0:c0 + w] = maps[i]
    import matplotlib
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="white")
    ax.imshow(tiled, cmap=colormap, interpolation="nearest")


def _expected_shape(model):
    """The input shape (without the batch) the model takes, in words."""
    from .layers import Conv2d, Linear
    from .runner import trace
    if model.input_shape is not None:
        return tuple(model.input_shape)
    first = next((layer for layer in model.layers if isinstance(layer, (Conv2d, Linear))), None)
    if isinstance(first, Linear):
        return f"(..., {first.in_features})"
    if not isinstance(first, Conv2d):
        return "unknown"
    c = first.in_channels

    def fits(size):
        try:
            trace(model, (1, c, size, size))
            return True
        except ValueError:
            return False
    # A classifier head fixes the size (up to the rounding of strides): the
    # smallest square size that fits. A fully convolutional model takes any.
    if fits(512):
        return f"(C, H, W) with C = {c}"
    size = next((size for size in range(1, 512) if fits(size)), None)
    return (c, size, size) if size else f"(C, H, W) with C = {c}"


# --- predictions -----------------------------------------------------------------------

def plot_predictions(model, x, y, fig=None, path=None, max_images=25, ncols=None,
                     class_names=None, cmap="gray"):
    """A grid of images with the predicted and the true label; mistakes in red.

    Args:
        model: a classifier (``model.predict(x)`` gives class scores (N, classes)).
        x: images (N, C, H, W).
        y: their true labels (N,).
        fig: a Figure or SubFigure to draw into. Default: a new figure.
        path: save the figure there (``.png`` or ``.svg``).
        max_images: draw at most this many (the first ones). Default 25.
        ncols: images per row. Default: a near-square grid.
        class_names: names of the classes, indexed by label. Default: the numbers.
        cmap: the colormap of one-channel images. Default ``"gray"``.

    Returns:
        the matplotlib Figure, one Axes per image.

    Raises:
        ValueError: ``x`` is not (N, C, H, W), or ``y`` does not have N labels.

    Example:
        >>> viz.plot_predictions(model, x_test[:16], y_test[:16], path="pred.png")
    """
    path = _check_path(path)
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be images (N, C, H, W), N >= 1. Received: x.shape={x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must hold one label per image, shape ({x.shape[0]},). "
                         f"Received: y.shape={y.shape}")
    _figure_class()
    n = min(x.shape[0], max_images)
    x, y = x[:n], y[:n]
    scores = np.asarray(model.predict(x))
    if scores.ndim != 2:
        raise ValueError(f"the model must give class scores (N, classes). "
                         f"Received: output shape {scores.shape}")
    predicted = scores.argmax(axis=1)

    def name(label):
        return str(class_names[label]) if class_names is not None else str(int(label))
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    target = _target(fig, 1.5 * ncols, 1.6 * nrows + 0.4)
    axes = _grid(target, n, ncols)
    wrong = 0
    for ax, image, p, t in zip(axes, x, predicted, y):
        if image.shape[0] == 3:
            lo, hi = float(image.min()), float(image.max())
            ax.imshow((image.transpose(1, 2, 0) - lo) / ((hi - lo) or 1.0))
        else:
            ax.imshow(image[0], cmap=cmap)
        ok = int(p) == int(t)
        wrong += not ok
        color = "black" if ok else "red"
        ax.set_title(f"pred {name(p)}\ntrue {name(t)}", fontsize=8, color=color,
                     fontweight="normal" if ok else "bold")
        if not ok:
            for spine in ax.spines.values():
                spine.set_color("red")
                spine.set_linewidth(2)
    target.suptitle(f"predictions: {n - wrong} of {n} right (mistakes in red)",
                    fontsize=9)
    return _finish(target, path)
