"""Fused SGD and Adam/AdamW steps (csrc/optim.c) against float64 numpy, torch.optim,
the reference kernels, and every bad input."""

import numpy as np
import pytest

import fastcnn.functional as F
from subproc import run_python

SHAPES = [(1,), (7,), (3, 5), (4, 3, 3, 3), (100003,)]
SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.02, momentum=0.5, maximize=True, weight_decay=1e-3),
]
ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, betas=(0.3, 0.9)),                     # lerp's large-weight formula
    dict(lr=1e-2, weight_decay=0.1, decoupled=True),
    dict(lr=1e-2, weight_decay=0.05, decoupled=True, betas=(0.5, 0.95), eps=1e-4),
    dict(lr=1e-2, amsgrad=True, maximize=True),
]


def sgd64(p, buf, g, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
          maximize=False):
    """One SGD step in float64 (torch.optim.SGD's formulas); returns (p, buf)."""
    d = (-g if maximize else g) + weight_decay * p
    if momentum:
        buf = d if t == 0 else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


def adam64(p, m, v, vmax, g, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           decoupled=False, amsgrad=False, maximize=False):
    """One Adam/AdamW step in float64; returns (p, m, v, vmax)."""
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(1 - b2 ** step) + eps
    return p - lr / (1 - b1 ** step) * m / denom, m, v, vmax


def run_sgd(w, grads, reference=False, **cfg):
    w = w.copy()
    buf = np.full_like(w, np.nan)  # garbage: the first step must overwrite it
    for t, g in enumerate(grads):
        F.sgd_update(w, g, buf, first_step=t == 0, reference=reference, **cfg)
    return w, buf


def run_adam(w, grads, reference=False, **cfg):
    w = w.copy()
    m, v, vmax = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads):
        F.adam_update(w, g, m, v, step=t + 1, max_exp_avg_sq=vmax, reference=reference, **cfg)
    return w, m, v, vmax


def problem(rng, shape, steps):
    w = rng.standard_normal(shape).astype(np.float32)
    return w, [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_matches_numpy(cfg, shape, reference, num_threads, rng):
    w, grads = problem(rng, shape, 5)
    got, buf = run_sgd(w, grads, reference, **cfg)
    p, b = w.astype(np.float64), None
    for t, g in enumerate(grads):
        p, b = sgd64(p, b, g.astype(np.float64), t, **cfg)
    np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-6)
    if cfg.get("momentum"):
        np.testing.assert_allclose(buf, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "ref"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cfg", ADAM_CONFIGS)
def test_adam_matches_numpy(cfg, shape, reference, num_threads, rng):
    w, grads = problem(rng, shape, 5)
    got = run_adam(w, grads, reference, **cfg)
    want = w.astype(np.float64), np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for t, g in enumerate(grads):
        want = adam64(*want, g.astype(np.float64), t + 1, **cfg)
    for name, a, b in zip(["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"], got, want):
        if name == "max_exp_avg_sq" and not cfg.get("amsgrad"):
            assert not a.any(), "max_exp_avg_sq is untouched without amsgrad"
            continue
        # Adam divides by sqrt(v) + eps: an element with a tiny v amplifies float32 rounding
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)


# Largest differences from torch 2.13 (CPU, its default single-tensor path) seen over
# 20 steps: SGD 0 (bitwise equal: same float32 operations, FMA where torch fuses);
# Adam/AdamW/AMSGrad 4.8e-7 on params ~1, because torch's float32 sqrt is not
# correctly rounded (1 ulp); exp_avg and exp_avg_sq were bitwise equal.
TORCH_STEPS = 20


