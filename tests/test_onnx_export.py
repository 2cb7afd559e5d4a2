"""fastcnn.onnx.export: every layer kind round-trips through ONNX Runtime with
fastcnn's outputs, at batch sizes 1 and 5 from one file (dynamic batch), and
every file passes onnx.checker's full check."""
import importlib
import os

import numpy as np
import pytest

import fastcnn
import fastcnn.onnx
from fastcnn import models
from subproc import run_python

onnx = pytest.importorskip("onnx", reason='onnx is not installed (pip install "fastcnn[onnx]")')
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test "
                          "extra brings it): the exported files are run with it")
from fastcnn.onnx import export  # noqa: E402  (after the skips)

BATCHES = (1, 5)


def _backends(path):
    """Each way to run an exported file: name -> callable(x) -> y (onnxruntime
    and fastcnn's own importer)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {"onnxruntime": lambda x: session.run(None, {"input": x})[0],
            "fastcnn.onnx.load": fastcnn.onnx.load(str(path))}


def _roundtrip(model, shape, path, opset=17, scale=3.0, seed=0):
    """Export ``model`` for inputs of ``shape`` (no batch), check the file fully
    and compare every backend with the model in eval mode, at batch 1 and 5.
    Returns the loaded ModelProto."""
    export(model, path, input_shape=shape, opset=opset)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == opset
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    for batch in BATCHES:
        x = (scale * rng.standard_normal((batch,) + tuple(shape))).astype(np.float32)
        expected = model(x)
        for name, run in _backends(path).items():
            got = run(x)
            assert got.shape == expected.shape, (name, batch)
            tol = 1e-5 * max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=tol,
                                       err_msg=f"{name}, batch {batch}")
    model.train(was_training)
    state = {k: v for k, v in model.named_state() if not k.endswith("num_batches_tracked")}
    loaded = fastcnn.onnx.load(str(path)).state_dict()      # the same state dict back
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    return proto


def _train_a_little(model, shape, seed=0):
    """Random batch-norm scales and shifts, and running statistics moved away
    from (0, 1) by a few training-mode forward passes on shifted data."""
    rng = np.random.default_rng(seed)
    for layer in _layers(model):
        if isinstance(layer, fastcnn.BatchNorm2d) and layer.weight is not None:
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    model.train()
    for _ in range(8):
        model((rng.standard_normal((4,) + tuple(shape)) * 3.0 + 2.0).astype(np.float32))
    model.eval()
    return model


def _layers(layer):
    yield layer
    children = [c for _, c in layer.children()] if isinstance(layer, fastcnn.Module) else \
        getattr(layer, "layers", [])
    for child in children:
        yield from _layers(child)


def _ops(proto):
    return [node.op_type for node in proto.graph.node]


# ------------------------------------------------------------------ every layer kind

def conv(*args, **kwargs):
    return fastcnn.Sequential(fastcnn.Conv2d(*args, **kwargs), seed=1)


def after_conv(layer):
    """A convolution (random weights) then ``layer``."""
    return fastcnn.Sequential(fastcnn.Conv2d(3, 4, 3, padding=1), layer, seed=2)


def bn(**kwargs):
    return fastcnn.Sequential(fastcnn.Conv2d(3, 4, 3), fastcnn.BatchNorm2d(4, **kwargs), seed=3)


LAYER_CASES = {
    "conv_bias": (lambda: conv(3, 4, 3, padding=1), (3, 8, 8), ["Conv"]),
    "conv_no_bias_stride": (lambda: conv(3, 5, 3, stride=2, bias=False), (3, 9, 7), ["Conv"]),
    "conv_pairs": (lambda: conv(3, 4, (3, 2), stride=(2, 1), padding=(2, 1)), (3, 8, 8),
                   ["Conv"]),
    "conv_same_even_kernel": (lambda: conv(3, 4, 4, padding="same"), (3, 7, 8), ["Conv"]),
    "conv_valid": (lambda: conv(3, 4, 3, padding="valid"), (3, 6, 6), ["Conv"]),
    "linear": (lambda: fastcnn.Sequential(fastcnn.Linear(6, 3), seed=4), (6,), ["Gemm"]),
    "linear_no_bias": (lambda: fastcnn.Sequential(fastcnn.Linear(6, 3, bias=False), seed=4),
                       (6,), ["Gemm"]),
    "linear_rank3": (lambda: fastcnn.Sequential(fastcnn.Linear(6, 3), seed=4), (4, 6),
                     ["Transpose", "MatMul", "Add"]),
    "linear_rank4_no_bias": (lambda: fastcnn.Sequential(fastcnn.Linear(6, 3, bias=False),
                                                        seed=4), (2, 4, 6),
                             ["Transpose", "MatMul"]),
    "relu": (lambda: after_conv(fastcnn.ReLU()), (3, 5, 5), ["Conv", "Relu"]),
    "sigmoid": (lambda: after_conv(fastcnn.Sigmoid()), (3, 5, 5), ["Conv", "Sigmoid"]),
    "tanh": (lambda: after_conv(fastcnn.Tanh()), (3, 5, 5), ["Conv", "Tanh"]),
    "leaky_relu": (lambda: after_conv(fastcnn.LeakyReLU(0.2)), (3, 5, 5),
                   ["Conv", "LeakyRelu"]),
    "hardtanh": (lambda: after_conv(fastcnn.Hardtanh(-0.5, 0.75)), (3, 5, 5),
                 ["Conv", "Constant", "Constant", "Clip"]),
    "relu6": (lambda: after_conv(fastcnn.ReLU6()), (3, 5, 5),
              ["Conv", "Constant", "Constant", "Clip"]),
    "hardsigmoid": (lambda: after_conv(fastcnn.Hardsigmoid()), (3, 5, 5),
                    ["Conv", "HardSigmoid"]),
    "hardswish": (lambda: after_conv(fastcnn.Hardswish()), (3, 5, 5), ["Conv", "HardSwish"]),
    "silu": (lambda: after_conv(fastcnn.SiLU()), (3, 5, 5), ["Conv", "Sigmoid", "Mul"]),
    "gelu": (lambda: after_conv(fastcnn.GELU()), (3, 5, 5), None),
    "gelu_tanh": (lambda: after_conv(fastcnn.GELU("tanh")), (3, 5, 5), None),
    "max_pool": (lambda: after_conv(fastcnn.MaxPool2d(2)), (3, 8, 7), ["Conv", "MaxPool"]),
    "max_pool_padded": (lambda: after_conv(fastcnn.MaxPool2d(3, stride=2, padding=1)),
                        (3, 9, 8), ["Conv", "MaxPool"]),
    "avg_pool": (lambda: after_conv(fastcnn.AvgPool2d((2, 3), stride=(1, 2))), (3, 7, 8),
                 ["Conv", "AveragePool"]),
    "avg_pool_count_include_pad": (lambda: after_conv(fastcnn.AvgPool2d(3, 2, 1)), (3, 9, 8),
                                   ["Conv", "AveragePool"]),
    "avg_pool_exclude_pad": (lambda: after_conv(fastcnn.AvgPool2d(3, 2, 1,
                                                                  count_include_pad=False)),
                             (3, 9, 8), ["Conv", "AveragePool"]),
    "adaptive_avg_1": (lambda: after_conv(fastcnn.AdaptiveAvgPool2d(1)), (3, 6, 5),
                       ["Conv", "GlobalAveragePool"]),
    "adaptive_avg_2x3": (lambda: after_conv(fastcnn.AdaptiveAvgPool2d((2, 3))), (3, 6, 6),
                         ["Conv", "AveragePool"]),
    "adaptive_max_1": (lambda: after_conv(fastcnn.AdaptiveMaxPool2d(1)), (3, 6, 5),
                       ["Conv", "GlobalMaxPool"]),
    "adaptive_max_2": (lambda: after_conv(fastcnn.AdaptiveMaxPool2d(2)), (3, 6, 8),
                       ["Conv", "MaxPool"]),
    "global_avg": (lambda: after_conv(fastcnn.GlobalAvgPool2d()), (3, 4, 4),
                   ["Conv", "GlobalAveragePool"]),
    "flatten": (lambda: after_conv(fastcnn.Flatten()), (3, 4, 5), ["Conv", "Flatten"]),
    "flatten_start_2": (lambda: after_conv(fastcnn.Flatten(2)), (3, 4, 5),
                        ["Conv", "Constant", "Reshape"]),
    "flatten_1_to_2": (lambda: after_conv(fastcnn.Flatten(1, 2)), (3, 4, 5),
                       ["Conv", "Constant", "Reshape"]),
    "flatten_with_batch": (lambda: after_conv(fastcnn.Flatten(0, -2)), (3, 4, 5),
                           ["Conv", "Constant", "Reshape"]),
    "batch_norm": (lambda: bn(), (3, 6, 6), ["Conv", "BatchNormalization"]),
    "batch_norm_eps_momentum": (lambda: bn(eps=1e-3, momentum=None), (3, 6, 6),
                                ["Conv", "BatchNormalization"]),
    "batch_norm_no_affine": (lambda: bn(affine=False), (3, 6, 6), None),
    "batch_norm_batch_stats": (lambda: bn(track_running_stats=False), (3, 6, 6), None),
    "batch_norm_batch_stats_no_affine": (lambda: bn(affine=False, track_running_stats=False),
                                         (3, 6, 6), None),
    "dropout": (lambda: after_conv(fastcnn.Dropout(0.5)), (3, 5, 5), ["Conv"]),
    "identity": (lambda: after_conv(fastcnn.Identity()), (3, 5, 5), ["Conv"]),
    "only_identity": (lambda: fastcnn.Sequential(fastcnn.Identity()), (3, 5, 5), ["Identity"]),
    "single_layer": (lambda: fastcnn.Conv2d(3, 2, 3), (3, 5, 5), ["Conv"]),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_kind_round_trips(case, tmp_path):
    make, shape, ops = LAYER_CASES[case]
    model = _train_a_little(make(), shape)
    model.train()                      # export traces in eval mode and restores the mode
    proto = _roundtrip(model, shape, tmp_path / "m.onnx")
    assert model.training
    if ops is not None:
        assert _ops(proto) == ops
    names = [init.name for init in proto.graph.initializer]
    state = {k: v for k, v in model.named_state()
             if not k.endswith("num_batches_tracked")}
    assert sorted(names) == sorted(state)          # named by the state dict, nothing else
    for init in proto.graph.initializer:
        assert onnx.numpy_helper.to_array(init).tobytes() == state[init.name].tobytes()


def test_batch_norm_running_statistics_are_used(tmp_path):
    """The running statistics (non-trivial after training passes) are what the
    file normalizes with: the exported output differs from a fresh model's."""
    model = _train_a_little(bn(), (3, 6, 6))
    assert np.abs(model[1].running_mean).max() > 0.1
    assert np.abs(model[1].running_var - 1).max() > 0.1
    proto = _roundtrip(model, (3, 6, 6), tmp_path / "m.onnx")
    mean = [i for i in proto.graph.initializer if i.name == "1.running_mean"][0]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(mean), model[1].running_mean)


