"""Batch normalization in training (csrc/batchnorm2d.c) against torch on
32x64x56x56, memory-bound: the forward (batch statistics, normalized output,
running statistics updated in place) and the backward (grad input, grad
weight, grad bias). Issue 9 asks for at least 2x torch on both.

Peer forward: torch.nn.functional.batch_norm(training=True) on tensors without
autograd. Peer backward: the aten kernel autograd runs
(native_batch_norm_backward) on the mean and inverse std its forward saved;
fastcnn's backward likewise gets the mean and inverse std its forward returned
(batch_norm2d(..., return_stats=True)), as a training step's does."""
import functools

import numpy as np
import pytest

import harness
from harness import Case, Pair, assert_close, randn

SHAPE = (32, 64, 56, 56)
EPS, MOMENTUM = 1e-5, 0.1
TARGET = 2.0


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs():
    r = harness.rng(0)
    C = SHAPE[1]
    x = randn(r, *SHAPE, scale=2.0) + np.float32(0.5)
    weight = (1.0 + 0.1 * r.standard_normal(C)).astype(np.float32)
    bias = (0.1 * r.standard_normal(C)).astype(np.float32)
    return x, randn(r, *SHAPE), weight, bias


def _running():
    C = SHAPE[1]
    return np.zeros(C, np.float32), np.ones(C, np.float32)


def forward_case():
    def build(threads):
        batch_norm2d = harness.fastcnn_attr("functional.batch_norm2d", "batchnorm2d family")
        torch = harness.peer_module("torch")
        x, _, w, b = _inputs()
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

        def ours(rm, rv):
            return batch_norm2d(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)

        def peer(trm, trv):
            return torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=True,
                                                  momentum=MOMENTUM, eps=EPS)

        def check():   # one call each from the same running statistics
            rm, rv = _running()
            trm, trv = (torch.from_numpy(a) for a in _running())
            assert_close(ours(rm, rv), peer(trm, trv).numpy(), "y")
            assert_close(rm, trm.numpy(), "running_mean", tol=1e-5)
            assert_close(rv, trv.numpy(), "running_var", tol=1e-5)

        rm, rv = _running()
        trm, trv = (torch.from_numpy(a) for a in _running())
        return Pair(lambda: ours(rm, rv), lambda: peer(trm, trv), check)

    return Case("batchnorm", "batchnorm2d train 32x64x56x56 fwd", "torch", build,
                target=TARGET)


def backward_case():
    def build(threads):
        batch_norm2d_backward = harness.fastcnn_attr("functional.batch_norm2d_backward",
                                                     "batchnorm2d family")
        torch = harness.peer_module("torch")
        x, gy, w, b = _inputs()
        tx, tgy, tw, tb = (torch.from_numpy(a) for a in (x, gy, w, b))
        aten = torch.ops.aten
        _, save_mean, save_invstd = aten.native_batch_norm(tx, tw, tb, None, None, True,
                                                           MOMENTUM, EPS)
        batch_norm2d = harness.fastcnn_attr("functional.batch_norm2d", "batchnorm2d family")
        _, mean, invstd = batch_norm2d(x, weight=w, bias=b, training=True, eps=EPS,
                                       return_stats=True)

        def ours():
            return batch_norm2d_backward(gy, x, w, EPS, mean=mean, invstd=invstd)

        def peer():
            return aten.native_batch_norm_backward(tgy, tx, tw, None, None, save_mean,
                                                   save_invstd, True, EPS, [True, True, True])

        def check():
            for got, want, name in zip(ours(), peer(), ("grad x", "grad weight", "grad bias")):
                assert_close(got, want.numpy(), name)

        return Pair(ours, peer, check)

    return Case("batchnorm", "batchnorm2d train 32x64x56x56 bwd", "torch", build,
                target=TARGET)


CASES = [forward_case(), backward_case()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_batchnorm2d(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
