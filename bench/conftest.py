"""pytest-benchmark glue: each case runs once per side (fastcnn, peer) and
thread count; both sides share a group, so `pytest bench/` prints them side
by side. The result is checked against the peer before anything is timed."""
import pytest


@pytest.fixture(params=[1, 2], ids=["1T", "2T"])
def threads(request):
    return request.param


@pytest.fixture(params=["fastcnn", "peer"])
def side(request):
    return request.param
