"""Shared fixtures: a seeded generator, thread counts, optional torch."""
import numpy as np
import pytest

import fastcnn


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def num_threads(request):
    """Run the test once with 1 and once with 2 threads, then restore the setting."""
    old = fastcnn.get_num_threads()
    fastcnn.set_num_threads(request.param)
    yield request.param
    fastcnn.set_num_threads(old)


@pytest.fixture
def torch():
    """PyTorch in float32 on the CPU; the test is skipped when torch is absent."""
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float32)
    return torch
