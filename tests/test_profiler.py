"""fastcnn.profile: every step of the compiled models' calls inside the block
is timed and lands on its node's row; nothing outside the block is."""
import time

import numpy as np
import pytest

import fastcnn


def lenet():
    return fastcnn.Sequential(
        fastcnn.Conv2d(1, 6, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Conv2d(6, 16, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Flatten(), fastcnn.Linear(16 * 4 * 4, 10))


@pytest.fixture
def x(rng):
    return rng.standard_normal((8, 1, 28, 28)).astype(np.float32)


def test_training_calls_time_every_node_forward_and_backward(x):
    model = lenet()
    model.train()
    model(x)                            # compiled (and tuned) outside the block
    model.backward(np.ones((8, 10), np.float32))
    with fastcnn.profile() as prof:
        t0 = time.perf_counter()
        for _ in range(3):
            out = model(x)
            model.backward(np.ones_like(out))
        wall_ms = 1e3 * (time.perf_counter() - t0)
    rows = prof.rows()
    assert sorted(r["op"] for r in rows).count("conv2d") == 2
    for r in rows:
        assert r["forward_calls"] == 3 and r["forward_ms"] > 0
        assert r["backward_calls"] in (0, 3)
    convs = [r for r in rows if r["op"] == "conv2d"]
    assert {r["name"] for r in convs} == {"0", "3"}
    assert all(r["backward_calls"] == 3 and r["backward_ms"] > 0 for r in convs)
    assert convs[0]["shape"] in ((8, 6, 24, 24), (8, 16, 8, 8))
    assert 0 < prof.total_ms() <= wall_ms
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert [r["forward_ms"] + r["backward_ms"] for r in rows] == \
        sorted((r["forward_ms"] + r["backward_ms"] for r in rows), reverse=True)
    text = prof.table()
    assert text.splitlines()[0].split()[:3] == ["node", "op", "output"]
    assert "8x6x24x24" in text and text.splitlines()[-1].startswith("total ")


def test_nothing_is_timed_outside_the_block_and_inner_blocks_restore(x):
    model = lenet()
    model.eval()
    model.predict(x)
    with fastcnn.profile() as outer:
        model.predict(x)
        with fastcnn.profile() as inner:
            model.predict(x)
            model.predict(x)
        model.predict(x)
    model.predict(x)
    assert {r["forward_calls"] for r in outer.rows()} == {2}
    assert {r["forward_calls"] for r in inner.rows()} == {2}
    assert all(r["backward_calls"] == 0 for r in outer.rows())


def test_thread_count_timing_of_a_first_call_is_not_counted(x):
    model = fastcnn.freeze(lenet().eval())
    before = fastcnn.get_num_threads()
    fastcnn.set_num_threads(2)          # a first inference call on 2 threads times 2 and 1
    try:
        with fastcnn.profile() as prof:
            model.predict(x[:1])
    finally:
        fastcnn.set_num_threads(before)
    assert {r["forward_calls"] for r in prof.rows()} == {1}


def test_calls_from_several_threads_all_count(x):
    from concurrent.futures import ThreadPoolExecutor
    model = fastcnn.freeze(lenet().eval())
    model.predict(x)
    with fastcnn.profile() as prof:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: model.predict(x), range(40)))
    assert {r["forward_calls"] for r in prof.rows()} == {40}


def test_module_rows_carry_the_nested_attribute_names(rng):
    model = fastcnn.models.resnet20(num_classes=10).eval()
    with fastcnn.profile() as prof:
        model.predict(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    names = {r["name"] for r in prof.rows()}
    assert {"conv1", "layer1.0.conv1", "layer3.2.conv2", "fc"} <= names
