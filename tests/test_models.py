"""fastcnn.models: torchvision's ResNet layouts and names, against a torch
ResNet written out here (torchvision itself need not be installed)."""
import numpy as np
import pytest

import fastcnn
from fastcnn import models


def torch_resnet18(torch, num_classes):
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


def torch_cifar_resnet(torch, depth, num_classes, in_channels, width):
    """He et al.'s CIFAR ResNet with projection shortcuts, in plain torch.nn."""
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
