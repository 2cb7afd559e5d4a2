"""AdaptiveAvgPool2d, AdaptiveMaxPool2d and GlobalAvgPool2d (traced as plain
pooling with window = stride = input / output) against torch."""
import numpy as np
import pytest

import fastcnn


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
    with pytest.raises(ValueError, match=r"needs an input whose height and width it divides"):
        fastcnn.AdaptiveAvgPool2d(4)(x)
    with pytest.raises(ValueError, match="output_size must be positive"):
        fastcnn.AdaptiveMaxPool2d(0)
