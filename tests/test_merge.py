"""The merge family (csrc/merge.c, fastcnn/_merge.pxi): add and mul of two
tensors with numpy broadcasting, and cat along a dim, forward and backward,
against float64 numpy, finite differences (tests/gradcheck.py) and PyTorch."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from gradcheck import check_directional

# (a, b) shape pairs: same shapes, per-channel (1,C,1,1) and (N,C,1,1), per-pixel
# (N,1,H,W), scalar-shaped (1,1,1,1), rank mismatch, both sides broadcast, rows
# longer than one work item (16384 elements), sizes off every vector width
PAIRS = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (1, 3, 1, 1)),
    ((1, 3, 1, 1), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (2, 3, 1, 1)),
    ((2, 3, 4, 5), (2, 1, 4, 5)),
    ((2, 3, 4, 5), (1, 1, 1, 1)),
    ((2, 3, 4, 5), (5,)),
    ((3, 4, 1), (4, 7)),
    ((3, 1, 5), (4, 1)),
    ((1, 7), (6, 1)),
    ((3, 40000), (40000,)),
    ((2, 17, 9, 13), (1, 17, 9, 1)),
    ((1,), (7,)),
]


def pair_ids(pair):
    return "x".join(map(str, pair[0])) + "_" + "x".join(map(str, pair[1]))


def arrays(rng, pair):
    return [rng.standard_normal(s).astype(np.float32) for s in pair]


def reduce_to(g, shape):
    """float64 g summed down to ``shape`` (numpy's broadcasting in reverse)."""
    g = np.asarray(g, np.float64)
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    return g.sum(axis=axes, keepdims=True)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids)
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_add_and_mul_match_float64(pair, reference, num_threads, rng):
    a, b = arrays(rng, pair)
    for fn, want in ((F.add, np.add), (F.mul, np.multiply)):
        y = fn(a, b, reference=reference)
        expected = want(a.astype(np.float64), b).astype(np.float32)
        assert y.dtype == np.float32 and y.shape == expected.shape
        np.testing.assert_array_equal(y, expected)      # one rounding: exact


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids)
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_backward_reduces_to_each_input_shape(pair, reference, num_threads, rng):
    a, b = arrays(rng, pair)
    g = rng.standard_normal(np.broadcast_shapes(a.shape, b.shape)).astype(np.float32)
    ga, gb = F.add_backward(g, a.shape, b.shape, reference=reference)
    assert ga.shape == a.shape and gb.shape == b.shape
    np.testing.assert_allclose(ga, reduce_to(g, a.shape), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, reduce_to(g, b.shape), rtol=1e-5, atol=1e-4)
    ga, gb = F.mul_backward(g, a, b, reference=reference)
    np.testing.assert_allclose(ga, reduce_to(g * b.astype(np.float64), a.shape),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, reduce_to(g * a.astype(np.float64), b.shape),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pair", [PAIRS[1], PAIRS[4], PAIRS[5], PAIRS[8]], ids=pair_ids)
def test_mul_backward_matches_finite_differences(pair, rng):
    a, b = (x.astype(np.float64).astype(np.float32) for x in arrays(rng, pair))
    u = rng.standard_normal(np.broadcast_shapes(a.shape, b.shape)).astype(np.float32)
    ga, gb = F.mul_backward(u, a, b)
    check_directional(lambda t: F.mul(t, b), a, u, ga, rng)
    check_directional(lambda t: F.mul(a, t), b, u, gb, rng)
    ga, gb = F.add_backward(u, a.shape, b.shape)
    check_directional(lambda t: F.add(t, b), a, u, ga, rng)
    check_directional(lambda t: F.add(a, t), b, u, gb, rng)


@pytest.mark.parametrize("pair", PAIRS[:9], ids=pair_ids)
def test_add_mul_match_torch(pair, num_threads, torch, rng):
    a, b = arrays(rng, pair)
    g = rng.standard_normal(np.broadcast_shapes(a.shape, b.shape)).astype(np.float32)
    for fn, back, tfn in ((F.add, lambda: F.add_backward(g, a.shape, b.shape), torch.add),
                          (F.mul, lambda: F.mul_backward(g, a, b), torch.mul)):
        ta = torch.from_numpy(a).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        ty = tfn(ta, tb)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(fn(a, b), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        ga, gb = back()
        np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-4)


CATS = [
    ([(2, 3, 4, 5), (2, 1, 4, 5), (2, 6, 4, 5)], 1),
    ([(2, 3, 4, 5), (3, 3, 4, 5)], 0),
    ([(2, 3, 4, 5), (2, 3, 2, 5)], 2),
    ([(2, 3, 4, 5), (2, 3, 4, 1), (2, 3, 4, 7)], -1),
    ([(2, 3, 4, 5)], 1),
    ([(4, 7), (4, 9)], 1),
    ([(1, 64, 3, 3), (1, 32, 3, 3), (1, 17, 3, 3), (1, 5, 3, 3)], 1),
]


@pytest.mark.parametrize("shapes,dim", CATS)
def test_cat_matches_numpy_and_splits_back(shapes, dim, num_threads, rng):
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    y = F.cat(xs, dim)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=dim))
    np.testing.assert_array_equal(fastcnn.cat(xs, dim=dim), y)
    g = rng.standard_normal(y.shape).astype(np.float32)
    d = dim % len(shapes[0])
    dxs = F.cat_backward(g, [s[d] for s in shapes], dim)
    pieces = np.split(g, np.cumsum([s[d] for s in shapes])[:-1], axis=d)
    assert len(dxs) == len(xs)
    for dx, want in zip(dxs, pieces):
        np.testing.assert_array_equal(dx, want)


