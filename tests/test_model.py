"""Sequential (fastcnn/model.py): training parity with torch, state dicts,
save/load, fit/evaluate/predict/summary, progress output, NaN handling,
memory, and the end-to-end accuracy on the bundled digits."""
import io
import os
import tracemalloc

import numpy as np
import pytest

import fastcnn
from fastcnn.cli import lenet5
from fastcnn.datasets import load_mnist_5k


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k()


def torch_lenet5(nn):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def tiny(seed=0):
    return fastcnn.Sequential(fastcnn.Conv2d(1, 4, 3, padding=1), fastcnn.ReLU(),
                              fastcnn.MaxPool2d(2), fastcnn.Flatten(), fastcnn.Linear(4 * 4 * 4, 3),
                              seed=seed)


def tiny_data(rng, n=50):
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return x, y


# ---------------------------------------------------------------- torch parity

# After 5 steps, weights agree within these (float32 kernels that sum in
# another order than torch's; Adam divides by sqrt(v), which amplifies the
# rounding of gradients near zero, hence its atol of 2% of one step of lr=1e-3).
PARITY = {"sgd": dict(rtol=1e-4, atol=2e-5), "adam": dict(rtol=1e-4, atol=2e-5)}


@pytest.mark.parametrize("which", ["sgd", "adam"])
def test_lenet5_five_steps_match_torch(which, torch, num_threads, digits):
    (x, y), _ = digits
    torch.manual_seed(0)
    ref = torch_lenet5(torch.nn)
    model = lenet5()
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    if which == "sgd":
        opt = fastcnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
        topt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = fastcnn.Adam(model.parameters(), lr=1e-3)
        topt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    loss_fn = fastcnn.CrossEntropyLoss()
    for step in range(5):
        xb, yb = x[64 * step:64 * (step + 1)], y[64 * step:64 * (step + 1)]
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(ref(torch.from_numpy(xb)), torch.from_numpy(yb))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4)
    tstate = ref.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, tstate[key].numpy(), err_msg=key, **PARITY[which])


def test_sequential_backward_matches_torch_input_gradient(torch, rng):
    torch.manual_seed(1)
    ref = torch_lenet5(torch.nn)
    model = lenet5()
    model.load_state_dict(ref.state_dict())              # tensors accepted directly
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    out = ref(tx)
    gy = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(model(x), out.detach().numpy(), rtol=1e-4, atol=1e-5)
    gx = model.backward(gy)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-6)
    for (name, p), (tname, tp) in zip(model.named_parameters(), ref.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------- state dicts

def test_state_dict_round_trips_with_torch(torch):
    torch.manual_seed(3)
    ref = torch_lenet5(torch.nn)
    model = lenet5(seed=5)
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, ref.state_dict()[key].numpy())
    other = lenet5(seed=6)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in other.state_dict().items()})
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(ref.state_dict()[key].numpy(), value)


def test_state_dict_keys_follow_pytorch_positions():
    keys = list(lenet5().state_dict())
    assert keys == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                    "9.weight", "9.bias", "11.weight", "11.bias"]
    nested = fastcnn.Sequential(fastcnn.Flatten(), fastcnn.Sequential(fastcnn.Linear(4, 2)))
    assert list(nested.state_dict()) == ["1.0.weight", "1.0.bias"]


def test_state_dict_is_a_copy():
    model = tiny()
    state = model.state_dict()
    state["0.weight"][...] = 7
    assert not (model[0].weight.data == 7).any()


def test_mismatched_state_dict_names_the_key():
    model = lenet5(seed=0)
    before = model.state_dict()
    state = lenet5(seed=1).state_dict()
    state["7.weight"] = np.zeros((120, 401), np.float32)
    with pytest.raises(ValueError, match=r"state_dict\['7.weight'\] has shape \(120, 401\), "
                                         r"but the model's parameter '7.weight' has shape \(120, 400\)"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():        # nothing was written
        np.testing.assert_array_equal(value, before[key])
    state = lenet5(seed=1).state_dict()
    del state["9.bias"]
    state["12.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing keys \['9.bias'\]; unexpected keys \['12.weight'\]"):
        model.load_state_dict(state)
    state = lenet5(seed=1).state_dict()
    state["0.bias"] = np.array(["a"] * 6)
    with pytest.raises(ValueError, match=r"state_dict\['0.bias'\] must hold real numbers"):
        model.load_state_dict(state)


# ---------------------------------------------------------------- save / load

def test_save_load_is_exact_and_atomic(tmp_path, rng):
    model = lenet5(seed=11)
    model[0].weight.data[0, 0, 0, 0] = np.float32(1e-40)    # a denormal survives too
    path = tmp_path / "lenet.fcnn"
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["lenet.fcnn"]     # no temporary left behind
    loaded = fastcnn.load(path)
    assert repr(loaded) == repr(model)
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].tobytes() == value.tobytes(), key
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    assert model.predict(x).tobytes() == loaded.predict(x).tobytes()
    model.save(str(path))                                    # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["lenet.fcnn"]


