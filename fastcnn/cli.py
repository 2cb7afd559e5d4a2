"""The ``fastcnn`` command: ``fastcnn demo``, ``fastcnn info`` and
``fastcnn bench model.onnx`` (fastcnn/onnx/bench.py)."""
import argparse
import platform
import sys
import time

import numpy as np

# Demo defaults per model, chosen so that the demo reaches >= 97% test accuracy
# (LeNet-5) and more than LeNet-5's (the residual net) for every seed tried (see
# the README) in well under a minute on 2 cores.
DEMO_MODELS = {
    "lenet": {"epochs": 30, "batch_size": 32, "lr": 2e-3, "weight_decay": 5e-4},
    "resnet": {"epochs": 10, "batch_size": 64, "lr": 3e-3, "weight_decay": 5e-4},
}
DEMO_EPOCHS = DEMO_MODELS["lenet"]["epochs"]
DEMO_BATCH = DEMO_MODELS["lenet"]["batch_size"]
DEMO_LR = DEMO_MODELS["lenet"]["lr"]
DEMO_WEIGHT_DECAY = DEMO_MODELS["lenet"]["weight_decay"]
DEMO_SHIFT = 2


def lenet5(seed=None):
    """LeNet-5 as in bench/BENCHMARKS.md: Conv(1->6, 5, pad 2) ReLU MaxPool2,
    Conv(6->16, 5) ReLU MaxPool2, Flatten, Linear(400->120) ReLU,
    Linear(120->84) ReLU, Linear(84->10); input (N, 1, 28, 28)."""
    from . import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
    return Sequential(
        Conv2d(1, 6, 5, padding=2), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(400, 120), ReLU(),
        Linear(120, 84), ReLU(),
        Linear(84, 10), seed=seed)


def demo_resnet(seed=None):
    """The residual demo net: ResNet-8 for 1x28x28 digits (a 3x3 stem of 16
    channels, one basic block per stage at 16, 32 and 64 channels, batch norm,
    global average pooling, a linear classifier; 78k parameters)."""
    from .models import CifarResNet
    return CifarResNet(8, num_classes=10, in_channels=1, width=16, seed=seed)


DEMO_BUILDERS = {"lenet": (lenet5, "LeNet-5"), "resnet": (demo_resnet, "ResNet-8")}


def demo(epochs=DEMO_EPOCHS, batch_size=DEMO_BATCH, lr=DEMO_LR, shift=DEMO_SHIFT, seed=0,
         verbose=1, out=print, weight_decay=DEMO_WEIGHT_DECAY, plot_dir=None, model="lenet"):
    """Train ``model`` ("lenet": LeNet-5; "resnet": :func:`demo_resnet`) with
    Adam on the bundled digits; returns (test accuracy, training seconds,
    training images/s).

    With ``plot_dir``, the test digits also serve as validation data after
    each epoch (for the curves), and the four pictures of
    :func:`write_pictures` are written there (matplotlib needed)."""
    import fastcnn
    from .datasets import load_mnist_5k, random_shift
    from .optim import Adam, CosineAnnealingLR

    wall = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    build, title = DEMO_BUILDERS[model]
    model = build(seed=seed)
    optimizer = Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    optimizer, ranks, out = _data_parallel(optimizer, out)
    schedule = CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    out(f"fastcnn {fastcnn.__version__} demo: {title} on {len(x_train):,} MNIST digits, "
        f"tested on {len(x_test):,} others")
    out(f"Adam lr={lr:g} (cosine schedule), weight decay {weight_decay:g}, batch {batch_size}, "
        f"{epochs} epochs, "
        f"random shifts of up to {shift} px, {_kernels()}")
    if ranks > 1:
        out(f"data-parallel on {ranks} MPI ranks: each trains on 1/{ranks} of every batch")
    augment = (lambda x, rng: random_shift(x, shift, rng)) if shift else None
    if plot_dir is not None:
        out(f"validation after each epoch on the {len(x_test):,} test digits (for the pictures)")
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, lr_scheduler=schedule, augment=augment,
                        seed=seed, verbose=verbose,
                        validation_data=None if plot_dir is None else (x_test, y_test))
    train_seconds = sum(len(x_train) / r for r in history["images_per_sec"])
    images = len(x_train) * epochs
    loss, accuracy = model.evaluate(x_test, y_test)
    wall = time.perf_counter() - wall
    rate = images / train_seconds if train_seconds else float("nan")
    out(f"Test accuracy: {100 * accuracy:.1f}% ({round(accuracy * len(x_test))}/{len(x_test)}),"
        f" test loss {loss:.4f}")
    out(f"Training: {train_seconds:.1f} s, {rate:,.0f} images/s; total wall time {wall:.1f} s")
    if plot_dir is not None and out is not _silent:    # one process, or rank 0
        model.optimizer = None          # the pictures' predictions run on rank 0 alone
        for path in write_pictures(model, history, x_test, y_test, plot_dir):
            out(f"wrote {path}")
    return accuracy, train_seconds, rate


def _data_parallel(optimizer, out):
    """Under an MPI launcher (``mpiexec -n 2 fastcnn demo``): the optimizer
    wrapped for data-parallel training, the number of ranks, and ``out``
    silenced on all ranks but 0. Otherwise (optimizer, 1, out)."""
    from . import distributed
    if distributed.launched() == 1 or distributed.size() == 1:
        return optimizer, 1, out
    if distributed.rank() != 0:
        out = _silent
    return distributed.DistributedOptimizer(optimizer), distributed.size(), out


def _silent(text):
    pass


