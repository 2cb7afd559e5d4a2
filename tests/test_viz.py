"""Pictures (fastcnn/viz.py, `fastcnn demo --plot`, bench/charts.py): each
renders to a PNG under Agg that is not blank and has the expected panels;
clear errors for a layer that is not a convolution, an input the model does
not take, and validation curves asked of a history without them."""
import importlib.util
import os
import tempfile

import numpy as np
import pytest

matplotlib = pytest.importorskip(
    "matplotlib", reason='fastcnn.viz needs matplotlib: pip install "fastcnn[viz]" '
                         '(the test extra brings it)')
import matplotlib.image  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn import viz  # noqa: E402
from fastcnn.cli import lenet5  # noqa: E402
from subproc import run_python, run_python_args  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained():
    """A LeNet-5 fitted one short epoch on 512 digits, with validation data."""
    (x_train, y_train), (x_test, y_test) = fastcnn.datasets.load_mnist_5k()
    model = lenet5(seed=0)
    history = model.fit(x_train[:512], y_train[:512], epochs=2, batch_size=64, seed=0,
                        validation_data=(x_test[:128], y_test[:128]), verbose=0)
    return model, history, x_test[:32], y_test[:32]


def check_png(path, min_kb=5):
    """The file is a PNG of a few KB whose pixels are not all one color."""
    assert os.path.getsize(path) > min_kb * 1024, os.path.getsize(path)
    image = matplotlib.image.imread(path)
    colors = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
    assert len(colors) > 1, "blank image"


def test_importing_fastcnn_does_not_import_matplotlib():
    code = ("import sys, fastcnn, fastcnn.viz, fastcnn.cli\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n")
    with tempfile.TemporaryDirectory() as scratch:
        result = run_python(code, cwd=scratch)
    assert result.returncode == 0, result.stderr


def test_without_matplotlib_the_error_says_how_to_install_it():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import fastcnn\nfrom fastcnn import viz\nfrom fastcnn.cli import lenet5\n"
            "try:\n    viz.plot_filters(lenet5()[0])\n"
            "except ImportError as e:\n    print(e)\n")
    with tempfile.TemporaryDirectory() as scratch:
        result = run_python(code, cwd=scratch)
    assert result.returncode == 0, result.stderr
    assert 'pip install "fastcnn[viz]"' in result.stdout


def test_plot_history_two_panels_with_validation(trained, tmp_path):
    _, history, _, _ = trained
    path = tmp_path / "history.png"
    fig = viz.plot_history(history, path=path)
    assert isinstance(fig, matplotlib.figure.Figure)
    check_png(path)
    assert len(fig.axes) == 2                        # loss, accuracy
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]   # training and validation each


def test_plot_history_on_given_axes_and_as_svg(trained, tmp_path):
    from matplotlib.figure import Figure
    _, history, _, _ = trained
    fig = Figure()
    ax = fig.add_subplot()
    out = viz.plot_history(history, ax=ax, path=tmp_path / "h.svg", validation=False)
    assert out is fig and len(fig.axes) == 2         # ax and its twin for the accuracy
    assert sum(len(a.lines) for a in fig.axes) == 2
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")


def test_plot_history_asking_for_missing_validation_curves(trained):
    model = lenet5(seed=0)
    x, y = trained[2], trained[3]
    history = model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no validation values.*validation_data"):
        viz.plot_history(history, validation=True)
    assert len(viz.plot_history(history).axes[0].lines) == 1     # training only
    with pytest.raises(TypeError, match="Received: list"):
        viz.plot_history([0.5, 0.4])


def test_plot_filters_one_input_channel(trained, tmp_path):
    model = trained[0]
    path = tmp_path / "filters.png"
    fig = viz.plot_filters(model[0], path=path)
    check_png(path)
    assert len(fig.axes) == 6 + 1                    # K filters and the colorbar


def test_plot_filters_grid_of_filters_by_input_channels(trained, tmp_path):
    path = tmp_path / "filters.png"
    fig = viz.plot_filters(trained[0][3], path=path)    # Conv2d(6, 16, 5)
    check_png(path)
    assert len(fig.axes) == 16 * 6 + 1


