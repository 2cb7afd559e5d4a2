"""Softmax and log-softmax along any axis (csrc/softmax.c) against float64
numpy, finite differences and torch; the Softmax / LogSoftmax layers in
Sequential and Module models."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.compiler import compile_graph, reference_run
from fastcnn.runner import trace
from gradcheck import check_directional

# (shape, dim): rows (inner == 1) short and long (>= 64: the ISA loop), the
# axis in the middle with inner positions fewer than, equal to and more than
# one block (256), 1x1 images, a length-1 axis, sizes above the thread threshold.
CASES = [
    ((7,), 0), ((7,), -1), ((3, 5), 0), ((3, 5), 1), ((3, 5), -1), ((4, 300), 1),
    ((300, 3), 0), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), -3),
    ((2, 5, 17, 19), 1), ((1, 10, 1, 1), 1), ((3, 1, 4), 1), ((2, 6, 256), 1),
    ((2, 4, 600), 1), ((64, 1000), 1), ((16, 33, 30, 30), 1), ((1, 1), 0),
]
ids = [f"{s}-dim{d}" for s, d in CASES]


def softmax64(x, dim, log):
    z = x.astype(np.float64)
    z = z - z.max(axis=dim, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=dim, keepdims=True))
    return z - lse if log else np.exp(z - lse)


def softmax_backward64(dy, y, dim, log):
    dy, y = dy.astype(np.float64), y.astype(np.float64)
    if log:
        return dy - np.exp(y) * dy.sum(axis=dim, keepdims=True)
    return y * (dy - (dy * y).sum(axis=dim, keepdims=True))


EPS32 = float(np.finfo(np.float32).eps)


def forward(log):
    return F.log_softmax if log else F.softmax


def backward(log):
    return F.log_softmax_backward if log else F.softmax_backward


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape,dim", CASES, ids=ids)
def test_matches_float64_numpy(shape, dim, reference, log, num_threads, rng):
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    y = forward(log)(x, dim, reference=reference)
    assert y.dtype == np.float32 and y.shape == x.shape
    # log_softmax's x - max - log(sum) is exact to float32's spacing at |x|
    atol = 2.5e-7 * (1 + np.abs(x).max()) if log else 1e-6
    np.testing.assert_allclose(y, softmax64(x, dim, log), rtol=2e-6, atol=atol)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = backward(log)(dy, y, dim, reference=reference)
    expected = softmax_backward64(dy, y, dim, log)
    if log:     # dy - exp(y) * sum(dy): the float32 sum's rounding, scaled by exp(y)
        bound = 1e-5 * np.abs(expected) + 1e-6 + \
            2 * EPS32 * np.exp(y.astype(np.float64)) * np.abs(dy).sum(axis=dim, keepdims=True)
        assert (np.abs(dx - expected) <= bound).all(), np.abs(dx - expected).max()
    else:
        np.testing.assert_allclose(dx, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((2, 3, 4, 5), 1), ((2, 4, 3), 0),
                                       ((2, 3, 4, 5), -1)], ids=str)
def test_backward_matches_finite_differences(shape, dim, log, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    f = lambda z: forward(log)(z, dim)
    u = rng.standard_normal(shape).astype(np.float32)
    grad = backward(log)(u, f(x), dim)
    check_directional(f, x, u, grad, rng, eps=1e-2)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((4, 300), -1), ((2, 3, 4, 5), 1),
                                       ((2, 3, 4, 5), 0), ((2, 6, 17, 300), 2),
                                       ((16, 33, 30, 30), 1)], ids=str)
def test_matches_torch(shape, dim, log, torch, num_threads, rng):
    x = (4 * rng.standard_normal(shape)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = (torch.log_softmax if log else torch.softmax)(xt, dim)
    y = forward(log)(x, dim)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=2e-6, atol=2e-6)
    dy = rng.standard_normal(shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(backward(log)(dy, y, dim), xt.grad.numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("dim", [0, 1], ids=["cols", "rows"])
def test_large_inf_and_nan_like_torch(dim, reference, log, torch):
    inf, nan = np.inf, np.nan
    rows = [[1e4, 1e4 - 1, -1e4, 0.0] + [0.0] * 66,        # huge gaps: no overflow
            [-inf, 1.0, 2.0, -inf] + [-inf] * 66,          # -inf among finite values
            [-inf] * 70,                                   # all -inf: NaN, as torch
            [inf, 1.0, 2.0, 3.0] + [0.0] * 66,             # +inf: NaN, as torch
            [nan, 1.0, 2.0, 3.0] + [0.0] * 66,             # NaN: the whole line
            [3e38, -3e38, 0.0, 1.0] + [0.0] * 66]
    x = np.array(rows, np.float32)
    x = x if dim == 1 else np.ascontiguousarray(x.T)
    y = forward(log)(x, dim, reference=reference)
    yt = (torch.log_softmax if log else torch.softmax)(torch.tensor(x), dim).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-6, atol=1e-7)   # NaN where torch has NaN
    line = y[0] if dim == 1 else y[:, 0]
    assert np.all(np.isfinite(line))


def test_lines_sum_to_one_and_log_matches_log_of_softmax(rng):
    x = (10 * rng.standard_normal((4, 7, 9))).astype(np.float32)
    for dim in (0, 1, 2, -1):
        np.testing.assert_allclose(F.softmax(x, dim).sum(axis=dim), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.exp(F.log_softmax(x, dim)), F.softmax(x, dim),
                                   rtol=1e-5, atol=1e-7)


def test_other_dtypes_and_orders_are_converted(rng):
    x = rng.standard_normal((5, 6))
    np.testing.assert_array_equal(F.softmax(x.T, 0), F.softmax(np.ascontiguousarray(x.T,
                                                                                     np.float32), 0))
    np.testing.assert_array_equal(F.log_softmax([1, 2, 3], 0),
                                  F.log_softmax(np.array([1, 2, 3], np.float32), 0))


def test_one_and_two_threads_agree(rng):
    x = rng.standard_normal((64, 33, 20, 20)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    old = fastcnn.get_num_threads()
    try:
        out = []
        for nt in (1, 2):
            fastcnn.set_num_threads(nt)
            y = F.softmax(x, 1)
            out.append((y, F.softmax_backward(dy, y, 1), F.log_softmax(x, -1)))
    finally:
        fastcnn.set_num_threads(old)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_docstring_examples():
    np.testing.assert_allclose(F.softmax(np.array([[0.0, np.log(3.0)]]), dim=1), [[0.25, 0.75]],
                               rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(np.array([0.0, 0.0]), dim=0), [-np.log(2)] * 2,
                               rtol=1e-6)
    np.testing.assert_array_equal(fastcnn.Softmax(dim=1)(np.zeros((2, 4), np.float32)),
                                  np.full((2, 4), 0.25, np.float32))


# ---- bad inputs -------------------------------------------------------------------

@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_bad_forward_arguments_raise(fn):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 2\) for x.shape=\(2, 3\). "
                                         r"Received: dim=2"):
        fn(x, 2)
    with pytest.raises(ValueError, match=r"Received: dim=-3"):
        fn(x, -3)
    with pytest.raises(TypeError, match=r"dim must be an integer. Received: dim=1.0"):
        fn(x, 1.0)
    with pytest.raises(TypeError, match=r"dim must be an integer. Received: dim=True"):
        fn(x, True)
    with pytest.raises(TypeError, match=r"dim must be an integer. Received: dim=None"):
        fn(x, None)
    with pytest.raises(ValueError, match=r"x must have at least one dimension. Received: x.shape=\(\)"):
        fn(np.float32(1.0), 0)
    with pytest.raises(ValueError, match=r"x must not be empty. Received: x.shape=\(2, 0\)"):
        fn(np.zeros((2, 0), np.float32), 0)
    with pytest.raises(TypeError, match=r"x must be an array of real numbers.*dtype=<U1"):
        fn(np.array([["a"]]), 0)


@pytest.mark.parametrize("fn", [F.softmax_backward, F.log_softmax_backward])
def test_bad_backward_arguments_raise(fn):
    g = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"y must have shape \(2, 3\). Received: y.shape=\(3, 2\)"):
        fn(g, np.zeros((3, 2), np.float32), 1)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 2\) for grad_y.shape=\(2, 3\). "
                                         r"Received: dim=5"):
        fn(g, g, 5)
    with pytest.raises(TypeError, match=r"grad_y must be an array of real numbers"):
        fn(np.array([["a"]]), g, 0)


def test_layer_errors_name_the_value():
    with pytest.raises(TypeError, match=r"dim must be an integer. Received: dim='1'"):
        fastcnn.Softmax("1")
    with pytest.raises(TypeError, match=r"dim must be an integer. Received: dim=None"):
        fastcnn.LogSoftmax(None)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 2\) for x.shape=\(4, 3\). "
                                         r"Received: dim=2"):
        fastcnn.Softmax(2)(np.zeros((4, 3), np.float32))


# ---- layers and models --------------------------------------------------------------

@pytest.mark.parametrize("log", [False, True], ids=["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1),
                                       ((2, 3, 4, 5), 0)], ids=str)
def test_layer_matches_torch(shape, dim, log, torch, num_threads, rng):
    layer = (fastcnn.LogSoftmax if log else fastcnn.Softmax)(dim)
    ref = (torch.nn.LogSoftmax if log else torch.nn.Softmax)(dim)
    x = rng.standard_normal(shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=2e-6, atol=2e-6)
    dy = rng.standard_normal(shape).astype(np.float32)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-5, atol=2e-6)
    assert repr(layer) == f"{type(layer).__name__}({dim})"


class Attention(fastcnn.Module):
    """A conv net whose features are re-weighted by a softmax over the channels."""

    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(1, 4, 3, padding=1)
        self.soft = fastcnn.Softmax(1)
        self.pool = fastcnn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)
        self.flatten = fastcnn.Flatten()
        self.fc = fastcnn.Linear(4 * 4 * 4, 3)
        self.out = fastcnn.LogSoftmax(-1)

    def forward(self, x):
        return self.out(self.fc(self.flatten(self.pool(self.soft(self.conv(x))))))


def torch_attention(torch):
    nn = torch.nn

    class TAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.soft = nn.Softmax(1)
            self.pool = nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(4 * 4 * 4, 3)
            self.out = nn.LogSoftmax(-1)

        def forward(self, x):
            return self.out(self.fc(self.flatten(self.pool(self.soft(self.conv(x))))))

    return TAttention()


def test_module_with_softmax_matches_torch_and_its_reference_walk(torch, num_threads, rng):
    tm, fm = torch_attention(torch), Attention()
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(fm(x), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    graph = trace(fm, x.shape)
    assert [n.op for n in graph.nodes].count("softmax") == 2
    fm.zero_grad()
    ref_out, ref_dx = reference_run(graph, x, g, True)
    fm.zero_grad()
    prog = compile_graph(graph, True)
    out, frame = prog.forward(x)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(prog.backward(frame, g, True), ref_dx)


def test_module_with_softmax_fits_and_round_trips(tmp_path, rng):
    model = Attention()
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=0,
                        optimizer=fastcnn.Adam(model.parameters(), lr=0.01))
    assert history.history["loss"][-1] < history.history["loss"][0]
    twin = Attention()
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))
    model.save(tmp_path / "attention.fcnn")      # the traced graph, without the class
    loaded = fastcnn.load(tmp_path / "attention.fcnn")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_sequential_with_softmax_trains_and_round_trips_through_save(tmp_path, rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(1, 3, 3, padding=1), fastcnn.Softmax(1),
                               fastcnn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                               fastcnn.Flatten(), fastcnn.Linear(3 * 4 * 4, 5),
                               fastcnn.LogSoftmax(dim=1), seed=0)
    x = rng.standard_normal((48, 1, 7, 7)).astype(np.float32)
    y = rng.integers(0, 5, 48)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0,
                        optimizer=fastcnn.Adam(model.parameters(), lr=0.02))
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "soft.fcnn"
    model.save(path)
    loaded = fastcnn.load(path)
    assert repr(loaded) == repr(model)
    assert [type(m).__name__ for m in loaded.layers][1::4] == ["Softmax", "LogSoftmax"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