PICTURES = ("history.png", "filters.png", "feature_maps.png", "predictions.png")


def write_pictures(model, history, x_test, y_test, directory):
    """The training curves, the first convolution's filters, the feature maps
    of the first test digit (a Sequential's stages; none for a residual net)
    and the predictions for the first 25, as PNG files in ``directory`` (made
    if missing); returns their paths."""
    import os
    from . import viz
    from .layers import Conv2d
    from .sequential import Sequential
    os.makedirs(directory, exist_ok=True)
    path = {name: os.path.join(directory, name) for name in PICTURES}
    viz.plot_history(history, path=path["history.png"])
    first_conv = next(layer for layer in model.modules() if isinstance(layer, Conv2d))
    viz.plot_filters(first_conv, path=path["filters.png"])
    if isinstance(model, Sequential):
        viz.plot_feature_maps(model, x_test[0], path=path["feature_maps.png"])
    else:
        del path["feature_maps.png"]
    viz.plot_predictions(model, x_test[:25], y_test[:25], path=path["predictions.png"])
    return list(path.values())


def info(out=print):
    """Print the version, the kernels' instruction set, OpenMP and threads."""
    import fastcnn
    from . import _native
    out(f"fastcnn {fastcnn.__version__}")
    out(f"kernels: {_native.isa()} (this CPU supports: {_native.cpu_isa()})")
    out(f"OpenMP: {_openmp_state(_native)}")
    out(f"threads: {fastcnn.get_num_threads()}")
    out(f"numpy {np.__version__}, Python {platform.python_version()} on {platform.machine()}")


def _openmp_state(_native):
    from ._config import FORKED_CHILD_NOTE
    if not _native.openmp_enabled():
        return "off"
    if _native.forked_child():
        return f"on (serial in this forked child: {FORKED_CHILD_NOTE})"
    return "on"


def _kernels():
    import fastcnn
    from . import _native
    omp = "OpenMP" if _native.openmp_enabled() else "no OpenMP"
    return f"{fastcnn.get_num_threads()} threads ({_native.isa()}, {omp})"


def _positive_list(parser, text, flag):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"{flag} takes positive integers separated by commas. Received: {text!r}")
    return values


def _bench(parser, args):
    batches = _positive_list(parser, args.batch, "--batch")
    threads = _positive_list(parser, args.threads, "--threads")
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    try:
        from .onnx.bench import bench
        return bench(args.model, batches, threads, args.repeat,
                     out=lambda s: print(s, flush=True))
    except (ImportError, ValueError, OSError) as exc:
        print(f"fastcnn bench: {exc}", file=sys.stderr)
        return 2


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastcnn", description="fastcnn command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="train LeNet-5 (or a ResNet) on the bundled MNIST digits")
    p_demo.add_argument("--model", choices=sorted(DEMO_MODELS), default="lenet",
                        help="lenet: LeNet-5 (default); resnet: ResNet-8 with batch norm")
    p_demo.add_argument("--epochs", type=int, default=None,
                        help=f"passes over the training digits (default {DEMO_EPOCHS}; "
                             f"resnet {DEMO_MODELS['resnet']['epochs']})")
    p_demo.add_argument("--batch-size", type=int, default=None,
                        help=f"images per step (default {DEMO_BATCH}; "
                             f"resnet {DEMO_MODELS['resnet']['batch_size']})")
    p_demo.add_argument("--lr", type=float, default=None,
                        help=f"Adam's initial learning rate (default {DEMO_LR:g}; "
                             f"resnet {DEMO_MODELS['resnet']['lr']:g})")
    p_demo.add_argument("--weight-decay", type=float, default=None,
                        help=f"Adam's L2 weight decay (default {DEMO_WEIGHT_DECAY:g})")
    p_demo.add_argument("--shift", type=int, default=DEMO_SHIFT,
                        help=f"largest random shift in pixels, 0 for none (default {DEMO_SHIFT})")
    p_demo.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    p_demo.add_argument("--threads", type=int, default=None,
                        help="threads for the kernels (default: OMP_NUM_THREADS, else the cores)")
    p_demo.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p_demo.add_argument("--plot", metavar="DIR", default=None,
                        help="write pictures of the trained model into DIR: training curves, "
                             "filters, feature maps, predictions (needs matplotlib: "
                             'pip install "fastcnn[viz]")')
    sub.add_parser("info", help="version, instruction set, OpenMP and threads")
    p_bench = sub.add_parser("bench", help="an ONNX model's inference speed in fastcnn and in "
                                           "ONNX Runtime (needs onnx)")
    p_bench.add_argument("model", help="the .onnx file")
    p_bench.add_argument("--batch", default="1,8", help="batch sizes (default 1,8)")
    p_bench.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p_bench.add_argument("--repeat", type=int, default=20,
                         help="timed calls per side and setting (default 20)")
    args = parser.parse_args(argv)

    import fastcnn
    if args.command == "info":
        info()
        return 0
    if args.command == "bench":
        return _bench(parser, args)
    for name, value in DEMO_MODELS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.shift < 0 or args.lr <= 0 or args.weight_decay < 0:
        parser.error("--shift and --weight-decay must be >= 0 and --lr > 0")
    if args.plot is not None:
        from . import viz
        try:
            viz.require()
        except ImportError as exc:
            parser.error(f"--plot: {exc}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be positive")
        fastcnn.set_num_threads(args.threads)
    demo(args.epochs, args.batch_size, args.lr, args.shift, args.seed,
         verbose=0 if args.quiet else 1, out=lambda s: print(s, flush=True),
         weight_decay=args.weight_decay, plot_dir=args.plot, model=args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
