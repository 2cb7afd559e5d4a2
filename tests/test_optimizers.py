"""Optimizers and learning-rate schedules (fastcnn/optim.py) against torch.optim,
step for step; parameter packing; state; argument errors."""
import math

import numpy as np
import pytest

import fastcnn
from fastcnn import optim
from fastcnn.layers import Parameter

SHAPES = [(6, 1, 5, 5), (6,), (120, 400), (10,)]


def make_params(rng):
    return [Parameter(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]


def run_both(torch, rng, ours_cls, torch_cls, steps=6, **kwargs):
    """The same parameters and gradient sequence through both optimizers."""
    params = make_params(rng)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    opt = ours_cls(params, **kwargs)
    topt = torch_cls(tparams, **kwargs)
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.zero_grad()
        for p, g, tp in zip(params, grads, tparams):
            p.grad += g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    return params, tparams


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
]


@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(kwargs, torch, num_threads, rng):
    params, tparams = run_both(torch, rng, fastcnn.SGD, torch.optim.SGD, **kwargs)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
]


@pytest.mark.parametrize("kwargs", ADAM_CONFIGS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_matches_torch(name, kwargs, torch, num_threads, rng):
    params, tparams = run_both(torch, rng, getattr(fastcnn, name), getattr(torch.optim, name),
                               **kwargs)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_params_are_packed_into_one_buffer_and_views_stay_valid(rng):
    params = make_params(rng)
    before = [p.data.copy() for p in params]
    opt = fastcnn.SGD(params, lr=0.1)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)
        assert p.data.flags.c_contiguous and p.data.dtype == np.float32
    bases = {id(p.data.base) for p in params}
    assert len(bases) == 1
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    for p, b in zip(params, before):
        np.testing.assert_allclose(p.data, b - 0.1, rtol=1e-6, atol=1e-6)
    opt.zero_grad()
    assert all(not p.grad.any() for p in params)


def test_rebinding_a_parameter_is_noticed(rng):
    params = make_params(rng)
    opt = fastcnn.SGD(params, lr=1.0)
    params[1].data = np.zeros(6, np.float32)          # replaced, not written in place
    params[1].grad = np.ones(6, np.float32)
    opt.step()
    np.testing.assert_array_equal(params[1].data, -np.ones(6, np.float32))


def test_adam_state_survives_a_repack(torch, rng):
    params = make_params(rng)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    opt, topt = fastcnn.Adam(params, lr=1e-2), torch.optim.Adam(tparams, lr=1e-2)
    for step in range(4):
        if step == 2:       # rebinding forces a re-pack; the moments must be kept
            params[0].data = params[0].data.copy()
            params[0].grad = np.zeros_like(params[0].data)
        opt.zero_grad()
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad += g
            tp.grad = torch.from_numpy(g)
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_zero_grad_clears_every_gradient_on_many_threads(rng):
    params = [Parameter(rng.standard_normal(s).astype(np.float32))
              for s in [(300, 400), (7,), (64, 64, 3, 3)]]     # spans of 16384 and a tail
    data = [p.data.copy() for p in params]
    opt = fastcnn.SGD(params, lr=0.1)
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(16)
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.zero_grad()
    finally:
        fastcnn.set_num_threads(old)
    for p, d in zip(params, data):
        assert not np.any(p.grad) and not np.any(np.signbit(p.grad))
        np.testing.assert_array_equal(p.data, d)


def test_shared_parameters_are_updated_once(rng):
    p = Parameter(np.ones(3, np.float32))
    opt = fastcnn.SGD([p, p], lr=1.0)
    assert len(opt.params) == 1
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(p.data, np.zeros(3, np.float32))


def test_optimizer_state_dict_resumes_exactly(rng):
    params = make_params(rng)
    opt = fastcnn.Adam(params, lr=1e-2)
    for p in params:
        p.grad[...] = 0.5
    opt.step()
    state = opt.state_dict()
    snapshot = [p.data.copy() for p in params]
    opt.step()
    after_two = [p.data.copy() for p in params]
    for p, s in zip(params, snapshot):
        p.data[...] = s
    fresh = fastcnn.Adam(params, lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.lr == 1e-2 and fresh.steps == 1
    fresh.step()
    for p, a in zip(params, after_two):
        np.testing.assert_array_equal(p.data, a)


@pytest.mark.parametrize("make, ours_kwargs", [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 6], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=1e-4)),
    ("CosineAnnealingLR", dict(T_max=5)),
])
def test_schedulers_match_torch(make, ours_kwargs, torch):
    p = Parameter(np.zeros(2, np.float32))
    opt = fastcnn.SGD([p], lr=0.1)
    sched = getattr(optim, make)(opt, **ours_kwargs)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, make)(topt, **ours_kwargs)
    assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    for _ in range(12):
        topt.step()
        opt.step()
        tsched.step()
        sched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        assert opt.lr == sched.get_last_lr()


