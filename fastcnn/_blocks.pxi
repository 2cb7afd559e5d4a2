# Bindings of csrc/blocks.c: the memory of the large arrays fastcnn returns.
#
# An array of _BLOCKS_MIN bytes or more is made by numpy with fastcnn's
# allocator in place of numpy's own (NumPy's memory handlers, NEP 49): it is an
# ordinary array that owns its data, and numpy frees it through the same
# handler, which keeps the block for the next array of its size class
# instead of returning it to the system (csrc/blocks.c says why and how much).
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport SIZE_MAX, int64_t, uint8_t
from libc.string cimport memset, strncpy

import numpy as np

cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil

    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)

# Below this many bytes glibc's malloc reuses freed blocks itself.
_BLOCKS_MIN = 1 << 20


cdef void *_blocks_malloc(void *ctx, size_t n) noexcept nogil:
    return c.fastcnn_block_get(n)


cdef void *_blocks_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    if elsize and nelem > SIZE_MAX // elsize:
        return NULL
    cdef void *p = c.fastcnn_block_get(nelem * elsize)
    if p:
        memset(p, 0, nelem * elsize)
    return p


cdef void *_blocks_realloc(void *ctx, void *p, size_t n) noexcept nogil:
    return c.fastcnn_block_resize(p, n)


cdef void _blocks_free(void *ctx, void *p, size_t n) noexcept nogil:
    c.fastcnn_block_put(p)


cdef PyDataMem_Handler _blocks_handler
strncpy(_blocks_handler.name, b"fastcnn_blocks", 127)
_blocks_handler.version = 1
_blocks_handler.allocator.ctx = NULL
_blocks_handler.allocator.malloc = _blocks_malloc
_blocks_handler.allocator.calloc = _blocks_calloc
_blocks_handler.allocator.realloc = _blocks_realloc
_blocks_handler.allocator.free = _blocks_free
cdef object _blocks_capsule = PyCapsule_New(&_blocks_handler, "mem_handler", NULL)


cdef bint _blocks_on():
    """False when FASTCNN_CACHE_MB=0: numpy's own allocator for every array."""
    cdef int64_t out[5]
    c.fastcnn_blocks_stats(out)
    return out[4] > 0


cdef bint _BLOCKS_ON = _blocks_on()


cdef object _empty(shape, dtype=np.float32):
    """np.empty(shape, dtype), from fastcnn's block cache when it is large."""
    cdef Py_ssize_t count = 4 if dtype is np.float32 else np.dtype(dtype).itemsize
    for n in ((shape,) if isinstance(shape, int) else shape):
        count *= n
    if count < _BLOCKS_MIN or not _BLOCKS_ON:
        return np.empty(shape, dtype)
    old = PyDataMem_SetHandler(_blocks_capsule)
    try:
        return np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(old)


def empty_cache():
    """Free the memory fastcnn keeps for its next large arrays.

    fastcnn keeps the memory of the large arrays it returned (1 MiB or more)
    after they are freed, up to FASTCNN_CACHE_MB megabytes (default 256; 0 keeps
    none), so that the next array of that size skips the system's page
    zeroing. Returns the number of bytes freed."""
    return c.fastcnn_blocks_release()


def _blocks_stats():
    """Test hook: the block cache's (cached bytes, cached blocks, hits, misses, cap)."""
    cdef int64_t out[5]
    c.fastcnn_blocks_stats(out)
    return tuple(out[i] for i in range(5))


def _with_blocks(fn):
    """Test hook: fn() with fastcnn's allocator as numpy's (whatever the size)."""
    old = PyDataMem_SetHandler(_blocks_capsule)
    try:
        return fn()
    finally:
        PyDataMem_SetHandler(old)