def test_activation_formulas_before_opset_20(tmp_path):
    assert _ops(_roundtrip(after_conv(fastcnn.GELU()), (3, 5, 5), tmp_path / "a.onnx",
                           opset=17))[1:] == ["Constant", "Mul", "Erf", "Constant", "Add",
                                              "Mul", "Constant", "Mul"]
    assert "Gelu" in _ops(_roundtrip(after_conv(fastcnn.GELU()), (3, 5, 5),
                                     tmp_path / "b.onnx", opset=20))
    assert "Gelu" in _ops(_roundtrip(after_conv(fastcnn.GELU("tanh")), (3, 5, 5),
                                     tmp_path / "c.onnx", opset=21))
    assert "HardSwish" not in _ops(_roundtrip(after_conv(fastcnn.Hardswish()), (3, 5, 5),
                                              tmp_path / "d.onnx", opset=13))


# ------------------------------------------------------------------ dilation, groups, ceil_mode, mul, cat, softmax

class MulCat(fastcnn.Module):
    """A gate broadcast over the channels (mul), a concatenation and a
    broadcasting residual sum."""

    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(4, 8, 3, padding=1)
        self.pool = fastcnn.GlobalAvgPool2d()
        self.gate = fastcnn.Sigmoid()
        self.a = fastcnn.Conv2d(8, 4, 1)
        self.b = fastcnn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = y * self.gate(self.pool(y))
        z = fastcnn.cat([self.a(y), self.b(y), x], dim=1)
        return z * self.pool(z) + z


