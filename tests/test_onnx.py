"""fastcnn.onnx.load: torch exports and ONNX's model-zoo graphs against
onnxruntime, gradients against PyTorch, fine-tuning, save / load, bad files."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install \"fastcnn[onnx]\")")

import fastcnn  # noqa: E402
import fastcnn.onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from subproc import run_python, run_python_args  # noqa: E402


def _ort_run(model, x):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    ort.set_default_logger_severity(3)
    if isinstance(model, str):
        with open(model, "rb") as f:
            model = f.read()
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _assert_close(y, ref, rtol=1e-4):
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(np.asarray(y, np.float64) - ref).max())
    assert y.shape == ref.shape and err <= rtol * scale, f"max difference {err} (scale {scale})"


# -- the optional dependency ---------------------------------------------------------------
def test_import_fastcnn_does_not_import_onnx(tmp_path):
    r = run_python("import sys, fastcnn; print('onnx' in sys.modules)", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_without_onnx_the_error_says_how_to_install(tmp_path):
    r = run_python("import sys; sys.modules['onnx'] = None\nimport fastcnn.onnx\n"
                   "fastcnn.onnx.load(b'')", tmp_path)
    assert r.returncode != 0
    assert 'pip install "fastcnn[onnx]"' in r.stderr


# -- torch exports -------------------------------------------------------------------------
torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch", reason="torch is not installed")
    return torch


def _small_nets():
    nn = _torch().nn
    F = torch.nn.functional

    class Plain(nn.Module):      # conv, bn, pool, flatten through x.view(N, -1), linear
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8 * 6 * 6, 10)

        def forward(self, x):
            y = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return self.fc(y.view(y.size(0), -1))

    class Modern(nn.Module):     # groups, dilation, asymmetric pads, ceil mode, activations
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 12, 3, stride=2, padding=1)
            self.dw = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=12)
            self.pw = nn.Conv2d(24, 16, 1)
            self.prelu = nn.PReLU(16)
            self.fc = nn.Linear(16, 7)

        def forward(self, x):
            y = F.hardswish(self.c1(x))
            y = torch.cat([F.leaky_relu(self.dw(y), 0.2), F.elu(y)], 1)
            y = self.prelu(self.pw(F.pad(y, (0, 1, 1, 0))))
            y = F.avg_pool2d(y, 3, 2, ceil_mode=True) * torch.sigmoid(y.mean((2, 3), True))
            y = F.max_pool2d(torch.tanh(y) + F.hardsigmoid(y), 2, ceil_mode=True)
            y = F.relu6(y).mean((2, 3))
            return F.log_softmax(self.fc(y), 1)

    class Shuffle(nn.Module):    # reshape, transpose, squeeze / unsqueeze, matmul, sub, div
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.w = nn.Parameter(torch.randn(8, 5) * 0.3)

        def forward(self, x):
            y = self.conv(x)
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            y = F.adaptive_avg_pool2d(y, 1).squeeze(3).squeeze(2)
            y = (y.unsqueeze(1) - 0.5) / 2.0
            return torch.softmax(y.matmul(self.w).squeeze(1), -1)

    return {"plain": Plain, "modern": Modern, "shuffle": Shuffle}


def _export(net, shape, path, opset):
    net.eval()
    x = torch.randn(2, *shape)
    torch.onnx.export(net, x, str(path), opset_version=opset, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}})
    return path


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", ["plain", "modern", "shuffle"])
def test_torch_exports_match_onnxruntime(tmp_path, name, opset):
    nets = _small_nets()
    torch.manual_seed(opset)
    net = nets[name]()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    path = _export(net, (3, 12, 12), tmp_path / "net.onnx", opset)
    model = fastcnn.onnx.load(path)
    rng = np.random.default_rng(opset)
    for n in (1, 3):                            # the batch is dynamic
        x = rng.standard_normal((n, 3, 12, 12)).astype(np.float32)
        ref = _ort_run(str(path), x)
        _assert_close(model(x), ref)
        _assert_close(model.predict(x), ref)


def _resnet18_twin(num_classes=10):
    """fastcnn.models.resnet18's architecture in plain torch.nn."""
    nn = _torch().nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            y = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    return ResNet18()


