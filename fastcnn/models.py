"""Architectures people run, with torchvision's layouts and state-dict names,
so weights move between the two: ResNet-18, -34 and -50, MobileNetV2; and
ResNet-20 (and the other depths 6n + 2) for 32x32 images.

Example:
    >>> model = fastcnn.models.resnet18(num_classes=10)
    >>> model.load_state_dict(torchvision_model.state_dict())   # same names and shapes
    >>> model.eval()(np.zeros((1, 3, 224, 224), np.float32)).shape
    (1, 10)
"""
import math

import numpy as np

from .layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                     ReLU, ReLU6)
from .module import Module
from .sequential import Sequential

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "ResNet", "resnet18", "resnet20",
           "resnet34", "resnet50", "InvertedResidual", "MobileNetV2", "mobilenet_v2"]


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


# ---- MobileNetV2 ------------------------------------------------------------------


def _make_divisible(v, divisor=8):
    """v rounded to the nearest multiple of divisor, at least divisor and not
    below 90% of v (torchvision's rule for scaled channel counts)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(cin, cout, k=3, stride=1, groups=1):
    """torchvision's Conv2dNormActivation: conv (no bias), batch norm, ReLU6."""
    return Sequential(Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                             bias=False), BatchNorm2d(cout), ReLU6())


class InvertedResidual(Module):
    """MobileNetV2's block (torchvision's InvertedResidual): a 1x1 expansion to
    ``round(inp * expand_ratio)`` channels (absent for ratio 1), a 3x3
    depthwise convolution (strided), a linear 1x1 projection, and the input
    added back when the stride is 1 and the channels match."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_conv_bn_relu6(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   Conv2d(hidden, oup, 1, bias=False), BatchNorm2d(oup)]
        self.conv = Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Module):
    """torchvision's MobileNetV2: a 3x3/2 stem of 32 channels, 17 inverted
    residual blocks, a 1x1 convolution to 1280 channels, global average
    pooling, dropout and a linear classifier; channel counts scaled by
    ``width_mult`` and rounded to multiples of 8.

    Args:
        num_classes: outputs of the classifier. Default 1000.
        width_mult: channel multiplier. Default 1.0.
        dropout: the classifier's dropout probability. Default 0.2.
        seed: initialise from ``numpy.random.default_rng(seed)`` (torchvision's
            scheme: Kaiming-normal convolutions, fan-out; batch norm 1 and 0;
            linear normal(0, 0.01), bias 0); default fastcnn's global generator.

    Input shape:
        (N, 3, H, W), e.g. 224x224 (any size from 32x32 up).

    Output shape:
        (N, num_classes).
    """
    # expansion t, output channels c, blocks n, first stride s
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2, seed=None):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features = [_conv_bn_relu6(3, cin, 3, 2)]
        for t, c, n, s in self.SETTING:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn_relu6(cin, last, 1))
        self.features = Sequential(*features)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.classifier = Sequential(Dropout(dropout), Linear(last, num_classes))
        self.reset_parameters(None if seed is None else np.random.default_rng(seed))

    def reset_parameters(self, rng=None):
        super().reset_parameters(rng)
        from .layers import _generator
        rng = _generator if rng is None else rng
        _he_normal_convs(self, rng)
        for layer in self.modules():
            if isinstance(layer, Linear):
                layer.weight.data[...] = rng.normal(0.0, 0.01, layer.weight.shape)
                layer.bias.data[...] = 0.0

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def mobilenet_v2(num_classes=1000, width_mult=1.0, dropout=0.2, seed=None):
    """MobileNetV2 (torchvision.models.mobilenet_v2's layout and names)."""
    return MobileNetV2(num_classes, width_mult, dropout, seed)


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
