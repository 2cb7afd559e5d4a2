"""The graph core: tracing (fastcnn/graph.py), op definitions (ops.py), the
compiler's passes and memory plan (compiler.py), the executor (_executor.pxi)
and the runner (runner.py). The executor must give exactly what the plain
reference walk of the graph gives (each node's functional forward and
backward), with every pass on or off, in training and inference; buffers
must never leak into what the caller holds; memory stays within the plan."""
import copy
import itertools
import os
import pickle
import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import _native
from fastcnn.compiler import PASSES, compile_graph, reference_run
from fastcnn.runner import trace

L = fastcnn


def lenet(seed=0):
    return L.Sequential(
        L.Conv2d(1, 6, 5, padding=2), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(6, 16, 5), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
        L.Linear(400, 120), L.ReLU(), L.Linear(120, 84), L.ReLU(), L.Linear(84, 10), seed=seed)


def cifar_net(seed=0):
    return L.Sequential(
        L.Conv2d(3, 32, 3, padding=1), L.ReLU(), L.Conv2d(32, 32, 3, padding=1), L.ReLU(),
        L.MaxPool2d(2), L.Conv2d(32, 64, 3, padding=1), L.ReLU(),
        L.Conv2d(64, 64, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
        L.Linear(4096, 256), L.ReLU(), L.Linear(256, 10), seed=seed)


class Residual(L.Layer):
    """body(x) + x: a branch and a merge (x feeds two ops; its gradient is summed)."""

    def __init__(self, *layers):
        self.body = L.Sequential(*layers)

    def trace(self, x):
        with x.graph.scope("body"):
            h = self.body.trace(x)
        return h + x

    def named_parameters(self, prefix=""):
        return self.body.named_parameters(prefix + "body.")

    def structure(self):
        return (self, self.training, self.body.structure())

    def train(self, mode=True):
        self.training = bool(mode)
        self.body.train(mode)
        return self

    def reset_parameters(self, rng=None):
        self.body.reset_parameters(rng)


def resnet_block(seed=0):
    return L.Sequential(
        L.Conv2d(2, 4, 3, padding=1), L.ReLU(),
        Residual(L.Conv2d(4, 4, 3, padding=1), L.ReLU(), L.Conv2d(4, 4, 3, padding=1)),
        L.ReLU(), Residual(L.ReLU(), L.MaxPool2d(3, 1, 1)), L.MaxPool2d(2), L.Flatten(),
        L.Linear(4 * 3 * 4, 5), seed=seed)


ARCHS = {   # name -> (builder, input shape without the batch)
    "lenet": (lenet, (1, 28, 28)),
    # ReLU first (on the caller's input: never in place), sigmoid, average pooling,
    # a 3x3/s2 padded max pooling (general path), odd planes (floor-mode tiles)
    "mixed": (lambda seed=0: L.Sequential(
        L.ReLU(), L.Conv2d(2, 3, 3, padding=1), L.Sigmoid(), L.AvgPool2d(2),
        L.Conv2d(3, 4, 3, stride=2, padding=1), L.ReLU(), L.MaxPool2d(3, 2, 1),
        L.Flatten(), L.Linear(4 * 1 * 2, 5), L.Sigmoid(), seed=seed), (2, 9, 13)),
    # ReLU -> MaxPool 2x2 on odd planes; ends in Flatten (output is a view); nested
    "odd": (lambda seed=0: L.Sequential(
        L.Conv2d(1, 2, 2), L.Sequential(L.ReLU(), L.MaxPool2d(2)), L.ReLU(), L.Flatten(),
        seed=seed), (1, 8, 6)),
    # residual connections: a tensor read by two ops, an add, a ReLU on a branch point
    "residual": (resnet_block, (2, 7, 9)),
    # ReLU -> ReLU (the second may not overwrite what the first keeps), sigmoid last
    "chain": (lambda seed=0: L.Sequential(
        L.Linear(6, 8), L.ReLU(), L.ReLU(), L.Sigmoid(), L.Sigmoid(), seed=seed), (6,)),
}

PASS_SETS = [p for k in range(len(PASSES) + 1) for p in itertools.combinations(PASSES, k)]


def executor_run(prog, model, x, dy, need_grad_input=True):
    model.zero_grad()
    out, frame = prog.forward(x)
    grad = prog.backward(frame, dy, need_grad_input) if prog.training else None
    return out, grad, [p.grad.copy() for p in model.parameters()]


def walk(graph, model, x, dy, training, need_grad_input=True):
    model.zero_grad()
    out, grad = reference_run(graph, x, dy if training else None, training, need_grad_input)
    return out, grad, [p.grad.copy() for p in model.parameters()]


def assert_same(a, b):
    out, grad, pgrads = a
    ref_out, ref_grad, ref_pgrads = b
    np.testing.assert_array_equal(out, ref_out)
    if ref_grad is None:
        assert grad is None
    else:
        np.testing.assert_array_equal(grad, ref_grad)
    for p, q in zip(pgrads, ref_pgrads):
        np.testing.assert_array_equal(p, q)


def _random_chain(rng):
    """A Sequential of 1-6 layers drawn from those the passes rewrite
    (convolutions, batch norms, clamps, poolings, residual adds) and others,
    in any order, on a random channel count; its input shape without the
    batch."""
    c = c0 = int(rng.integers(1, 6))
    layers = []
    for _ in range(int(rng.integers(1, 7))):
        kind = int(rng.integers(0, 13))
        if kind == 1:
            layers.append(L.Conv2d(c, int(rng.integers(1, 9)), 1))
            c = layers[-1].out_channels
            continue
        layers.append([lambda: L.Conv2d(c, c, 3, padding=1), None, lambda: L.BatchNorm2d(c),
                       L.ReLU, L.ReLU6, lambda: L.Hardtanh(-0.5, 0.5), L.Tanh, L.Identity,
                       lambda: L.MaxPool2d(2, 1), lambda: L.MaxPool2d(3, 1, 1),
                       lambda: L.AvgPool2d(3, 1, 1),
                       lambda: L.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                       lambda: Residual(L.Conv2d(c, c, 3, padding=1), L.BatchNorm2d(c))][kind]())
    model = L.Sequential(*layers, seed=int(rng.integers(1 << 30)))
    random_batch_norms(model, rng)
    return model, (c0, 7, 6)


def random_batch_norms(model, rng):
    for layer in model.modules():
        if isinstance(layer, L.BatchNorm2d):
            layer.running_mean[...] = rng.normal(0.0, 0.5, layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)


@pytest.mark.parametrize("seed", range(4))
def test_random_layer_chains_equal_the_reference_walk(seed):
    """Any order of the layers the passes rewrite (a ReLU after a ReLU6 that
    became a convolution's epilogue, a batch norm after a folded one, batch
    norms no convolution precedes) compiles and runs as the reference walk
    does: eval, frozen (read-only weights and statistics) and a training step."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        model, shape = _random_chain(rng)
        x = rng.standard_normal((2,) + shape).astype(np.float32)
        what = [type(layer).__name__ for layer in model]
        want = reference_run(trace(model.eval(), x.shape), x, None, False)[0]
        np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4, err_msg=str(what))
        np.testing.assert_allclose(fastcnn.freeze(model)(x), want, rtol=1e-4, atol=1e-4,
                                   err_msg=str(what))
        dy = rng.standard_normal(want.shape).astype(np.float32)
        graph = trace(model.train(), x.shape)
        state = copy.deepcopy(model.state_dict())
        model.zero_grad()
        want, want_dx = reference_run(graph, x, dy, True)
        want_grads = [p.grad.copy() for p in model.parameters()]
        model.load_state_dict(state)         # the reference walk updated the statistics
        model.zero_grad()
        np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4, err_msg=str(what))
        np.testing.assert_allclose(model.backward(dy), want_dx, rtol=1e-3, atol=1e-3,
                                   err_msg=str(what))
        for p, g in zip(model.parameters(), want_grads):
            np.testing.assert_allclose(p.grad, g, rtol=1e-3, atol=1e-3, err_msg=str(what))


@pytest.mark.parametrize("passes", PASS_SETS, ids=lambda p: "+".join(p) or "none")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_executor_equals_the_reference_walk(arch, training, passes, num_threads, rng):
    build, shape = ARCHS[arch]
    model = build()
    for n in (1, 3):
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        graph = trace(model, x.shape)
        prog = compile_graph(graph, training, passes)
        dy = rng.standard_normal(graph.shapes[graph.output]).astype(np.float32)
        expected = walk(graph, model, x, dy, training)
        for _ in range(2):                      # frames are reused: same results
            assert_same(executor_run(prog, model, x, dy), expected)
        if training:
            assert_same(executor_run(prog, model, x, dy, need_grad_input=False),
                        walk(graph, model, x, dy, training, need_grad_input=False))


def test_the_model_runs_the_executor_from_the_first_call(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    dy = rng.standard_normal((2, 10)).astype(np.float32)
    graph = trace(model, x.shape)
    expected = walk(graph, model, x, dy, True)
    model.zero_grad()
    out = model(x)                              # first call of this shape
    assert len(model._runner().programs) == 1
    got = (out, model.backward(dy), [p.grad.copy() for p in model.parameters()])
    assert_same(got, expected)


def test_passes_rewrite_the_graph_as_documented():
    model = lenet()
    graph = trace(model, (2, 1, 28, 28))
    assert [n.op for n in graph.nodes] == ["conv2d", "relu", "max_pool2d", "conv2d", "relu",
                                           "max_pool2d", "flatten", "linear", "relu",
                                           "linear", "relu", "linear"]
    assert [n.name for n in graph.nodes] == [str(i) for i in range(12)]
    from fastcnn.compiler import fuse_relu_max_pool
    fused = fuse_relu_max_pool(graph)
    assert [n.op for n in fused.nodes] == ["conv2d", "max_pool2d", "conv2d", "max_pool2d",
                                           "flatten", "linear", "relu", "linear", "relu",
                                           "linear"]
    assert fused.nodes[1].attrs["relu"] and not graph.nodes[2].attrs.get("relu")
    with pytest.raises(ValueError, match="unknown passes"):
        compile_graph(graph, False, ("fold_everything",))


def test_inference_relu_before_a_max_pooling_goes_to_the_convolution(rng):
    """In inference a ReLU after a convolution becomes its epilogue (free)
    even where a max pooling reads it; training keeps it in the pooling."""
    model = lenet()
    graph = trace(model, (3, 1, 28, 28))
    infer = compile_graph(graph, False).graph.nodes
    assert [n.op for n in infer] == ["conv2d", "max_pool2d", "conv2d", "max_pool2d",
                                     "flatten", "linear", "relu", "linear", "relu", "linear"]
    assert infer[0].attrs["clamp"] == (0.0, float("inf")) and not infer[1].attrs.get("relu")
    train = compile_graph(graph, True).graph.nodes
    assert "clamp" not in train[0].attrs and train[1].attrs["relu"]
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(compile_graph(graph, False).forward(x)[0],
                               reference_run(graph, x, None, False)[0], rtol=1e-5, atol=1e-6)


def test_memory_plan_shares_bytes_and_stays_within_its_bound():
    """The arena of a training step holds what backward needs (each op's saved
    tensors) plus at most the two largest gradients in flight; inference needs
    at most the two largest activations (one read, one written)."""
    for build, shape in ((lenet, (64, 1, 28, 28)), (cifar_net, (64, 3, 32, 32))):
        model = build()
        graph = trace(model, shape)
        size = {t: int(np.prod(s)) * 4 for t, s in enumerate(graph.shapes)}
        largest = sorted(size.values())[-2:]
        saved = 0
        for node in graph.nodes:
            if node.op in ("conv2d", "linear"):
                saved += size[node.inputs[0]]
            elif node.op in ("relu", "sigmoid"):
                saved += size[node.outputs[0]]
            elif node.op == "max_pool2d":
                saved += size[node.outputs[0]]            # int32 indices
        train = compile_graph(graph, True)
        flat = compile_graph(graph, True, ("fuse_relu_max_pool",))      # no sharing
        assert train.arena_bytes <= saved + sum(largest) + 64 * len(graph.nodes), build
        assert train.arena_bytes < 0.7 * flat.arena_bytes, build
        infer = compile_graph(graph, False)
        assert infer.arena_bytes <= sum(largest) + 128, build


# Under AddressSanitizer (.ci/asan preloads libasan) the RSS is ASan's: freed
# blocks wait in its quarantine, so it grows with every allocation (the same
# 108 MB over these steps before and after a change; 13 MB in one CI run).
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="memory figures are meaningless under ASan")
def test_rss_is_flat_over_a_thousand_training_steps(rng):
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    try:
        rss()
    except OSError:
        pytest.skip("no /proc/self/statm on this system")
    model = lenet()
    opt = fastcnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = fastcnn.CrossEntropyLoss()
    xs = [rng.standard_normal((n, 1, 28, 28)).astype(np.float32) for n in (8, 3)]
    ys = [rng.integers(0, 10, len(x)) for x in xs]

    def steps(k):
        for i in range(k):
            x, y = xs[i % 2], ys[i % 2]
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), need_grad_input=False)
            opt.step()
            if i % 50 == 0:
                model.eval()
                model.predict(x)
                model.train()

    steps(100)
    start = rss()
    steps(1000)
    growth = rss() - start
    assert growth < 2 * 1024 * 1024, f"RSS grew by {growth / 1024:.0f} KiB over 1000 steps"


def test_need_grad_input_false_gives_the_same_parameter_gradients(rng):
    model = lenet()
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((4, 10)).astype(np.float32)

    def run(need):
        model.zero_grad()
        model(x)
        grad = model.backward(g, need_grad_input=need)
        return grad, [p.grad.copy() for p in model.parameters()]

    grad, with_input = run(True)
    none, without = run(False)
    assert grad.shape == x.shape and none is None
    for a, b in zip(with_input, without):
        np.testing.assert_array_equal(a, b)


def test_results_held_by_the_caller_are_never_overwritten(rng):
    model = lenet()
    xs = [rng.standard_normal((n, 1, 28, 28)).astype(np.float32) for n in (2, 2, 3, 2)]
    gs = [rng.standard_normal((len(x), 10)).astype(np.float32) for x in xs]
    kept = []
    for x, g in zip(xs * 2, gs * 2):
        out = model(x)
        kept.append((x, out, out.copy(), g, model.backward(g)))
    for i, (x, out, copy_, g, grad) in enumerate(kept):
        np.testing.assert_array_equal(out, copy_)
        for later in kept[i + 1:]:
            assert not np.shares_memory(out, later[1])
            assert not np.shares_memory(grad, later[4])
    for g0, (_, _, _, g, _) in zip(gs * 2, kept):       # the caller's gradient is read only
        np.testing.assert_array_equal(g0, g)
    x, g = xs[2], gs[2]
    graph = trace(model, x.shape)
    np.testing.assert_array_equal(kept[2][4], walk(graph, model, x, g, True)[1])


def test_eval_equals_training_forward(num_threads, rng):
    model = lenet()
    x = rng.standard_normal((7, 1, 28, 28)).astype(np.float32)
    train_out = model(x)
    model.eval()
    for _ in range(3):
        np.testing.assert_array_equal(model(x), train_out)
    np.testing.assert_array_equal(model.predict(x), train_out)
    # batches of up to 4 rows take the linear layers' dot-product path: rounding differs
    np.testing.assert_allclose(model.predict(x, batch_size=3), train_out, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="training mode"):
        model.backward(np.ones((7, 10), np.float32))
    model.train()
    for _ in range(2):
        np.testing.assert_array_equal(model(x), train_out)
    assert model.backward(np.ones((7, 10), np.float32)).shape == x.shape


def test_eval_relu_after_max_pooling_gives_the_same_values(rng):
    # in inference the fused pooling pools first and applies relu to its output
    model = L.Sequential(L.Conv2d(1, 2, 1, bias=False), L.ReLU(), L.MaxPool2d(2), seed=0)
    model[0].weight.data[...] = [[[[1.0]]], [[[-1.0]]]]
    x = rng.standard_normal((3, 1, 6, 4)).astype(np.float32)
    x[0, 0, :2, :2] = np.nan
    x[1, 0, 2:4, :2] = [[-0.0, -1.0], [0.0, -2.0]]
    x[2, 0, :2, 2:] = -5.0
    train_out = model(x)
    model.eval()
    for _ in range(3):
        np.testing.assert_array_equal(model(x), train_out)
    assert np.isnan(model(x)[0, :, 0, 0]).all()


def test_a_direct_layer_backward_after_a_model_pass_raises(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        model[0].backward(np.ones((2, 6, 28, 28), np.float32))
    model[0](x)                                 # the layer's own pass: its backward works
    assert model[0].backward(np.ones((2, 6, 28, 28), np.float32)).shape == x.shape


def test_changed_layers_or_parameters_are_noticed(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    conv = model[0]
    conv.weight.data = np.zeros((6, 1, 3, 3), np.float32)      # wrong shape: never read
    with pytest.raises(ValueError, match=r"weight must be a C-contiguous float32 array of "
                                         r"shape \(6, 1, 5, 5\)"):
        model(x)
    conv.weight.data = np.ones((6, 1, 5, 5), np.float32)       # rebound: the new values count
    ref = fastcnn.Sequential(*model.layers)
    np.testing.assert_array_equal(model(x), ref(x))
    head = L.Linear(84, 3)      # seeded: the check below must not hang on earlier tests' draws
    head.reset_parameters(np.random.default_rng(0))
    model.layers[-1] = head                                      # a new layer: compiled anew
    assert model(x).shape == (2, 3) and model(x).shape == (2, 3)
    model.add(L.ReLU())
    assert (model(x) >= 0).all() and (model(x) >= 0).all()
    model[1].eval()                                             # one layer's mode changed
    assert model(x).shape == (2, 3)
    del model.layers[-1]                                        # the list edited in place
    assert (model(x) < 0).any()
    conv.bias = None                                            # a parameter dropped
    np.testing.assert_array_equal(model(x), fastcnn.Sequential(*model.layers)(x))
    conv.stride = 2                                             # an argument changed
    with pytest.raises(ValueError, match="Linear expects input of shape"):
        model(x)


def test_copies_and_pickles_leave_the_compiled_graphs_behind(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    out = model(x)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not twin._runner().programs and model._runner().programs
        for _ in range(2):
            np.testing.assert_array_equal(twin(x), out)
        prog = twin._runner().programs[0][1]
        assert prog.graph.nodes[0].params["weight"] is twin[0].weight


def test_wrong_grad_y(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 10\). "
                                         r"Received: grad_y.shape=\(3, 10\)"):
        model.backward(np.ones((3, 10), np.float32))


def test_subclassed_layers_run_their_own_python_code(rng):
    class Double(L.ReLU):
        def forward(self, x):
            return 2 * super().forward(x)

        def backward(self, grad_y, *, need_grad_input=True):
            return 2 * super().backward(grad_y, need_grad_input=need_grad_input)

    model = L.Sequential(L.Flatten(), L.Linear(4, 3), Double(), seed=0)
    x = rng.standard_normal((2, 2, 2)).astype(np.float32)
    h = x.reshape(2, 4) @ model[1].weight.data.T + model[1].bias.data
    for _ in range(3):
        np.testing.assert_allclose(model(x), np.maximum(h, 0) * 2, rtol=1e-6)
    g = model.backward(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(g.reshape(2, 4), ((h > 0) * 2.0) @ model[1].weight.data,
                               rtol=1e-6)
    assert [n.op for n in model._runner().programs[0][1].graph.nodes] == \
        ["flatten", "linear", "layer"]


def test_residual_block_matches_torch(torch, num_threads, rng):
    nn = torch.nn

    class TorchResidual(nn.Module):
        def __init__(self, *layers):
            super().__init__()
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(x) + x

    tm = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        TorchResidual(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
        nn.ReLU(), TorchResidual(nn.ReLU(), nn.MaxPool2d(3, 1, 1)), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 3 * 4, 5))
    fm = resnet_block()
    names = [n for n, _ in fm.named_parameters()]
    assert names == [n for n, _ in tm.named_parameters()]
    for (_, p), (_, tp) in zip(fm.named_parameters(), tm.named_parameters()):
        p.data[...] = tp.detach().numpy()
    x = rng.standard_normal((3, 2, 7, 9)).astype(np.float32)
    g = rng.standard_normal((3, 5)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    ty.backward(torch.from_numpy(g))
    fm.zero_grad()
    np.testing.assert_allclose(fm(x), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (name, p), (_, tp) in zip(fm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


# ---------------------------------------------------------------- concurrency

def test_eight_threads_predicting_at_once_get_the_sequential_results(rng):
    model = lenet().eval()
    xs = [rng.standard_normal((n, 1, 28, 28)).astype(np.float32) for n in (1, 3, 5, 3) * 2]
    expected = [model(x) for x in xs]
    barrier = threading.Barrier(8)
    errors = []

    def work(k):
        try:
            barrier.wait()
            for i in range(40):
                j = (i + k) % len(xs)
                np.testing.assert_array_equal(model(xs[j]), expected[j])
        except Exception as e:      # reported below
            errors.append(e)

    old = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        fastcnn.set_num_threads(old)
    assert not errors, errors[0]


def test_a_second_thread_training_the_same_model_gets_a_clear_error(rng):
    model = lenet()
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    g = np.ones((32, 10), np.float32)
    barrier = threading.Barrier(2)
    errors, done = [], []

    def train():
        barrier.wait()
        try:
            for _ in range(20):
                model(x)
                model.backward(g, need_grad_input=False)
            done.append(1)
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors, "two threads trained one model at once without an error"
    assert all("another thread" in e for e in errors), errors
    model(x)                                    # the model is still usable afterwards
    assert model.backward(g).shape == x.shape


def test_inference_times_fewer_threads_once_per_count_and_agrees(rng):
    """An inference program picks, on its first call with n threads, the
    count of n, n/2, ..., 1 that ran it fastest, keeps it, and its results
    equal the one-thread ones (up to the rounding of another conv path)."""
    model = cifar_net().eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    old = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(1)
        one = model(x)
        prog = model._runner().programs[0][1]
        assert prog.threads_chosen == {}            # one thread asked: nothing to time
        fastcnn.set_num_threads(4)
        four = model(x)
        assert set(prog.threads_chosen) == {4} and prog.threads_chosen[4] in (1, 2, 4)
        chosen = dict(prog.threads_chosen)
        np.testing.assert_array_equal(model(x), four)     # the kept count: same rounding
        assert prog.threads_chosen == chosen
    finally:
        fastcnn.set_num_threads(old)
    np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)


@pytest.fixture
def two_threads():
    old = fastcnn.get_num_threads()
    fastcnn.set_num_threads(2)
    yield
    fastcnn.set_num_threads(old)


def test_fewer_threads_than_asked_are_probed(two_threads, rng):
    """A count below the one asked for (here planted before every call, as a
    disturbed first timing would leave it) is probed on the calls that are
    powers of two from the 4th to the 1024th: such a call runs on the
    threads asked for, and only if it beats the fastest call on the chosen
    count by 5% (here planted too: not the 4th's) are the counts timed again;
    the count asked for itself is never probed."""
    model = cifar_net().eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    model(x)
    prog = model._runner().programs[0][1]
    assert prog.threads_timed == 1
    timed_again = []
    for call in range(2, 65):
        prog.threads_chosen[2] = 1
        prog.threads_best[2] = 0.0 if call == 4 else 10.0     # a probe: slower / faster
        timed = prog.threads_timed
        model(x)
        if prog.threads_timed > timed:
            timed_again.append(call)
    assert timed_again == [8, 16, 32, 64]
    prog.threads_chosen[2], timed = 2, prog.threads_timed
    for _ in range(1000):
        model(x)
    assert prog.threads_timed == timed


def test_a_program_probe_probes_its_convolutions(two_threads, rng):
    """A program left on one thread of two whose convolutions kept one thread
    each (here both planted) would never run faster on two: its probe also
    has every such convolution run on the threads asked for, and each that
    beats its fastest call (planted) chooses its threads again. That probe
    took the convolutions' timing too: it gives no verdict on the program's
    threads; the next probe does."""
    model = cifar_net().eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    old = _native._set_tune(True), _native._set_tune_threads(1)     # choices forgotten
    try:
        model(x)                                # the convolutions keep one thread
        _native._set_tune_threads(old[1])
        prog = model._runner().programs[0][1]
        for _ in range(6):                      # calls 2 to 7: one thread, probes slower
            prog.threads_chosen[2], prog.threads_best[2] = 1, 0.0
            _native._set_tune_best(0.0)
            model(x)
        chosen, timed = _native._tune_threads_chosen(), prog.threads_timed
        _native._set_tune_best(1e9)             # every convolution's probe will be faster
        prog.threads_best[2] = 10.0             # and so would the program's
        model(x)                                # the 8th call: a probe
        assert _native._tune_threads_chosen() > chosen
        assert prog.threads_chosen[2] == 1 and prog.threads_timed == timed    # no verdict
        for _ in range(7):                      # calls 9 to 15
            prog.threads_chosen[2] = 1
            model(x)
        _native._set_tune_best(0.0)             # no convolution times its threads again
        chosen, prog.threads_best[2] = _native._tune_threads_chosen(), 10.0
        model(x)                                # the 16th call: a probe with a verdict
        assert _native._tune_threads_chosen() == chosen and prog.threads_timed == timed + 1
    finally:
        _native._set_tune_threads(old[1])
        _native._set_tune(old[0])


def test_training_programs_run_on_the_threads_asked_for(two_threads, rng):
    model = cifar_net().train()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    model(x)
    assert model._runner().programs[0][1].threads_chosen == {}


# ---- fuse_conv_activation: a ReLU / hardtanh as the convolution's epilogue -------

def _fusable(act, conv=None):
    conv = conv or L.Conv2d(8, 16, 3, padding=1)
    return L.Sequential(conv, L.BatchNorm2d(conv.out_channels), act, L.Flatten(), seed=0)


@pytest.fixture(params=["by-shape", "gemm", "kvec", "direct", "winograd", "dw-vectors"])
def conv_path(request):
    """Force each convolution path (the fused clamp is written by each); the
    depthwise row loops but in by-shape and dw-vectors (channel vectors)."""
    modes = {"by-shape": (0, 0, 0, 0), "gemm": (-1, -1, -1, -1), "kvec": (-1, 1, -1, -1),
             "direct": (1, -1, -1, -1), "winograd": (-1, -1, 1, -1),
             "dw-vectors": (0, 0, 0, 1)}
    direct, kvec, wino, dw_vectors = modes[request.param]
    old = (_native._set_direct(direct), _native._set_kvec(kvec), _native._set_winograd(wino),
           _native._set_depthwise_vectors(dw_vectors))
    yield request.param
    _native._set_direct(old[0])
    _native._set_kvec(old[1])
    _native._set_winograd(old[2])
    _native._set_depthwise_vectors(old[3])


@pytest.mark.parametrize("act", ["relu", "relu6", "hardtanh"])
@pytest.mark.parametrize("conv", ["3x3", "depthwise", "groups", "pointwise"])
@pytest.mark.parametrize("n", [1, 3])
def test_fused_activation_equals_the_unfused_walk(act, conv, n, conv_path, num_threads, rng):
    acts = {"relu": L.ReLU, "relu6": L.ReLU6, "hardtanh": lambda: L.Hardtanh(-0.5, 0.25)}
    convs = {"3x3": lambda: L.Conv2d(8, 16, 3, padding=1),
             "depthwise": lambda: L.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),
             "groups": lambda: L.Conv2d(8, 16, 3, padding=1, groups=2),
             "pointwise": lambda: L.Conv2d(8, 16, 1)}
    model = _fusable(acts[act](), convs[conv]()).eval()
    for bn in model[1:2]:
        bn.running_mean[...] = rng.standard_normal(bn.running_mean.shape)
    x = rng.standard_normal((n, model[0].in_channels, 11, 9)).astype(np.float32)
    x[0, 0, 4, 4] = np.nan                      # a NaN passes the clamp, as the activation
    graph = trace(model, x.shape)
    prog = compile_graph(graph, False)
    ops = [node.op for node in prog.graph.nodes]
    assert "relu" not in ops and "pointwise" not in ops, ops
    out = prog.forward(x)[0]
    unfused = compile_graph(graph, False, tuple(p for p in PASSES if p != "fuse_conv_activation"))
    assert "relu" in ops_of(unfused) or "pointwise" in ops_of(unfused)
    np.testing.assert_array_equal(out, unfused.forward(x)[0])
    assert np.isnan(out).any()


def ops_of(prog):
    return [node.op for node in prog.graph.nodes]


@pytest.mark.parametrize("second", ["relu", "relu6"])
def test_activation_after_a_fused_activation_runs_as_its_own_step(second, rng):
    """conv -> ReLU6 / ReLU -> another activation: the first becomes the
    convolution's epilogue, the second (its input now the convolution's
    output, which already has a clamp) stays a step."""
    acts = {"relu": L.ReLU, "relu6": L.ReLU6}
    model = L.Sequential(L.Conv2d(2, 3, 3, padding=1), acts[second](), L.ReLU(),
                         seed=0).eval()
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32) * 8
    graph = trace(model, x.shape)
    prog = compile_graph(graph, False)
    assert ops_of(prog) == ["conv2d", "relu"], ops_of(prog)
    np.testing.assert_array_equal(prog.forward(x)[0], reference_run(graph, x, None, False)[0])
    np.testing.assert_array_equal(model(x), prog.forward(x)[0])


def test_activation_not_fused_where_its_input_is_read_again_or_in_training(rng):
    class Skip(L.Layer):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2d(4, 4, 3, padding=1)

        def trace(self, x):
            y = self.conv.trace(x)
            return L.ReLU().trace(y) + y         # the conv's output is read twice

    model = L.Sequential(Skip(), seed=0).eval()
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    graph = trace(model, x.shape)
    assert "relu" in [node.op for node in compile_graph(graph, False).graph.nodes]
    np.testing.assert_array_equal(compile_graph(graph, False).forward(x)[0],
                                  reference_run(graph, x, None, False)[0])
    fused = _fusable(L.ReLU()).train()
    graph = trace(fused, (2, 8, 5, 5))
    assert "relu" in [node.op for node in compile_graph(graph, True).graph.nodes]