def test_scheduler_state_dict_round_trip():
    p = Parameter(np.zeros(2, np.float32))
    opt = fastcnn.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(5):
        sched.step()
    state = sched.state_dict()
    opt2 = fastcnn.SGD([p], lr=1.0)
    sched2 = optim.StepLR(opt2, step_size=2, gamma=0.5)
    sched2.load_state_dict(state)
    assert opt2.lr == opt.lr == 0.25


def test_get_optimizer_by_name(rng):
    params = make_params(rng)
    assert isinstance(optim.get_optimizer("adam", params), fastcnn.Adam)
    sgd = optim.get_optimizer("SGD", params)
    assert isinstance(sgd, fastcnn.SGD) and sgd.lr == 0.01
    assert optim.get_optimizer("adamw", params, lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match=r"optimizer must be a fastcnn Optimizer or one of "
                                         r"\['adam', 'adamw', 'sgd'\]. Received: optimizer='rmsprop'"):
        optim.get_optimizer("rmsprop", params)


@pytest.mark.parametrize("make, exc, match", [
    (lambda ps: fastcnn.SGD(ps, lr=-1), ValueError, r"lr must be non-negative. Received: lr=-1"),
    (lambda ps: fastcnn.SGD(ps, lr=0.1, momentum=-0.5), ValueError,
     r"momentum must be non-negative. Received: momentum=-0.5"),
    (lambda ps: fastcnn.SGD(ps, lr=0.1, nesterov=True), ValueError,
     r"Nesterov momentum needs momentum > 0 and dampening = 0"),
    (lambda ps: fastcnn.SGD(ps, lr="fast"), TypeError, r"lr must be a real number. Received: lr='fast'"),
    (lambda ps: fastcnn.Adam(ps, betas=(0.9, 1.0)), ValueError,
     r"betas must be in \[0, 1\). Received: betas=\(0.9, 1.0\)"),
    (lambda ps: fastcnn.Adam(ps, betas=0.9), ValueError, r"betas must be a pair of floats"),
    (lambda ps: fastcnn.Adam(ps, eps=-1e-8), ValueError, r"eps must be non-negative"),
    (lambda ps: fastcnn.AdamW(ps, weight_decay=float("nan")), ValueError,
     r"weight_decay must be finite. Received: weight_decay=nan"),
    (lambda ps: fastcnn.SGD([], lr=0.1), ValueError, r"params must not be empty"),
    (lambda ps: fastcnn.SGD([np.zeros(3)], lr=0.1), TypeError,
     r"params must contain fastcnn Parameters. Received: an element of type ndarray"),
    (lambda ps: fastcnn.SGD(ps[0], lr=0.1), TypeError, r"Received: a single Parameter"),
    (lambda ps: optim.StepLR(fastcnn.SGD(ps, lr=0.1), step_size=0), ValueError,
     r"step_size must be positive. Received: step_size=0"),
    (lambda ps: optim.CosineAnnealingLR(fastcnn.SGD(ps, lr=0.1), T_max=0), ValueError,
     r"T_max must be positive. Received: T_max=0"),
    (lambda ps: optim.StepLR("sgd", step_size=2), TypeError,
     r"optimizer must be a fastcnn Optimizer. Received: str"),
])
def test_bad_arguments(make, exc, match, rng):
    with pytest.raises(exc, match=match):
        make(make_params(rng))


def test_cosine_schedule_reaches_eta_min_at_t_max():
    p = Parameter(np.zeros(1, np.float32))
    opt = fastcnn.Adam([p], lr=1e-3)
    sched = optim.CosineAnnealingLR(opt, T_max=4, eta_min=1e-5)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == sorted(lrs, reverse=True)
    assert math.isclose(lrs[-1], 1e-5)