def test_plot_filters_rgb_composite(tmp_path):
    conv = fastcnn.Conv2d(3, 8, 3)
    path = tmp_path / "rgb.png"
    fig = viz.plot_filters(conv, path=path, rgb=True)
    check_png(path, min_kb=2)
    assert len(fig.axes) == 8                        # one color image per filter, no colorbar
    with pytest.raises(ValueError, match="in_channels=1"):
        viz.plot_filters(fastcnn.Conv2d(1, 4, 3), rgb=True)


@pytest.mark.parametrize("layer, name", [(fastcnn.Linear(4, 2), "Linear"),
                                         (fastcnn.ReLU(), "ReLU"),
                                         ("conv", "str")])
def test_plot_filters_rejects_what_is_not_a_convolution(layer, name):
    with pytest.raises(TypeError, match=f"Conv2d.*Received: {name}"):
        viz.plot_filters(layer)


def test_plot_filters_on_a_model_points_at_its_layers():
    with pytest.raises(TypeError, match=r"model\[0\].*Received: Sequential"):
        viz.plot_filters(lenet5())


@pytest.mark.parametrize("batch", [False, True])
def test_plot_feature_maps_a_panel_per_stage(trained, tmp_path, batch):
    model, _, x, _ = trained
    model.train()
    image = x[:1] if batch else x[0]
    path = tmp_path / "maps.png"
    fig = viz.plot_feature_maps(model, image, path=path)
    check_png(path, min_kb=20)
    assert len(fig.axes) == len(model) + 1           # the input, then every layer
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "input\n(1, 28, 28)"
    assert titles[1] == "0: Conv2d(1, 6, 5, padding=2)\n(6, 28, 28)"
    assert titles[3] == "2: MaxPool2d(2)\n(6, 14, 14)"
    assert titles[7] == "6: Flatten()\n(400,)"
    assert titles[-1] == "11: Linear(84, 10)\n(10,)"
    assert len(fig.axes[-1].patches) == 10           # class scores as bars
    assert model.training and all(layer.training for layer in model.layers)


def test_plot_feature_maps_restores_eval_mode():
    model = lenet5(seed=0).eval()
    viz.plot_feature_maps(model, np.zeros((1, 28, 28), np.float32))
    assert not model.training and not any(layer.training for layer in model.layers)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 28, 28)])
def test_plot_feature_maps_input_shape_mismatch(shape):
    with pytest.raises(ValueError, match=rf"expected shape \(1, 28, 28\), received "
                                         rf"\({shape[0]}, {shape[1]}, {shape[2]}\)"):
        viz.plot_feature_maps(lenet5(seed=0), np.zeros(shape, np.float32))