@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_matches_torch(cfg, torch, rng):
    w, grads = problem(rng, (10007,), TORCH_STEPS)
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    opt = torch.optim.SGD([p], **cfg)
    mine, buf = w.copy(), np.empty_like(w)
    for t, g in enumerate(grads):
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        F.sgd_update(mine, g, buf, first_step=t == 0, **cfg)
        np.testing.assert_allclose(mine, p.detach().numpy(), rtol=1e-6, atol=1e-7)
    # the same float32 operations in the same order: (nearly) bit for bit torch's
    assert np.mean(mine == p.detach().numpy()) > 0.99
    if cfg.get("momentum"):
        np.testing.assert_allclose(buf, opt.state[p]["momentum_buffer"].numpy(),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cfg", ADAM_CONFIGS)
def test_adam_matches_torch(cfg, torch, rng):
    cfg = dict(cfg)
    decoupled = cfg.pop("decoupled", False)
    amsgrad = cfg.get("amsgrad", False)
    w, grads = problem(rng, (10007,), TORCH_STEPS)
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([p], **cfg)
    if decoupled and "weight_decay" not in cfg:
        cfg["weight_decay"] = 0.0
    mine, m, v, vmax = w.copy(), np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads):
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        F.adam_update(mine, g, m, v, step=t + 1, decoupled=decoupled, max_exp_avg_sq=vmax, **cfg)
        np.testing.assert_allclose(mine, p.detach().numpy(), rtol=2e-6, atol=1e-6)
    state = opt.state[p]
    np.testing.assert_allclose(m, state["exp_avg"].numpy(), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(v, state["exp_avg_sq"].numpy(), rtol=2e-6, atol=1e-9)
    if amsgrad:
        np.testing.assert_allclose(vmax, state["max_exp_avg_sq"].numpy(), rtol=2e-6, atol=1e-9)
    # nearly every element is bitwise torch's (the rest: torch's sqrt rounding)
    assert np.mean(mine == p.detach().numpy()) > 0.9


def test_adamw_default_weight_decay_differs_from_ours_only_by_argument(torch, rng):
    """torch.optim.AdamW defaults to weight_decay=0.01; adam_update to 0: pass it."""
    w, grads = problem(rng, (1001,), 3)
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    opt = torch.optim.AdamW([p], lr=1e-2)
    got = run_adam(w, grads, lr=1e-2, decoupled=True, weight_decay=0.01)[0]
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=2e-6, atol=1e-6)


BIG = (1_000_003,)  # above the parallel threshold, not a multiple of the vector width


@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_fast_equals_ref(cfg, num_threads, rng):
    w, grads = problem(rng, BIG, 3)
    fast, ref = run_sgd(w, grads, **cfg), run_sgd(w, grads, reference=True, **cfg)
    np.testing.assert_array_equal(fast[0], ref[0])
    if cfg.get("momentum"):
        np.testing.assert_array_equal(fast[1], ref[1])


