"""Architectures people run, with torchvision's layouts and state-dict names,
so weights move between the two: ResNet-18, -34 and -50; and ResNet-20 (and
the other depths 6n + 2) for 32x32 images.

Example:
    >>> model = fastcnn.models.resnet18(num_classes=10)
    >>> model.load_state_dict(torchvision_model.state_dict())   # same names and shapes
    >>> model.eval()(np.zeros((1, 3, 224, 224), np.float32)).shape
    (1, 10)
"""
import math

import numpy as np

from .layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU)
from .module import Module
from .sequential import Sequential

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "ResNet", "resnet18", "resnet20", "resnet34",
           "resnet50"]


def _conv(cin, cout, k, stride=1):
    return Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(Module):
    """Two 3x3 convolutions with batch norm and a residual connection
    (torchvision's BasicBlock); ``downsample`` matches the shortcut's shape."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = BatchNorm2d(planes)
        if downsample is not None:
            self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        return self.relu(out + shortcut)


class Bottleneck(Module):
    """1x1, 3x3 (strided), 1x1 convolutions with batch norm and a residual
    connection (torchvision's Bottleneck, stride on the 3x3)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = BatchNorm2d(planes * 4)
        self.relu = ReLU()
        if downsample is not None:
            self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        return self.relu(out + shortcut)


def _he_normal_convs(model, rng):
    """torchvision's initialisation of every convolution: He normal, fan-out mode."""
    for layer in model.modules():
        if isinstance(layer, Conv2d):
            k, _, r, s = layer.weight.shape
            layer.weight.data[...] = rng.normal(0.0, math.sqrt(2.0 / (k * r * s)),
                                                layer.weight.shape)


def _downsample(inplanes, outplanes, stride):
    """The projection shortcut: a strided 1x1 convolution and batch norm."""
    return Sequential(_conv(inplanes, outplanes, 1, stride), BatchNorm2d(outplanes))


class ResNet(Module):
    """torchvision's ResNet: a 7x7/2 stem, a 3x3/2 max pooling, four stages of
    blocks (64, 128, 256, 512 planes; stride 2 from the second), global
    average pooling and a linear classifier.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. [2, 2, 2, 2] for ResNet-18.
        num_classes: outputs of the classifier. Default 1000.
        seed: initialise from ``numpy.random.default_rng(seed)`` (torchvision's
            scheme: Kaiming-normal convolutions, fan-out, ReLU gain; batch norm
            1 and 0); default fastcnn's global generator.

    Input shape:
        (N, 3, H, W), e.g. 224x224 (any size from 32x32 up).

    Output shape:
        (N, num_classes).
    """

    def __init__(self, block, layers, num_classes=1000, seed=None):
        super().__init__()
        self.inplanes = 64
        self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(512 * block.expansion, num_classes)
        self.reset_parameters(None if seed is None else np.random.default_rng(seed))

    def _stage(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = _downsample(self.inplanes, planes * block.expansion, stride)
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return Sequential(stage)

    def reset_parameters(self, rng=None):
        super().reset_parameters(rng)
        from .layers import _generator
        rng = _generator if rng is None else rng
        _he_normal_convs(self, rng)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes=1000, seed=None):
    """ResNet-18 (torchvision.models.resnet18's layout and names)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, seed)


def resnet34(num_classes=1000, seed=None):
    """ResNet-34 (torchvision.models.resnet34's layout and names)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, seed)


def resnet50(num_classes=1000, seed=None):
    """ResNet-50 (torchvision.models.resnet50's layout and names)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, seed)


class CifarResNet(Module):
    """The ResNets for 32x32 images of He et al. (2016), section 4.2: a 3x3
    stem of ``width`` channels, three stages of ``(depth - 2) / 6`` basic
    blocks at ``width``, 2x and 4x channels (stride 2 from the second), global
    average pooling and a linear classifier. The shortcut that changes shape
    is a 1x1 convolution with batch norm (the paper's option B). Names follow
    torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``).

    Args:
        depth: 6n + 2 layers: 8, 14, 20, 32, 44, 56, 110, ...
        num_classes: outputs of the classifier. Default 10.
        in_channels: channels of the input image. Default 3.
        width: channels of the first stage. Default 16.
        seed: seed of the initial weights (He normal), or None.

    Input shape: (N, in_channels, H, W), any H, W >= 1 (32x32 in the paper).
    Output shape: (N, num_classes).
    """

    def __init__(self, depth=20, num_classes=10, in_channels=3, width=16, seed=None):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...). "
                             f"Received: depth={depth!r}")
        blocks = (depth - 2) // 6
        self.conv1 = _conv(in_channels, width, 3)
        self.bn1 = BatchNorm2d(width)
        self.relu = ReLU()
        self.inplanes = width
        self.layer1 = self._stage(width, blocks, 1)
        self.layer2 = self._stage(2 * width, blocks, 2)
        self.layer3 = self._stage(4 * width, blocks, 2)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(4 * width, num_classes)
        self.reset_parameters(None if seed is None else np.random.default_rng(seed))

    def _stage(self, planes, blocks, stride):
        downsample = _downsample(self.inplanes, planes, stride) \
            if stride != 1 or self.inplanes != planes else None
        stage = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return Sequential(stage)

    def reset_parameters(self, rng=None):
        super().reset_parameters(rng)
        from .layers import _generator
        _he_normal_convs(self, _generator if rng is None else rng)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet20(num_classes=10, in_channels=3, seed=None):
    """ResNet-20 for 3x32x32 images (CIFAR-10): 16, 32, 64 channels, 3 blocks each."""
    return CifarResNet(20, num_classes, in_channels, seed=seed)
