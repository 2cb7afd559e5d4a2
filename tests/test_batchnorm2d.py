"""BatchNorm2d (csrc/batchnorm2d.c, fastcnn/_batchnorm2d.pxi, the layer and its
graph op): against float64 numpy, finite differences' closed form, and torch
with identical weights; running statistics and state-dict names."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.compiler import PASSES, compile_graph, reference_run
from fastcnn.runner import trace

SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (4, 16, 7, 7), (3, 5, 1, 9)]


def np_batch_norm(x, w, b, eps):
    x = x.astype(np.float64)
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1), m, v


def np_batch_norm_backward(dy, x, w, eps):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    invstd = 1 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
    xhat = (x - m) * invstd
    sdy = dy.sum(axis=(0, 2, 3), keepdims=True)
    sdyx = (dy * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dx = w.reshape(1, -1, 1, 1) * invstd / n * (n * dy - sdy - xhat * sdyx)
    return dx, sdyx.ravel(), sdy.ravel()


@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_backward_and_running_stats_match_float64(shape, num_threads, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    c = shape[1]
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y = F.batch_norm2d(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    ref, m, v = np_batch_norm(x, w, b, 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    n = x.size // c
    np.testing.assert_allclose(rm, 0.1 * m.ravel(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * v.ravel() * (n / (n - 1) if n > 1 else 1),
                               rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, gw, gb = F.batch_norm2d_backward(dy, x, w, 1e-5)
    rdx, rgw, rgb = np_batch_norm_backward(dy, x, w, 1e-5)
    np.testing.assert_allclose(dx, rdx, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gw, rgw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, rgb, rtol=1e-4, atol=1e-4)


def test_inference_uses_the_running_statistics(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    rm = rng.standard_normal(3).astype(np.float32)
    rv = (rng.random(3) + 0.5).astype(np.float32)
    y = F.batch_norm2d(x, rm, rv, eps=1e-3)
    ref = (x - rm.reshape(1, 3, 1, 1)) / np.sqrt(rv.reshape(1, 3, 1, 1) + 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs running_mean and running_var"):
        F.batch_norm2d(x)
    with pytest.raises(ValueError, match=r"running_mean must be .* shape \(3,\)"):
        F.batch_norm2d(x, np.zeros(4, np.float32), rv, training=True)


def test_layer_matches_torch_over_training_steps_and_in_eval(torch, num_threads, rng):
    for momentum, affine, track in ((0.1, True, True), (None, True, True), (0.3, False, True),
                                    (0.1, True, False)):
        fm = fastcnn.BatchNorm2d(4, momentum=momentum, affine=affine, track_running_stats=track)
        tm = torch.nn.BatchNorm2d(4, momentum=momentum, affine=affine,
                                  track_running_stats=track)
        assert [k for k, _ in fm.named_state()] == list(tm.state_dict())
        if affine:
            with torch.no_grad():
                tm.weight.uniform_(0.5, 1.5)
                tm.bias.uniform_(-1, 1)
            fm.weight.data[...] = tm.weight.detach().numpy()
            fm.bias.data[...] = tm.bias.detach().numpy()
        for step in range(3):
            x = (rng.standard_normal((5, 4, 3, 6)) * 2 + step).astype(np.float32)
            tx = torch.from_numpy(x.copy()).requires_grad_(True)
            ty = tm(tx)
            y = fm(x)
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
            g = rng.standard_normal(y.shape).astype(np.float32)
            ty.backward(torch.from_numpy(g))
            fm.zero_grad()
            np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-3, atol=1e-3)
            if affine:
                np.testing.assert_allclose(fm.weight.grad, tm.weight.grad.numpy(),
                                           rtol=1e-3, atol=1e-3)
                np.testing.assert_allclose(fm.bias.grad, tm.bias.grad.numpy(),
                                           rtol=1e-3, atol=1e-3)
                tm.weight.grad = tm.bias.grad = None
        if track:
            np.testing.assert_allclose(fm.running_mean, tm.running_mean.numpy(), rtol=1e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(fm.running_var, tm.running_var.numpy(), rtol=1e-5,
                                       atol=1e-6)
            assert int(fm.num_batches_tracked) == int(tm.num_batches_tracked) == 3
        fm.eval()
        tm.eval()
        x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
        np.testing.assert_allclose(fm(x), tm(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
# (fold_batch_norm changes the arithmetic: tests/test_fold.py checks it within tolerance)
@pytest.mark.parametrize("passes", [tuple(p for p in PASSES if p != "fold_batch_norm"), ()])
def test_executor_equals_the_reference_walk(training, passes, rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(2, 3, 3, padding=1), fastcnn.BatchNorm2d(3),
                               fastcnn.ReLU(), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
                               fastcnn.Linear(3 * 2 * 3, 2), seed=0)
    model[1].running_mean[...] = rng.standard_normal(3)
    x = rng.standard_normal((3, 2, 4, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 2)).astype(np.float32)
    graph = trace(model, x.shape)
    state = {k: v.copy() for k, v in model.state_dict().items()}

    def run(fn):
        model.load_state_dict(state)
        model.zero_grad()
        out, grad = fn()
        return out, grad, model.state_dict(), [p.grad.copy() for p in model.parameters()]

    def executor():
        prog = compile_graph(graph, training, passes)
        out, frame = prog.forward(x)
        return out, prog.backward(frame, dy, True) if training else None

    got = run(executor)
    want = run(lambda: reference_run(graph, x, dy if training else None, training))
    np.testing.assert_array_equal(got[0], want[0])
    if training:
        np.testing.assert_array_equal(got[1], want[1])
    for key in state:
        np.testing.assert_array_equal(got[2][key], want[2][key], err_msg=key)
    for a, b in zip(got[3], want[3]):
        np.testing.assert_array_equal(a, b)


def test_state_dict_save_and_load_keep_the_buffers(tmp_path, rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(1, 2, 3), fastcnn.BatchNorm2d(2), seed=0)
    model(rng.standard_normal((4, 1, 5, 5)))
    keys = list(model.state_dict())
    assert keys == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                    "1.running_var", "1.num_batches_tracked"]
    assert model.state_dict()["1.num_batches_tracked"].dtype == np.int64
    model.save(tmp_path / "bn.fcnn")
    twin = fastcnn.load(tmp_path / "bn.fcnn")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[key], value)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(twin.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="num_features must be positive"):
        fastcnn.BatchNorm2d(0)
    with pytest.raises(ValueError, match=r"BatchNorm2d expects input of shape \(N, 2, H, W\)"):
        fastcnn.BatchNorm2d(2)(np.zeros((1, 3, 5, 5)))