@pytest.mark.parametrize("cfg", ADAM_CONFIGS)
def test_adam_fast_equals_ref(cfg, num_threads, rng):
    w, grads = problem(rng, BIG, 3)
    for a, b in zip(run_adam(w, grads, **cfg), run_adam(w, grads, reference=True, **cfg)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_isa_equals_ref(isa, tmp_path):
    """The portable and AVX2 builds of the loops give the reference's bits too."""
    code = (
        "import numpy as np, fastcnn.functional as F\n"
        "from fastcnn import _native\n"
        "rng = np.random.default_rng(0)\n"
        "w = rng.standard_normal(70001).astype(np.float32)\n"
        "gs = [rng.standard_normal(w.size).astype(np.float32) for _ in range(3)]\n"
        "out = {}\n"
        "for ref in (False, True):\n"
        "    a, b = w.copy(), np.empty_like(w)\n"
        "    c, m, v, vm = w.copy(), np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)\n"
        "    for t, g in enumerate(gs):\n"
        "        F.sgd_update(a, g, b, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,\n"
        "                     first_step=t == 0, reference=ref)\n"
        "        F.adam_update(c, g, m, v, step=t + 1, lr=0.01, weight_decay=0.1,\n"
        "                      amsgrad=True, max_exp_avg_sq=vm, reference=ref)\n"
        "    out[ref] = (a, b, c, m, v, vm)\n"
        "assert all(np.array_equal(x, y) for x, y in zip(out[False], out[True]))\n"
        "print('ok', _native.isa())\n")
    done = run_python(code, cwd=tmp_path, FASTCNN_ISA=isa)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", isa]


def test_update_does_not_touch_grad_and_converts_it(rng):
    w, (g,) = problem(rng, (3, 4, 5), 1)
    g64 = g.astype(np.float64)
    keep = g64.copy()
    a = w.copy()
    F.sgd_update(a, g64, np.empty_like(w), lr=0.1, momentum=0.9, weight_decay=0.1,
                 first_step=True)
    np.testing.assert_array_equal(g64, keep)
    b, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    F.adam_update(b, g, m, v, step=1, weight_decay=0.1)
    np.testing.assert_array_equal(g, keep.astype(np.float32))
    c = w.copy()
    F.sgd_update(c, g, np.empty_like(w), lr=0.1, momentum=0.9, weight_decay=0.1,
                 first_step=True)
    np.testing.assert_array_equal(a, c)  # a float64 grad is converted, same result
    ints = np.arange(6).reshape(2, 3)
    d = np.ones((2, 3), np.float32)
    F.sgd_update(d, ints, lr=0.5)
    np.testing.assert_array_equal(d, 1 - 0.5 * ints)


def test_grad_aliasing_param_is_read_before_written(rng):
    w = rng.standard_normal(1000).astype(np.float32)
    a, b = w.copy(), w.copy()
    F.sgd_update(a, a, lr=0.1, weight_decay=0.1)          # grad is param itself
    F.sgd_update(b, w.copy(), lr=0.1, weight_decay=0.1)
    np.testing.assert_array_equal(a, b)
    c, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    F.adam_update(c, c, m, v, step=1)
    d, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    F.adam_update(d, w.copy(), m, v, step=1)
    np.testing.assert_array_equal(c, d)


def test_first_step_sets_buffer_and_zero_momentum_ignores_it(rng):
    w, (g,) = problem(rng, (50,), 1)
    buf = np.full_like(w, np.nan)
    a = w.copy()
    F.sgd_update(a, g, buf, lr=0.1, momentum=0.9, dampening=0.5, first_step=True)
    np.testing.assert_array_equal(buf, g)             # no dampening on the first step
    np.testing.assert_allclose(a, w - 0.1 * g.astype(np.float64), rtol=1e-6, atol=1e-7)
    untouched = np.full_like(w, 7.0)
    F.sgd_update(a, g, untouched, lr=0.1)
    assert np.all(untouched == 7.0)


def test_zero_lr_keeps_param_but_updates_state(rng):
    w, (g,) = problem(rng, (64,), 1)
    a, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    F.adam_update(a, g, m, v, step=1, lr=0.0)
    np.testing.assert_array_equal(a, w)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-6)


def _sgd(**kw):
    args = dict(param=np.zeros(4, np.float32), grad=np.ones(4), momentum_buffer=None, lr=0.1)
    args.update(kw)
    F.sgd_update(args.pop("param"), args.pop("grad"), args.pop("momentum_buffer"), **args)


def _adam(**kw):
    z = np.zeros(4, np.float32)
    args = dict(param=z.copy(), grad=np.ones(4), exp_avg=z.copy(), exp_avg_sq=z.copy(), step=1)
    args.update(kw)
    F.adam_update(args.pop("param"), args.pop("grad"), args.pop("exp_avg"),
                  args.pop("exp_avg_sq"), **args)


def _readonly():
    a = np.zeros(4, np.float32)
    a.flags.writeable = False
    return a