FEATURE_CASES = {   # name: (model, input shape, ONNX ops)
    "conv_groups": (lambda: conv(4, 6, 3, padding=1, groups=2), (4, 7, 7), ["Conv"]),
    "conv_depthwise_dilated": (lambda: conv(4, 4, 3, padding=2, dilation=2, groups=4),
                               (4, 9, 8), ["Conv"]),
    "conv_dilated_same": (lambda: conv(3, 4, 4, padding="same", dilation=2), (3, 9, 8),
                          ["Conv"]),
    "conv_dilated_stride": (lambda: conv(3, 4, 3, stride=2, dilation=(2, 1)), (3, 11, 9),
                            ["Conv"]),
    "max_pool_ceil": (lambda: after_conv(fastcnn.MaxPool2d(3, 2, 1, ceil_mode=True)),
                      (3, 10, 7), ["Conv", "MaxPool"]),
    "max_pool_dilated_ceil": (lambda: after_conv(fastcnn.MaxPool2d(2, 2, 0, dilation=2,
                                                                   ceil_mode=True)),
                              (3, 9, 8), ["Conv", "MaxPool"]),
    "avg_pool_ceil": (lambda: after_conv(fastcnn.AvgPool2d(3, 2, 1, ceil_mode=True)),
                      (3, 10, 7), ["Conv", "AveragePool"]),
    "avg_pool_ceil_exclude_pad": (lambda: after_conv(fastcnn.AvgPool2d(
                                      3, 2, 1, ceil_mode=True, count_include_pad=False)),
                                  (3, 10, 7), ["Conv", "AveragePool"]),
    "mul_cat_broadcasting": (MulCat, (4, 6, 6), None),
    "softmax": (lambda: after_conv(fastcnn.Softmax(1)), (3, 5, 5), None),
    "log_softmax_last": (lambda: after_conv(fastcnn.LogSoftmax(-1)), (3, 5, 5), None),
}


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_dilation_groups_ceil_mode_merges_and_softmax(case, opset, tmp_path):
    make, shape, ops = FEATURE_CASES[case]
    fastcnn.manual_seed(4)
    proto = _roundtrip(make(), shape, tmp_path / "m.onnx", opset=opset)
    if ops is not None:
        assert _ops(proto) == ops


