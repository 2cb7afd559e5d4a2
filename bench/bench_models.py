"""Whole models (BENCHMARKS.md): LeNet-5 and CIFAR-net train steps at batch 64
(forward + softmax cross-entropy + backward + optimizer step, SGD with
momentum and Adam) against torch, and inference (logits; neither side adds
a softmax) at batch 1 and 256 against torch and against onnxruntime running
the torch model exported to ONNX. The models start from the same weights and
the results are compared before timing. Issue 9 adds a ResNet-18 train step
(fastcnn.models.resnet18(num_classes=10) against the same network in plain
torch.nn, 3x32x32, batch 64, SGD with momentum)."""
import io
import warnings

import numpy as np

import pytest

import harness
import models
from harness import Case, Pair, assert_close

TRAIN_TARGET = {"LeNet-5": 3.0, "CIFAR-net": 1.5}
TRAIN_BATCH = 64


def train_case(model, opt_name):
    def build(threads):
        torch = harness.peer_module("torch")
        loss_cls = harness.fastcnn_attr("CrossEntropyLoss", "model API, issue 3")
        x, labels = models.batch(model, TRAIN_BATCH)
        tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)

        def pair():
            fm, tm = models.twins(model, torch)
            fopt, topt = models.optimizers(opt_name, fm, tm, torch)
            loss_fn = loss_cls()
            return (fm, lambda: models.fastcnn_train_step(fm, fopt, loss_fn, x, labels),
                    tm, lambda: models.torch_train_step(tm, topt, torch, tx, tlabels))

        def check():   # three steps from the same weights: same losses, same weights
            fm, ours, tm, peer = pair()
            for step in range(3):
                assert_close(ours(), peer().item(), f"loss at step {step}", tol=1e-4)
            for key, value in tm.state_dict().items():
                assert_close(fm.state_dict()[key], value.numpy(), f"{key} after 3 steps",
                             tol=1e-3, mean=opt_name == "Adam")

        _, ours, _, peer = pair()
        return Pair(ours, peer, check)

    return Case("train step", f"{model} train step b{TRAIN_BATCH} {opt_name}", "torch", build,
                items=TRAIN_BATCH, target=TRAIN_TARGET[model])


RESNET18_TARGET = 1.3


def resnet18_train_case():
    def build(threads):
        torch = harness.peer_module("torch")
        resnet18 = harness.fastcnn_attr("models.resnet18", "models, issue 9")
        loss_cls = harness.fastcnn_attr("CrossEntropyLoss", "model API, issue 3")
        r = harness.rng(0)
        x = harness.randn(r, TRAIN_BATCH, 3, 32, 32)
        labels = r.integers(0, 10, TRAIN_BATCH).astype(np.int64)
        tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)

        def pair():
            fm = resnet18(num_classes=10, seed=0)
            tm = models.torch_resnet18(torch, 10)
            tm.load_state_dict({k: torch.from_numpy(np.array(v))
                                for k, v in fm.state_dict().items()})
            fopt, topt = models.optimizers("SGD-momentum", fm, tm, torch)
            loss_fn = loss_cls()
            return (fm, lambda: models.fastcnn_train_step(fm, fopt, loss_fn, x, labels),
                    tm, lambda: models.torch_train_step(tm, topt, torch, tx, tlabels))

        def check():
            """Same loss and weights after one step from the same weights, close
            losses after two more. Batch norm's shift gradients are sums that
            cancel, so float32 rounding grows fast from step to step (torch's
            own float32 weights differ from its float64 ones by ~1e-2 after 3)."""
            fm, ours, tm, peer = pair()
            assert_close(ours(), peer().item(), "loss at step 0", tol=1e-5)
            for key, value in tm.state_dict().items():
                assert_close(fm.state_dict()[key], value.numpy(), f"{key} after 1 step",
                             tol=5e-3)
            for step in (1, 2):
                assert_close(ours(), peer().item(), f"loss at step {step}", tol=2e-3)

        _, ours, _, peer = pair()
        return Pair(ours, peer, check)

    return Case("train step", f"ResNet-18 train step 3x32x32 b{TRAIN_BATCH} SGD-momentum",
                "torch", build, items=TRAIN_BATCH, target=RESNET18_TARGET)


_onnx_cache = {}


def onnx_bytes(model, tm, torch):
    """The torch model exported to ONNX (dynamic batch), once per model."""
    if model not in _onnx_cache:
        f = io.BytesIO()
        example = torch.from_numpy(models.batch(model, 1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(tm, (example,), f, dynamo=False, input_names=["x"],
                              output_names=["logits"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        _onnx_cache[model] = f.getvalue()
    return _onnx_cache[model]


def infer_case(model, n, peer_name):
    def build(threads):
        torch = harness.peer_module("torch")
        if peer_name == "onnxruntime":
            ort = harness.peer_module("onnxruntime")
        fm, tm = models.twins(model, torch)
        fm.eval()
        tm.eval()
        x, _ = models.batch(model, n)
        tx = torch.from_numpy(x)

        def ours():
            return fm(x)

        if peer_name == "torch":
            def peer():
                with torch.inference_mode():
                    return tm(tx).numpy()
        else:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(onnx_bytes(model, tm, torch), opts,
                                        providers=["CPUExecutionProvider"])

            def peer():
                return sess.run(None, {"x": x})[0]

        def check():
            with torch.inference_mode():
                assert_close(peer(), tm(tx).numpy(), "peer logits vs torch model")
            assert_close(ours(), peer(), "logits")

        return Pair(ours, peer, check)

    return Case("inference", f"{model} inference b{n}", peer_name, build, items=n,
                target=1.0 if peer_name == "onnxruntime" else None)


CASES = ([train_case(m, o) for m in models.SPECS for o in models.OPTIMIZERS]
         + [resnet18_train_case()]
         + [infer_case(m, n, p) for m in models.SPECS for n in (1, 256)
            for p in ("torch", "onnxruntime")])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name} vs {c.peer}")
def test_models(benchmark, case, side, threads):
    harness.run_pytest_case(benchmark, case, side, threads)
