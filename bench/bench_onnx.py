"""ONNX import: ResNet-18 and MobileNetV2 (torchvision's architectures, written
here in plain torch.nn, random weights, batch norm in eval mode) exported with
torch.onnx.export at opset 17, then ``fastcnn bench`` on each file: fastcnn's
imported model against onnxruntime, same threads, interleaved, medians.

    python bench/bench_onnx.py [--batch 1,8] [--threads 1,2] [--repeat 10] [--size 224]
"""
import argparse
import os
import tempfile

import _path


def resnet18(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    blocks, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, 1000))


def mobilenet_v2(torch):
    nn = torch.nn

    def conv_bn(cin, cout, k, stride, groups=1):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU6()]

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, hidden)
            layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers, cin = conv_bn(3, 32, 3, 2), 32
    for expand, cout, n, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(Inverted(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += conv_bn(cin, 1280, 1, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(1280, 1000))


def export(net, torch, path, size):
    torch.manual_seed(0)
    net.eval()
    torch.onnx.export(net, torch.randn(1, 3, size, size), path, opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})


def main():
    import warnings

    import torch
    _path.prefer_checkout()

    from fastcnn.onnx.bench import bench
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="1,8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("resnet18", resnet18), ("mobilenet_v2", mobilenet_v2)):
            path = os.path.join(tmp, f"{name}.onnx")
            torch.manual_seed(0)
            export(make(torch), torch, path, args.size)
            print(f"== {name} (opset 17, {args.size}x{args.size})")
            bench(path, batches, threads, args.repeat)


if __name__ == "__main__":
    main()
