"""Softmax and log-softmax (csrc/softmax.c) against torch, forward and
backward: over the last axis of (256, 1000) (classifier rows) and over the
channels of 32x64x56x56 (an axis with a stride).

Peer forward: torch.softmax / torch.log_softmax on tensors without autograd.
Peer backward: the aten kernels autograd runs (_softmax_backward_data,
_log_softmax_backward_data) on the same output and gradient fastcnn's
backward gets."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, randn

SHAPES = [("256x1000 dim -1", (256, 1000), -1), ("32x64x56x56 dim 1", (32, 64, 56, 56), 1)]


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs(shape):
    r = harness.rng(0)
    return randn(r, *shape, scale=3.0), randn(r, *shape)


def forward(label, shape, dim, log):
    name = "log_softmax" if log else "softmax"

    def build(threads):
        ours_fn = harness.fastcnn_attr(f"functional.{name}", "softmax family")
        torch = harness.peer_module("torch")
        x, _ = _inputs(shape)
        tx = torch.from_numpy(x)
        peer_fn = torch.log_softmax if log else torch.softmax

        def ours():
            return ours_fn(x, dim)

        def peer():
            return peer_fn(tx, dim)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y", tol=1e-5))

    return Case("softmax", f"{name} {label} fwd", "torch", build)


def backward(label, shape, dim, log):
    name = "log_softmax" if log else "softmax"

    def build(threads):
        ours_fwd = harness.fastcnn_attr(f"functional.{name}", "softmax family")
        ours_bwd = harness.fastcnn_attr(f"functional.{name}_backward", "softmax family")
        torch = harness.peer_module("torch")
        x, gy = _inputs(shape)
        y = ours_fwd(x, dim)
        ty, tgy = torch.from_numpy(y), torch.from_numpy(gy)
        aten = torch.ops.aten
        peer_bwd = aten._log_softmax_backward_data if log else aten._softmax_backward_data

        def ours():
            return ours_bwd(gy, y, dim)

        def peer():
            return peer_bwd(tgy, ty, dim, torch.float32)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "grad x",
                                                     tol=1e-5))

    return Case("softmax", f"{name} {label} bwd", "torch", build)


CASES = [make(*s, log) for s in SHAPES for log in (False, True) for make in (forward, backward)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_softmax(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
