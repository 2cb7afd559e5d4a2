"""Convolution (csrc/conv2d.c) against torch.nn.functional.conv2d: the shapes of
BENCHMARKS.md, forward and forward + backward (grad input, weight, bias); and
the depthwise 3x3 rows of issue 9 (MobileNetV2's 144 channels at 56x56,
stride 1 and 2: at least 1.5x torch).

Peer backward: torch.autograd.grad of the forward output with respect to
input, weight and bias, i.e. what a torch training step runs for the layer."""
import functools

import pytest

import harness
from harness import Case, Pair, assert_close, conv_out, randn

# name, N, C, H=W, K, R, stride, pad
SHAPES = [
    ("lenet_c1", 64, 1, 28, 6, 5, 1, 2),
    ("lenet_c2", 64, 6, 14, 16, 5, 1, 0),
    ("mnist_c1", 64, 1, 28, 32, 3, 1, 1),
    ("mnist_c2", 64, 32, 14, 64, 3, 1, 1),
    ("cifar_c1", 64, 3, 32, 64, 3, 1, 1),
    ("vgg_56", 32, 64, 56, 64, 3, 1, 1),
    ("res_28", 32, 128, 28, 128, 3, 1, 1),
    ("res_s2", 32, 128, 28, 256, 3, 2, 1),
    ("pw_14", 32, 256, 14, 256, 1, 1, 0),
    ("b1_56", 1, 64, 56, 64, 3, 1, 1),
]
LARGE = {"vgg_56", "res_28", "res_s2", "pw_14"}
# the same, groups == C
DEPTHWISE = [
    ("dw_56", 32, 144, 56, 144, 3, 1, 1),
    ("dw_56_s2", 32, 144, 56, 144, 3, 2, 1),
]
DEPTHWISE_TARGET = 1.5


def fwd_flops(N, C, H, K, R, stride, pad, groups=1):
    P = conv_out(H, R, stride, pad)
    return 2.0 * N * K * P * P * C // groups * R * R


@functools.lru_cache(maxsize=1)   # read-only inputs, reused by the next thread count
def _inputs(N, C, H, K, R, stride, pad, groups=1):
    r = harness.rng(0)
    P = conv_out(H, R, stride, pad)
    x = randn(r, N, C, H, H)
    w = randn(r, K, C // groups, R, R, scale=(C // groups * R * R) ** -0.5)
    b = randn(r, K, scale=0.1)
    gy = randn(r, N, K, P, P)
    return x, w, b, gy


def forward_case(name, *shape, groups=1, group="conv fwd", target=1.0):
    stride, pad = shape[-2], shape[-1]

    def build(threads):
        conv2d = harness.fastcnn_attr("functional.conv2d", "conv2d family")
        torch = harness.peer_module("torch")
        x, w, b, _ = _inputs(*shape, groups)
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

        def ours():
            return conv2d(x, w, b, stride, pad, 1, groups)

        def peer():
            return torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, groups)

        return Pair(ours, peer, lambda: assert_close(ours(), peer().numpy(), "y"))

    return Case(group, f"conv {name} fwd", "torch", build, flops=fwd_flops(*shape, groups),
                target=target, large=name in LARGE)


def backward_case(name, *shape, groups=1, group="conv fwd+bwd", target=1.0):
    stride, pad = shape[-2], shape[-1]

    def build(threads):
        conv2d = harness.fastcnn_attr("functional.conv2d", "conv2d family")
        conv2d_backward = harness.fastcnn_attr("functional.conv2d_backward", "conv2d family")
        torch = harness.peer_module("torch")
        x, w, b, gy = _inputs(*shape, groups)
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tgy = torch.from_numpy(gy)

        def ours():
            y = conv2d(x, w, b, stride, pad, 1, groups)
            return (y,) + tuple(conv2d_backward(gy, x, w, stride, pad, 1, groups))

        def peer():
            y = torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, groups)
            return (y,) + torch.autograd.grad(y, (tx, tw, tb), tgy)

        def check():
            for what, a, t in zip(("y", "grad x", "grad w", "grad b"), ours(), peer()):
                assert_close(a, t.detach().numpy(), what)

        return Pair(ours, peer, check)

    return Case(group, f"conv {name} fwd+bwd", "torch", build,
                flops=3 * fwd_flops(*shape, groups), target=target, large=name in LARGE)


def depthwise_cases(name, *shape):
    kw = dict(groups=shape[1], group="depthwise", target=DEPTHWISE_TARGET)
    return [forward_case(name, *shape, **kw), backward_case(name, *shape, **kw)]


CASES = ([forward_case(*s) for s in SHAPES] + [backward_case(*s) for s in SHAPES]
         + [case for s in DEPTHWISE for case in depthwise_cases(*s)])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_conv2d(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
