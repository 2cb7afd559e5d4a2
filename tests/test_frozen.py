"""fastcnn.freeze: an inference-only snapshot whose convolutions keep what
their paths derive from the weights (csrc/conv2d_prepared.c: the GEMM path's
packed weights, the channel-vector path's weight blocks, Winograd's
transformed filters) and whose batch norms are folded once. Its outputs
against float64 and against the model it was made from, on every path and
on repeated calls; that it is a snapshot (read-only, independent of the
original); that it refuses training; copies, pickles, threads."""
import contextlib
import copy
import pickle
import threading

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import _native, models


@contextlib.contextmanager
def forced_path(path):
    """Force the forward's convolution path: 'gemm', 'kvec', 'winograd'
    (F(2x2, 3x3)), 'winograd-4x4' (F(4x4, 3x3)), or 'timed' (each shape's
    paths timed on its first call)."""
    modes = {"gemm": (-1, -1, -1), "kvec": (-1, 1, -1), "winograd": (-1, -1, 1),
             "winograd-4x4": (-1, -1, 2), "timed": (0, 0, 0)}[path]
    old = (_native._set_direct(modes[0]), _native._set_kvec(modes[1]),
           _native._set_winograd(modes[2]))
    try:
        yield
    finally:
        _native._set_direct(old[0])
        _native._set_kvec(old[1])
        _native._set_winograd(old[2])


def random_batch_norms(model, rng):
    for layer in model.modules():
        if isinstance(layer, fastcnn.BatchNorm2d):
            c = layer.running_mean.shape[0]
            layer.running_mean[...] = rng.normal(0.0, 0.5, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.normal(0.0, 0.5, c)


def conv_bn_relu(C, K, k, stride, bias, rng):
    model = fastcnn.Sequential([fastcnn.Conv2d(C, K, k, stride=stride, padding=k // 2,
                                               bias=bias),
                                fastcnn.BatchNorm2d(K), fastcnn.ReLU()])
    random_batch_norms(model, rng)
    return model.eval()


def expected_conv_bn_relu(model, x):
    """float64: the reference convolution, then batch norm and ReLU."""
    conv, bn = model.layers[0], model.layers[1]
    b = None if conv.bias is None else conv.bias.data
    y = F.conv2d(x, conv.weight.data, b, stride=conv.stride, padding=conv.padding,
                 reference=True).astype(np.float64)
    s = bn.weight.data / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    y = (y - bn.running_mean[:, None, None]) * s[:, None, None] + bn.bias.data[:, None, None]
    return np.maximum(y, 0.0)


# C, K, kernel, stride, batch: 3x3 stride 1 (every path; batch 1 makes
# Winograd's narrow products, 3 its wide ones), 1x1 (GEMM, single images and
# groups), stride 2, channels off the vector width.
SHAPES = [(16, 32, 3, 1, 1, 12), (16, 32, 3, 1, 3, 12), (24, 16, 1, 1, 1, 9),
          (24, 16, 1, 1, 5, 3), (8, 16, 3, 2, 2, 11), (5, 8, 3, 1, 2, 7), (64, 72, 3, 1, 1, 5)]
SHAPE_IDS = [f"{c}to{k}k{r}s{s}b{n}hw{h}" for c, k, r, s, n, h in SHAPES]


@pytest.mark.parametrize("path", ["gemm", "kvec", "winograd", "winograd-4x4", "timed"])
@pytest.mark.parametrize("C,K,k,stride,N,H", SHAPES, ids=SHAPE_IDS)
def test_frozen_conv_matches_float64_on_every_path(C, K, k, stride, N, H, path, num_threads,
                                                   rng):
    model = conv_bn_relu(C, K, k, stride, bias=bool(C % 2), rng=rng)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    want = expected_conv_bn_relu(model, x)
    tol = 1e-5 * (np.abs(want).max() + 1.0) * np.sqrt(C * k * k)
    with forced_path(path):
        frozen = fastcnn.freeze(model)
        first, again = frozen(x), frozen(x)
        other = frozen(x[::-1].copy())          # other inputs, kept weights
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, want, rtol=0, atol=tol)
    np.testing.assert_allclose(other, want[::-1], rtol=0, atol=tol)