# ------------------------------------------------------------------ whole models

def every_kind(seed=5):
    return fastcnn.Sequential(
        fastcnn.Conv2d(3, 8, 3, padding=1), fastcnn.BatchNorm2d(8), fastcnn.ReLU(),
        fastcnn.Conv2d(8, 8, 3, padding="same", bias=False), fastcnn.Hardswish(),
        fastcnn.BatchNorm2d(8, track_running_stats=False), fastcnn.GELU("tanh"),
        fastcnn.MaxPool2d(2), fastcnn.Conv2d(8, 8, 1), fastcnn.GELU(), fastcnn.SiLU(),
        fastcnn.AvgPool2d(3, 1, 1), fastcnn.Hardsigmoid(), fastcnn.ReLU6(),
        fastcnn.Dropout(0.2), fastcnn.AdaptiveAvgPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(32, 16), fastcnn.Tanh(), fastcnn.LeakyReLU(0.1),
        fastcnn.Hardtanh(-0.3, 0.4), fastcnn.Linear(16, 4), fastcnn.Sigmoid(), seed=seed)


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_opsets(opset, tmp_path):
    model = _train_a_little(every_kind(), (3, 8, 8))
    proto = _roundtrip(model, (3, 8, 8), tmp_path / "m.onnx", opset=opset, scale=1.0)
    ops = _ops(proto)
    assert ("Gelu" in ops) == (opset >= 20)
    assert ("HardSwish" in ops) == (opset >= 14)
    reduce_inputs = {len(n.input) for n in proto.graph.node if n.op_type == "ReduceMean"}
    assert reduce_inputs == ({2} if opset >= 18 else {1})