def test_save_load_every_layer_kind(tmp_path):
    model = fastcnn.Sequential(
        fastcnn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
        fastcnn.Sigmoid(), fastcnn.AvgPool2d(2, count_include_pad=False),
        fastcnn.MaxPool2d(3, 1, 1), fastcnn.Flatten(),
        fastcnn.Sequential(fastcnn.Linear(4 * 3 * 4, 5, bias=False)), seed=2)
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    assert repr(loaded) == repr(model)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.fcnn"
    tiny(seed=1).save(path)
    old = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        tiny(seed=2).save(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.fcnn"]


def test_truncated_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "m.fcnn"
    lenet5().save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"m.fcnn' is not a readable fastcnn model file"):
            fastcnn.load(path)


def test_corrupt_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "m.fcnn"
    lenet5().save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                           # inside the weights: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"m.fcnn' is not a readable fastcnn model file"):
        fastcnn.load(path)


@pytest.mark.parametrize("kind", ["text", "npz", "npy", "empty", "pickle"])
def test_foreign_files_raise_a_clear_error(kind, tmp_path):
    path = tmp_path / "foreign.bin"
    if kind == "text":
        path.write_text("hello, I am not a model\n")
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, weights=np.zeros(3))
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        import pickle
        path.write_bytes(pickle.dumps({"0.weight": np.zeros(3)}))
    with pytest.raises(ValueError, match=r"foreign.bin' is not a (readable |)fastcnn model file"):
        fastcnn.load(path)


def test_load_rejects_a_tampered_architecture(tmp_path):
    import json
    path = tmp_path / "m.fcnn"
    arch = {"format": "fastcnn-model", "version": 1,
            "model": {"class": "Sequential", "config": {"layers": [
                {"class": "os.system", "config": {}}]}}}
    with open(path, "wb") as f:
        np.savez(f, __fastcnn_model__=np.frombuffer(json.dumps(arch).encode(), np.uint8))
    with pytest.raises(ValueError, match=r"unknown layer class 'os.system'"):
        fastcnn.load(path)
    arch["version"] = 99
    with open(path, "wb") as f:
        np.savez(f, __fastcnn_model__=np.frombuffer(json.dumps(arch).encode(), np.uint8))
    with pytest.raises(ValueError, match=r"format version 99"):
        fastcnn.load(path)


def test_load_missing_file():
    with pytest.raises(FileNotFoundError):
        fastcnn.load("/nonexistent/dir/model.fcnn")


# ---------------------------------------------------------------- fit & co

def test_fit_history_keys_and_values(rng):
    x, y = tiny_data(rng)
    model = tiny()
    history = model.fit(x, y, epochs=3, batch_size=16, validation_data=(x[:10], y[:10]),
                        seed=0, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy",
                                    "images_per_sec"}
    assert history.epoch == [1, 2, 3]
    assert all(len(v) == 3 for v in history.history.values())
    assert all(0 <= a <= 1 for a in history["accuracy"] + history["val_accuracy"])
    assert history["loss"][-1] < history["loss"][0]
    assert all(r > 0 for r in history["images_per_sec"])
    no_val = tiny().fit(x, y, epochs=1, verbose=0)
    assert set(no_val.history) == {"loss", "accuracy", "images_per_sec"}


def test_fit_is_reproducible_with_a_seed(rng):
    x, y = tiny_data(rng)
    a, b = tiny(seed=3), tiny(seed=3)
    ha = a.fit(x, y, epochs=2, batch_size=8, seed=9, verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=8, seed=9, verbose=0)
    assert ha["loss"] == hb["loss"]
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])


