"""Activations (csrc/activation.c) against torch on a 64x64x56x56 feature map
(12.8 M floats, memory-bound), forward and backward.

Peer backward: the aten kernels autograd runs (threshold_backward for ReLU,
sigmoid_backward), from the forward output, as fastcnn's backward does."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, randn

SHAPE = (64, 64, 56, 56)


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs():
    r = harness.rng(0)
    return randn(r, *SHAPE), randn(r, *SHAPE)


def forward_case(name):
    def build(threads):
        ours_fn = harness.fastcnn_attr(f"functional.{name}", "activation family")
        torch = harness.peer_module("torch")
        x, _ = _inputs()
        tx = torch.from_numpy(x)
        peer_fn = getattr(torch, name)

        def ours():
            return ours_fn(x)

        def peer():
            return peer_fn(tx)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y"))

    return Case("activation", f"{name} 64x64x56x56 fwd", "torch", build)


def backward_case(name):
    def build(threads):
        forward = harness.fastcnn_attr(f"functional.{name}", "activation family")
        backward = harness.fastcnn_attr(f"functional.{name}_backward", "activation family")
        torch = harness.peer_module("torch")
        x, gy = _inputs()
        y = forward(x)
        ty, tgy = torch.from_numpy(y), torch.from_numpy(gy)
        if name == "relu":
            def peer():
                return torch.ops.aten.threshold_backward(tgy, ty, 0)
        else:
            def peer():
                return torch.ops.aten.sigmoid_backward(tgy, ty)

        def ours():
            return backward(gy, y)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "grad x"))

    return Case("activation", f"{name} 64x64x56x56 bwd", "torch", build)


CASES = [make(n) for n in ("relu", "sigmoid") for make in (forward_case, backward_case)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_activation(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
