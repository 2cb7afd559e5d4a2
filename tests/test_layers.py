"""Layers (fastcnn/layers.py) against torch.nn with identical weights: forward
and every gradient; initialisation, modes, caching and argument errors."""
import numpy as np
import pytest

import fastcnn
from fastcnn import layers as L

# Tolerances: float32 kernels with different summation orders than torch's.
RTOL, ATOL = 1e-4, 1e-5

# (fastcnn layer factory, torch layer factory, input shape)
CASES = {
    "conv_pad2": (lambda: fastcnn.Conv2d(1, 6, 5, padding=2),
                  lambda nn: nn.Conv2d(1, 6, 5, padding=2), (3, 1, 28, 28)),
    "conv_nobias_stride2": (lambda: fastcnn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                                   bias=False),
                            lambda nn: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                                 bias=False), (2, 3, 9, 7)),
    "conv_same": (lambda: fastcnn.Conv2d(2, 3, 3, padding="same"),
                  lambda nn: nn.Conv2d(2, 3, 3, padding="same"), (2, 2, 6, 5)),
    "conv_valid": (lambda: fastcnn.Conv2d(6, 16, 5, padding="valid"),
                   lambda nn: nn.Conv2d(6, 16, 5, padding="valid"), (2, 6, 14, 14)),
    "linear": (lambda: fastcnn.Linear(400, 120), lambda nn: nn.Linear(400, 120), (5, 400)),
    "linear_nobias": (lambda: fastcnn.Linear(7, 3, bias=False),
                      lambda nn: nn.Linear(7, 3, bias=False), (1, 7)),
    "relu": (lambda: fastcnn.ReLU(), lambda nn: nn.ReLU(), (2, 3, 4, 5)),
    "sigmoid": (lambda: fastcnn.Sigmoid(), lambda nn: nn.Sigmoid(), (2, 3, 4, 5)),
    "maxpool2": (lambda: fastcnn.MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (2, 3, 8, 7)),
    "maxpool3s2p1": (lambda: fastcnn.MaxPool2d(3, 2, 1), lambda nn: nn.MaxPool2d(3, 2, 1),
                     (2, 2, 9, 10)),
    "avgpool2": (lambda: fastcnn.AvgPool2d(2), lambda nn: nn.AvgPool2d(2), (2, 3, 8, 7)),
    "avgpool3s2p1_nopad": (lambda: fastcnn.AvgPool2d(3, 2, 1, count_include_pad=False),
                           lambda nn: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                           (2, 2, 9, 10)),
    "flatten": (lambda: fastcnn.Flatten(), lambda nn: nn.Flatten(), (2, 16, 5, 5)),
    "flatten_2_3": (lambda: fastcnn.Flatten(2, 3), lambda nn: nn.Flatten(2, 3), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_torch(case, torch, num_threads, rng):
    make, make_torch, shape = CASES[case]
    layer, ref = make(), make_torch(torch.nn)
    for p, (_, tp) in zip(layer.parameters(), ref.named_parameters()):
        with torch.no_grad():
            tp.copy_(torch.from_numpy(p.data))
    x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = ref(tx)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)

    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    gx = layer.backward(gy)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    names = [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in layer.named_parameters()] == names
    for p, (_, tp) in zip(layer.parameters(), ref.named_parameters()):
        assert p.grad.shape == tuple(tp.shape)
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=RTOL, atol=ATOL * 10)


@pytest.mark.parametrize("case", ["conv_pad2", "linear"])
def test_gradients_accumulate_and_zero_grad_clears(case, rng):
    layer = CASES[case][0]()
    x = rng.standard_normal(CASES[case][2]).astype(np.float32)
    gy = rng.standard_normal(layer(x).shape).astype(np.float32)
    layer.backward(gy)
    once = [p.grad.copy() for p in layer.parameters()]
    layer(x)
    layer.backward(gy)
    for p, g in zip(layer.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-5, atol=1e-6)
    layer.zero_grad()
    assert all(not p.grad.any() for p in layer.parameters())


def test_need_grad_input_false_skips_the_input_gradient_but_not_the_weights(rng):
    layer = fastcnn.Conv2d(2, 3, 3, padding=1)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    gy = rng.standard_normal(layer(x).shape).astype(np.float32)
    gx = layer.backward(gy)
    full = layer.weight.grad.copy()
    layer.zero_grad()
    assert layer.backward(gy, need_grad_input=False) is None
    np.testing.assert_array_equal(layer.weight.grad, full)
    assert gx.shape == x.shape


def test_flatten_is_a_view_and_its_backward_restores_the_shape(rng):
    x = rng.standard_normal((4, 16, 5, 5)).astype(np.float32)
    y = fastcnn.Flatten()(x)
    assert y.shape == (4, 400) and np.shares_memory(x, y)
    layer = fastcnn.Flatten()
    layer(x)
    gy = np.ones((4, 400), np.float32)
    g = layer.backward(gy)
    assert g.shape == x.shape and np.shares_memory(g, gy)


def test_default_init_is_pytorch_kaiming_uniform():
    fastcnn.manual_seed(0)
    conv = fastcnn.Conv2d(6, 16, 5)
    bound = 1 / np.sqrt(6 * 25)
    for p in conv.parameters():
        assert np.abs(p.data).max() <= bound
        assert np.abs(p.data).max() > 0.9 * bound        # uniform over the whole range
    w = conv.weight.data
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound   # U(-b, b) has std b/sqrt(3)
    fc = fastcnn.Linear(400, 120)
    assert np.abs(fc.weight.data).max() <= 1 / np.sqrt(400)
    assert np.abs(fc.bias.data).max() <= 1 / np.sqrt(400)


