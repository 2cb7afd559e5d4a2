"""Sequential's plans (fastcnn/_plan.pxi): after the first, checked pass of an
input shape, later passes run the kernels back to back with reused buffers.
They must give exactly what the layers give one by one, for every shape, in
both modes, without overwriting what the caller holds."""
import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from fastcnn._native import _max_pool2d_relu_backward

L = fastcnn


def lenet(seed=0):
    return L.Sequential(
        L.Conv2d(1, 6, 5, padding=2), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(6, 16, 5), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
        L.Linear(400, 120), L.ReLU(), L.Linear(120, 84), L.ReLU(), L.Linear(84, 10), seed=seed)


ARCHS = {   # name -> (builder, input shape without the batch)
    "lenet": (lenet, (1, 28, 28)),
    # ReLU first (on the caller's input: never in place), sigmoid, average pooling,
    # a 3x3/s2 padded max pooling (general path), odd planes (floor-mode tiles)
    "mixed": (lambda seed=0: L.Sequential(
        L.ReLU(), L.Conv2d(2, 3, 3, padding=1), L.Sigmoid(), L.AvgPool2d(2),
        L.Conv2d(3, 4, 3, stride=2, padding=1), L.ReLU(), L.MaxPool2d(3, 2, 1),
        L.Flatten(), L.Linear(4 * 1 * 2, 5), L.Sigmoid(), seed=seed), (2, 9, 13)),
    # ReLU -> MaxPool 2x2 on odd planes; ends in Flatten (output is a view)
    "odd": (lambda seed=0: L.Sequential(
        L.Conv2d(1, 2, 2), L.ReLU(), L.MaxPool2d(2), L.ReLU(), L.Flatten(), seed=seed),
        (1, 8, 6)),
}


def layer_by_layer(model, x, grad_y):
    """The layers' own checked forward and backward, one after the other."""
    out = x
    for layer in model.layers:
        out = layer(out)
    grad = grad_y
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
    return out, grad, [p.grad.copy() for p in model.parameters()]


def planned(model, x, grad_y, need_grad_input=True):
    model.zero_grad()
    out = model(x)
    grad = model.backward(grad_y, need_grad_input=need_grad_input)
    return out, grad, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_plan_gives_exactly_the_layers_results(arch, num_threads, rng):
    build, shape = ARCHS[arch]
    model = build()
    for n in (1, 3, 1, 5, 3):           # new shapes, repeated shapes, more than _MAX_PLANS
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        out0 = model(x)                  # may be the checked pass (builds the plan)
        g = rng.standard_normal(out0.shape).astype(np.float32)
        for _ in range(2):               # then certainly the plan
            out, grad, pgrads = planned(model, x, g)
            model.zero_grad()
            ref_out, ref_grad, ref_pgrads = layer_by_layer(model, x, g)
            np.testing.assert_array_equal(out, ref_out)
            np.testing.assert_array_equal(grad, ref_grad)
            for a, b in zip(pgrads, ref_pgrads):
                np.testing.assert_array_equal(a, b)
    assert 1 <= len(model._plans) <= model._MAX_PLANS


def test_need_grad_input_false_gives_the_same_parameter_gradients(rng):
    model = lenet()
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((4, 10)).astype(np.float32)
    planned(model, x, g)
    _, grad, with_input = planned(model, x, g)
    _, none, without = planned(model, x, g, need_grad_input=False)
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
    for i, (x, out, copy, g, grad) in enumerate(kept):
        np.testing.assert_array_equal(out, copy)
        for later in kept[i + 1:]:
            assert not np.shares_memory(out, later[1])
            assert not np.shares_memory(grad, later[4])
    # the caller's gradient is not modified either (the last layer reads it only)
    for g0, (_, _, _, g, _) in zip(gs * 2, kept):
        np.testing.assert_array_equal(g0, g)
    # the returned input gradients are fresh arrays with the right values
    x, g = xs[2], gs[2]
    model.zero_grad()
    _, ref_grad, _ = layer_by_layer(model, x, g)
    np.testing.assert_array_equal(kept[2][4], ref_grad)


def test_eval_plan_equals_training_forward(num_threads, rng):
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
    # in inference the plan pools first and applies relu to the pooled output
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


def test_memory_stays_flat_over_many_shapes_and_steps(rng):
    import tracemalloc
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

    steps(6)
    tracemalloc.start()
    try:
        steps(4)
        start, _ = tracemalloc.get_traced_memory()
        steps(100)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 16 * 1024, f"traced memory grew by {end - start} bytes"


