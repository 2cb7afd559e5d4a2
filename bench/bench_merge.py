"""Merges of branches (csrc/merge.c) against torch, memory-bound: a residual
sum of two 32x64x56x56 maps, squeeze-and-excitation's (32,64,1,1) channel
weights times the map (forward, and backward: both gradients, the weights'
one reduced over H, W), and a channel concatenation of two such maps (forward
and backward).

Peer backward: the aten ops autograd runs for a broadcast product (the
products, the weights' gradient summed over the broadcast dims); for cat, the
slices of the gradient made contiguous."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, randn

MAP = (32, 64, 56, 56)
WEIGHTS = (32, 64, 1, 1)


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs():
    r = harness.rng(0)
    return randn(r, *MAP), randn(r, *MAP), randn(r, *WEIGHTS)


def _torch(*arrays):
    torch = harness.peer_module("torch")
    return torch, [torch.from_numpy(a) for a in arrays]


def add_case():
    def build(threads):
        add = harness.fastcnn_attr("functional.add", "merge family")
        a, b, _ = _inputs()
        torch, (ta, tb) = _torch(a, b)
        return Pair(lambda: add(a, b), lambda: ta + tb,
                    lambda: assert_close(add(a, b), (ta + tb).numpy(), "y"))

    return Case("merge", "add 32x64x56x56 fwd", "torch", build)


def se_forward_case():
    def build(threads):
        mul = harness.fastcnn_attr("functional.mul", "merge family")
        x, _, s = _inputs()
        torch, (tx, ts) = _torch(x, s)
        return Pair(lambda: mul(s, x), lambda: ts * tx,
                    lambda: assert_close(mul(s, x), (ts * tx).numpy(), "y"))

    return Case("merge", "mul (32,64,1,1)x(32,64,56,56) fwd", "torch", build)


def se_backward_case():
    def build(threads):
        mul_backward = harness.fastcnn_attr("functional.mul_backward", "merge family")
        x, g, s = _inputs()
        torch, (tx, tg, ts) = _torch(x, g, s)

        def peer():
            return (tg * tx).sum((2, 3), keepdim=True), tg * ts

        def check():
            (gs, gx), (ps, px) = mul_backward(g, s, x), peer()
            assert_close(gs, ps.numpy(), "grad weights")
            assert_close(gx, px.numpy(), "grad x")

        return Pair(lambda: mul_backward(g, s, x), peer, check)

    return Case("merge", "mul (32,64,1,1)x(32,64,56,56) bwd", "torch", build)


def cat_forward_case():
    def build(threads):
        cat = harness.fastcnn_attr("functional.cat", "merge family")
        a, b, _ = _inputs()
        torch, (ta, tb) = _torch(a, b)
        return Pair(lambda: cat([a, b]), lambda: torch.cat([ta, tb], 1),
                    lambda: assert_close(cat([a, b]), torch.cat([ta, tb], 1).numpy(), "y"))

    return Case("merge", "cat 2x(32,64,56,56) fwd", "torch", build)


def cat_backward_case():
    def build(threads):
        cat_backward = harness.fastcnn_attr("functional.cat_backward", "merge family")
        a, b, _ = _inputs()
        torch, (ta, tb) = _torch(a, b)
        g = harness.peer_module("torch").cat([ta, tb], 1).numpy()
        tg = torch.from_numpy(g)

        def peer():
            return [piece.contiguous() for piece in torch.split(tg, [64, 64], 1)]

        def check():
            for ours, theirs in zip(cat_backward(g, [64, 64]), peer()):
                assert_close(ours, theirs.numpy(), "grad")

        return Pair(lambda: cat_backward(g, [64, 64]), peer, check)

    return Case("merge", "cat 2x(32,64,56,56) bwd", "torch", build)


CASES = [add_case(), se_forward_case(), se_backward_case(), cat_forward_case(),
         cat_backward_case()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_merge(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
