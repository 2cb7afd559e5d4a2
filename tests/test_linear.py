"""Linear (csrc/linear.c) against float64 numpy, finite differences and torch."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from gradcheck import check_directional

# (N, F, O): ones, odd sizes, O above the 64-column bias block, a large F,
# sizes big enough to run the parallel paths; plus a few seeded random ones.
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (3, 9, 1), (17, 33, 13), (64, 128, 10),
          (2, 4099, 5), (129, 65, 70), (300, 200, 150),
          # up to 8 rows: the dot-product path (blocks of 16 outputs, 4 at a time, tails)
          (1, 400, 120), (3, 37, 19), (4, 1030, 261), (8, 1280, 1001), (9, 70, 21)]
_r = np.random.default_rng(7)
SHAPES += [tuple(int(v) for v in _r.integers(1, 96, size=3)) for _ in range(3)]


def data(rng, N, Fe, O):
    x = rng.standard_normal((N, Fe)).astype(np.float32)
    w = rng.standard_normal((O, Fe)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    dy = rng.standard_normal((N, O)).astype(np.float32)
    return x, w, b, dy


def f64(a):
    return np.asarray(a, np.float64)


def assert_close(got, want, scale, rel):
    """|got - want| <= rel * scale elementwise, scale = the sum of |terms| of each
    output (the natural bound on float32 dot-product rounding), plus a tiny floor."""
    err = np.abs(f64(got) - want)
    bound = rel * scale + 1e-30
    assert np.all(err <= bound), f"max error {err.max()} exceeds {(err / bound).max()} x bound"


def tol(reference):
    # The reference kernel accumulates in double (one final rounding); the fast
    # one accumulates in float32 over up to 4099 terms.
    return 2e-7 if reference else 1e-5


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_numpy(shape, bias, reference, num_threads, rng):
    x, w, b, _ = data(rng, *shape)
    y = F.linear(x, w, b if bias else None, reference=reference)
    assert y.dtype == np.float32 and y.shape == (shape[0], shape[2])
    want = f64(x) @ f64(w).T + (f64(b) if bias else 0.0)
    scale = np.abs(f64(x)) @ np.abs(f64(w)).T + (np.abs(f64(b)) if bias else 0.0)
    assert_close(y, want, scale, tol(reference))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_numpy(shape, reference, num_threads, rng):
    x, w, _, dy = data(rng, *shape)
    gx, gw, gb = F.linear_backward(dy, x, w, reference=reference)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (shape[2],)
    assert gx.dtype == gw.dtype == gb.dtype == np.float32
    ax, aw, ady = np.abs(f64(x)), np.abs(f64(w)), np.abs(f64(dy))
    assert_close(gx, f64(dy) @ f64(w), ady @ aw, tol(reference))
    assert_close(gw, f64(dy).T @ f64(x), ady.T @ ax, tol(reference))
    # the bias gradient sums in double in both kernels
    assert_close(gb, f64(dy).sum(0), ady.sum(0), 2e-7)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_backward_accumulates_into_given_buffers(reference, rng):
    x, w, _, dy = data(rng, 37, 21, 70)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gb0 = rng.standard_normal(70).astype(np.float32)
    gw_buf, gb_buf = gw0.copy(), gb0.copy()
    gx, gw, gb = F.linear_backward(dy, x, w, grad_weight=gw_buf, grad_bias=gb_buf,
                                   reference=reference)
    assert gw is gw_buf and gb is gb_buf
    _, fresh_w, fresh_b = F.linear_backward(dy, x, w, reference=reference)
    np.testing.assert_allclose(gw, gw0 + fresh_w, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(gb, gb0 + fresh_b, rtol=1e-6, atol=1e-5)
    # a second call adds once more
    F.linear_backward(dy, x, w, grad_weight=gw_buf, grad_bias=gb_buf, reference=reference)
    np.testing.assert_allclose(gw_buf, gw0 + 2 * f64(fresh_w), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb_buf, gb0 + 2 * f64(fresh_b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_backward_skips_what_is_not_asked(reference, rng):
    x, w, _, dy = data(rng, 8, 6, 5)
    gx, gw, gb = F.linear_backward(dy, x, w, has_bias=False, need_grad_input=False,
                                   reference=reference)
    assert gx is None and gb is None
    np.testing.assert_allclose(gw, f64(dy).T @ f64(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lead", [(), (4,), (2, 3, 5)], ids=str)
def test_leading_dimensions_like_torch(lead, rng):
    x = rng.standard_normal(lead + (11,)).astype(np.float32)
    w = rng.standard_normal((6, 11)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = F.linear(x, w, b)
    assert y.shape == lead + (6,)
    np.testing.assert_allclose(y, f64(x) @ f64(w).T + b, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.linear_backward(dy, x, w)
    assert gx.shape == x.shape
    x2, dy2 = f64(x).reshape(-1, 11), f64(dy).reshape(-1, 6)
    np.testing.assert_allclose(gx, f64(dy) @ f64(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, dy2.T @ x2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, dy2.sum(0), rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_orders_are_converted(rng):
    x, w, b, _ = data(rng, 9, 13, 4)
    want = F.linear(x, w, b)
    np.testing.assert_array_equal(F.linear(f64(x), np.asfortranarray(w), list(b)), want)
    xi = rng.integers(-3, 4, size=(5, 13))
    np.testing.assert_array_equal(F.linear(xi, w), F.linear(xi.astype(np.float32), w))


def test_one_and_two_threads_agree(rng):
    x, w, b, dy = data(rng, 300, 200, 150)
    out = {}
    old = fastcnn.get_num_threads()
    try:
        for nt in (1, 2):
            fastcnn.set_num_threads(nt)
            out[nt] = (F.linear(x, w, b),) + F.linear_backward(dy, x, w)
    finally:
        fastcnn.set_num_threads(old)
    for one, two in zip(out[1], out[2]):
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)
    # the bias gradient's summation order does not depend on the thread count
    np.testing.assert_array_equal(out[1][3], out[2][3])


@pytest.mark.parametrize("N", [1, 4, 8, 9])
def test_few_rows_do_not_depend_on_the_thread_count_or_the_batch(N, rng):
    # up to 8 rows each output is one dot product, computed the same way by any thread
    x, w, b, _ = data(rng, N, 2000, 67)
    out = {}
    old = fastcnn.get_num_threads()
    try:
        for nt in (1, 2):
            fastcnn.set_num_threads(nt)
            out[nt] = F.linear(x, w, b)
    finally:
        fastcnn.set_num_threads(old)
    np.testing.assert_array_equal(out[1], out[2])
    if N <= 8:
        np.testing.assert_array_equal(out[1][:1], F.linear(x[:1], w, b))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_gradients_match_finite_differences(reference, rng):
    x, w, b, dy = data(rng, 6, 10, 7)
    gx, gw, gb = F.linear_backward(dy, x, w, reference=reference)
    check_directional(lambda t: F.linear(t, w, b, reference=reference), x, dy, gx, rng)
    check_directional(lambda t: F.linear(x, t, b, reference=reference), w, dy, gw, rng)
    check_directional(lambda t: F.linear(x, w, t, reference=reference), b, dy, gb, rng)


@pytest.mark.parametrize("shape", [(1, 1, 1), (32, 300, 50), (4, 5, 33, 17)], ids=str)
def test_matches_torch(shape, torch, rng):
    *lead, Fe, O = shape
    x = rng.standard_normal(tuple(lead) + (Fe,)).astype(np.float32)
    w = rng.standard_normal((O, Fe)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(dy))
    y = F.linear(x, w, b)
    gx, gw, gb = F.linear_backward(dy, x, w)
    # float32 sums of up to 300 (forward, grad_x) or 20 (grad_w) unit-normal products
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-5, atol=1e-4)


# ---- bad inputs -------------------------------------------------------------

W = np.ones((3, 4), np.float32)
X = np.ones((2, 4), np.float32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weight=np.ones(4)), ValueError,
     r"weight must be 2-dimensional \(out_features, in_features\)\. Received: weight.shape=\(4,\)"),
    (dict(weight=np.ones((3, 4, 1))), ValueError, r"weight.shape=\(3, 4, 1\)"),
    (dict(x=np.float32(1.0)), ValueError,
     r"x must have at least 1 dimension .* Received: x.shape=\(\)"),
    (dict(x=np.ones((2, 5))), ValueError,
     r"x.shape\[-1\] must equal weight.shape\[1\] .* Received: x.shape=\(2, 5\), "
     r"weight.shape=\(3, 4\)"),
    (dict(bias=np.ones(2)), ValueError,
     r"bias must have shape \(3,\)\. Received: bias.shape=\(2,\)"),
    (dict(bias=np.ones((1, 3))), ValueError, r"Received: bias.shape=\(1, 3\)"),
    (dict(x=np.ones((0, 4))), ValueError, r"x must not be empty\. Received: x.shape=\(0, 4\)"),
    (dict(weight=np.ones((0, 4))), ValueError, r"weight must not be empty"),
    (dict(x=[["a", "b", "c", "d"]]), TypeError, r"x must be an array of real numbers.*dtype=<U1"),
    (dict(weight=W.astype(complex)), TypeError, r"weight must be an array of real numbers"),
    (dict(bias=np.array([True, False, True])), TypeError, r"bias must be an array of real"),
])
def test_forward_rejects_bad_input(kwargs, error, match):
    args = dict(x=X, weight=W, bias=np.ones(3, np.float32))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.linear(**args)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(grad_y=np.ones((2, 4))), ValueError,
     r"grad_y must have shape \(2, 3\)\. Received: grad_y.shape=\(2, 4\)"),
    (dict(grad_y=np.ones(3)), ValueError, r"Received: grad_y.shape=\(3,\)"),
    (dict(grad_y=np.ones((0, 3))), ValueError, r"grad_y must not be empty"),
    (dict(x=np.ones((2, 5))), ValueError, r"x.shape\[-1\] must equal weight.shape\[1\]"),
    (dict(weight=np.ones(4)), ValueError, r"weight must be 2-dimensional"),
    (dict(grad_weight=np.zeros((3, 4))), TypeError,
     r"grad_weight must be a writeable C-contiguous float32 numpy array.*dtype=float64"),
    (dict(grad_weight=np.zeros((4, 3), np.float32).T), TypeError, r"grad_weight must be"),
    (dict(grad_weight=[[0.0] * 4] * 3), TypeError, r"Received: grad_weight of type list"),
    (dict(grad_weight=np.zeros((4, 3), np.float32)), ValueError,
     r"grad_weight must have shape \(3, 4\)\. Received: grad_weight.shape=\(4, 3\)"),
    (dict(grad_bias=np.zeros(4, np.float32)), ValueError,
     r"grad_bias must have shape \(3,\)\. Received: grad_bias.shape=\(4,\)"),
    (dict(has_bias=False, grad_bias=np.zeros(3, np.float32)), ValueError,
     r"grad_bias must be None when has_bias is False\. Received: has_bias=False"),
])
def test_backward_rejects_bad_input(kwargs, error, match):
    args = dict(grad_y=np.ones((2, 3), np.float32), x=X, weight=W)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.linear_backward(**args)


def test_backward_rejects_read_only_buffer():
    gw = np.zeros((3, 4), np.float32)
    gw.flags.writeable = False
    with pytest.raises(TypeError, match=r"grad_weight must be a writeable"):
        F.linear_backward(np.ones((2, 3)), X, W, grad_weight=gw)