def test_dynamic_batch_axis(tmp_path):
    proto = _roundtrip(_train_a_little(every_kind(), (3, 8, 8)), (3, 8, 8), tmp_path / "m.onnx")
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (inp, out)]
    assert dims == [["N", 3, 8, 8], ["N", 4]]


def test_batch_merged_by_flatten_is_named(tmp_path):
    proto = _roundtrip(after_conv(fastcnn.Flatten(0, 1)), (3, 4, 5), tmp_path / "m.onnx")
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N*4", 4, 5]


class Residual(fastcnn.Module):
    """A residual block with a projection shortcut, and a head."""

    def __init__(self):
        super().__init__()
        self.conv1 = fastcnn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = fastcnn.BatchNorm2d(6)
        self.relu = fastcnn.ReLU()
        self.conv2 = fastcnn.Conv2d(6, 6, 3, padding=1)
        self.shortcut = fastcnn.Sequential(fastcnn.Conv2d(3, 6, 1, bias=False),
                                           fastcnn.BatchNorm2d(6))
        self.pool = fastcnn.GlobalAvgPool2d()
        self.flatten = fastcnn.Flatten()
        self.fc = fastcnn.Linear(6, 3)

    def forward(self, x):
        y = self.conv2(self.relu(self.bn1(self.conv1(x))))
        y = self.relu(y + self.shortcut(x))
        return self.fc(self.flatten(self.pool(y)))


def test_module_with_residual_branch(tmp_path):
    fastcnn.manual_seed(7)
    model = _train_a_little(Residual(), (3, 6, 6))
    proto = _roundtrip(model, (3, 6, 6), tmp_path / "m.onnx")
    assert _ops(proto).count("Add") == 1
    assert {i.name for i in proto.graph.initializer} == {
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "conv2.weight", "conv2.bias", "shortcut.0.weight", "shortcut.1.weight",
        "shortcut.1.bias", "shortcut.1.running_mean", "shortcut.1.running_var", "fc.weight",
        "fc.bias"}
    assert [n.name for n in proto.graph.node][:2] == ["conv1/Conv", "bn1/BatchNormalization"]


