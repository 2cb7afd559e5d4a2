"""The memory of large returned arrays (csrc/blocks.c, fastcnn/_blocks.pxi):
numpy's allocator is fastcnn's while a binding makes a large output, and the
freed blocks are cached, bounded, reused, and thread- and fork-safe."""
import textwrap
import threading

import numpy as np

import fastcnn
from fastcnn import _native
from fastcnn import functional as F

from subproc import PACKAGE_PARENT, run_python

MIB = 1 << 20


def handler(a):
    """The name of the numpy memory handler that owns a's data."""
    core = np._core if hasattr(np, "_core") else np.core         # numpy 2 / numpy 1
    return core.multiarray.get_handler_name(a)


def stats():
    cached, blocks, hits, misses, cap = _native._blocks_stats()
    return {"cached": cached, "blocks": blocks, "hits": hits, "misses": misses, "cap": cap}


def big(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def test_large_outputs_use_the_cache_and_small_ones_numpy():
    x = big(4, 8, 96, 96)                                   # 1.2 MB
    y, idx = F.max_pool2d(x, 2, return_indices=True)        # 0.3 MB each
    dx = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert handler(F.relu(x)) == "fastcnn_blocks"
    assert handler(dx) == "fastcnn_blocks"
    assert handler(y) == handler(idx) == "default_allocator"
    assert dx.flags.owndata and dx.flags.writeable and dx.ctypes.data % 64 == 0


def test_a_freed_block_serves_the_next_array_of_its_size():
    fastcnn.empty_cache()
    x = big(2, 16, 128, 128)                                # 2 MiB
    y = F.relu(x)
    address = y.ctypes.data
    del y
    before = stats()
    assert before["cached"] >= x.nbytes and before["blocks"] == 1
    y = F.sigmoid(x)                                        # reuses the block
    assert y.ctypes.data == address
    assert stats()["hits"] == before["hits"] + 1
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)


def test_reused_blocks_hold_the_new_results_not_the_old():
    for seed in range(3):
        x = big(3, 7, 111, 113, seed=seed)
        np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
        g = big(*x.shape, seed=seed + 10)
        np.testing.assert_array_equal(F.relu_backward(g, x), np.where(x > 0, g, 0))


def test_empty_cache_frees_every_cached_block():
    F.relu(big(2, 16, 128, 128))
    assert stats()["cached"] > 0
    freed = fastcnn.empty_cache()
    assert freed > 0
    assert stats()["cached"] == 0 and stats()["blocks"] == 0
    assert fastcnn.empty_cache() == 0


def test_the_cache_never_holds_more_than_its_cap_or_32_blocks():
    fastcnn.empty_cache()
    arrays = [_native._with_blocks(lambda n=n: np.empty(n * MIB + 4096, np.uint8))
              for n in range(1, 40)]
    del arrays                                              # 39 blocks, 780 MiB freed
    s = stats()
    assert 0 < s["cached"] <= s["cap"] and s["blocks"] <= 32
    fastcnn.empty_cache()


def test_numpy_can_grow_shrink_and_zero_the_blocks():
    a = _native._with_blocks(lambda: np.arange(3 * MIB, dtype=np.uint8))
    assert handler(a) == "fastcnn_blocks"
    a.resize(5 * MIB, refcheck=False)                       # realloc: contents kept
    np.testing.assert_array_equal(a[: 3 * MIB], np.arange(3 * MIB, dtype=np.uint8))
    assert (a[3 * MIB:] == 0).all()                         # numpy zero-fills the growth
    a.resize(MIB // 2, refcheck=False)
    np.testing.assert_array_equal(a, np.arange(MIB // 2, dtype=np.uint8))
    z = _native._with_blocks(lambda: np.zeros(2 * MIB, np.float32))   # calloc
    assert handler(z) == "fastcnn_blocks" and not z.any()
    assert handler(_native._with_blocks(lambda: np.empty(0, np.float32))) == "fastcnn_blocks"


def test_threads_allocating_and_freeing_at_once_get_their_own_results():
    errors = []

    def work(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(40):
                x = r.standard_normal((1, 1, 512, int(r.integers(256, 1300))), dtype=np.float32)
                y = F.relu(x)
                if not np.array_equal(y, np.maximum(x, 0)):
                    errors.append(seed)
        except Exception as e:                              # pragma: no cover
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def run_checked(code, **env):
    r = run_python(textwrap.dedent(code), PACKAGE_PARENT, timeout=120, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_fastcnn_cache_mb_0_leaves_every_array_to_numpy():
    out = run_checked("""
        import numpy as np
        from fastcnn import _native, functional as F
        y = F.relu(np.ones((4, 1024, 1024), np.float32))
        print((np._core if hasattr(np, '_core') else np.core).multiarray.get_handler_name(y))
        a = _native._with_blocks(lambda: np.empty(4 << 20, np.uint8))
        del a                           # the handler's own blocks are not kept either
        print(_native._blocks_stats())
        """, FASTCNN_CACHE_MB="0")
    name, counts = out.splitlines()
    cached, blocks, _, _, cap = eval(counts)
    assert name == "default_allocator" and (cached, blocks, cap) == (0, 0, 0)


def test_fastcnn_cache_mb_sets_the_cap():
    out = run_checked("""
        from fastcnn import _native
        print(_native._blocks_stats()[4])
        """, FASTCNN_CACHE_MB="64")
    assert int(out) == 64 * MIB


def test_forks_while_other_threads_allocate_do_not_hang():
    run_checked("""
        import os, threading
        import numpy as np
        from fastcnn import functional as F
        x = np.ones((2, 1024, 1024), np.float32)
        stop = False
        def churn():
            while not stop:
                F.relu(x)
        t = threading.Thread(target=churn)
        t.start()
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                ok = F.relu(-x).sum() == 0 and F.relu(x).sum() == x.size
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        stop = True
        t.join()
        """)
