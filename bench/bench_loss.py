"""Softmax cross-entropy (csrc/loss.c), loss and gradient of the logits in one
call, against torch: F.cross_entropy then torch.autograd.grad of the logits."""
import numpy as np
import pytest

import harness
from harness import Case, Pair, assert_close, randn

SHAPES = [(64, 10), (256, 10), (256, 1000)]     # N, L


def loss_case(N, L):
    def build(threads):
        with_grad = harness.fastcnn_attr("functional.cross_entropy_with_grad", "loss family")
        torch = harness.peer_module("torch")
        r = harness.rng(0)
        logits = randn(r, N, L, scale=3.0)
        labels = r.integers(0, L, N).astype(np.int64)
        tlogits = torch.from_numpy(logits).requires_grad_()
        tlabels = torch.from_numpy(labels)

        def ours():
            return with_grad(logits, labels)

        def peer():
            loss = torch.nn.functional.cross_entropy(tlogits, tlabels)
            return loss, torch.autograd.grad(loss, tlogits)[0]

        def check():
            (loss, grad), (tloss, tgrad) = ours(), peer()
            assert_close(loss, tloss.item(), "loss", tol=1e-5)
            assert_close(grad, tgrad.numpy(), "grad logits")

        return Pair(ours, peer, check)

    return Case("loss", f"cross-entropy {N}x{L} fwd+grad", "torch", build)


CASES = [loss_case(*s) for s in SHAPES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_loss(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
