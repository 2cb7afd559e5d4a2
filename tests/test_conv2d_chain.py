"""The conv2d chain (csrc/conv2d_chain.c, the compiler's fuse_conv_chain
pass): a frozen model's expand 1x1 -> depthwise -> project 1x1 run by strips
of output rows. Its outputs against the same frozen model run layer by
layer, against float64, and against torch where installed: strides, padding,
odd maps, several images, chains without a projection, strips of one row to
many (the rows consecutive strips share moved, not recomputed), and when the
pass must not fuse."""
import contextlib

import numpy as np
import pytest

import fastcnn
from fastcnn import _native, compiler
from fastcnn.compiler import PASSES
from test_frozen import random_batch_norms


@contextlib.contextmanager
def chain_setting(strip_floats=0, min_bytes=0):
    """Strips of about strip_floats floats (0: the default); fuse depthwise
    inputs from min_bytes per image on (small maps keep the tests fast)."""
    old_strip = _native._set_chain_strip_floats(strip_floats)
    old_min, compiler.CHAIN_MIN_BYTES = compiler.CHAIN_MIN_BYTES, min_bytes
    try:
        yield
    finally:
        _native._set_chain_strip_floats(old_strip)
        compiler.CHAIN_MIN_BYTES = old_min


def block(C, mid, K, k=3, stride=1, expand=True, project=True, rng=None):
    """An inverted residual block's layers (batch norms folded when frozen)."""
    layers = []
    if expand:
        layers += [fastcnn.Conv2d(C, mid, 1, bias=False), fastcnn.BatchNorm2d(mid),
                   fastcnn.ReLU6()]
    layers += [fastcnn.Conv2d(mid, mid, k, stride=stride, padding=k // 2, groups=mid,
                              bias=False), fastcnn.BatchNorm2d(mid), fastcnn.ReLU6()]
    if project:
        layers += [fastcnn.Conv2d(mid, K, 1, bias=False), fastcnn.BatchNorm2d(K)]
    model = fastcnn.Sequential(layers)
    random_batch_norms(model, rng)
    return model.eval()


def frozen_pair(model):
    """The model frozen with the chain pass and frozen without it."""
    chained, layered = fastcnn.freeze(model), fastcnn.freeze(model)
    layered(np.zeros((1,) + model_input(model), np.float32))    # makes its runner
    layered.__dict__["_runner_state"].passes = tuple(p for p in PASSES
                                                     if p != "fuse_conv_chain")
    return chained, layered


def model_input(model):
    first = model.layers[0]
    return (first.in_channels, 8, 8)


def chains_in(frozen, shape):
    """How many conv2d_chain steps the frozen model's program for shape has."""
    for _, prog in frozen.__dict__["_runner_state"].programs:
        if prog.in_shape == shape:
            return sum(node.op == "conv2d_chain" for node in prog.graph.nodes)
    raise AssertionError(f"no program for {shape}")


