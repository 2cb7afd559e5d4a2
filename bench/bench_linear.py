"""Fully connected layers (csrc/linear.c) against torch.nn.functional.linear,
at the shapes of the two models' layers, forward and forward + backward.

Peer backward: torch.autograd.grad with respect to input, weight and bias."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, randn

# name, N, F (in), O (out)
SHAPES = [
    ("lenet_fc1", 64, 400, 120),
    ("cifar_fc1", 64, 4096, 256),
    ("cifar_fc1_b256", 256, 4096, 256),
]


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs(N, F, O):
    r = harness.rng(0)
    return randn(r, N, F), randn(r, O, F, scale=F ** -0.5), randn(r, O, scale=0.1), randn(r, N, O)


def forward_case(name, N, F, O):
    def build(threads):
        linear = harness.fastcnn_attr("functional.linear", "linear family")
        torch = harness.peer_module("torch")
        x, w, b, _ = _inputs(N, F, O)
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

        def ours():
            return linear(x, w, b)

        def peer():
            return torch.nn.functional.linear(tx, tw, tb)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y"))

    return Case("linear", f"linear {name} fwd", "torch", build, flops=2.0 * N * F * O)


def backward_case(name, N, F, O):
    def build(threads):
        linear = harness.fastcnn_attr("functional.linear", "linear family")
        linear_backward = harness.fastcnn_attr("functional.linear_backward", "linear family")
        torch = harness.peer_module("torch")
        x, w, b, gy = _inputs(N, F, O)
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tgy = torch.from_numpy(gy)

        def ours():
            return (linear(x, w, b),) + tuple(linear_backward(gy, x, w))

        def peer():
            y = torch.nn.functional.linear(tx, tw, tb)
            return (y,) + torch.autograd.grad(y, (tx, tw, tb), tgy)

        def check():
            for what, a, t in zip(("y", "grad x", "grad w", "grad b"), ours(), peer()):
                assert_close(a, t.detach().numpy(), what)

        return Pair(ours, peer, check)

    return Case("linear", f"linear {name} fwd+bwd", "torch", build, flops=6.0 * N * F * O)


CASES = [make(*s) for make in (forward_case, backward_case) for s in SHAPES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_linear(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
