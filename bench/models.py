"""The models of BENCHMARKS.md built the same way in fastcnn and torch
(PyTorch's state_dict keys, so weights move across), a fixed batch, and the
ONNX files onnxruntime runs."""
import os

import numpy as np

# Layer specs: ("conv", in, out, kernel, stride, pad), ("relu",), ("maxpool", k),
# ("flatten",), ("linear", in, out).
SPECS = {
    "LeNet-5": [
        ("conv", 1, 6, 5, 1, 2), ("relu",), ("maxpool", 2),
        ("conv", 6, 16, 5, 1, 0), ("relu",), ("maxpool", 2), ("flatten",),
        ("linear", 400, 120), ("relu",), ("linear", 120, 84), ("relu",), ("linear", 84, 10),
    ],
    "CIFAR-net": [
        ("conv", 3, 32, 3, 1, 1), ("relu",), ("conv", 32, 32, 3, 1, 1), ("relu",), ("maxpool", 2),
        ("conv", 32, 64, 3, 1, 1), ("relu",), ("conv", 64, 64, 3, 1, 1), ("relu",), ("maxpool", 2),
        ("flatten",), ("linear", 4096, 256), ("relu",), ("linear", 256, 10),
    ],
}
INPUT = {"LeNet-5": (1, 28, 28), "CIFAR-net": (3, 32, 32)}
CLASSES = 10


def batch(model, n, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n,) + INPUT[model]).astype(np.float32)
    return x, r.integers(0, CLASSES, n).astype(np.int64)


def torch_model(model, torch, seed=0):
    nn = torch.nn
    make = {
        "conv": lambda i, o, k, s, p: nn.Conv2d(i, o, k, stride=s, padding=p),
        "relu": nn.ReLU,
        "maxpool": nn.MaxPool2d,
        "flatten": nn.Flatten,
        "linear": nn.Linear,
    }
    torch.manual_seed(seed)
    return nn.Sequential(*[make[kind](*args) for kind, *args in SPECS[model]])


def fastcnn_model(model):
    """The fastcnn twin (Pending until the model API is in this build)."""
    import harness   # imports fastcnn: kept out of torch-only processes (memory_run.py)
    what = "model API, issue 3"
    make = {
        "conv": lambda i, o, k, s, p: harness.fastcnn_attr("Conv2d", what)(
            i, o, k, stride=s, padding=p),
        "relu": lambda: harness.fastcnn_attr("ReLU", what)(),
        "maxpool": lambda k: harness.fastcnn_attr("MaxPool2d", what)(k),
        "flatten": lambda: harness.fastcnn_attr("Flatten", what)(),
        "linear": lambda i, o: harness.fastcnn_attr("Linear", what)(i, o),
    }
    layers = [make[kind](*args) for kind, *args in SPECS[model]]
    return harness.fastcnn_attr("Sequential", what)(*layers)


def twins(model, torch, seed=0):
    """(fastcnn model, torch model) with the same weights."""
    tm = torch_model(model, torch, seed)
    fm = fastcnn_model(model)
    fm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return fm, tm


OPTIMIZERS = {   # name -> (fastcnn class, torch class, keyword arguments)
    "SGD-momentum": ("SGD", "SGD", {"lr": 0.01, "momentum": 0.9}),
    "Adam": ("Adam", "Adam", {"lr": 1e-3}),
}


def optimizers(name, fm, tm, torch):
    import harness
    ours, theirs, kwargs = OPTIMIZERS[name]
    fopt = harness.fastcnn_attr(ours, "model API, issue 3")(fm.parameters(), **kwargs)
    return fopt, getattr(torch.optim, theirs)(tm.parameters(), **kwargs)


def fastcnn_train_step(fm, fopt, loss_fn, x, labels):
    """One step: zero_grad, forward, loss, backward (no input gradient: the
    input needs none, as in torch), optimizer step. Returns the loss."""
    fopt.zero_grad()
    loss = loss_fn(fm(x), labels)
    fm.backward(loss_fn.backward(), need_grad_input=False)
    fopt.step()
    return loss


def torch_train_step(tm, topt, torch, tx, tlabels):
    topt.zero_grad()
    loss = torch.nn.functional.cross_entropy(tm(tx), tlabels)
    loss.backward()
    topt.step()
    return loss


