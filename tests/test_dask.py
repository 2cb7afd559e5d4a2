"""Batch inference on Dask (the README's recipe): a model pickles small, predicts
through dask.array.map_blocks on a LocalCluster of worker processes as in process
(up to float32 rounding: each process times its own convolution paths), and each
Dask thread runs fastcnn's kernels on one OpenMP thread.

One cluster (2 worker processes, 1 thread each, loopback only) serves the module
and is closed after it, its worker processes checked gone.
"""
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="dask is not installed (pip install 'fastcnn[dask]')")
distributed = pytest.importorskip("distributed",
                                  reason="dask.distributed is not installed "
                                         "(pip install 'fastcnn[dask]')")

import dask.array as da  # noqa: E402

import fastcnn  # noqa: E402


def lenet():
    return fastcnn.Sequential(
        fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Conv2d(6, 16, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(400, 120), fastcnn.ReLU(), fastcnn.Linear(120, 10), seed=0)


class Residual(fastcnn.Module):
    """A Module model: conv, batch norm, a residual sum, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = fastcnn.Conv2d(1, 4, 3, padding=1)
        self.bn = fastcnn.BatchNorm2d(4)
        self.relu = fastcnn.ReLU()
        self.conv2 = fastcnn.Conv2d(4, 4, 3, padding=1)
        self.pool = fastcnn.MaxPool2d(4)
        self.flat = fastcnn.Flatten()
        self.fc = fastcnn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.fc(self.flat(self.pool(self.relu(self.conv2(h) + h))))


class OneKernelThread(distributed.WorkerPlugin):
    """The README's plugin: fastcnn's kernels on one thread in every worker, also
    where the environment that started the cluster exported OMP_NUM_THREADS."""

    def setup(self, worker):
        import fastcnn
        fastcnn.set_num_threads(1)


def kernel_threads(block):
    """One row per image: the thread count fastcnn's kernels get in this task."""
    return np.full((block.shape[0], 1), fastcnn.get_num_threads(), np.float32)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster started as the README does, with OMP_NUM_THREADS unset (the default)."""
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved
    try:
        with distributed.Client(cluster) as c:
            pids = list(c.run(os.getpid).values())
            yield c
    finally:
        cluster.close()
    for pid in pids:                    # no worker process outlives the cluster
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def predict_on_dask(model, x, chunk):
    """The recipe: model.predict over an NCHW array chunked along N."""
    xd = da.from_array(x, chunks=(chunk, 1, 28, 28))
    out = xd.map_blocks(model.predict, drop_axis=[2, 3], chunks=(xd.chunks[0], (10,)),
                        dtype=np.float32)
    return out.compute()


@pytest.mark.parametrize("make", [lenet, Residual], ids=["Sequential", "Module"])
def test_model_pickles_as_architecture_and_weights(make):
    model = make()
    x = images(8)
    expected = model.predict(x)          # compiled programs and frames exist now
    for p in model.parameters():
        p.grad += 1.0                    # gradients are training state: not pickled
    weights = sum(v.nbytes for v in model.state_dict().values())
    size = len(pickle.dumps(model))
    assert weights <= size <= weights + 16 * 1024, (size, weights)
    twin = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(twin.predict(x), expected)
    assert all(not p.grad.any() for p in twin.parameters())


@pytest.mark.parametrize("make", [lenet, Residual], ids=["Sequential", "Module"])
def test_map_blocks_predict_equals_predict_in_process(client, make):
    model = make()
    x = images(200, seed=1)
    # equal up to float32 rounding: each process (and thread count) times its own
    # choice of convolution path, and two paths round differently
    np.testing.assert_allclose(predict_on_dask(model, x, chunk=64), model.predict(x),
                               rtol=1e-5, atol=1e-6)


def test_each_dask_thread_runs_kernels_on_one_thread(client):
    # distributed's nanny sets OMP_NUM_THREADS=1 in each worker before it starts
    # (its distributed.nanny.pre-spawn-environ), and fastcnn reads it at import
    assert set(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}
    assert set(client.run(fastcnn.get_num_threads).values()) == {1}
    xd = da.from_array(images(64), chunks=(16, 1, 28, 28))
    seen = xd.map_blocks(kernel_threads, drop_axis=[2, 3], chunks=(xd.chunks[0], (1,)),
                         dtype=np.float32).compute()
    assert set(np.unique(seen)) == {1.0}


def test_the_plugin_restores_one_thread_where_a_count_was_inherited(client):
    client.run(fastcnn.set_num_threads, 2)   # as an exported OMP_NUM_THREADS=2 would
    assert set(client.run(fastcnn.get_num_threads).values()) == {2}
    client.register_plugin(OneKernelThread())
    assert set(client.run(fastcnn.get_num_threads).values()) == {1}
