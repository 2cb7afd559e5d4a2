"""Optimizer steps (csrc/optim.c) against torch.optim with its CPU defaults,
with fixed gradients: the kernels (functional.sgd_update / adam_update) on
one flat CIFAR-net-sized parameter (1.1 M floats) against torch.optim on one
tensor of that size, and the optimizer classes (fastcnn.SGD / fastcnn.Adam)
on CIFAR-net's 12 parameters against torch.optim on the same list. Each call
is one step; both sides update their parameters and state in place every
call, so the work per call is equal."""
import numpy as np
import pytest

import harness
import models
from harness import Case, Pair, assert_close, randn

PARAM_SHAPES = [(32, 3, 3, 3), (32,), (32, 32, 3, 3), (32,), (64, 32, 3, 3), (64,),
                (64, 64, 3, 3), (64,), (256, 4096), (256,), (10, 256), (10,)]


def step_case(opt_name):
    def build(threads):
        torch = harness.peer_module("torch")
        parameter = harness.fastcnn_attr("Parameter", "model API, issue 3")
        ours_cls, theirs_cls, kwargs = models.OPTIMIZERS[opt_name]
        ours_cls = harness.fastcnn_attr(ours_cls, "model API, issue 3")
        r = harness.rng(0)
        data = [randn(r, *s, scale=0.1) for s in PARAM_SHAPES]
        grads = [randn(r, *s, scale=0.01) for s in PARAM_SHAPES]

        def pair():
            params = [parameter(d) for d in data]
            for p, g in zip(params, grads):
                p.grad[...] = g
            tparams = [torch.from_numpy(d.copy()).requires_grad_() for d in data]
            for p, g in zip(tparams, grads):
                p.grad = torch.from_numpy(g.copy())
            return (params, ours_cls(params, **kwargs),
                    tparams, getattr(torch.optim, theirs_cls)(tparams, **kwargs))

        def check():
            params, opt, tparams, topt = pair()
            for _ in range(3):
                opt.step()
                topt.step()
            for i, (p, t) in enumerate(zip(params, tparams)):
                assert_close(p.data, t.detach().numpy(), f"param {i} after 3 steps", tol=1e-5)

        _, opt, _, topt = pair()
        return Pair(opt.step, topt.step, check)

    return Case("optimizer", f"{opt_name} step(), CIFAR-net's 12 params", "torch", build)


FLAT = sum(int(np.prod(s)) for s in PARAM_SHAPES)


def kernel_case(opt_name):
    def build(threads):
        torch = harness.peer_module("torch")
        sgd_update = harness.fastcnn_attr("functional.sgd_update", "optim family")
        adam_update = harness.fastcnn_attr("functional.adam_update", "optim family")
        _, theirs_cls, kwargs = models.OPTIMIZERS[opt_name]
        r = harness.rng(0)
        data, grad = randn(r, FLAT, scale=0.1), randn(r, FLAT, scale=0.01)

        def pair():
            param, state = data.copy(), [np.zeros_like(data), np.zeros_like(data)]
            steps = [0]
            if opt_name == "Adam":
                def ours():
                    steps[0] += 1
                    adam_update(param, grad, state[0], state[1], step=steps[0], **kwargs)
            else:
                def ours():
                    steps[0] += 1
                    sgd_update(param, grad, state[0], first_step=steps[0] == 1, **kwargs)
            tparam = torch.from_numpy(data.copy()).requires_grad_()
            tparam.grad = torch.from_numpy(grad)
            return param, ours, tparam, getattr(torch.optim, theirs_cls)([tparam], **kwargs).step

        def check():
            param, ours, tparam, peer = pair()
            for _ in range(3):
                ours()
                peer()
            assert_close(param, tparam.detach().numpy(), "param after 3 steps", tol=1e-5)

        _, ours, _, peer = pair()
        return Pair(ours, peer, check)

    name = "sgd_update" if opt_name != "Adam" else "adam_update"
    return Case("optimizer", f"{name} ({opt_name}), 1 tensor of {FLAT / 1e6:.1f}M", "torch",
                build)


CASES = ([kernel_case(o) for o in models.OPTIMIZERS]
         + [step_case(o) for o in models.OPTIMIZERS])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_optim(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