def test_cat_matches_torch(num_threads, torch, rng):
    shapes = [(2, 3, 4, 5), (2, 5, 4, 5)]
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ts = [torch.from_numpy(x).requires_grad_() for x in xs]
    ty = torch.cat(ts, 1)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.cat(xs), ty.detach().numpy())
    for dx, t in zip(F.cat_backward(g, [3, 5]), ts):
        np.testing.assert_array_equal(dx, t.grad.numpy())


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"do not broadcast.*a.shape=\(2, 3\), b.shape=\(3, 2\)"):
        F.add(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"mul: .*a.shape=\(2, 3, 4, 4\), b.shape=\(1, 2, 1, 1\)"):
        F.mul(np.ones((2, 3, 4, 4)), np.ones((1, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"must not be empty. Received: b.shape=\(0, 3\)"):
        F.add(np.ones((2, 3)), np.ones((0, 3)))
    with pytest.raises(TypeError, match="b must be an array of real numbers"):
        F.mul(np.ones(2), np.array(["x", "y"]))
    with pytest.raises(ValueError, match=r"grad_y must have the broadcast shape \(2, 3\)"):
        F.mul_backward(np.ones((3, 3)), np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"one rank. Received: shapes \[\(2, 3\), \(2, 3, 1\)\]"):
        F.cat([np.ones((2, 3)), np.ones((2, 3, 1))])
    with pytest.raises(ValueError, match=r"agree in every other dim. Received: shapes "
                                         r"\[\(2, 3, 4\), \(2, 3, 5\)\]"):
        F.cat([np.ones((2, 3, 4)), np.ones((2, 3, 5))], dim=1)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 2\).*Received: dim=2"):
        F.cat([np.ones((2, 3)), np.ones((2, 3))], dim=2)
    with pytest.raises(ValueError, match="arrays must not be empty"):
        F.cat([])
    with pytest.raises(TypeError, match="arrays must be a list or tuple. Received: ndarray"):
        F.cat(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"sum to grad_y.shape\[1\]=3. Received: sizes=\[1, 1\]"):
        F.cat_backward(np.ones((2, 3)), [1, 1])


def test_add_converts_dtypes():
    np.testing.assert_array_equal(F.add([1, 2], np.array([0.5, 0.25])), [1.5, 2.25])
    np.testing.assert_array_equal(F.mul(np.arange(3), np.float64(2.0).reshape(1)), [0, 2, 4])


# ---- merges in models: squeeze-and-excitation and an Inception-style block ---------

class SqueezeExcite(fastcnn.Module):
    """x * sigmoid(fc2(relu(fc1(avgpool(x))))): (N, C, 1, 1) channel weights times x."""

    def __init__(self, c, r):
        super().__init__()
        self.pool = fastcnn.AdaptiveAvgPool2d(1)
        self.fc1 = fastcnn.Conv2d(c, c // r, 1)
        self.relu = fastcnn.ReLU()
        self.fc2 = fastcnn.Conv2d(c // r, c, 1)
        self.gate = fastcnn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class Inception(fastcnn.Module):
    """Four branches on one input, joined along the channels."""

    def __init__(self, c):
        super().__init__()
        self.b1 = fastcnn.Conv2d(c, 3, 1)
        self.b3 = fastcnn.Conv2d(c, 5, 3, padding=1)
        self.b5 = fastcnn.Conv2d(c, 2, 5, padding=2)
        self.pool = fastcnn.MaxPool2d(3, 1, 1)
        self.bp = fastcnn.Conv2d(c, 4, 1)
        self.relu = fastcnn.ReLU()

    def forward(self, x):
        return self.relu(fastcnn.cat([self.b1(x), self.b3(x), self.b5(x),
                                      self.bp(self.pool(x))]))


class MergeNet(fastcnn.Module):
    def __init__(self):
        super().__init__()
        self.stem = fastcnn.Conv2d(3, 8, 3, padding=1)
        self.relu = fastcnn.ReLU()
        self.se = SqueezeExcite(8, 2)
        self.inception = Inception(8)
        self.pool = fastcnn.AdaptiveAvgPool2d(1)
        self.flatten = fastcnn.Flatten()
        self.fc = fastcnn.Linear(14, 3)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.se(x) + x
        return self.fc(self.flatten(self.pool(self.inception(x))))


def torch_merge_net(torch):
    nn = torch.nn

    class TSqueezeExcite(nn.Module):
        def __init__(self, c, r):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, c // r, 1)
            self.relu = nn.ReLU()
            self.fc2 = nn.Conv2d(c // r, c, 1)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))

    class TInception(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.b1 = nn.Conv2d(c, 3, 1)
            self.b3 = nn.Conv2d(c, 5, 3, padding=1)
            self.b5 = nn.Conv2d(c, 2, 5, padding=2)
            self.pool = nn.MaxPool2d(3, 1, 1)
            self.bp = nn.Conv2d(c, 4, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(torch.cat([self.b1(x), self.b3(x), self.b5(x),
                                        self.bp(self.pool(x))], 1))

    class TMergeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.relu = nn.ReLU()
            self.se = TSqueezeExcite(8, 2)
            self.inception = TInception(8)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(14, 3)

        def forward(self, x):
            x = self.relu(self.stem(x))
            x = self.se(x) + x
            return self.fc(self.flatten(self.pool(self.inception(x))))

    return TMergeNet()


def test_se_and_inception_match_torch_forward_and_sgd_steps(torch, num_threads, rng):
    tm, fm = torch_merge_net(torch), MergeNet()
    assert list(fm.state_dict()) == list(tm.state_dict())
    fm.load_state_dict(tm.state_dict())
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(fm(x), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    fopt = fastcnn.SGD(fm.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    labels = rng.integers(0, 3, 4)
    loss_fn = fastcnn.CrossEntropyLoss()
    for _ in range(3):
        fopt.zero_grad()
        loss = loss_fn(fm(x), labels)
        fm.backward(loss_fn.backward(), need_grad_input=False)
        fopt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)),
                                                  torch.from_numpy(labels))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4, abs=1e-5)
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    fm.eval()
    tm.eval()
    np.testing.assert_allclose(fm(x), tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-4,
                               atol=1e-5)


class Broadcasts(fastcnn.Module):
    """Fan-out and broadcasting for the memory planner: the smaller operand first
    (the sum may not take its memory), a tensor read by three merges, sum()."""

    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(2, 4, 3, padding=1)
        self.pool = fastcnn.AdaptiveAvgPool2d(1)
        self.relu = fastcnn.ReLU()
        self.squash = fastcnn.Conv2d(4, 1, 1)
        self.flatten = fastcnn.Flatten()

    def forward(self, x):
        h = self.relu(self.conv(x))
        s = self.pool(h)                        # (N, 4, 1, 1)
        a = s + h                               # broadcast, smaller operand first
        b = self.squash(h) * h                  # (N, 1, H, W) * (N, 4, H, W)
        c = sum([a, b, h * s])
        return self.flatten(self.relu(fastcnn.cat([c, a], dim=1)))


@pytest.mark.parametrize("passes", [(), ("in_place",), ("in_place", "reuse_memory"),
                                    ("fuse_relu_max_pool", "fold_batch_norm", "in_place",
                                     "reuse_memory")], ids=lambda p: "+".join(p) or "none")
@pytest.mark.parametrize("model", [Broadcasts, MergeNet])
def test_merge_graphs_run_exactly_as_their_reference_walk(model, passes, num_threads, rng):
    from fastcnn.compiler import compile_graph, reference_run
    from fastcnn.runner import trace
    model = model()
    x = rng.standard_normal((2, 3 if isinstance(model, MergeNet) else 2, 5, 6)) \
        .astype(np.float32)
    graph = trace(model, x.shape)
    dy = rng.standard_normal(graph.shapes[graph.output]).astype(np.float32)
    for training in (True, False):
        model.zero_grad()
        ref_out, ref_dx = reference_run(graph, x, dy if training else None, training)
        ref_grads = [p.grad.copy() for p in model.parameters()]
        prog = compile_graph(graph, training, passes)
        for _ in range(2):                      # frames are reused: same results
            model.zero_grad()
            out, frame = prog.forward(x)
            np.testing.assert_array_equal(out, ref_out)
            if training:
                np.testing.assert_array_equal(prog.backward(frame, dy, True), ref_dx)
                for a, b in zip(model.parameters(), ref_grads):
                    np.testing.assert_array_equal(a.grad, b)


class Residual(fastcnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(16, 16, 3, padding=1)
        self.relu = fastcnn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + x


def test_add_gradient_to_each_input_on_many_threads(rng):
    """The add's gradient copied to both inputs (spans of 16384 on 8
    threads) and summed into the block input's: as the reference walk."""
    from fastcnn.compiler import compile_graph, reference_run
    from fastcnn.runner import trace
    model = Residual()
    x = rng.standard_normal((5, 16, 20, 21)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    graph = trace(model, x.shape)
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(8)
        ref_out, ref_dx = reference_run(graph, x, dy, True)
        ref_grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        prog = compile_graph(graph, True, ())
        out, frame = prog.forward(x)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(prog.backward(frame, dy, True), ref_dx)
    finally:
        fastcnn.set_num_threads(old)
    for a, b in zip(model.parameters(), ref_grads):
        np.testing.assert_array_equal(a.grad, b)


def test_traced_merges_check_their_operands(rng):
    class AddsArray(fastcnn.Module):
        def forward(self, x):
            return x + np.ones(x.shape, np.float32)

    class MixedCat(fastcnn.Module):
        def forward(self, x):
            return fastcnn.cat([x, np.ones(x.shape, np.float32)])

    class BadCat(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.pool = fastcnn.MaxPool2d(2)

        def forward(self, x):
            return fastcnn.cat([x, self.pool(x)])

    class BadMul(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.pool = fastcnn.MaxPool2d(2)

        def forward(self, x):
            return x * self.pool(x)

    x = np.ones((1, 2, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"combines \(\+\) only with another traced tensor"):
        AddsArray()(x)
    with pytest.raises(TypeError, match="not a mix. Received: ndarray"):
        MixedCat()(x)
    with pytest.raises(ValueError, match=r"Received: shapes \[\(1, 2, 4, 4\), \(1, 2, 2, 2\)\]"):
        BadCat()(x)
    with pytest.raises(ValueError, match=r"mul: .*a.shape=\(1, 2, 4, 4\), b.shape=\(1, 2, 2, 2\)"):
        BadMul()(x)


def test_modules_save_their_graph_and_load_without_their_class(tmp_path, rng):
    model = MergeNet()
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    with pytest.raises(TypeError, match="cannot save a layer of type MergeNet before it has run"):
        model.save(tmp_path / "never.fcnn")
    model.save(tmp_path / "m.fcnn", input_shape=(3, 6, 6))
    loaded = fastcnn.load(tmp_path / "m.fcnn")
    assert not isinstance(loaded, MergeNet) and repr(loaded) == repr(model)
    assert list(loaded.state_dict()) == list(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    np.testing.assert_array_equal(loaded(x), model(x))
    g = rng.standard_normal((3, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.backward(g), model.backward(g))
    x5 = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval()(x5), model.eval()(x5))
    with pytest.raises(ValueError, match=r"traced for inputs of shape \(N,\) \+ \(3, 6, 6\)"):
        loaded(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    loaded.save(tmp_path / "again.fcnn")         # the shape of its last call
    np.testing.assert_array_equal(fastcnn.load(tmp_path / "again.fcnn").eval()(x5),
                                  model(x5))


def test_saved_graph_keeps_dropout_and_batch_norm_statistics(tmp_path, rng):
    class Net(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = fastcnn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = fastcnn.BatchNorm2d(4)
            self.drop = fastcnn.Dropout(0.5)
            self.se = SqueezeExcite(4, 2)

        def forward(self, x):
            return self.se(self.drop(self.bn(self.conv(x))))

    model = Net().eval()                        # saved in eval: dropout still recorded
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    model.train()
    model(x)                                    # running statistics move
    model.eval()
    model.save(tmp_path / "n.fcnn")
    assert not model.training and not model.drop.training
    loaded = fastcnn.load(tmp_path / "n.fcnn")
    np.testing.assert_array_equal(loaded.eval()(x), model(x))
    np.testing.assert_array_equal(loaded.state_dict()["bn.running_mean"], model.bn.running_mean)
    loaded.train()
    fastcnn.manual_seed(3)
    a = loaded(x)
    model.train()
    fastcnn.manual_seed(3)
    np.testing.assert_array_equal(a, model(x))  # the same dropout mask: it is in the graph
