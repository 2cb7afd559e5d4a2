"""Batch norm folded into the convolution before it, in inference: the kernel
(csrc/batchnorm2d.c batchnorm2d_fold) against float64 numpy, and the
compiler's fold_batch_norm pass against the unfolded graph (within float
tolerance: the arithmetic changes), with parameters and statistics that
change between calls."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.compiler import PASSES, compile_graph, fold_batch_norm, reference_run
from fastcnn.runner import trace

NO_FOLD = tuple(p for p in PASSES if p != "fold_batch_norm")


def randomize_batch_norms(model, rng):
    """Statistics and affine parameters far from their initial 0 / 1."""
    for layer in all_layers(model):
        if isinstance(layer, fastcnn.BatchNorm2d):
            c = layer.running_mean.shape[0]
            layer.running_mean[...] = rng.standard_normal(c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.standard_normal(c)


def all_layers(layer):
    yield layer
    children = layer.children() if isinstance(layer, fastcnn.Module) else \
        [(str(i), c) for i, c in enumerate(getattr(layer, "layers", []))]
    for _, child in children:
        yield from all_layers(child)


@pytest.mark.parametrize("has_bias,affine", [(True, True), (False, True), (True, False)])
def test_fold_matches_float64(has_bias, affine, num_threads, rng):
    K, C = 7, 5
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if has_bias else None
    gamma = rng.uniform(0.5, 1.5, K).astype(np.float32) if affine else None
    beta = rng.standard_normal(K).astype(np.float32) if affine else None
    mean = rng.standard_normal(K).astype(np.float32)
    var = rng.uniform(0.1, 2.0, K).astype(np.float32)
    wf, bf = F.batch_norm2d_fold(w, b, gamma, beta, mean, var, eps=1e-3)
    s = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(wf, w * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(bf, ((0.0 if b is None else b) - mean) * s
                               + (0.0 if beta is None else beta), rtol=1e-5, atol=1e-6)
    # the folded convolution is the convolution followed by batch norm
    x = rng.standard_normal((2, C, 6, 5)).astype(np.float32)
    want = F.batch_norm2d(F.conv2d(x, w, b, padding=1), mean, var, gamma, beta, eps=1e-3)
    np.testing.assert_allclose(F.conv2d(x, wf, bf, padding=1), want, rtol=1e-4, atol=1e-4)


def test_fold_rejects_bad_shapes():
    w = np.ones((3, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="running_var"):
        F.batch_norm2d_fold(w, None, None, None, np.zeros(3), np.ones(4))


def test_resnet18_eval_with_and_without_folding_match(rng):
    model = fastcnn.models.resnet18(num_classes=10, seed=0).eval()
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    graph = trace(model, x.shape)
    unfolded = compile_graph(graph, False, NO_FOLD).forward(x)[0]
    # the pass as compiled by default folds where it pays (here the stem only) ...
    default = compile_graph(graph, False)
    assert [n.op for n in default.graph.nodes].count("conv2d_batch_norm2d") >= 1
    np.testing.assert_allclose(default.forward(x)[0], unfolded, rtol=1e-4, atol=1e-4)
    # ... and folding every conv2d + batch_norm2d pair keeps the output too
    everywhere = fold_batch_norm(graph, only_profitable=False)
    ops = [n.op for n in everywhere.nodes]
    assert ops.count("conv2d_batch_norm2d") == 20 and "batch_norm2d" not in ops
    prog = compile_graph(everywhere, False, NO_FOLD)
    out = prog.forward(x)[0]
    np.testing.assert_allclose(out, unfolded, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out, reference_run(everywhere, x, None, False)[0])
    np.testing.assert_array_equal(model(x), default.forward(x)[0])


def test_changed_weights_and_statistics_are_honoured(rng):
    model = fastcnn.Sequential(fastcnn.Conv2d(3, 4, 3, padding=1), fastcnn.BatchNorm2d(4),
                               fastcnn.ReLU(), fastcnn.Conv2d(4, 2, 1, bias=False),
                               fastcnn.BatchNorm2d(2), seed=0)
    model.eval()
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    graph = trace(model, x.shape)
    nodes = compile_graph(graph, False).graph.nodes
    assert [n.op for n in nodes] == ["conv2d_batch_norm2d", "conv2d_batch_norm2d"]
    assert nodes[0].attrs["clamp"] == (0.0, float("inf"))     # the ReLU, fused

    def unfolded():
        return reference_run(graph, x, None, False)[0]

    first = model(x)
    np.testing.assert_allclose(first, unfolded(), rtol=1e-4, atol=1e-5)
    # in place, between calls: statistics, batch norm and convolution parameters
    model[1].running_mean[...] += 0.5
    model[4].running_var[...] *= 3.0
    model[1].weight.data[...] *= -2.0
    model[0].weight.data[...] += 0.1
    model[3].weight.data[...] *= 0.5
    second = model(x)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, unfolded(), rtol=1e-4, atol=1e-5)
    # a state dict loaded, and training in between (running statistics updated)
    state = {k: v + 0.25 if k.endswith("running_mean") else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    np.testing.assert_allclose(model(x), unfolded(), rtol=1e-4, atol=1e-5)
    model.train()
    model(x)
    model.eval()
    np.testing.assert_allclose(model(x), unfolded(), rtol=1e-4, atol=1e-5)


def test_only_a_private_convolution_in_inference_is_folded(rng):
    class Shared(fastcnn.Module):
        """The convolution's output is also the residual: it must stay."""

        def __init__(self):
            super().__init__()
            self.conv = fastcnn.Conv2d(2, 2, 3, padding=1)
            self.bn = fastcnn.BatchNorm2d(2)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h

    model = Shared()
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    graph = trace(model, x.shape)
    assert [n.op for n in fold_batch_norm(graph, only_profitable=False).nodes] == \
        ["conv2d", "batch_norm2d", "add"]
    plain = fastcnn.Sequential(fastcnn.Conv2d(2, 2, 3, padding=1), fastcnn.BatchNorm2d(2))
    graph = trace(plain, x.shape)
    assert "conv2d_batch_norm2d" not in [n.op for n in compile_graph(graph, True).graph.nodes]
    untracked = fastcnn.Sequential(fastcnn.Conv2d(2, 2, 3, padding=1),
                                   fastcnn.BatchNorm2d(2, track_running_stats=False)).eval()
    graph = trace(untracked, x.shape)
    assert [n.op for n in fold_batch_norm(graph, only_profitable=False).nodes] == \
        ["conv2d", "batch_norm2d"]