def resnet18_onnx(path, opset=17, size=64):
    """Export the torch twin of fastcnn.models.resnet18 (used by the bench test too)."""
    torch.manual_seed(0)
    return _export(_resnet18_twin(), (3, size, size), path, opset)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_resnet18_export_matches_onnxruntime(tmp_path, opset):
    _torch()
    path = resnet18_onnx(tmp_path / "r18.onnx", opset)
    model = fastcnn.onnx.load(path)
    kinds = {type(layer).__name__ for _, layer in model.children()}
    assert kinds <= {"Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Linear"}, kinds   # all native
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = _ort_run(str(path), x)
    _assert_close(model(x), want)
    _assert_close(fastcnn.freeze(model)(x), want)       # the serving snapshot too


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_mobilenet_v2_export_matches_onnxruntime(tmp_path, opset):
    """torchvision's MobileNetV2 (written out in tests/test_models.py): depthwise
    convolutions, ReLU6 (Clip), residual adds, all native after import."""
    from test_models import torch_mobilenet_v2
    torch = _torch()
    torch.manual_seed(opset)
    net = torch_mobilenet_v2(torch, 10, 0.2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = _export(net, (3, 32, 32), tmp_path / "mnv2.onnx", opset)
    model = fastcnn.onnx.load(path)
    kinds = {type(layer).__name__ for _, layer in model.children()}
    assert "KernelLayer" not in kinds, kinds
    x = np.random.default_rng(opset).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = _ort_run(str(path), x)
    _assert_close(model(x), want)
    _assert_close(fastcnn.freeze(model)(x), want)


def test_gradients_match_torch(tmp_path):
    """Backward through native layers and numpy kernels alike, against PyTorch."""
    nets = _small_nets()
    torch.manual_seed(1)
    for name in ("modern", "shuffle"):
        net = nets[name]()
        path = _export(net, (3, 12, 12), tmp_path / f"{name}.onnx", 13)
        model = fastcnn.onnx.load(path).train()
        x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
        y = model(x)
        dy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
        model.zero_grad()
        dx = model.backward(dy)
        tx = torch.tensor(x, requires_grad=True)
        ty = net(tx)
        ty.backward(torch.tensor(dy))
        _assert_close(y, ty.detach().numpy())
        _assert_close(dx, tx.grad.numpy(), 1e-3)
        torch_grads = {n: p.grad.numpy() for n, p in net.named_parameters()}
        for key, p in model.named_parameters():
            if key in torch_grads:
                _assert_close(p.grad, torch_grads[key], 1e-3)
        assert set(torch_grads) & {k for k, _ in model.named_parameters()}


# -- fine-tuning, saving -------------------------------------------------------------------
def test_fine_tuning_changes_weights_and_lowers_loss(tmp_path):
    nets = _small_nets()
    torch.manual_seed(0)
    path = _export(nets["plain"](), (3, 12, 12), tmp_path / "plain.onnx", 17)
    model = fastcnn.onnx.load(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 12, 12)).astype(np.float32)
    labels = (x[:, 0].mean((1, 2)) > 0).astype(np.int64)
    loss = fastcnn.CrossEntropyLoss()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    first = model.evaluate(x, labels, loss=loss)[0]
    model.train()
    model.fit(x, labels, epochs=15, batch_size=16, optimizer=fastcnn.Adam(model.parameters(),
                                                                          lr=3e-3),
              loss=loss, verbose=0)
    model.eval()
    last = model.evaluate(x, labels, loss=loss)[0]
    assert last < 0.7 * first, (first, last)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(not np.array_equal(before[k], after[k]) for k in before)


def test_state_dict_keys_are_initializer_names_and_save_load_round_trip(tmp_path):
    nets = _small_nets()
    torch.manual_seed(0)
    path = _export(nets["modern"](), (3, 12, 12), tmp_path / "m.onnx", 13)
    proto = onnx.load(str(path))
    model = fastcnn.onnx.load(proto)
    names = [t.name for t in proto.graph.initializer
             if t.data_type == TensorProto.FLOAT]
    assert list(model.state_dict()) == names
    for t in proto.graph.initializer:
        if t.name in names:
            np.testing.assert_array_equal(model.state_dict()[t.name], numpy_helper.to_array(t))
    model.train()
    model.fit(np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32),
              np.arange(8) % 7, epochs=1, batch_size=4, verbose=0,
              optimizer=fastcnn.SGD(model.parameters(), lr=0.1))
    model.eval()
    model.save(tmp_path / "m.fcnn")
    again = fastcnn.load(tmp_path / "m.fcnn").eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(again(x), model(x))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "m.fcnn").stat().st_size < 2 * path.stat().st_size + 20000