def test_manual_seed_and_reset_parameters_are_reproducible():
    fastcnn.manual_seed(42)
    a = fastcnn.Conv2d(1, 6, 5)
    fastcnn.manual_seed(42)
    b = fastcnn.Conv2d(1, 6, 5)
    c = fastcnn.Conv2d(1, 6, 5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(b.weight.data, c.weight.data)
    c.reset_parameters(np.random.default_rng(7))
    a.reset_parameters(np.random.default_rng(7))
    np.testing.assert_array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(a.bias.data, c.bias.data)


def test_parameters_are_float32_with_grads_of_the_same_shape():
    for layer in (fastcnn.Conv2d(3, 8, (3, 5)), fastcnn.Linear(10, 4)):
        for p in layer.parameters():
            assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
            assert p.data.flags.c_contiguous and p.grad.shape == p.data.shape
    assert fastcnn.Conv2d(3, 8, (3, 5)).weight.shape == (8, 3, 3, 5)
    assert fastcnn.Linear(10, 4).weight.shape == (4, 10)
    assert fastcnn.Linear(10, 4, bias=False).parameters()[0].shape == (4, 10)
    assert len(fastcnn.Linear(10, 4, bias=False).parameters()) == 1


def test_eval_mode_keeps_no_cache_and_backward_then_fails(rng):
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    for layer in (fastcnn.Conv2d(1, 2, 3), fastcnn.MaxPool2d(2), fastcnn.ReLU()):
        layer.eval()
        assert layer.training is False
        y = layer(x)
        with pytest.raises(RuntimeError, match="forward pass in training mode"):
            layer.backward(np.ones_like(y))
        layer.train()
        assert layer.training is True
        layer(x)
        assert layer.backward(np.ones_like(y)).shape == x.shape


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match=r"Linear.backward\(\) needs a forward pass"):
        fastcnn.Linear(3, 2).backward(np.ones((1, 2), np.float32))


def test_layers_accept_other_dtypes_and_orders(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    conv = fastcnn.Conv2d(3, 2, 3)
    a = conv(x)                                     # float64
    b = conv(np.asfortranarray(x.astype(np.float32)))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, match", [
    (lambda: fastcnn.Conv2d(0, 6, 5), r"in_channels must be positive. Received: in_channels=0"),
    (lambda: fastcnn.Conv2d(1, 6, 0), r"kernel_size must be positive. Received: kernel_size=0"),
    (lambda: fastcnn.Conv2d(1, 6, 5, stride=0), r"stride must be positive. Received: stride=0"),
    (lambda: fastcnn.Conv2d(1, 6, 5, padding=-1),
     r"padding must be non-negative. Received: padding=-1"),
    (lambda: fastcnn.Conv2d(1, 6, 5, padding="full"),
     r"padding must be an int, a pair of ints, 'same' or 'valid'. Received: padding='full'"),
    (lambda: fastcnn.Conv2d(1, 6, 5, stride=2, padding="same"),
     r"padding='same' needs stride 1. Received: stride=2"),
    (lambda: fastcnn.Linear(0, 3), r"in_features must be positive. Received: in_features=0"),
    (lambda: fastcnn.Linear(3, -2), r"out_features must be positive. Received: out_features=-2"),
    (lambda: fastcnn.MaxPool2d(0), r"kernel_size must be positive. Received: kernel_size=0"),
    (lambda: fastcnn.AvgPool2d(2, padding=(1, -1)),
     r"padding must be non-negative. Received: padding=\(1, -1\)"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_argument_types():
    with pytest.raises(TypeError, match=r"in_channels must be an integer. Received: in_channels=1.5"):
        fastcnn.Conv2d(1.5, 2, 3)
    with pytest.raises(TypeError, match=r"start_dim must be an integer"):
        fastcnn.Flatten("1")


def test_bad_inputs_name_the_shape(rng):
    with pytest.raises(ValueError, match=r"Conv2d expects input of shape \(N, 3, H, W\). "
                                         r"Received: x.shape=\(2, 1, 8, 8\)"):
        fastcnn.Conv2d(3, 2, 3)(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Linear expects input of shape \(N, 5\). "
                                         r"Received: x.shape=\(2, 4\)"):
        fastcnn.Linear(5, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1, end_dim=-1\) does not fit"):
        fastcnn.Flatten()(np.zeros(3, np.float32))


def test_repr_and_config_round_trip():
    for layer in (fastcnn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 0), bias=False),
                  fastcnn.Linear(4, 2), fastcnn.MaxPool2d(3, 2, 1),
                  fastcnn.AvgPool2d(2, count_include_pad=False), fastcnn.Flatten(2), fastcnn.ReLU(),
                  fastcnn.Sigmoid()):
        clone = type(layer)(**layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert repr(clone) == repr(layer) and type(layer).__name__ in repr(layer)


@pytest.mark.parametrize("cls", [fastcnn.Conv2d, fastcnn.Linear, fastcnn.ReLU, fastcnn.Sigmoid,
                                 fastcnn.MaxPool2d, fastcnn.AvgPool2d, fastcnn.Flatten,
                                 fastcnn.Sequential])
def test_every_layer_has_a_keras_style_docstring(cls):
    doc = cls.__doc__
    for section in ("Input shape:", "Output shape:", "Example:"):
        assert section in doc, f"{cls.__name__} docstring lacks {section}"
    if cls.__init__ is not L.Layer.__init__ and cls.__init__.__code__.co_argcount > 1:
        assert "Args:" in doc
