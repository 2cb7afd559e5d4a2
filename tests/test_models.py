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