def check(model, x, strips):
    """The chained frozen model equals the layered one within rounding (the
    links may run other convolution paths than the layers) and the model."""
    with chain_setting(strip_floats=strips):
        chained, layered = frozen_pair(model)
        got, want = chained(x), layered(x)
        assert chains_in(chained, x.shape) == 1
        assert chains_in(layered, x.shape) == 0
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(got, model(x), rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_array_equal(chained(x), got)     # repeated calls agree


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("H,W", [(16, 16), (15, 13), (9, 24)])
@pytest.mark.parametrize("strips", [1, 100, 0], ids=["row", "few", "default"])
def test_chain_matches_the_layers(stride, H, W, strips, num_threads, rng):
    fastcnn.set_num_threads(num_threads)
    model = block(5, 24, 7, stride=stride, rng=rng)
    x = rng.standard_normal((1, 5, H, W)).astype(np.float32)
    check(model, x, strips * 24 if strips else 0)


@pytest.mark.parametrize("N", [2, 3])
def test_chain_on_several_images(N, num_threads, rng):
    fastcnn.set_num_threads(num_threads)
    model = block(6, 32, 8, stride=2, rng=rng)
    x = rng.standard_normal((N, 6, 17, 17)).astype(np.float32)
    check(model, x, 32 * 5 * 17)


@pytest.mark.parametrize("stride", [1, 2])
def test_chain_without_a_projection(stride, num_threads, rng):
    fastcnn.set_num_threads(num_threads)
    model = block(5, 24, 7, stride=stride, project=False, rng=rng)
    x = rng.standard_normal((2, 5, 14, 11)).astype(np.float32)
    check(model, x, 24 * 4 * 14)


@pytest.mark.parametrize("k", [5, 1])
def test_chain_with_other_depthwise_filters(k, num_threads, rng):
    fastcnn.set_num_threads(num_threads)
    model = block(4, 16, 6, k=k, stride=2, rng=rng)
    x = rng.standard_normal((1, 4, 19, 19)).astype(np.float32)
    check(model, x, 16 * 7 * 19)


def test_chain_against_float64(rng):
    """Each link's output rounded to float32 as the layers round it; the
    chain's result in float64 within the float32 sums' error."""
    model = block(3, 16, 4, stride=2, rng=rng)
    x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
    want = np.float64(x)
    for layer in model.layers:
        if isinstance(layer, fastcnn.Conv2d):
            want = conv64(want, layer)
        elif isinstance(layer, fastcnn.BatchNorm2d):
            s = layer.weight.data / np.sqrt(np.float64(layer.running_var) + layer.eps)
            want = (want - layer.running_mean[:, None, None]) * s[:, None, None] \
                + layer.bias.data[:, None, None]
        else:
            want = np.clip(want, 0.0, 6.0)
    with chain_setting(strip_floats=16 * 3 * 20):
        frozen = fastcnn.freeze(model)
        got = frozen(x)
        assert chains_in(frozen, x.shape) == 1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def conv64(x, layer):
    """A convolution in float64, by its definition."""
    w = np.float64(layer.weight.data)
    K, Cg, R, S = w.shape
    groups = layer.groups
    (sh, sw), (ph, pw) = pair(layer.stride), pair(layer.padding)
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    P, Q = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
    y = np.zeros((N, K, P, Q))
    for k in range(K):
        g = k // (K // groups)
        for c in range(Cg):
            for r in range(R):
                for s in range(S):
                    y[:, k] += w[k, c, r, s] * xp[:, g * Cg + c, r:r + sh * P:sh, s:s + sw * Q:sw]
    return y


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def test_mobilenet_v2_chains_against_torch(torch, rng):
    """The frozen MobileNetV2 (3 chains at 224x224: the blocks with an
    expansion at 112x112 and 56x56) against torch's twin."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import models
    fastcnn.set_num_threads(2)
    fm, tm = models.cnn_twins("MobileNetV2", torch, random_batch_norm=True)
    fm.eval()
    tm.eval()
    frozen = fastcnn.freeze(fm)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = frozen(x)
    assert chains_in(frozen, x.shape) == 3
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_what_the_pass_leaves_alone(rng):
    """No chain: a depthwise input below CHAIN_MIN_BYTES; no expansion; an
    expansion whose output another layer also reads; a dilated depthwise
    convolution; a model that is not frozen."""
    x = rng.standard_normal((1, 5, 12, 12)).astype(np.float32)
    small = block(5, 16, 7, rng=rng)
    frozen = fastcnn.freeze(small)
    frozen(x)
    assert chains_in(frozen, x.shape) == 0          # 16 x 12 x 12 floats: in cache anyway

    class Shared(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.expand = fastcnn.Conv2d(5, 16, 1)
            self.dw = fastcnn.Conv2d(16, 16, 3, padding=1, groups=16)

        def forward(self, x):
            e = self.expand(x)
            return self.dw(e) + e

    dilated = fastcnn.Sequential([fastcnn.Conv2d(5, 16, 1),
                                  fastcnn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)])
    x16 = rng.standard_normal((1, 16, 12, 12)).astype(np.float32)
    with chain_setting():
        for model, x_in in ((Shared().eval(), x), (dilated.eval(), x),
                            (block(16, 16, 7, expand=False, rng=rng), x16)):
            frozen = fastcnn.freeze(model)
            np.testing.assert_allclose(frozen(x_in), model(x_in), rtol=1e-5, atol=1e-5)
            assert chains_in(frozen, x_in.shape) == 0
        model = block(5, 16, 7, rng=rng)
        model(x)
        programs = model.__dict__["_runner_state"].programs
        assert all(node.op != "conv2d_chain" for _, p in programs for node in p.graph.nodes)