def torch_mobilenet_v2(torch, num_classes=1000):
    """torchvision's MobileNetV2 in plain torch.nn (torchvision does not load
    beside the CPU torch build here); state-dict names as torchvision's."""
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
            layers += [cbr(hidden, hidden, 3, stride, hidden),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
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
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return Net()


def torch_resnet18(torch, num_classes=1000):
    """torchvision's ResNet-18 in plain torch.nn; state-dict names as torchvision's
    (and fastcnn.models.resnet18's), so weights move across."""
    nn = torch.nn

    def conv_bn(cin, cout, k, stride):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
            self.relu = nn.ReLU()
            self.conv2, self.bn2 = conv_bn(cout, cout, 3, 1)
            self.downsample = (nn.Sequential(*conv_bn(cin, cout, 1, stride))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(3, 64, 7, 2)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
                setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, planes, stride),
                                                             BasicBlock(planes, planes, 1)))
                cin = planes
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


# --- the 224x224 CNNs: fastcnn.models against their torch twins above ----------------

CNNS = {   # name -> (fastcnn.models function, torch twin)
    "ResNet-18": ("models.resnet18", torch_resnet18),
    "MobileNetV2": ("models.mobilenet_v2", torch_mobilenet_v2),
}


def cnn_twins(name, torch, num_classes=1000, seed=0, random_batch_norm=False):
    """(fastcnn.models network, torch twin) of CNNS[name] with the same weights.
    With ``random_batch_norm``, batch norm's scale, shift and running statistics
    are drawn at random (not 1, 0, 0, 1), so that an inference check would
    catch a wrong batch-norm fold. The same arguments give the same weights."""
    import harness
    path, torch_twin = CNNS[name]
    fm = harness.fastcnn_attr(path, "models, issue 9")(num_classes=num_classes, seed=seed)
    state = {k: np.array(v) for k, v in fm.state_dict().items()}
    if random_batch_norm:
        randomize_batch_norm(state, np.random.default_rng(seed))
        fm.load_state_dict(state)
    tm = torch_twin(torch, num_classes)
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return fm, tm


def randomize_batch_norm(state, rng):
    """Draw every batch norm's weight, bias, running_mean and running_var of a
    state dict (in place): scale 0.5..1.5, shift and mean N(0, 0.1), variance 0.5..2."""
    for key in [k for k in state if k.endswith(".running_mean")]:
        prefix = key[:-len("running_mean")]
        shape = state[key].shape
        state[prefix + "weight"] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        state[prefix + "bias"] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        state[prefix + "running_mean"] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        state[prefix + "running_var"] = rng.uniform(0.5, 2.0, shape).astype(np.float32)


def export_onnx(tm, torch, path, size):
    """The torch model, in eval mode, written to ``path`` as ONNX: opset 17,
    the TorchScript exporter (dynamo=False), input "x" (N, 3, size, size)
    and output "logits" with a dynamic batch dimension."""
    import warnings
    tm.eval()
    example = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, (example,), path, dynamo=False, input_names=["x"],
                          output_names=["logits"], opset_version=17,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


_onnx_dir = None
_onnx_files = {}


def cnn_onnx_file(name, torch, size=224):
    """Path of cnn_twins(name, random_batch_norm=True)'s torch twin exported to
    ONNX, written once per process into a temporary directory (removed at exit)."""
    global _onnx_dir
    if (name, size) not in _onnx_files:
        import tempfile
        if _onnx_dir is None:
            _onnx_dir = tempfile.TemporaryDirectory(prefix="fastcnn-bench-")
        path = os.path.join(_onnx_dir.name, f"{name}-{size}.onnx")
        export_onnx(cnn_twins(name, torch, random_batch_norm=True)[1], torch, path, size)
        _onnx_files[name, size] = path
    return _onnx_files[name, size]


def ort_session(ort, model, threads, profile_prefix=None):
    """An onnxruntime CPU session on ``model`` (path or bytes) with ``threads``
    intra-op threads and one inter-op thread, at onnxruntime's other defaults,
    except that under OMP_WAIT_POLICY=PASSIVE (the report's default mode: idle
    threads asleep on every side) its own pool's threads sleep too
    (session.intra_op.allow_spinning=0): spinning, they take a core from the
    other side's next call in the alternating rounds. With profile_prefix,
    onnxruntime's profiler writes its node times to a file of that prefix."""
    import os
    opts = ort.SessionOptions()
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