def test_plot_feature_maps_bad_arguments():
    with pytest.raises(ValueError, match="one image.*x.shape=\\(2, 1, 28, 28\\)"):
        viz.plot_feature_maps(lenet5(), np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(TypeError, match="Sequential. Received: Conv2d"):
        viz.plot_feature_maps(fastcnn.Conv2d(1, 2, 3), np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\.png or \.svg.*maps\.jpg"):
        viz.plot_feature_maps(lenet5(), np.zeros((1, 28, 28), np.float32), path="maps.jpg")


def test_plot_predictions_marks_mistakes(trained, tmp_path):
    model, _, x, y = trained
    labels = y[:16].copy()
    labels[:3] = (model.predict(x[:3]).argmax(axis=1) + 1) % 10     # three sure mistakes
    path = tmp_path / "pred.png"
    fig = viz.plot_predictions(model, x[:16], labels, path=path)
    check_png(path)
    assert len(fig.axes) == 16
    red = [ax.title.get_color() == "red" for ax in fig.axes]
    assert red[:3] == [True] * 3
    predicted = model.predict(x[:16]).argmax(axis=1)
    assert red == list(predicted != labels)
    with pytest.raises(ValueError, match="one label per image"):
        viz.plot_predictions(model, x[:4], y[:3])


def test_multi_panel_pictures_fill_a_given_subfigure(trained):
    from matplotlib.figure import Figure
    model, history, x, y = trained
    fig = Figure(figsize=(12, 8))
    left, right = fig.subfigures(1, 2)
    assert viz.plot_filters(model[0], fig=left) is fig
    assert viz.plot_predictions(model, x[:4], y[:4], fig=right) is fig
    assert len(fig.axes) == 7 + 4


@pytest.mark.long
def test_demo_plot_writes_the_four_pictures():
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "pictures")
        result = run_python_args(["-m", "fastcnn", "demo", "--epochs", "1", "--quiet",
                                  "--plot", out], cwd=scratch, timeout=300)
        assert result.returncode == 0, result.stderr
        for name in ("history.png", "filters.png", "feature_maps.png", "predictions.png"):
            path = os.path.join(out, name)
            assert f"wrote {path}" in result.stdout
            check_png(path)


def load_charts():
    path = os.path.join(ROOT, "bench", "charts.py")
    if not os.path.exists(path):
        pytest.skip("not a source checkout: bench/charts.py not found")
    spec = importlib.util.spec_from_file_location("bench_charts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_ratio_charts_one_per_group(tmp_path):
    charts = load_charts()
    rows = [
        {"group": "conv fwd", "name": "LeNet conv1", "peer": "torch", "target": 1.0,
         "ratios": {1: 1.4, 2: 1.2}},
        {"group": "conv fwd", "name": "ResNet 3x3", "peer": "torch", "target": 1.0,
         "ratios": {1: 0.9, 2: None}},
        {"group": "train step", "name": "LeNet-5 b64", "peer": "torch", "target": 3.0,
         "ratios": {1: 4.2, 2: 3.5}},
        {"group": "train step", "name": "CIFAR-net b64", "peer": "torch", "target": 1.5,
         "ratios": {1: 1.7, 2: 1.6}},
        {"group": "loss", "name": "softmax CE", "peer": "torch", "target": None,
         "ratios": {1: 12.0, 2: 9.0}},
        {"group": "gemm", "name": "not built", "peer": "numpy", "target": 1.0,
         "ratios": {1: None, 2: None}},
    ]
    paths = charts.write_ratio_charts(rows, [1, 2], tmp_path)
    assert [os.path.basename(p) for p in paths] == ["conv_fwd.png", "train_step.png", "loss.png"]
    for p in paths:
        check_png(p)
    fig = charts.ratio_chart(rows[2:4], [1, 2], "train step")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    levels = sorted(round(line.get_ydata()[0], 3) for line in ax.lines)
    assert levels == [1.0, 1.5, 3.0]                  # parity and each target
    assert len(ax.patches) == 4                       # 2 rows x 2 thread counts


def test_compare_rows_feed_the_charts():
    """compare.py's --plot rows come from its results, as the report's tables do
    (in a child process: compare imports the benchmark modules by bare names)."""
    bench = os.path.join(ROOT, "bench")
    if not os.path.exists(os.path.join(bench, "compare.py")):
        pytest.skip("not a source checkout: bench/compare.py not found")
    code = """if True:
        import compare, harness
        a = harness.Case("conv fwd", "a", "torch", None, target=1.0)
        b = harness.Case("pooling", "b", "torch", None, target=5.0)
        results = {(a.key, 1): {"status": "ok", "peer": 2.0, "fastcnn": 1.0},
                   (a.key, 2): {"status": "failed", "reason": "x"},
                   (b.key, 1): {"status": "ok", "peer": 6.0, "fastcnn": 2.0}}
        print(compare.chart_rows({"conv fwd": [a], "pooling": [b]}, results, [1, 2]))
    """
    result = run_python(code, cwd=bench)
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout) == [
        {"group": "conv fwd", "name": "a", "peer": "torch", "target": 1.0,
         "ratios": {1: 2.0, 2: None}},
        {"group": "pooling", "name": "b", "peer": "torch", "target": 5.0,
         "ratios": {1: 3.0, 2: None}}]
