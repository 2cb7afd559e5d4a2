"""AdaptiveAvgPool2d, AdaptiveMaxPool2d and GlobalAvgPool2d against torch:
traced as plain pooling with window = stride = input / output when the output
size divides the input, else as the adaptive ops (csrc/pool2d.c)."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.runner import trace


@pytest.mark.parametrize("make,out,shape", [
    (fastcnn.AdaptiveAvgPool2d, 1, (2, 3, 7, 5)), (fastcnn.AdaptiveAvgPool2d, (2, 5), (2, 3, 8, 5)),
    (fastcnn.AdaptiveMaxPool2d, 1, (2, 3, 7, 5)), (fastcnn.AdaptiveMaxPool2d, 2, (1, 4, 6, 6))])
def test_matches_torch(make, out, shape, torch, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    layer = make(out)
    tlayer = getattr(torch.nn, make.__name__)(out)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tlayer(tx)
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_global_average_and_errors(rng):
    x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(fastcnn.GlobalAvgPool2d()(x), x.mean(axis=(2, 3), keepdims=True),
                               rtol=1e-5, atol=1e-6)
    assert repr(fastcnn.GlobalAvgPool2d()) == "GlobalAvgPool2d()"
    with pytest.raises(ValueError, match="output_size must be positive"):
        fastcnn.AdaptiveMaxPool2d(0)


# (output_size, input shape): sizes that do not divide the input, larger than
# it, a 1x1 input, channels not a multiple of a vector, above the thread threshold.
UNEVEN = [((3, 3), (2, 3, 7, 7)), ((2, 5), (1, 5, 5, 7)), ((4, 4), (2, 2, 3, 3)),
          ((3, 2), (1, 3, 1, 1)), ((5, 7), (2, 17, 11, 13)), (6, (8, 64, 28, 28))]


def adaptive64(x, out, avg):
    N, C, H, W = x.shape
    oh, ow = out if isinstance(out, tuple) else (out, out)
    y, idx = np.empty((N, C, oh, ow)), np.empty((N, C, oh, ow), np.int64)
    for p in range(oh):
        h0, h1 = p * H // oh, -(-(p + 1) * H // oh)
        for q in range(ow):
            w0, w1 = q * W // ow, -(-(q + 1) * W // ow)
            win = x[:, :, h0:h1, w0:w1].astype(np.float64).reshape(N, C, -1)
            y[:, :, p, q] = win.mean(axis=2) if avg else win.max(axis=2)
            k = win.argmax(axis=2)
            idx[:, :, p, q] = (h0 + k // (w1 - w0)) * W + w0 + k % (w1 - w0)
    return y, idx


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("out,shape", UNEVEN, ids=str)
def test_uneven_windows_match_numpy(out, shape, reference, num_threads, rng):
    x = (0.1 * rng.permutation(int(np.prod(shape)))).astype(np.float32).reshape(shape)  # no ties
    want, want_idx = adaptive64(x, out, avg=False)
    y, idx = F.adaptive_max_pool2d(x, out, return_indices=True, reference=reference)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, out, reference=reference),
                               adaptive64(x, out, avg=True)[0], rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    dx = F.adaptive_avg_pool2d_backward(dy, shape, reference=reference)
    for v in rng.standard_normal((2,) + shape):    # linear: <f(v), dy> = <v, dx>
        assert np.sum(adaptive64(v, out, avg=True)[0] * dy) == pytest.approx(np.sum(dx * v),
                                                                              rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("make", [fastcnn.AdaptiveAvgPool2d, fastcnn.AdaptiveMaxPool2d])
@pytest.mark.parametrize("out,shape", UNEVEN, ids=str)
def test_uneven_layers_match_torch(make, out, shape, torch, num_threads, rng):
    x = np.round(rng.standard_normal(shape), 1).astype(np.float32)   # ties: first maximum
    layer, tlayer = make(out), getattr(torch.nn, make.__name__)(out)
    assert trace(layer, shape).nodes[0].op == "adaptive_" + layer._op
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tlayer(tx)
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    if make is fastcnn.AdaptiveMaxPool2d:
        _, tidx = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x), out, True)
        np.testing.assert_array_equal(F.adaptive_max_pool2d(x, out, return_indices=True)[1],
                                      tidx.numpy())


def test_uneven_model_trains_and_round_trips(tmp_path, rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(1, 4, 3), fastcnn.ReLU(),
                               fastcnn.AdaptiveMaxPool2d((3, 2)), fastcnn.AdaptiveAvgPool2d(2),
                               fastcnn.Flatten(), fastcnn.Linear(16, 2), seed=0)
    x = rng.standard_normal((32, 1, 9, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, seed=0,
                        optimizer=fastcnn.Adam(model.parameters(), lr=0.02))
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "adaptive.fcnn")
    np.testing.assert_array_equal(fastcnn.load(tmp_path / "adaptive.fcnn").predict(x),
                                  model.predict(x))


def test_adaptive_functional_errors_name_the_value():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"output_size must be positive. Received: output_size=\(0, 2\)"):
        F.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(TypeError, match=r"output_size must be an integer. Received: output_size=1.5"):
        F.adaptive_max_pool2d(x, 1.5)
    with pytest.raises(ValueError, match=r"x must be 4-dimensional.*x.shape=\(3, 4\)"):
        F.adaptive_max_pool2d(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 3, P, Q\).*"
                                         r"Received: grad_y.shape=\(2, 4, 2, 2\)"):
        F.adaptive_avg_pool2d_backward(np.zeros((2, 4, 2, 2), np.float32), x.shape)


class UnevenNet(fastcnn.Module):
    """Two adaptive poolings with uneven windows, side by side."""

    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(2, 3, 3)
        self.pool = fastcnn.AdaptiveMaxPool2d((2, 3))
        self.avg = fastcnn.AdaptiveAvgPool2d(5)
        self.flatten = fastcnn.Flatten()
        self.fc = fastcnn.Linear(3 * 2 * 3 + 3 * 5 * 5, 2)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(fastcnn.cat([self.flatten(self.pool(h)), self.flatten(self.avg(h))], dim=1))


def test_uneven_module_round_trips_through_its_traced_graph(tmp_path, rng):
    model = UnevenNet()
    x = rng.standard_normal((4, 2, 9, 10)).astype(np.float32)
    out = model(x)
    assert out.shape == (4, 2)
    model.save(tmp_path / "uneven.fcnn")
    np.testing.assert_array_equal(fastcnn.load(tmp_path / "uneven.fcnn").predict(x),
                                  model.predict(x))
