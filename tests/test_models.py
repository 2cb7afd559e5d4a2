"""fastcnn.models: torchvision's ResNet layouts and names, against a torch
ResNet written out here (torchvision itself need not be installed)."""
import numpy as np
import pytest

import fastcnn
from fastcnn import models


def torch_basic_block(torch):
    """torchvision's BasicBlock in plain torch.nn: (cin, cout, stride)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    return Block


def torch_resnet18(torch, num_classes):
    nn = torch.nn

    Block = torch_basic_block(torch)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin, stages = 64, []
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(Block(cin, planes, stride), Block(planes, planes, 1)))
                cin = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


def test_parameter_counts_and_names_are_torchvisions():
    counts = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
    for name, count in counts.items():
        model = getattr(models, name)(seed=0)
        assert sum(p.size for p in model.parameters()) == count, name
    names = [k for k, _ in models.resnet18(seed=0).named_state()]
    assert names[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                         "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    assert "layer2.0.downsample.0.weight" in names and "layer4.1.bn2.running_var" in names
    assert names[-2:] == ["fc.weight", "fc.bias"]


def test_resnet18_matches_torch_in_training_and_inference(torch, rng):
    fm = models.resnet18(num_classes=10, seed=0)
    tm = torch_resnet18(torch, 10)
    assert list(tm.state_dict()) == list(fm.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    # batch statistics over 4 x 2 x 2 values per channel in layer4: well enough conditioned
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    g = rng.standard_normal((4, 10)).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tm(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(fm(x), ty.detach().numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fm.backward(g), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    for (name, p), (_, tp) in zip(fm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-2, atol=1e-3, err_msg=name)
    for key, value in tm.state_dict().items():       # running statistics after one step
        np.testing.assert_allclose(fm.state_dict()[key], value.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=key)
    fm.eval()
    tm.eval()
    x = rng.standard_normal((3, 3, 64, 48)).astype(np.float32)
    np.testing.assert_allclose(fm(x), tm(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-3, atol=1e-3)


def test_bottleneck_model_runs_forward_and_backward(rng):
    model = models.ResNet(models.Bottleneck, [1, 1, 1, 1], num_classes=5, seed=1)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 5) and np.isfinite(y).all()
    assert model.backward(np.ones_like(y)).shape == x.shape
    with pytest.raises(ValueError):
        model(rng.standard_normal((2, 4, 32, 32)))
    assert isinstance(model.layer1[0], fastcnn.Module)


def torch_mobilenet_v2(torch, num_classes, dropout):
    """torchvision's MobileNetV2 written out with plain torch.nn."""
    nn = torch.nn

    def cbr(cin, cout, k=3, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                       bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = int(round(cin * t))
            self.res = stride == 1 and cin == cout
            layers = [cbr(cin, hidden, 1)] if t != 1 else []
            layers += [cbr(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                       nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.res else self.conv(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            cin, features = 32, [cbr(3, 32, 3, 2)]
            for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
                for i in range(n):
                    features.append(Block(cin, c, s if i == 0 else 1, t))
                    cin = c
            features.append(cbr(cin, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return Net()


def test_mobilenet_v2_names_and_parameter_count_are_torchvisions(torch):
    fm = models.mobilenet_v2(seed=0)
    assert sum(p.size for p in fm.parameters()) == 3_504_872
    tm = torch_mobilenet_v2(torch, 1000, 0.2)
    fs, ts = fm.state_dict(), tm.state_dict()
    assert list(fs) == list(ts)
    assert [np.shape(v) for v in fs.values()] == [tuple(v.shape) for v in ts.values()]
    assert list(fs)[:2] == ["features.0.0.weight", "features.0.1.weight"]
    assert "features.1.conv.0.0.weight" in fs and list(fs)[-1] == "classifier.1.bias"
    assert fm.features[2].conv[1][0].groups == 96


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_mobilenet_v2_width_mult_follows_make_divisible(width_mult):
    fm = models.mobilenet_v2(num_classes=7, width_mult=width_mult, seed=0)
    first = fm.features[0][0].weight.shape[0]
    assert first == {1.0: 32, 0.5: 16}[width_mult]
    assert fm.classifier[1].weight.shape == (7, 1280)
    assert models.MobileNetV2(width_mult=1.4).classifier[1].weight.shape == (1000, 1792)


def test_mobilenet_v2_matches_torch_in_eval_and_after_sgd_steps(torch, rng):
    """Eval output against the torch twin; then 3 SGD steps in training mode
    (dropout off on both sides: their masks come from different generators).
    Training this net from its random initialisation on a small batch is
    ill-conditioned: a few depthwise batch-norm channels see nearly constant
    inputs (variance ~1e-4), so whether one ReLU6 input rounds to either side
    of 0 changes a gradient by percents, and float32 rounding grows by orders
    of magnitude per step (with 2x3x64x64 and lr 0.01, torch's own float32 run
    ends 0.2-0.5 away from its float64 run). Hence 128x128 images, lr 0.001,
    and the steps judged against a float64 torch twin: fastcnn must stay as
    close to it as torch's float32 run does (within 4x, plus 1e-4)."""
    import copy
    fm = models.mobilenet_v2(num_classes=10, dropout=0.0, seed=0)
    t32 = torch_mobilenet_v2(torch, 10, 0.0)
    t32.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    t64 = copy.deepcopy(t32).double()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    fm.eval()
    t32.eval()
    np.testing.assert_allclose(fm(x), t32(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-3, atol=1e-4)

    def as_close_as_torch32(fast, ours32, exact, what):
        fast, ours32, exact = (np.asarray(a, np.float64) for a in (fast, ours32, exact))
        err, torch_err = np.abs(fast - exact).max(), np.abs(ours32 - exact).max()
        assert err <= 4 * torch_err + 1e-4, f"{what}: {err} vs torch float32's {torch_err}"

    fm.train()
    t32.train()
    t64.train()
    opt = fastcnn.SGD(fm.parameters(), lr=0.001, momentum=0.9)
    opts = [torch.optim.SGD(m.parameters(), lr=0.001, momentum=0.9) for m in (t32, t64)]
    labels = np.array([3, 7])
    for step in range(3):
        xb = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
        loss_f = fastcnn.CrossEntropyLoss()
        out = fm(xb)
        loss_f(out, labels)
        opt.zero_grad()
        fm.backward(loss_f.backward())
        opt.step()
        touts = []
        for m, o, dtype in zip((t32, t64), opts, (torch.float32, torch.float64)):
            tout = m(torch.from_numpy(xb).to(dtype))
            o.zero_grad()
            torch.nn.functional.cross_entropy(tout, torch.from_numpy(labels)).backward()
            o.step()
            touts.append(tout.detach().numpy())
        as_close_as_torch32(out, *touts, f"output of step {step}")
    s32, s64 = t32.state_dict(), t64.state_dict()
    for key, value in fm.state_dict().items():
        as_close_as_torch32(value, s32[key].numpy(), s64[key].numpy(), key)
    for m in (fm, t32, t64):
        m.eval()
    as_close_as_torch32(fm(x), t32(torch.from_numpy(x)).detach().numpy(),
                        t64(torch.from_numpy(x).double()).detach().numpy(), "eval output")


def torch_cifar_resnet(torch, depth, num_classes, in_channels, width):
    """He et al.'s CIFAR ResNet with projection shortcuts, in plain torch.nn."""
    nn = torch.nn

    Block = torch_basic_block(torch)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            cin, stages = width, []
            for planes, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
                stages.append(nn.Sequential(Block(cin, planes, stride),
                                            *[Block(planes, planes, 1) for _ in range(n - 1)]))
                cin = planes
            self.layer1, self.layer2, self.layer3 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4 * width, num_classes)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


def test_resnet20_layout_and_depths():
    model = models.resnet20(seed=0)
    assert sum(p.size for p in model.parameters()) == 272_474      # option B shortcuts
    convs = [m for m in model.modules() if isinstance(m, fastcnn.Conv2d)]
    assert len(convs) == 19 + 2                # 19 in the path, 2 projection shortcuts
    assert model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    assert len(models.CifarResNet(56, width=4).layer2) == 9
    for depth in (7, 10, 2, "20", 20.0):
        with pytest.raises(ValueError, match=repr(depth)):
            models.CifarResNet(depth)


def test_cifar_resnet_matches_torch_after_training_steps(torch, rng):
    fm = models.CifarResNet(8, num_classes=10, in_channels=1, width=8, seed=0)
    tm = torch_cifar_resnet(torch, 8, 10, 1, 8)
    assert list(tm.state_dict()) == list(fm.state_dict())
    assert [n for n, _ in tm.named_modules()] == \
        [n for n, _ in fm.named_modules() if n != "flatten"]      # torch flattens in forward
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fm.state_dict().items()})
    opt = fastcnn.SGD(fm.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    loss = fastcnn.CrossEntropyLoss()
    for _ in range(3):
        opt.zero_grad()
        loss(fm(x), y)
        fm.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        topt.step()
    for key, value in tm.state_dict().items():
        np.testing.assert_allclose(fm.state_dict()[key], value.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=key)
    fm.eval()
    tm.eval()
    np.testing.assert_allclose(fm(x), tm(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-3, atol=1e-4)


def test_named_modules_are_torchs(torch):
    fm = models.resnet18(seed=0)
    names = [n for n, _ in fm.named_modules()]
    tnames = [n for n, _ in torch_resnet18(torch, 1000).named_modules()]
    assert names[:6] == ["", "conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "layer2.0.downsample.0" in names
    # torch has no Flatten module in its ResNet; fastcnn's forward uses one
    assert [n for n in names if n != "flatten"] == tnames
    assert next(fm.modules()) is fm
    shared = fastcnn.ReLU()
    seq = fastcnn.Sequential(shared, fastcnn.Conv2d(1, 1, 1), shared)
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]     # each layer once
    assert [n for n, _ in seq.named_modules("net")] == ["net", "net.0", "net.1"]