def test_frozen_resnet_matches_the_model_at_several_batches(num_threads, rng):
    model = models.resnet20(seed=0)
    random_batch_norms(model, rng)
    model.eval()
    frozen = fastcnn.freeze(model)
    for n in (1, 4, 1, 7):                  # new programs, then a kept one again
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        want = model(x)
        got = frozen(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        np.testing.assert_array_equal(frozen(x), got)


def test_frozen_mobilenet_block_with_depthwise_and_groups(num_threads, rng):
    model = fastcnn.Sequential([
        fastcnn.Conv2d(8, 32, 1, bias=False), fastcnn.BatchNorm2d(32), fastcnn.ReLU6(),
        fastcnn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), fastcnn.BatchNorm2d(32),
        fastcnn.ReLU6(), fastcnn.Conv2d(32, 16, 3, padding=1, groups=4),
        fastcnn.BatchNorm2d(16)]).eval()
    random_batch_norms(model, rng)
    x = rng.standard_normal((2, 8, 14, 14)).astype(np.float32)
    want = model(x)
    got = fastcnn.freeze(model)(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_frozen_batch_norms_that_do_not_fold(num_threads, rng):
    """Batch norms with no convolution right before them (first, after a
    ReLU as in pre-activation blocks and DenseNet, one after another) run
    as steps on the frozen, read-only statistics."""
    model = fastcnn.Sequential([
        fastcnn.BatchNorm2d(3), fastcnn.Conv2d(3, 8, 3, padding=1), fastcnn.ReLU(),
        fastcnn.BatchNorm2d(8), fastcnn.Conv2d(8, 8, 3, padding=1), fastcnn.BatchNorm2d(8),
        fastcnn.BatchNorm2d(8), fastcnn.ReLU()]).eval()
    random_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    want = model(x)
    frozen = fastcnn.freeze(model)
    np.testing.assert_allclose(frozen(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(frozen.predict(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_frozen_is_a_snapshot(rng):
    model = conv_bn_relu(4, 8, 3, 1, True, rng)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    frozen = fastcnn.freeze(model)
    before = frozen(x)
    model.layers[0].weight.data[...] = 0.0          # the original changes ...
    model.layers[1].running_mean[...] = 5.0
    np.testing.assert_array_equal(frozen(x), before)    # ... the snapshot does not
    assert not np.array_equal(model(x), before)
    conv = frozen.layers[0]
    with pytest.raises(ValueError, match="read-only"):
        conv.weight.data[...] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        frozen.layers[1].running_var[...] = 1.0
    with pytest.raises(AttributeError, match="frozen.*Received: data = ndarray"):
        conv.weight.data = np.zeros_like(conv.weight.data)
    np.testing.assert_array_equal(frozen(x), before)
    state = frozen.state_dict()
    assert set(state) == set(model.state_dict())


def test_frozen_refuses_training(rng):
    model = conv_bn_relu(4, 8, 3, 1, True, rng)
    frozen = fastcnn.freeze(model)
    assert not frozen.training
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    frozen.train()
    with pytest.raises(ValueError, match="freeze.*inference only"):
        frozen(x)
    frozen.eval()
    frozen.predict(x)
    model.train()
    model(x)                                # the original still trains
    model.backward(np.ones((2, 8, 6, 6), np.float32))


def test_frozen_predict_evaluate_and_a_trained_model(rng):
    model = fastcnn.Sequential([fastcnn.Conv2d(1, 4, 3, padding=1), fastcnn.BatchNorm2d(4),
                                fastcnn.ReLU(), fastcnn.Flatten(), fastcnn.Linear(4 * 36, 3)])
    x = rng.standard_normal((20, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    model.fit(x, y, epochs=1, batch_size=5, optimizer=fastcnn.SGD(model.parameters(), lr=0.1),
              loss=fastcnn.CrossEntropyLoss(), verbose=0)
    frozen = fastcnn.freeze(model)
    assert frozen.optimizer is None and model.optimizer is not None
    np.testing.assert_allclose(frozen.predict(x, batch_size=7), model.predict(x), rtol=1e-5,
                               atol=1e-5)
    loss, acc = frozen.evaluate(x, y, loss=fastcnn.CrossEntropyLoss())
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0


def test_frozen_copies_and_pickles_stay_frozen(rng):
    model = conv_bn_relu(4, 8, 3, 1, True, rng)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    frozen = fastcnn.freeze(model)
    want = frozen(x)
    for twin in (copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        np.testing.assert_array_equal(twin(x), want)
        with pytest.raises(ValueError, match="read-only"):
            twin.layers[0].weight.data[...] = 0.0
        twin.train()
        with pytest.raises(ValueError, match="inference only"):
            twin(x)


def test_frozen_first_calls_from_many_threads_agree(rng):
    """Concurrent first calls race to keep the derived weights: each gets a
    complete copy (one compare-and-swap publishes one of them)."""
    model = conv_bn_relu(32, 64, 3, 1, True, rng)
    x = rng.standard_normal((1, 32, 12, 12)).astype(np.float32)
    want = fastcnn.freeze(model)(x)
    for path in ("kvec", "winograd", "winograd-4x4", "gemm"):
        with forced_path(path):
            frozen = fastcnn.freeze(model)
            outs, start = [None] * 6, threading.Barrier(6)

            def run(i):
                start.wait()
                outs[i] = frozen(x)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for out in outs:
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_frozen_graphs_of_every_shape_share_folded_and_derived_weights(rng):
    model = conv_bn_relu(8, 16, 3, 1, True, rng)
    frozen = fastcnn.freeze(model)
    for n in (1, 2):
        frozen(rng.standard_normal((n, 8, 6, 6)).astype(np.float32))
    progs = [prog for _, prog in frozen._runner().programs]
    convs = [[node for node in prog.graph.nodes if node.op == "conv2d"] for prog in progs]
    assert len(progs) == 2 and all(len(c) == 1 for c in convs)
    (a,), (b,) = convs
    assert a.attrs["prepared"] is b.attrs["prepared"]
    assert a.params["weight"] is b.params["weight"]         # folded once
    assert not a.params["weight"].data.flags.writeable


def test_frozen_summary_and_save_load_like_the_model(tmp_path, rng):
    model = conv_bn_relu(4, 8, 3, 1, True, rng)
    frozen = fastcnn.freeze(model)
    frozen.summary(input_shape=(4, 6, 6))
    frozen.save(tmp_path / "f.fcnn")
    back = fastcnn.load(tmp_path / "f.fcnn")       # an ordinary, trainable model
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(back.eval()(x), frozen(x), rtol=1e-5, atol=1e-5)
    back.layers[0].weight.data[...] = 0.0


def test_freeze_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="Received: dict"):
        fastcnn.freeze({})
