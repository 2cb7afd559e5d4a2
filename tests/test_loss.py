"""Softmax cross-entropy (csrc/loss.c) against float64 numpy, finite differences and torch."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from gradcheck import check_directional

# (N, L): single row, single class, odd sizes, many classes, enough rows for
# the parallel path and for several row chunks with a remainder; plus a few
# seeded random ones.
SHAPES = [(1, 1), (5, 1), (1, 2), (7, 3), (64, 10), (33, 1000), (1000, 10), (4097, 17)]
_r = np.random.default_rng(11)
SHAPES += [(int(_r.integers(1, 300)), int(_r.integers(2, 50))) for _ in range(3)]


def data(rng, N, L, scale=3.0):
    z = (scale * rng.standard_normal((N, L))).astype(np.float32)
    y = rng.integers(0, L, size=N)
    return z, y


def ce64(z, y):
    """Mean loss and its gradient in float64 (log-sum-exp)."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    grad = e / s
    grad[rows, y] -= 1.0
    return loss, grad / len(y)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_numpy(shape, reference, num_threads, rng):
    z, y = data(rng, *shape)
    want_loss, want_grad = ce64(z, y)
    loss = F.cross_entropy(z, y, reference=reference)
    grad = F.cross_entropy_backward(z, y, reference=reference)
    assert isinstance(loss, float)
    assert grad.dtype == np.float32 and grad.shape == z.shape
    # fast: float32 exponentials and row sums; ref: double throughout
    rtol = 1e-6 if shape[1] <= 20 else 1e-5
    np.testing.assert_allclose(loss, want_loss, rtol=rtol if not reference else 1e-12,
                               atol=1e-7 if not reference else 1e-12)
    # probabilities carry a few float32 ulps of 1 in absolute terms, which
    # p - 1 (the label's entry, p near 1) exposes: atol of ~6 ulps, over N
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=4e-7 / shape[0])


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_with_grad_is_loss_and_backward_in_one_call(reference, num_threads, rng):
    z, y = data(rng, 257, 10)
    loss, grad = F.cross_entropy_with_grad(z, y, reference=reference)
    assert loss == F.cross_entropy(z, y, reference=reference)
    np.testing.assert_array_equal(grad, F.cross_entropy_backward(z, y, reference=reference))


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_grad_loss_scales_the_gradient(reference, rng):
    z, y = data(rng, 9, 4)
    grad = F.cross_entropy_backward(z, y, grad_loss=-2.5, reference=reference)
    np.testing.assert_allclose(grad, -2.5 * ce64(z, y)[1], rtol=1e-5, atol=1e-7)


def test_one_and_two_threads_give_the_same_bits(rng):
    # Row losses are summed in chunks fixed by N alone, combined in order.
    z, y = data(rng, 5003, 10)
    out = {}
    old = fastcnn.get_num_threads()
    try:
        for nt in (1, 2):
            fastcnn.set_num_threads(nt)
            out[nt] = F.cross_entropy_with_grad(z, y)
    finally:
        fastcnn.set_num_threads(old)
    assert out[1][0] == out[2][0]
    np.testing.assert_array_equal(out[1][1], out[2][1])


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_stable_for_huge_logits(reference):
    z = np.array([[1e4, -1e4, 0.0],
                  [-1e4, -1e4, -1e4],
                  [1e4, 1e4 + 1, 1e4],
                  [-1e4, 1e4, -1e4]], np.float32)
    y = np.array([1, 2, 0, 1])
    loss, grad = F.cross_entropy_with_grad(z, y, reference=reference)
    # rows: a 2e4 gap taken exactly; equal logits; a gap of 1 at 1e4; a sure hit
    rows = [2e4, np.log(3.0), np.log(2.0 + np.e), 0.0]
    np.testing.assert_allclose(loss, np.mean(rows), rtol=1e-7)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, ce64(z, y)[1], rtol=1e-5, atol=1e-8)
    # a single row with a huge gap: the loss is the gap itself, exactly
    assert F.cross_entropy(np.array([[1e4, -1e4]], np.float32), [1], reference=reference) == 2e4
    assert F.cross_entropy(np.array([[1e4, -1e4]], np.float32), [0], reference=reference) == 0.0


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_nan_logit_gives_nan_loss_and_nan_row(reference, rng):
    z, y = data(rng, 4, 5)
    z[2, 3] = np.nan
    loss, grad = F.cross_entropy_with_grad(z, y, reference=reference)
    assert np.isnan(loss)
    assert np.all(np.isnan(grad[2]))
    others = [0, 1, 3]
    assert np.all(np.isfinite(grad[others]))
    # the other rows' gradients are those of the full batch's mean (divided by N = 4)
    np.testing.assert_allclose(grad[others], ce64(z[others], y[others])[1] * 3 / 4,
                               rtol=1e-5, atol=1e-8)


