"""Optimizer steps (csrc/optim.c, through fastcnn.SGD / fastcnn.Adam) against
torch.optim with its CPU defaults, on the parameters of CIFAR-net (1.1 M
floats) with fixed gradients. Each call is one step(); both sides update
their parameters in place every call, so the work per call is equal."""
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

    return Case("optimizer", f"{opt_name} step, CIFAR-net params", "torch", build)


CASES = [step_case(o) for o in models.OPTIMIZERS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_optim(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