def test_reshape_chains_are_folded_and_views(tmp_path):
    nets = _small_nets()
    path = _export(nets["plain"](), (3, 12, 12), tmp_path / "p.onnx", 11)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= set(ops)
    from fastcnn.runner import trace
    graph = trace(fastcnn.onnx.load(path), (5, 3, 12, 12))
    assert [n.op for n in graph.nodes] == ["conv2d", "relu", "max_pool2d", "reshape",
                                           "linear"]     # (torch folds the batch norm)


# -- the model zoo's light graphs ----------------------------------------------------------
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512"]
LONG = {"vgg19", "zfnet512"}    # 8-18 s each: big 224x224 convolutions


def _light_with_random_weights(name, seed=0):
    """The zoo graph with its constant-filled weights (ConstantOfShape) replaced by
    random initializers, and its final softmax cut (compare logits)."""
    import os
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")
    model = onnx.load(path)
    g, rng = model.graph, np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    variances = {n.input[4] for n in g.node if n.op_type == "BatchNormalization"}
    nodes = []
    for n in g.node:
        if n.op_type != "ConstantOfShape":
            nodes.append(n)
            continue
        shape = tuple(int(d) for d in shapes[n.input[0]])
        a = rng.random(shape, dtype=np.float32)
        if n.output[0] in variances:
            a += 0.5
        else:
            a = (2 * a - 1) / np.float32(np.sqrt(max(int(np.prod(shape[1:])), 1)))
        g.initializer.append(numpy_helper.from_array(a, n.output[0]))
    if nodes[-1].op_type == "Softmax":
        g.output[0].name = nodes.pop().input[0]
    del g.node[:]
    g.node.extend(nodes)
    return model


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in LONG else n
                                  for n in LIGHT])
def test_model_zoo_light_graphs_match_onnxruntime(name):
    model = _light_with_random_weights(name)
    imported = fastcnn.onnx.load(model)
    x = np.random.default_rng(1).standard_normal((1,) + imported._input_shape)
    x = x.astype(np.float32)
    _assert_close(imported(x), _ort_run(model, x), 1e-4)