def test_nan_and_infinite_logits_match_torch(torch):
    z = np.array([[np.nan, 1.0, 0.0], [-np.inf, 1.0, 0.0], [0.5, 1.0, -np.inf],
                  [np.inf, 1.0, 0.0]], np.float32)
    for y in ([0, 1, 2, 1], [1, 2, 0, 0]):
        tz = torch.tensor(z, requires_grad=True)
        tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
        tloss.backward()
        for reference in (False, True):
            loss, grad = F.cross_entropy_with_grad(z, y, reference=reference)
            np.testing.assert_allclose(loss, tloss.item(), rtol=1e-6)  # nan/inf compare equal
            np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_gradient_matches_finite_differences(reference, rng):
    z, y = data(rng, 6, 7, scale=1.0)
    grad = F.cross_entropy_backward(z, y, reference=reference)
    check_directional(lambda t: F.cross_entropy(t, y, reference=reference), z, 1.0, grad, rng,
                      eps=1e-2, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1), (64, 10), (300, 1000)], ids=str)
def test_matches_torch(shape, torch, rng):
    z, y = data(rng, *shape)
    tz = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tloss.backward()
    loss, grad = F.cross_entropy_with_grad(z, y)
    # torch computes in float32 too: a few ulps of the loss, of each probability
    np.testing.assert_allclose(loss, tloss.item(), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_labels_of_other_integer_types_and_whole_floats(rng):
    z, y = data(rng, 6, 4)
    want = F.cross_entropy(z, y)
    for labels in (y.astype(np.int32), y.astype(np.uint8), y.astype(np.float64), list(y)):
        assert F.cross_entropy(z, labels) == want
    assert F.cross_entropy(z.astype(np.float64), y) == want


# ---- bad inputs -------------------------------------------------------------

Z = np.zeros((3, 4), np.float32)


@pytest.mark.parametrize("logits, labels, error, match", [
    (np.zeros(4), [0], ValueError,
     r"logits must be 2-dimensional \(N, L\)\. Received: logits.shape=\(4,\)"),
    (np.zeros((2, 3, 4)), [0, 1], ValueError, r"Received: logits.shape=\(2, 3, 4\)"),
    (np.zeros((0, 4)), [], ValueError,
     r"logits must not be empty\. Received: logits.shape=\(0, 4\)"),
    (np.zeros((3, 0)), [0, 0, 0], ValueError, r"logits must not be empty"),
    ([["a"]], [0], TypeError, r"logits must be an array of real numbers"),
    (Z, [0, 1], ValueError,
     r"labels must have shape \(3,\), one class index per row\. Received: labels.shape=\(2,\)"),
    (Z, [[0], [1], [2]], ValueError, r"Received: labels.shape=\(3, 1\)"),
    (Z, 1, ValueError, r"Received: labels.shape=\(\)"),
    (Z, [0, 4, 1], ValueError, r"labels must be in \[0, 4\)\. Received: labels\[1\]=4"),
    (Z, [0, 1, -1], ValueError, r"labels must be in \[0, 4\)\. Received: labels\[2\]=-1"),
    (Z, np.array([0, 1, 2**40]), ValueError, r"labels\[2\]=1099511627776"),
    (Z, [0.0, 1.5, 2.0], TypeError,
     r"labels must be integers \(class indices\)\. Received: labels\[1\]=1\.5 with dtype=float64"),
    (Z, [0.0, np.nan, 2.0], TypeError, r"Received: labels\[1\]=nan"),
    (Z, [0.0, np.inf, 2.0], ValueError, r"labels must be in \[0, 4\)\. Received: labels\[1\]=inf"),
    (Z, ["a", "b", "c"], TypeError, r"labels must be integers .* Received: labels with dtype=<U1"),
    (Z, [True, False, True], TypeError, r"labels with dtype=bool"),
])
@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_backward",
                                "cross_entropy_with_grad"])
def test_rejects_bad_input(fn, logits, labels, error, match):
    with pytest.raises(error, match=match):
        getattr(F, fn)(logits, labels)


@pytest.mark.parametrize("grad_loss, error, match", [
    (np.inf, ValueError, r"grad_loss must be finite\. Received: grad_loss=inf"),
    ("1", TypeError, r"grad_loss must be a real number\. Received: grad_loss='1'"),
])
def test_backward_rejects_bad_grad_loss(grad_loss, error, match):
    with pytest.raises(error, match=match):
        F.cross_entropy_backward(Z, [0, 1, 2], grad_loss=grad_loss)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
def test_probabilities_over_the_exp_range(reference, rng):
    # Rows (0, d): p_1 = exp(d) / (1 + exp(d)), so d sweeps the fast kernel's
    # exp (csrc/expf_vec.h, <= 1 ulp; not libm) over [-104, 0], down to
    # denormal and zero probabilities. grad_loss = N makes the gradient p - onehot.
    d = np.concatenate([rng.uniform(-104, 0, 300_000), np.linspace(-104, 0, 20_001),
                        [-87.33, -103.97, -103.98, -1e4, -np.inf]])
    z = np.stack([np.zeros_like(d), d], axis=1).astype(np.float32)
    y = np.zeros(len(d), np.int64)
    grad = F.cross_entropy_backward(z, y, grad_loss=float(len(d)), reference=reference)
    want = ce64(z, y)[1][:, 1] * len(d)
    p = grad[:, 1].astype(np.float64)
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-30)
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert (np.abs(p - want) / ulp).max() <= (3.0 if not reference else 1.0)
    loss = F.cross_entropy(z, y, reference=reference)
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(z[:, 1].astype(np.float64)))),
                               rtol=1e-6)
