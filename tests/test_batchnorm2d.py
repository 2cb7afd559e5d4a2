"""BatchNorm2d (csrc/batchnorm2d.c, fastcnn/_batchnorm2d.pxi, the layer and its
graph op): against float64 numpy, finite differences, the C reference kernels
and torch with identical weights; running statistics and state-dict names."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.compiler import PASSES, compile_graph, reference_run
from fastcnn.runner import trace
from gradcheck import check_directional

SHAPES = [(2, 3, 5, 4), (1, 1, 1, 1), (4, 16, 7, 7), (3, 5, 1, 9)]
# the kernel's cuts (csrc/batchnorm2d.c): blocks of at most 8192 floats (whole
# planes of consecutive images, runs taken two at a time, or pieces of a
# plane), at most 16 parts per channel, threads over channels or over parts
ODD_SHAPES = [(1, 3, 100, 100),   # N = 1, a plane of two blocks (8192 + 1808)
              (2, 3, 300, 300),   # 22 blocks a channel: more than the parts
              (41, 2, 3, 3),      # an odd number of runs, C below the threads
              (7, 1, 1, 1),       # C = 1, HW = 1
              (1, 1, 1, 3),       # one image, one channel
              (3, 300, 2, 5),     # large C, planes shorter than a vector
              (2, 3, 1, 1),       # HW = 1
              (5, 17, 13, 11),    # nothing a multiple of a vector width
              # planes of at most 16 values: chunks of 16 channels read image by
              # image, summed per position in float over 256 images at a time
              (300, 20, 3, 3),    # two flushes a chunk, a chunk of 4 channels
              (2, 40, 4, 4),      # the largest such plane
              (3, 33, 1, 2)]


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


def _inputs(rng, shape, offset=1.0, scale=3.0):
    c = shape[1]
    x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    w = (rng.standard_normal(c) + 0.5).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    return x, w, b, rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", ODD_SHAPES + SHAPES)
def test_saved_statistics_give_the_recomputed_gradients_exactly(shape, num_threads, rng):
    x, w, b, dy = _inputs(rng, shape)
    y, mean, invstd = F.batch_norm2d(x, weight=w, bias=b, training=True, eps=1e-3,
                                     return_stats=True)
    np.testing.assert_array_equal(y, F.batch_norm2d(x, weight=w, bias=b, training=True,
                                                    eps=1e-3))
    ref, m, v = np_batch_norm(x, w, b, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, m.ravel(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(v.ravel() + 1e-3), rtol=1e-5)
    saved = F.batch_norm2d_backward(dy, x, w, 1e-3, mean=mean, invstd=invstd)
    again = F.batch_norm2d_backward(dy, x, w, 1e-3)
    for got, want in zip(saved, again):
        np.testing.assert_array_equal(got, want)
    rdx, rgw, rgb = np_batch_norm_backward(dy, x, w, 1e-3)
    np.testing.assert_allclose(saved[0], rdx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(saved[1], rgw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(saved[2], rgb, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (2, 5, 80, 80), (33, 24, 9, 9)])
def test_results_do_not_depend_on_the_thread_count(shape, rng):
    """The summation order is fixed by the shape: 1, 2 and 3 threads (channels
    shared out whole, or each channel's parts) give the same bits."""
    x, w, b, dy = _inputs(rng, shape)
    old = fastcnn.get_num_threads()
    runs = []
    try:
        for nt in (1, 2, 3):
            fastcnn.set_num_threads(nt)
            rm, rv = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
            y, mean, invstd = F.batch_norm2d(x, rm, rv, w, b, training=True, return_stats=True)
            grads = F.batch_norm2d_backward(dy, x, w, mean=mean, invstd=invstd)
            runs.append((y, mean, invstd, rm, rv) + grads)
    finally:
        fastcnn.set_num_threads(old)
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", ODD_SHAPES[:4] + [(4, 6, 5, 5)])
def test_fast_kernels_match_the_reference_kernels(shape, num_threads, rng):
    x, w, b, dy = _inputs(rng, shape)
    rm, rv = rng.standard_normal(shape[1]).astype(np.float32), np.ones(shape[1], np.float32)
    for training in (True, False):
        fast = F.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training)
        ref = F.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training, reference=True)
        np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
    for need in (True, False):
        fast = F.batch_norm2d_backward(dy, x, w, need_grad_input=need)
        ref = F.batch_norm2d_backward(dy, x, w, need_grad_input=need, reference=True)
        assert (fast[0] is None) == (ref[0] is None) == (not need)
        for got, want in zip(fast, ref):
            if want is not None:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_streamed_stores_write_the_same_bits(shape, num_threads, rng):
    """Outputs larger than half the last-level cache go around it
    (non-temporal stores, from each run's first aligned vector on): forced on
    every shape, including runs that start off the vector alignment, the
    values are the cached stores' bit for bit."""
    from fastcnn import _native
    x, w, b, dy = _inputs(rng, shape)
    runs = []
    old = _native._set_stream(1)
    try:
        for mode in (1, -1):
            _native._set_stream(mode)
            rm, rv = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
            y, mean, invstd = F.batch_norm2d(x, rm, rv, w, b, training=True, return_stats=True)
            y_eval = F.batch_norm2d(x, rm, rv, w, b, training=False)
            grads = F.batch_norm2d_backward(dy, x, w, mean=mean, invstd=invstd)
            runs.append((y, y_eval) + grads)
    finally:
        _native._set_stream(old)
    for got, want in zip(*runs):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (4, 2, 1, 1), (2, 1, 100, 100)])