# -- bad files -------------------------------------------------------------------------------
def _tiny(nodes, inits=(), elem=TensorProto.FLOAT, shape=("N", 2, 4, 4), opset=13,
          output="y"):
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", elem, list(shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model():
    w = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")
    return _tiny([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [w])


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    data = _conv_model().SerializeToString()
    for bad in (data[:len(data) // 2], b"\xff\xfe not a protobuf \x00" * 5, b""):
        with pytest.raises(ValueError, match="not a valid ONNX model"):
            fastcnn.onnx.load(bad)
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:-7])
    with pytest.raises(ValueError, match="cut.onnx"):
        fastcnn.onnx.load(path)
    with pytest.raises(TypeError, match="Received: int"):
        fastcnn.onnx.load(3)
    with pytest.raises(FileNotFoundError):
        fastcnn.onnx.load(tmp_path / "missing.onnx")


def test_missing_initializer_is_named():
    model = _tiny([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")])
    with pytest.raises(ValueError, match=r"conv0.*'w'.*missing initializer"):
        fastcnn.onnx.load(model)


def test_cycle_is_found():
    model = _tiny([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                   helper.make_node("Relu", ["a"], ["b"], name="second"),
                   helper.make_node("Relu", ["b"], ["y"], name="out")])
    with pytest.raises(ValueError, match="cycle"):
        fastcnn.onnx.load(model)


def test_every_unsupported_op_is_listed_at_load():
    model = _tiny([helper.make_node("Relu", ["x"], ["a"], name="r"),
                   helper.make_node("Sin", ["a"], ["b"], name="sin1"),
                   helper.make_node("Sin", ["b"], ["c"], name="sin2"),
                   helper.make_node("Pad", ["c", "p"], ["d"], name="pad", mode="reflect"),
                   helper.make_node("TopK", ["d", "k"], ["y", "i"], name="topk")],
                  [numpy_helper.from_array(np.zeros(8, np.int64), "p"),
                   numpy_helper.from_array(np.ones(1, np.int64), "k")], opset=15)
    with pytest.raises(ValueError) as info:
        fastcnn.onnx.load(model)
    message = str(info.value)
    for text in ("opset 15", "Sin", "'sin1', 'sin2'", "TopK", "'topk'", "Pad", "reflect"):
        assert text in message, message


def test_non_float_input_and_dynamic_dims_are_clear_errors():
    with pytest.raises(ValueError, match="float32"):
        fastcnn.onnx.load(_tiny([helper.make_node("Relu", ["x"], ["y"])],
                                elem=TensorProto.INT64))
    with pytest.raises(ValueError, match="dynamic dimension 2"):
        fastcnn.onnx.load(_tiny([helper.make_node("Relu", ["x"], ["y"])], shape=(1, 2, "H", 4)))
    for opset in (5, 29):
        with pytest.raises(ValueError, match=f"opset {opset} is not supported"):
            fastcnn.onnx.load(_tiny([helper.make_node("Relu", ["x"], ["y"])], opset=opset))


def test_wrong_input_shape_at_run_is_a_clear_error():
    model = fastcnn.onnx.load(_conv_model())
    assert model(np.zeros((5, 2, 4, 4), np.float32)).shape == (5, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(N, 2, 4, 4\).*\(5, 2, 4, 5\)"):
        model(np.zeros((5, 2, 4, 5), np.float32))


def test_shape_errors_name_the_node():
    model = _tiny([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")],
                  [numpy_helper.from_array(np.array([7, -1, 5], np.int64), "s")])
    with pytest.raises(ValueError, match="bad_reshape"):
        fastcnn.onnx.load(model)


# -- fastcnn bench ---------------------------------------------------------------------------
def test_bench_command_prints_the_comparison_table(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    path = _export(_small_nets()["plain"](), (3, 12, 12), tmp_path / "p.onnx", 17)
    r = run_python_args(["-m", "fastcnn", "bench", str(path), "--batch", "1,3", "--threads",
                         "1,2", "--repeat", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "onnxruntime" in lines[0]
    header = lines.index(next(s for s in lines if s.split()[:2] == ["threads", "batch"]))
    rows = [s.split() for s in lines[header + 1:header + 5]]
    assert [(int(a[0]), int(a[1])) for a in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for row in rows:
        assert float(row[2]) > 0 and float(row[4]) > 0 and row[6].endswith("x")
        assert float(row[7]) < 1e-4
    assert "MISMATCH" not in r.stdout


def test_bench_command_rejects_bad_arguments(tmp_path):
    r = run_python_args(["-m", "fastcnn", "bench", "x.onnx", "--batch", "0"], tmp_path)
    assert r.returncode == 2 and "--batch" in r.stderr
    r = run_python_args(["-m", "fastcnn", "bench", str(tmp_path / "missing.onnx")], tmp_path)
    assert r.returncode == 2 and "missing.onnx" in r.stderr


def test_load_state_dict_reaches_weights_folded_into_constants():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"]),
         helper.make_node("MatMul", ["x", "wt"], ["y"])], "folded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    opset = [helper.make_opsetid("", 13)]
    model = fastcnn.onnx.load(helper.make_model(graph, opset_imports=opset))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model(x), x @ w.T, rtol=1e-6)
    model.load_state_dict({"w": 2 * w})
    np.testing.assert_allclose(model(x), x @ (2 * w).T, rtol=1e-6)


def test_batch_norm_trains_and_updates_its_running_statistics():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(4, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(4, np.float32), "bias"),
             numpy_helper.from_array(np.zeros(4, np.float32), "mean"),
             numpy_helper.from_array(np.ones(4, np.float32), "var")]
    model = fastcnn.onnx.load(_tiny(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"],
                          epsilon=1e-3, momentum=0.8)], inits))
    kinds = {type(layer).__name__ for _, layer in model.children()}
    assert kinds == {"Conv2d", "BatchNorm2d"}
    x = rng.standard_normal((8, 2, 4, 4)).astype(np.float32)
    y_eval = model(x)
    np.testing.assert_allclose(y_eval, model(x))
    model.train()
    y = model(x)
    mean = y_eval.mean((0, 2, 3)) * np.sqrt(1 + 1e-3)         # the conv output's batch mean
    np.testing.assert_allclose(model.state_dict()["mean"], 0.2 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y.mean((0, 2, 3)), 0, atol=1e-5)
    model.zero_grad()
    model.backward(rng.standard_normal(y.shape).astype(np.float32))
    for name in ("w", "scale", "bias"):
        assert float(np.abs(dict(model.named_parameters())[name].grad).sum()) > 0, name


def test_inference_is_reentrant_across_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    nets = _small_nets()
    torch.manual_seed(0)
    model = fastcnn.onnx.load(_export(nets["modern"](), (3, 12, 12), tmp_path / "m.onnx", 13))
    xs = [np.random.default_rng(k).standard_normal((k % 3 + 1, 3, 12, 12)).astype(np.float32)
          for k in range(12)]
    serial = [model(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(model, xs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
