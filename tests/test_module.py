"""fastcnn.Module: models written as Python code, traced to one graph, with
PyTorch's nested parameter names; against torch with identical weights."""
import copy
import pickle

import numpy as np
import pytest

import fastcnn
from fastcnn.compiler import compile_graph, reference_run
from fastcnn.runner import trace


class Block(fastcnn.Module):
    """torchvision's BasicBlock without batch norm: relu(conv2(relu(conv1(x))) + x)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = fastcnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.relu = fastcnn.ReLU()
        self.conv2 = fastcnn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class Net(fastcnn.Module):
    def __init__(self):
        super().__init__()
        self.stem = fastcnn.Conv2d(1, 4, 3, padding=1)
        self.relu = fastcnn.ReLU()
        self.layer1 = fastcnn.Sequential(Block(4), Block(4))
        self.pool = fastcnn.MaxPool2d(2)
        self.flatten = fastcnn.Flatten()
        self.fc = fastcnn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.layer1(self.relu(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


def torch_net(torch):
    nn = torch.nn

    class TBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return self.relu(self.conv2(self.relu(self.conv1(x))) + x)

    class TNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.layer1 = nn.Sequential(TBlock(4), TBlock(4))
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = self.layer1(self.relu(self.stem(x)))
            return self.fc(self.flatten(self.pool(x)))

    return TNet()


def test_parameter_names_are_pytorch_attribute_paths():
    names = [n for n, _ in Net().named_parameters()]
    assert names[:3] == ["stem.weight", "stem.bias", "layer1.0.conv1.weight"]
    assert "layer1.1.conv2.bias" in names and names[-2:] == ["fc.weight", "fc.bias"]
    assert len(Net().parameters()) == len(names) == 2 + 2 * 3 + 2


def test_module_matches_torch_forward_backward_and_training(torch, num_threads, rng):
    tm, fm = torch_net(torch), Net()
    assert list(fm.state_dict()) == list(tm.state_dict())
    fm.load_state_dict(tm.state_dict())
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(fm(x), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    # three SGD steps, step for step
    fopt = fastcnn.SGD(fm.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    labels = rng.integers(0, 3, 4)
    loss_fn = fastcnn.CrossEntropyLoss()
    for _ in range(3):
        fopt.zero_grad()
        loss = loss_fn(fm(x), labels)
        fm.backward(loss_fn.backward(), need_grad_input=False)
        fopt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)),
                                                  torch.from_numpy(labels))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4, abs=1e-5)


def test_graph_nodes_are_named_by_attribute_paths():
    names = [(n.op, n.name) for n in trace(Net(), (1, 1, 8, 8)).nodes]
    assert names[:4] == [("conv2d", "stem"), ("relu", "relu"), ("conv2d", "layer1.0.conv1"),
                         ("relu", "layer1.0.relu")]
    assert ("add", "layer1.1") in names and ("conv2d", "layer1.1.conv2") in names
    assert names[-1] == ("linear", "fc")


def test_module_graph_runs_exactly_as_its_reference_walk(rng):
    model = Net()
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    graph = trace(model, x.shape)
    assert sum(n.op == "add" for n in graph.nodes) == 2
    for training in (True, False):
        model.zero_grad()
        ref_out, ref_dx = reference_run(graph, x, dy if training else None, training)
        ref_grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        prog = compile_graph(graph, training)
        out, frame = prog.forward(x)
        np.testing.assert_array_equal(out, ref_out)
        if training:
            np.testing.assert_array_equal(prog.backward(frame, dy, True), ref_dx)
            for a, b in zip(model.parameters(), ref_grads):
                np.testing.assert_array_equal(a.grad, b)


def test_module_fits_predicts_copies_and_pickles(rng):
    model = Net()
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=0,
                        optimizer=fastcnn.Adam(model.parameters(), lr=0.01))
    assert history.history["loss"][-1] < history.history["loss"][0]
    out = model.predict(x, batch_size=20)
    assert out.shape == (64, 3)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(twin.predict(x, batch_size=20), out)
    inside = fastcnn.Sequential(Block(1), fastcnn.Flatten(), fastcnn.Linear(64, 2), seed=0)
    assert inside(x).shape == (64, 2)
    assert [n for n, _ in inside.named_parameters()][:2] == ["0.conv1.weight", "0.conv2.weight"]


def test_data_dependent_control_flow_says_it_cannot_be_traced(rng):
    class Branchy(fastcnn.Module):
        def __init__(self):
            super().__init__()
            self.relu = fastcnn.ReLU()

        def forward(self, x):
            return self.relu(x) if x else x

    with pytest.raises(TypeError, match="control flow that depends on the data"):
        Branchy()(np.ones((1, 2), np.float32))

    class Returns(fastcnn.Module):
        def forward(self, x):
            return 3

    with pytest.raises(TypeError, match="must return the result of layers"):
        Returns()(np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match="cannot save a layer of type Returns"):
        Returns().save("never-written.fcnn")