def test_shared_layer_is_one_initializer(tmp_path):
    class Twice(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = fastcnn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    fastcnn.manual_seed(3)
    proto = _roundtrip(Twice(), (2, 5, 5), tmp_path / "m.onnx")
    assert _ops(proto) == ["Conv", "Conv"]
    assert sorted(i.name for i in proto.graph.initializer) == ["conv.bias", "conv.weight"]


@pytest.mark.parametrize("name, shape", [("resnet18", (3, 32, 32)), ("resnet20", (3, 32, 32)),
                                         pytest.param("resnet50", (3, 32, 32),
                                                      marks=pytest.mark.long),
                                         ("mobilenet_v2", (3, 32, 32))])
def test_models(name, shape, tmp_path):
    model = _train_a_little(getattr(models, name)(num_classes=10, seed=0), shape)
    proto = _roundtrip(model, shape, tmp_path / "m.onnx", scale=1.0)
    assert "BatchNormalization" in _ops(proto)          # unfused
    state = {k for k, _ in model.named_state() if not k.endswith("num_batches_tracked")}
    assert {i.name for i in proto.graph.initializer} == state


# ------------------------------------------------------------------ errors and the file

class Double(fastcnn.Layer):
    """A layer with its own Python forward: no ONNX equivalent."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_y, *, need_grad_input=True):
        return 2 * grad_y


def test_unsupported_layer_is_named(tmp_path):
    path = tmp_path / "m.onnx"
    model = fastcnn.Sequential(fastcnn.Conv2d(1, 2, 3), Double(), fastcnn.ReLU(), Double())
    with pytest.raises(ValueError, match=r"layer '1' \(Double.*layer '3' \(Double"):
        export(model, path, input_shape=(1, 5, 5))

    class Net(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = fastcnn.Conv2d(1, 2, 3)
            self.scale = Double()

        def forward(self, x):
            return self.scale(self.conv(x))

    with pytest.raises(ValueError, match=r"layer 'scale' \(Double"):
        export(Net(), path, input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"Double"):
        export(Double(), path, input_shape=(1, 5, 5))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"input_shape": (3, 0, 4)}, ValueError, r"input_shape=\(3, 0, 4\)"),
    ({"input_shape": (3, 4.0, 4)}, TypeError, r"input_shape=\(3, 4.0, 4\)"),
    ({"input_shape": 5}, ValueError, r"input_shape=5"),
    ({"input_shape": ()}, ValueError, r"input_shape=\(\)"),
    ({"input_shape": (2, 8, 8)}, ValueError, r"\(N, 3, H, W\)"),
    ({"input_shape": (3, 8, 8), "opset": 10}, ValueError, r"opset=10"),
    ({"input_shape": (3, 8, 8), "opset": 22}, ValueError, r"opset=22"),
    ({"input_shape": (3, 8, 8), "opset": 17.0}, TypeError, r"opset=17.0"),
    ({"input_shape": (3, 8, 8), "opset": True}, TypeError, r"opset=True"),
])
def test_bad_arguments(kwargs, error, match, tmp_path):
    model = after_conv(fastcnn.ReLU())
    with pytest.raises(error, match=match):
        export(model, tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_model_or_path(tmp_path):
    with pytest.raises(TypeError, match="Received: list"):
        export([fastcnn.ReLU()], tmp_path / "m.onnx", input_shape=(3,))
    with pytest.raises(TypeError, match="path=3"):
        export(fastcnn.ReLU(), 3, input_shape=(3,))
    with pytest.raises(ValueError, match="needs the input shape"):
        export(fastcnn.Sequential(fastcnn.ReLU()), tmp_path / "m.onnx")


def test_input_shape_defaults_to_the_last_run(tmp_path):
    model = after_conv(fastcnn.ReLU())
    model(np.zeros((2, 3, 6, 7), np.float32))
    export(model, tmp_path / "m.onnx")
    dims = [d.dim_param or d.dim_value
            for d in onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 6, 7]


def test_training_flags_are_restored(tmp_path):
    model = fastcnn.Sequential(fastcnn.Conv2d(3, 4, 3), fastcnn.BatchNorm2d(4),
                               fastcnn.Dropout(0.5))
    model.train()
    model[1].eval()                     # a mixed state stays as it was
    export(model, tmp_path / "m.onnx", input_shape=(3, 5, 5))
    assert [model.training, model[0].training, model[1].training, model[2].training] == \
        [True, True, False, True]


def test_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    export(after_conv(fastcnn.ReLU()), path, input_shape=(3, 5, 5))
    assert os.listdir(tmp_path) == ["m.onnx"]            # no temporary left behind
    old = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        export(after_conv(fastcnn.Sigmoid()), path, input_shape=(3, 5, 5))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.undo()
    export(after_conv(fastcnn.Sigmoid()), str(path), input_shape=(3, 5, 5))   # overwrites
    assert path.read_bytes() != old
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_too_large_for_one_file(tmp_path, monkeypatch):
    module = importlib.import_module("fastcnn.onnx.export")
    monkeypatch.setattr(module, "_MAX_BYTES", 100)
    with pytest.raises(ValueError, match=r"too large for one ONNX file \(\d+ bytes"):
        export(after_conv(fastcnn.ReLU()), tmp_path / "m.onnx", input_shape=(3, 5, 5))
    assert os.listdir(tmp_path) == []


def test_without_onnx_the_error_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"      # import onnx now raises ImportError
            "import fastcnn, fastcnn.onnx\n"
            "try:\n"
            "    fastcnn.onnx.export(fastcnn.ReLU(), 'm.onnx', input_shape=(3,))\n"
            "except ImportError as exc:\n"
            "    print('ImportError:', exc)\n")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'ImportError: fastcnn.onnx needs the onnx package: pip install "fastcnn[onnx]"' \
        in result.stdout
    assert os.listdir(tmp_path) == []