def test_a_direct_layer_backward_after_a_planned_pass_raises(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    model[0].backward(np.ones((2, 6, 28, 28), np.float32))     # checked pass: caches valid
    model(x)                                                    # planned pass
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        model[0].backward(np.ones((2, 6, 28, 28), np.float32))


def test_changed_layers_or_parameters_are_noticed(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    model(x)
    conv = model[0]
    conv.weight.data = np.zeros((6, 1, 3, 3), np.float32)      # wrong shape: never read
    with pytest.raises(ValueError, match=r"weight must be a C-contiguous float32 array of "
                                         r"shape \(6, 1, 5, 5\)"):
        model(x)
    conv.weight.data = np.ones((6, 1, 5, 5), np.float32)       # rebound: the new values count
    ref = fastcnn.Sequential(*model.layers)
    np.testing.assert_array_equal(model(x), ref(x))
    model.layers[-1] = L.Linear(84, 3)                           # a new layer: a new plan
    assert model(x).shape == (2, 3) and model(x).shape == (2, 3)
    model.add(L.ReLU())
    assert (model(x) >= 0).all() and (model(x) >= 0).all()


def test_copies_and_pickles_leave_the_plans_behind(rng):
    import copy
    import pickle
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    out = model(x)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not twin._plans and model._plans
        for _ in range(2):
            np.testing.assert_array_equal(twin(x), out)
        assert twin._plans and twin._plans[0].layers[0] is twin[0]


def test_wrong_grad_y_after_a_planned_pass(rng):
    model = lenet()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    model(x)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(2, 10\). "
                                         r"Received: grad_y.shape=\(3, 10\)"):
        model.backward(np.ones((3, 10), np.float32))


def test_subclassed_layers_are_not_planned(rng):
    class Double(L.ReLU):
        def forward(self, x):
            return 2 * super().forward(x)

    model = L.Sequential(L.Flatten(), L.Linear(4, 3), Double(), seed=0)
    x = rng.standard_normal((2, 2, 2)).astype(np.float32)
    ref = np.maximum(x.reshape(2, 4) @ model[1].weight.data.T + model[1].bias.data, 0) * 2
    for _ in range(3):
        np.testing.assert_allclose(model(x), ref, rtol=1e-6)
    assert not model._plans


def test_two_threads_calling_one_model(rng):
    model = lenet().eval()
    xs = [rng.standard_normal((3, 1, 28, 28)).astype(np.float32) for _ in range(4)]
    expected = [model(x) for x in xs]
    errors = []

    def work(k):
        try:
            for i in range(60):
                j = (i + k) % len(xs)
                np.testing.assert_array_equal(model(xs[j]), expected[j])
        except Exception as e:      # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_plan_training_matches_torch(torch, num_threads, rng):
    nn = torch.nn
    tm = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    fm = lenet()
    fm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    fopt = fastcnn.SGD(fm.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    loss_fn = fastcnn.CrossEntropyLoss()
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    for step in range(4):
        fopt.zero_grad()
        loss = loss_fn(fm(x), y)
        fm.backward(loss_fn.backward(), need_grad_input=False)
        fopt.step()
        topt.zero_grad()
        tloss = nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4, abs=1e-5), f"step {step}"
    for key, value in tm.state_dict().items():
        np.testing.assert_allclose(fm.state_dict()[key], value.numpy(), rtol=1e-3, atol=1e-4)


# ------------------------------------------------- fused ReLU + max-pool backward

@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("shape,k,s,p", [((2, 3, 8, 6), 2, 2, 0), ((1, 1, 7, 5), 2, 2, 0),
                                         ((3, 2, 9, 9), 3, 2, 1), ((1, 2, 4, 4), 2, 1, 0)])
def test_max_pool2d_relu_backward_is_relu_backward_of_max_pool2d_backward(
        shape, k, s, p, reference, num_threads, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x[x < -1] = 0.0                 # ties at zero after relu
    y = F.relu(x)
    out, idx = F.max_pool2d(y, k, s, p, return_indices=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    expected = F.relu_backward(F.max_pool2d_backward(g, idx, y.shape), y)
    np.testing.assert_array_equal(_max_pool2d_relu_backward(g, idx, y, reference=reference),
                                  expected)


def test_max_pool2d_relu_backward_indices_outside_their_tile(rng, num_threads):
    y = np.abs(rng.standard_normal((1, 1, 4, 4))).astype(np.float32) + 0.5
    idx = np.array([[[[5, 0], [15, 10]]]], np.int32)     # (0,0)->5 is in tile; (0,1)->0 is not
    g = np.ones((1, 1, 2, 2), np.float32)
    expected = F.relu_backward(F.max_pool2d_backward(g, idx, y.shape), y)
    np.testing.assert_array_equal(_max_pool2d_relu_backward(g, idx, y), expected)
    with pytest.raises(ValueError, match=r"indices must be in \[0, H \* W\) = \[0, 16\)"):
        _max_pool2d_relu_backward(g, np.full((1, 1, 2, 2), 16, np.int32), y)