def test_backward_matches_finite_differences(shape, rng):
    """The directional derivative of <batch_norm2d(x, w, b), u> along random
    directions of x, w and b, computed in float64 from float32 forward calls."""
    x, w, b, u = _inputs(rng, shape, offset=0.5, scale=1.0)
    _, mean, invstd = F.batch_norm2d(x, weight=w, bias=b, training=True, return_stats=True)
    dx, gw, gb = F.batch_norm2d_backward(u, x, w, mean=mean, invstd=invstd)

    def forward(x_=x, w_=w, b_=b):
        return F.batch_norm2d(x_, weight=w_, bias=b_, training=True)

    check_directional(forward, x, u, dx, rng, eps=1e-2)
    check_directional(lambda w_: forward(w_=w_), w, u, gw, rng, eps=1e-2)
    check_directional(lambda b_: forward(b_=b_), b, u, gb, rng, eps=1e-2)


@pytest.mark.parametrize("shape", [(8, 3, 40, 40), (600, 3, 2, 2)])
def test_a_large_mean_keeps_the_variance_and_a_constant_channel_is_exact(shape, rng):
    """The moments are taken around the channel's first value: a mean 10^4
    times the spread keeps the variance's digits, and a constant channel gets
    exactly its value as mean (so its gradient is exactly the (dy - mean dy)
    invstd part; its output is 0 up to the rounding of torch's form
    x * scale + (bias - mean * scale), scale = invstd = 316 here). Large
    planes and planes of few values (summed per position) alike."""
    x = (1000.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    x[:, 2] = 7.25
    y, mean, invstd = F.batch_norm2d(x, training=True, eps=1e-5, return_stats=True)
    ref, _, v = np_batch_norm(x, np.ones(3), np.zeros(3), 1e-5)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(v.ravel() + 1e-5), rtol=1e-4)
    np.testing.assert_allclose(y[:, :2], ref[:, :2], rtol=1e-3, atol=2e-3)
    assert mean[2] == np.float32(7.25)
    np.testing.assert_allclose(y[:, 2], 0.0, atol=np.spacing(np.float32(7.25 * invstd[2])))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, gw, gb = F.batch_norm2d_backward(dy, x, mean=mean, invstd=invstd)
    assert gw[2] == 0
    want = (dy[:, 2] - dy[:, 2].astype(np.float64).mean()) * invstd[2]
    np.testing.assert_allclose(dx[:, 2], want, rtol=1e-4, atol=1e-3)


def test_saved_statistics_are_checked(rng):
    x, w, b, dy = _inputs(rng, (2, 3, 4, 4))
    _, mean, invstd = F.batch_norm2d(x, training=True, return_stats=True)
    with pytest.raises(ValueError, match="mean and invstd together"):
        F.batch_norm2d_backward(dy, x, mean=mean)
    with pytest.raises(ValueError, match="mean and invstd together"):
        F.batch_norm2d_backward(dy, x, invstd=invstd)
    with pytest.raises(ValueError, match=r"invstd must have shape \(3,\)"):
        F.batch_norm2d_backward(dy, x, mean=mean, invstd=invstd[:2])
    with pytest.raises(TypeError, match="invstd"):
        F.batch_norm2d_backward(dy, x, mean=mean, invstd=["a", "b", "c"])
    with pytest.raises(ValueError, match="return_stats=True, training=False"):
        F.batch_norm2d(x, np.zeros(3, np.float32), np.ones(3, np.float32), return_stats=True)


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
    # inference only reads the statistics: read-only arrays (a frozen model's) do;
    # training updates them in place
    rm.flags.writeable = rv.flags.writeable = False
    np.testing.assert_array_equal(F.batch_norm2d(x, rm, rv, eps=1e-3), y)
    with pytest.raises(ValueError, match=r"running_mean must be a writeable C-contiguous"):
        F.batch_norm2d(x, rm, rv, training=True)


@pytest.mark.parametrize("C, shape", [(4, (5, 3, 6)), (3, (1, 100, 100)), (37, (8, 1, 1))])
def test_layer_matches_torch_over_training_steps_and_in_eval(C, shape, torch, num_threads, rng):
    for momentum, affine, track, eps in ((0.1, True, True, 1e-5), (None, True, True, 1e-5),
                                         (0.3, False, True, 1e-3), (0.1, True, False, 1e-5),
                                         (0.0, True, True, 0.1), (1.0, True, True, 1e-5)):
        fm = fastcnn.BatchNorm2d(C, eps=eps, momentum=momentum, affine=affine,
                                 track_running_stats=track)
        tm = torch.nn.BatchNorm2d(C, eps=eps, momentum=momentum, affine=affine,
                                  track_running_stats=track)
        assert [k for k, _ in fm.named_state()] == list(tm.state_dict())
        if affine:      # from the seeded numpy generator: the same weights every run
            fm.weight.data[...] = rng.uniform(0.5, 1.5, C)
            fm.bias.data[...] = rng.uniform(-1, 1, C)
            with torch.no_grad():
                tm.weight.copy_(torch.from_numpy(fm.weight.data))
                tm.bias.copy_(torch.from_numpy(fm.bias.data))
        for step in range(3):
            x = (rng.standard_normal((shape[0], C) + shape[1:]) * 2 + step).astype(np.float32)
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
        x = rng.standard_normal((2, C, 3, 3)).astype(np.float32)
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