SHARED = np.zeros(4, np.float32)
BAD = [
    (_sgd, dict(lr=-1), ValueError, r"lr must be non-negative. Received: lr=-1"),
    (_sgd, dict(lr="0.1"), TypeError, r"lr must be a real number. Received: lr='0.1'"),
    (_sgd, dict(lr=float("nan")), ValueError, r"lr must be finite. Received: lr=nan"),
    (_sgd, dict(momentum=-0.5, momentum_buffer=np.zeros(4, np.float32)), ValueError,
     r"momentum must be non-negative. Received: momentum=-0.5"),
    (_sgd, dict(weight_decay=-1e-4), ValueError,
     r"weight_decay must be non-negative. Received: weight_decay=-0.0001"),
    (_sgd, dict(dampening=float("inf")), ValueError, r"dampening must be finite"),
    (_sgd, dict(nesterov=True), ValueError,
     r"nesterov=True requires momentum > 0 and dampening == 0. Received: momentum=0.0"),
    (_sgd, dict(nesterov=True, momentum=0.9, dampening=0.1,
                momentum_buffer=np.zeros(4, np.float32)), ValueError, r"dampening=0.1"),
    (_sgd, dict(momentum=0.9), ValueError,
     r"momentum_buffer is required when momentum != 0. Received: momentum=0.9"),
    (_sgd, dict(param=np.zeros(4)), TypeError,
     r"param must be a writeable C-contiguous float32 numpy array .* dtype=float64"),
    (_sgd, dict(param=[0.0, 0.0]), TypeError, r"Received: param of type list"),
    (_sgd, dict(param=np.zeros((4, 2), np.float32).T), TypeError, r"C-contiguous=False"),
    (_sgd, dict(param=_readonly()), TypeError, r"writeable=False"),
    (_sgd, dict(param=np.zeros(0, np.float32), grad=np.zeros(0)), ValueError,
     r"param must not be empty. Received: param.shape=\(0,\)"),
    (_sgd, dict(grad=np.ones(5)), ValueError,
     r"grad must have shape \(4,\). Received: grad.shape=\(5,\)"),
    (_sgd, dict(grad=np.array(["a"] * 4)), TypeError, r"grad must be an array of real numbers"),
    (_sgd, dict(momentum=0.9, momentum_buffer=np.zeros(4)), TypeError,
     r"momentum_buffer must be a writeable C-contiguous float32"),
    (_sgd, dict(momentum=0.9, momentum_buffer=np.zeros(3, np.float32)), ValueError,
     r"momentum_buffer must have shape \(4,\). Received: momentum_buffer.shape=\(3,\)"),
    (_sgd, dict(param=SHARED, momentum=0.9, momentum_buffer=SHARED), ValueError,
     r"momentum_buffer must not share memory"),
    (_adam, dict(lr=-1), ValueError, r"lr must be non-negative. Received: lr=-1"),
    (_adam, dict(eps=-1e-8), ValueError, r"eps must be non-negative. Received: eps=-1e-08"),
    (_adam, dict(weight_decay=-1), ValueError, r"weight_decay must be non-negative"),
    (_adam, dict(betas=(1.0, 0.999)), ValueError,
     r"betas\[0\] must be in \[0, 1\). Received: betas=\(1.0, 0.999\)"),
    (_adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (_adam, dict(betas=0.9), ValueError, r"betas must be a pair \(beta1, beta2\). Received: betas=0.9"),
    (_adam, dict(betas=(0.9, "x")), TypeError, r"betas\[1\] must be a real number"),
    (_adam, dict(step=0), ValueError, r"step must be >= 1 \(it counts from 1\). Received: step=0"),
    (_adam, dict(step=1.0), TypeError, r"step must be an integer. Received: step=1.0"),
    (_adam, dict(step=2**63), ValueError, r"Received: step=9223372036854775808"),
    (_adam, dict(amsgrad=True), ValueError,
     r"max_exp_avg_sq is required when amsgrad=True. Received: max_exp_avg_sq=None"),
    (_adam, dict(exp_avg=np.zeros(4, np.float64)), TypeError,
     r"exp_avg must be a writeable C-contiguous float32 numpy array"),
    (_adam, dict(exp_avg_sq=np.zeros((2, 2), np.float32)), ValueError,
     r"exp_avg_sq must have shape \(4,\). Received: exp_avg_sq.shape=\(2, 2\)"),
    (_adam, dict(exp_avg=SHARED, exp_avg_sq=SHARED), ValueError,
     r"exp_avg_sq must not share memory"),
    (_adam, dict(amsgrad=True, max_exp_avg_sq=_readonly()), TypeError,
     r"max_exp_avg_sq must be a writeable .* writeable=False"),
    (_adam, dict(param=np.zeros(4, np.float16)), TypeError, r"dtype=float16"),
    (_adam, dict(grad=np.ones(3)), ValueError, r"grad must have shape \(4,\)"),
]


@pytest.mark.parametrize("call, kwargs, exc, match", BAD,
                         ids=[f"{c.__name__}-{'-'.join(k)}-{i}" for i, (c, k, _, _) in enumerate(BAD)])
def test_bad_input_raises(call, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        call(**kwargs)


def test_bad_input_leaves_everything_untouched():
    w, m, v = np.ones(4, np.float32), np.ones(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError):
        F.adam_update(w, np.ones(4), m, v, step=0)
    assert np.all(w == 1) and np.all(m == 1) and np.all(v == 1)
