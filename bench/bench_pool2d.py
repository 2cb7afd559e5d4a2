"""Pooling (csrc/pool2d.c) against torch: max and average pooling, 2x2 stride 2
and 3x3 stride 2 padding 1, on 64x64x56x56, forward and backward.

Peer forward: torch.nn.functional.max_pool2d / avg_pool2d on a tensor without
autograd. Peer backward: the aten kernels autograd runs
(max_pool2d_with_indices_backward, avg_pool2d_backward) on the saved
indices / input, the same inputs fastcnn's backward gets."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, conv_out, randn

N, C, H = 64, 64, 56
WINDOWS = [("2x2", 2, 2, 0), ("3x3s2", 3, 2, 1)]     # name, kernel, stride, pad
TARGET = 5.0


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs(k, s, p):
    r = harness.rng(0)
    P = conv_out(H, k, s, p)
    return randn(r, N, C, H, H), randn(r, N, C, P, P)


def max_forward(label, k, s, p):
    def build(threads):
        max_pool2d = harness.fastcnn_attr("functional.max_pool2d", "pool2d family")
        torch = harness.peer_module("torch")
        x, _ = _inputs(k, s, p)
        tx = torch.from_numpy(x)

        def ours():
            return max_pool2d(x, k, s, p)

        def peer():
            return torch.nn.functional.max_pool2d(tx, k, s, p)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y", tol=0))

    return Case("pooling", f"maxpool {label} fwd", "torch", build, target=TARGET)


def max_backward(label, k, s, p):
    def build(threads):
        max_pool2d = harness.fastcnn_attr("functional.max_pool2d", "pool2d family")
        max_pool2d_backward = harness.fastcnn_attr("functional.max_pool2d_backward",
                                                   "pool2d family")
        torch = harness.peer_module("torch")
        x, gy = _inputs(k, s, p)
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        _, idx = max_pool2d(x, k, s, p, return_indices=True)
        _, tidx = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
        backward = torch.ops.aten.max_pool2d_with_indices_backward

        def ours():
            return max_pool2d_backward(gy, idx, x.shape)

        def peer():
            return backward(tgy, tx, [k, k], [s, s], [p, p], [1, 1], False, tidx)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "grad x"))

    return Case("pooling", f"maxpool {label} bwd", "torch", build, target=TARGET)


def avg_forward(label, k, s, p):
    def build(threads):
        avg_pool2d = harness.fastcnn_attr("functional.avg_pool2d", "pool2d family")
        torch = harness.peer_module("torch")
        x, _ = _inputs(k, s, p)
        tx = torch.from_numpy(x)

        def ours():
            return avg_pool2d(x, k, s, p)

        def peer():
            return torch.nn.functional.avg_pool2d(tx, k, s, p)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y"))

    return Case("pooling", f"avgpool {label} fwd", "torch", build, target=TARGET)


def avg_backward(label, k, s, p):
    def build(threads):
        avg_pool2d_backward = harness.fastcnn_attr("functional.avg_pool2d_backward",
                                                   "pool2d family")
        torch = harness.peer_module("torch")
        x, gy = _inputs(k, s, p)
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        backward = torch.ops.aten.avg_pool2d_backward

        def ours():
            return avg_pool2d_backward(gy, x.shape, k, s, p, count_include_pad=True)

        def peer():
            return backward(tgy, tx, [k, k], [s, s], [p, p], False, True, None)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "grad x"))

    return Case("pooling", f"avgpool {label} bwd", "torch", build, target=TARGET)


CASES = [make(*w) for make in (max_forward, max_backward, avg_forward, avg_backward)
         for w in WINDOWS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pool2d(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
