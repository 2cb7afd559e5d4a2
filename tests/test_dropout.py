"""Dropout (F.dropout in fastcnn/_merge.pxi, the layer, its graph op): masks from
fastcnn's seeded generator, the scaled identity where kept, the identity in
inference, and a model's training run reproduced from the same seed."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F


def test_mask_statistics_and_gradient(rng):
    x = rng.standard_normal((64, 32, 8, 8)).astype(np.float32)
    fastcnn.manual_seed(3)
    y, mask = F.dropout(x, 0.3, return_mask=True)
    kept = mask != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(y, x * mask)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(F.dropout_backward(g, mask), g * mask)
    np.testing.assert_array_equal(F.dropout(x, 0.3, training=False), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\). Received: p=1.0"):
        F.dropout(x, 1.0)


def test_layer_trains_reproducibly_and_is_the_identity_in_eval(rng):
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 16)

    def run():
        fastcnn.manual_seed(7)
        model = fastcnn.Sequential(fastcnn.Conv2d(1, 4, 3), fastcnn.ReLU(), fastcnn.Dropout(0.4),
                                   fastcnn.Flatten(), fastcnn.Linear(4 * 6 * 6, 3), seed=0)
        history = model.fit(x, labels, epochs=3, batch_size=4, verbose=0, seed=1)
        return model, history.history["loss"]

    (m1, loss1), (m2, loss2) = run(), run()
    assert loss1 == loss2
    for a, b in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    m1.eval()
    np.testing.assert_array_equal(m1(x), m1(x))
    assert "dropout" not in [n.op for n in m1._runner().programs[0][1].graph.nodes]
    m1.train()
    layer = fastcnn.Dropout(0.5)
    fastcnn.manual_seed(0)
    y = layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), (y != 0) * 2.0)
    assert repr(layer) == "Dropout()" and repr(fastcnn.Dropout(0.2)) == "Dropout(p=0.2)"
