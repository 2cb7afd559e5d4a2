"""The element-wise activations of csrc/pointwise.c (fastcnn/_pointwise.pxi and
their layers): forward and gradient against torch, at random points and at
the kinks (0, -3, 3, the hardtanh bounds), and in a compiled model."""
import os

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.compiler import PASSES, compile_graph, reference_run
from fastcnn.runner import trace
from subproc import run_python, supported_isas

# name -> (fastcnn layer, torch layer factory, functional forward, functional backward)
CASES = {
    "tanh": (fastcnn.Tanh(), lambda nn: nn.Tanh(), F.tanh, F.tanh_backward),
    "leaky_relu": (fastcnn.LeakyReLU(0.2), lambda nn: nn.LeakyReLU(0.2),
                   lambda x: F.leaky_relu(x, 0.2), lambda g, x: F.leaky_relu_backward(g, x, 0.2)),
    "hardtanh": (fastcnn.Hardtanh(-2.0, 1.5), lambda nn: nn.Hardtanh(-2.0, 1.5),
                 lambda x: F.hardtanh(x, -2.0, 1.5),
                 lambda g, x: F.hardtanh_backward(g, x, -2.0, 1.5)),
    "relu6": (fastcnn.ReLU6(), lambda nn: nn.ReLU6(), F.relu6, F.relu6_backward),
    "hardsigmoid": (fastcnn.Hardsigmoid(), lambda nn: nn.Hardsigmoid(), F.hardsigmoid,
                    F.hardsigmoid_backward),
    "hardswish": (fastcnn.Hardswish(), lambda nn: nn.Hardswish(), F.hardswish,
                  F.hardswish_backward),
    "silu": (fastcnn.SiLU(), lambda nn: nn.SiLU(), F.silu, F.silu_backward),
    "gelu": (fastcnn.GELU(), lambda nn: nn.GELU(), F.gelu, F.gelu_backward),
    "gelu_tanh": (fastcnn.GELU("tanh"), lambda nn: nn.GELU(approximate="tanh"),
                  lambda x: F.gelu(x, "tanh"), lambda g, x: F.gelu_backward(g, x, "tanh")),
}
KINKS = [0.0, -0.0, -3.0, 3.0, -2.0, 1.5, 6.0, -1.0, 1.0, 20.0, -20.0, 1e-8]


def inputs(rng):
    x = (rng.standard_normal((3, 4, 5, 6)) * 4).astype(np.float32)
    x.flat[:len(KINKS)] = KINKS
    return x


@pytest.mark.parametrize("name", sorted(CASES))
def test_functional_and_layer_match_torch(name, torch, num_threads, rng):
    layer, make_torch, forward, backward = CASES[name]
    x = inputs(rng)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = make_torch(torch.nn)(tx)
    ty.backward(torch.from_numpy(g))
    for y in (forward(x), layer(x)):
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    for dx in (backward(g, x), layer.backward(g)):
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("passes", [PASSES, ()])
def test_in_a_model_the_executor_equals_the_reference_walk(training, passes, rng):
    model = fastcnn.Sequential(
        fastcnn.Conv2d(2, 3, 3, padding=1), fastcnn.Hardswish(), fastcnn.Identity(),
        fastcnn.GELU(), fastcnn.LeakyReLU(0.1), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(3 * 3 * 3, 4), fastcnn.Tanh(), fastcnn.ReLU6(), seed=0)
    x = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 4)).astype(np.float32)
    graph = trace(model, x.shape)
    assert "identity" not in [n.op for n in graph.nodes]
    model.zero_grad()
    ref_out, ref_dx = reference_run(graph, x, dy if training else None, training)
    ref_grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    prog = compile_graph(graph, training, passes)
    out, frame = prog.forward(x)
    np.testing.assert_array_equal(out, ref_out)
    if training:
        np.testing.assert_array_equal(prog.backward(frame, dy, True), ref_dx)
        for p, q in zip(model.parameters(), ref_grads):
            np.testing.assert_array_equal(p.grad, q)


def test_arguments_are_checked_and_saved(tmp_path, rng):
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        fastcnn.GELU("erf")
    with pytest.raises(ValueError, match="min_val must be below max_val"):
        fastcnn.Hardtanh(1.0, 1.0)
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        fastcnn.LeakyReLU("0.1")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    assert np.shares_memory(fastcnn.Identity()(x), x)
    model = fastcnn.Sequential(fastcnn.Linear(3, 3), fastcnn.LeakyReLU(0.3), fastcnn.GELU("tanh"),
                               fastcnn.Hardtanh(-0.5, 0.5), fastcnn.Identity(), seed=0)
    model.save(tmp_path / "m.fcnn")
    twin = fastcnn.load(tmp_path / "m.fcnn")
    assert repr(twin) == repr(model)
    np.testing.assert_array_equal(twin(x), model(x))


# Run in a child per instruction set (FASTCNN_ISA is read once per process):
# hardtanh's forward and backward at every length up to a few vectors and
# long ones (70001: several work items of the worker threads), with NaN,
# infinities, signed zeros and the bounds themselves,
# against numpy's float32 selects, bit for bit.
HARDTANH_EXACT = """
import numpy as np
import fastcnn.functional as F
rng = np.random.default_rng(0)
special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -2.0, 1.5, 6.0, 1e-30], np.float32)
for n in list(range(1, 70)) + [1000, 4099, 70001]:
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[rng.integers(0, n, min(n, 9))] = special[: min(n, 9)]
    g = rng.standard_normal(n).astype(np.float32)
    for lo, hi in ((0.0, 6.0), (-2.0, 1.5), (1.0, 1.0)):
        v = np.where(x < lo, np.float32(lo), x)
        want = np.where(v > hi, np.float32(hi), v)
        got = F.hardtanh(x, lo, hi)
        assert got.tobytes() == want.tobytes(), (n, lo, hi, x, got, want)
        want_dx = np.where((x <= lo) | (x >= hi), np.float32(0), g)
        got_dx = F.hardtanh_backward(g, x, lo, hi)
        assert got_dx.tobytes() == want_dx.tobytes(), (n, lo, hi, x, got_dx, want_dx)
print("ok")
"""


@pytest.mark.skipif(os.environ.get("FASTCNN_ISA") is not None,
                    reason="already inside a forced-ISA run")
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_hardtanh_is_exact_on_every_isa(isa, threads, tmp_path):
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not support {isa}")
    done = run_python(HARDTANH_EXACT, tmp_path, FASTCNN_ISA=isa, OMP_NUM_THREADS=threads)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