def test_fit_loss_matches_evaluate_on_the_same_data_without_training(rng):
    x, y = tiny_data(rng)
    model = tiny()
    loss, acc = model.evaluate(x, y, batch_size=7)
    history = model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False,
                        optimizer=fastcnn.SGD(model.parameters(), lr=0.0), verbose=0)
    assert history["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert history["accuracy"][0] == pytest.approx(acc)


def test_evaluate_and_predict_are_batched_consistently(rng):
    x, y = tiny_data(rng, 37)
    model = tiny()
    full = model.predict(x, batch_size=1000)
    assert full.shape == (37, 3) and full.dtype == np.float32
    np.testing.assert_allclose(model.predict(x, batch_size=5), full, rtol=1e-6, atol=1e-7)
    loss_fn = fastcnn.CrossEntropyLoss()
    loss, acc = model.evaluate(x, y, batch_size=5)
    assert loss == pytest.approx(loss_fn(full, y), rel=1e-5)
    assert acc == pytest.approx(np.mean(full.argmax(1) == y))
    assert model.training                      # evaluate/predict restore the mode


def test_fit_with_mse_loss_and_sgd(rng):
    x = rng.standard_normal((64, 5)).astype(np.float32)
    w = rng.standard_normal((5, 2)).astype(np.float32)
    y = x @ w
    model = fastcnn.Sequential(fastcnn.Linear(5, 2), seed=0)
    history = model.fit(x, y, epochs=30, batch_size=16, loss="mse", seed=0, verbose=0,
                        optimizer=fastcnn.SGD(model.parameters(), lr=0.1))
    assert set(history.history) == {"loss", "images_per_sec"}
    assert history["loss"][-1] < 0.01 * history["loss"][0]
    loss, acc = model.evaluate(x, y, loss=fastcnn.MSELoss())
    assert acc is None and loss < 0.01


def test_mse_loss_matches_torch(torch, rng):
    out = rng.standard_normal((4, 3)).astype(np.float32)
    tgt = rng.standard_normal((4, 3)).astype(np.float32)
    t_out = torch.from_numpy(out.copy()).requires_grad_(True)
    t_loss = torch.nn.functional.mse_loss(t_out, torch.from_numpy(tgt))
    t_loss.backward()
    loss_fn = fastcnn.MSELoss()
    assert loss_fn(out, tgt) == pytest.approx(t_loss.item(), rel=1e-6)
    np.testing.assert_allclose(loss_fn.backward(), t_out.grad.numpy(), rtol=1e-6)


def test_cross_entropy_loss_matches_torch(torch, rng):
    logits = (3 * rng.standard_normal((5, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    t = torch.from_numpy(logits.copy()).requires_grad_(True)
    t_loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(labels))
    t_loss.backward()
    loss_fn = fastcnn.CrossEntropyLoss()
    assert loss_fn(logits, labels) == pytest.approx(t_loss.item(), rel=1e-5)
    np.testing.assert_allclose(loss_fn.backward(), t.grad.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a loss computed first"):
        fastcnn.MSELoss().backward()


def test_lr_scheduler_is_stepped_once_per_epoch(rng):
    x, y = tiny_data(rng)
    model = tiny()
    opt = fastcnn.SGD(model.parameters(), lr=0.1)
    sched = fastcnn.optim.StepLR(opt, step_size=1, gamma=0.5)
    model.fit(x, y, epochs=3, batch_size=10, optimizer=opt, lr_scheduler=sched, verbose=0)
    assert sched.last_epoch == 3 and opt.lr == pytest.approx(0.1 / 8)
    assert model.optimizer is opt


def test_augment_is_called_once_per_epoch(rng):
    x, y = tiny_data(rng)
    calls = []

    def augment(xs, gen):
        calls.append(xs.shape)
        assert isinstance(gen, np.random.Generator)
        return xs[:, :, ::-1, :]
    tiny().fit(x, y, epochs=3, batch_size=25, augment=augment, verbose=0)
    assert calls == [x.shape] * 3
    with pytest.raises(ValueError, match=r"augment must return an array of the input's shape"):
        tiny().fit(x, y, augment=lambda xs, gen: xs[:5], verbose=0)


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_good_weights(rng):
    x, y = tiny_data(rng, 64)
    x_bad = x.copy()
    x_bad[40] = np.nan                                   # in batch 3 (of 4) of epoch 2
    model, twin = tiny(seed=4), tiny(seed=4)
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False,
              optimizer=fastcnn.SGD(model.parameters(), lr=0.1, momentum=0.9), verbose=0)
    with pytest.raises(FloatingPointError, match=r"The loss became nan at epoch 1, batch 3 \(of 4\)"):
        model.fit(x_bad, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    # The twin takes the same good steps: one epoch, then 2 batches.
    twin.fit(x, y, epochs=1, batch_size=16, shuffle=False,
             optimizer=fastcnn.SGD(twin.parameters(), lr=0.1, momentum=0.9), verbose=0)
    twin.fit(x[:32], y[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key], err_msg=key)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_exploding_training_stops_with_a_clear_error(rng):
    x, y = tiny_data(rng, 64)
    x *= 1e30
    with pytest.raises(FloatingPointError, match=r"at epoch \d+, batch \d+ \(of 4\)"):
        tiny().fit(x, y, epochs=5, batch_size=16, optimizer="sgd", verbose=0)


def test_progress_in_a_log_is_one_line_per_epoch(rng, capsys):
    x, y = tiny_data(rng)
    tiny().fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines, 1):
        assert line.startswith(f"Epoch {i}/2 - 4 batches - ")
        for part in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: ", " img/s"):
            assert part in line
        assert "\r" not in line and "\033" not in line
    tiny().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_progress_on_a_terminal_draws_a_live_bar():
    from fastcnn.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    bar = Progress(epochs=3, steps=10, verbose=1, stream=out)
    bar.start_epoch(1)
    for step in range(1, 11):
        bar.update(step, step * 32, 0.5)
    bar.end_epoch(1.5, {"loss": 0.5, "accuracy": 0.9, "images_per_sec": 1234.0})
    text = out.getvalue()
    assert "\rEpoch 1/3 [" in text and "10/10 - loss: 0.5000" in text and "ETA 0:00" in text
    assert text.endswith("Epoch 1/3 - 10 batches - 1.5s - loss: 0.5 - accuracy: 0.9000 - "
                         "1,234 img/s\033[K\n")
    quiet = Tty()
    Progress(3, 10, verbose=2, stream=quiet).update(1, 32, 0.5)
    assert quiet.getvalue() == ""                          # verbose=2: no live bar


def test_summary_lists_layers_shapes_and_parameter_counts(capsys):
    model = lenet5()
    with pytest.raises(ValueError, match=r"summary\(\) needs the input shape"):
        model.summary()
    model.summary(input_shape=(1, 28, 28))
    out = capsys.readouterr().out
    assert "(None, 6, 28, 28)" in out and "(None, 16, 5, 5)" in out and "(None, 400)" in out
    assert "(None, 10)" in out and "48,120" in out and "Total params: 61,706" in out
    model.predict(np.zeros((2, 1, 28, 28), np.float32))
    model.summary()                                        # the shape seen last
    assert "Total params: 61,706" in capsys.readouterr().out


def test_fit_rejects_bad_arguments(rng):
    x, y = tiny_data(rng)
    model = tiny()
    cases = [
        (dict(epochs=-1), ValueError, r"epochs must be non-negative. Received: epochs=-1"),
        (dict(batch_size=0), ValueError, r"batch_size must be positive. Received: batch_size=0"),
        (dict(verbose=3), ValueError, r"verbose must be 0, 1 or 2. Received: verbose=3"),
        (dict(loss="hinge"), ValueError, r"loss must be a fastcnn Loss or one of"),
        (dict(optimizer="lbfgs"), ValueError, r"optimizer must be a fastcnn Optimizer"),
        (dict(validation_data=x), ValueError, r"validation_data must be a pair"),
        (dict(lr_scheduler=0.5), TypeError, r"lr_scheduler must be a fastcnn LRScheduler"),
        (dict(augment=3), TypeError, r"augment must be a function"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            model.fit(x, y, **{"verbose": 0, **kwargs})
    with pytest.raises(ValueError, match=r"the optimizer holds none of this model's parameters"):
        model.fit(x, y, optimizer=fastcnn.SGD(tiny().parameters(), lr=0.1), verbose=0)
    with pytest.raises(ValueError, match=r"x and y must have the same number of examples. "
                                         r"Received: x.shape=\(50, 1, 8, 8\), y.shape=\(49,\)"):
        model.fit(x, y[:49], verbose=0)
    with pytest.raises(ValueError, match=r"y must be integer class labels"):
        model.fit(x, y.astype(np.float32) + 0.5, verbose=0)
    with pytest.raises(TypeError, match=r"Sequential takes fastcnn layers. Received: int at position 1"):
        fastcnn.Sequential(fastcnn.ReLU(), 3)


def test_sequential_accepts_a_list_and_a_seed_gives_the_same_model():
    a = fastcnn.Sequential([fastcnn.Linear(3, 2), fastcnn.ReLU()], seed=1)
    b = fastcnn.Sequential(fastcnn.Linear(3, 2), fastcnn.ReLU(), seed=1)
    c = fastcnn.Sequential(fastcnn.Linear(3, 2), fastcnn.ReLU(), seed=2)
    assert len(a) == 2 and isinstance(a[1], fastcnn.ReLU)
    np.testing.assert_array_equal(a[0].weight.data, b[0].weight.data)
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)


def test_training_memory_does_not_grow(rng):
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = tiny(seed=0)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)          # warm up
    tracemalloc.start()
    try:
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
        start, _ = tracemalloc.get_traced_memory()
        model.fit(x, y, epochs=40, batch_size=8, verbose=0, seed=1)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 64 * 1024, f"traced memory grew by {end - start} bytes over 320 steps"


# ---------------------------------------------------------------- end to end

@pytest.mark.long
def test_lenet5_reaches_97_percent_on_the_bundled_digits():
    # Exactly what `fastcnn demo` runs with its default settings (seeded).
    from fastcnn import cli
    accuracy, seconds, rate = cli.demo(verbose=0, out=lambda line: None)
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f} < 0.97"
    assert seconds > 0 and rate > 0
