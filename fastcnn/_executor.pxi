# The executor: a compiled graph run from Cython, one C kernel call per step.
#
# A Program (built by fastcnn.compiler) holds the steps of one graph for one
# input shape and one mode, and the memory plan: every tensor the steps touch
# is a slot, either external (the caller's input x, the caller's output
# gradient dy) or a byte offset in one arena. Slots whose lifetimes do not
# overlap share bytes; an in-place step's output slot has its input's offset.
#
# A Program is immutable once built, so any number of threads may run it at
# once: each call works in a Frame of its own (the arena and the slot
# pointers). Inference frames go back to a small pool after the call; a
# training call keeps its frame for the backward pass (the caller holds it).
# No lock is taken, and the GIL is released inside every kernel.
#
# Parameters are read from their Parameter objects at every call (their type,
# shape and contiguity checked), because optimizers may rebind ``.data`` and
# ``.grad``. Results handed to the caller are fresh arrays, never arena bytes.
import time

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from . cimport _fastcnn as c
from ._config import get_num_threads

# Slot offsets are multiples of this (a cache line, and any vector's alignment).
ARENA_ALIGN = 64
_MAX_IDLE_FRAMES = 8

# The fastcnn.profiler.Profile that programs' forward and backward calls
# report their steps' times to, or None (fastcnn.profile sets it).
cdef object _profiler = None


def _set_profiler(profiler):
    """Make `profiler` (None: none) receive every step's time; returns the previous one."""
    global _profiler
    previous, _profiler = _profiler, profiler
    return previous


cdef inline double _now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + 1e-9 * t.tv_nsec


cdef float *_param_ptr(object a, tuple shape, bint writeable, str what) except NULL:
    """Data pointer of a parameter array, after the cheap checks that keep C in bounds."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t i, nd = len(shape)
    if cnp.PyArray_Check(a):
        arr = <cnp.ndarray> a
        if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(arr) \
                and cnp.PyArray_NDIM(arr) == nd and (cnp.PyArray_ISWRITEABLE(arr) or not writeable):
            for i in range(nd):
                if cnp.PyArray_DIMS(arr)[i] != <cnp.npy_intp> shape[i]:
                    break
            else:
                return <float *> cnp.PyArray_DATA(arr)
    raise ValueError(f"{what} must be a {'writeable ' if writeable else ''}C-contiguous "
                     f"float32 array of shape {shape}. "
                     f"Received: {type(a).__name__}"
                     + (f" of shape {a.shape}, dtype={a.dtype}" if isinstance(a, np.ndarray)
                        else ""))


# A native step's forward or backward: its arguments (a struct inside the Step
# object), the frame's slot pointers, its parameter pointers (fetched with the
# GIL before the run), whether its input gradient is needed, the thread count.
# Returns FASTCNN_OK or an error code of the kernels.
ctypedef int (*step_fn)(const void *args, void **ptr, float **par, int need_dx,
                        int nt) noexcept nogil

# The slots every step has (the first fields of each step's argument struct).
ctypedef struct step_slots:
    int x, y, dx, dy


cdef class Frame:
    """One call's memory: the arena, a pointer per slot, a parameter pointer table."""
    cdef object arena           # uint8 numpy array (None when the plan needs no bytes)
    cdef void **ptr
    cdef float **par
    cdef object x, dy           # the caller's arrays behind the external slots

    def __cinit__(self, tuple offsets, int64_t arena_bytes, int npar):
        cdef int i, n = len(offsets)
        cdef char *base = NULL
        self.ptr = <void **> malloc(max(n, 1) * sizeof(void *))
        self.par = <float **> malloc(max(npar, 1) * sizeof(float *))
        if self.ptr == NULL or self.par == NULL:
            raise MemoryError("fastcnn: out of memory for a frame")
        if arena_bytes:
            self.arena = _empty(arena_bytes + ARENA_ALIGN, np.uint8)
            base = <char *> cnp.PyArray_DATA(<cnp.ndarray> self.arena)
            base += (-<size_t> base) % ARENA_ALIGN
        for i in range(n):
            off = offsets[i]
            self.ptr[i] = NULL if off < 0 else <void *> (base + <int64_t> off)

    def __dealloc__(self):
        free(self.ptr)
        free(self.par)

    cdef void bind(self, int slot, object arr):
        self.ptr[slot] = cnp.PyArray_DATA(<cnp.ndarray> arr)

    cdef object array(self, int slot, tuple shape):
        """A float32 numpy view of a slot (for the steps that call Python); it
        keeps the frame alive."""
        cdef cnp.npy_intp dims[8]
        cdef int i, nd = len(shape)
        for i in range(nd):
            dims[i] = shape[i]
        arr = cnp.PyArray_SimpleNewFromData(nd, dims, cnp.NPY_FLOAT32, self.ptr[slot])
        cnp.set_array_base(arr, self)
        return arr


cdef class Step:
    """One node's forward and backward. A native step sets ``args`` (its
    argument struct, starting with its step_slots), ``fwd`` and ``bwd`` (C
    functions run without the GIL) and ``npar`` (how many parameter pointers
    ``fetch`` fills, with the GIL, before each run); a step with ``fwd`` NULL
    runs ``forward`` / ``backward`` with the GIL instead (Python code)."""
    cdef readonly object node
    cdef readonly bint has_params
    cdef void *args
    cdef step_slots *slots
    cdef step_fn fwd, bwd
    cdef int npar
    cdef str what                       # the op, for error messages

    def __init__(self, node):
        self.node = node
        self.what = node.op

    cdef void set_slots(self, step_slots *slots, dict given):
        slots.x, slots.y, slots.dx, slots.dy = given["x"], given["y"], given["dx"], given["dy"]
        self.slots = slots

    cdef int fetch(self, float **par, bint backward) except -1:
        """Fill the parameter pointers the next forward (or backward) reads."""
        return 0

    cdef int forward(self, Frame f, int nt) except -1:
        return 0

    cdef int backward(self, Frame f, bint need_dx, int nt) except -1:
        return 0


cdef class WeightStep(Step):
    """A step with a weight and an optional bias (conv2d, linear). Its parameter
    pointers: forward weight, bias; backward weight, weight.grad, bias.grad
    (NULL for no bias)."""
    cdef object weight, bias
    cdef tuple wshape, bshape

    cdef int fetch(self, float **par, bint backward) except -1:
        par[0] = _param_ptr(self.weight.data, self.wshape, False, "weight")
        if backward:
            par[1] = _param_ptr(self.weight.grad, self.wshape, True, "weight.grad")
            par[2] = NULL if self.bias is None else \
                _param_ptr(self.bias.grad, self.bshape, True, "bias.grad")
        else:
            par[1] = NULL if self.bias is None else \
                _param_ptr(self.bias.data, self.bshape, False, "bias")
        return 0


# An inference program slower than this on the threads asked for is not timed
# on fewer (its work feeds them; timing would only delay its first call).
cdef double THREADS_TIMED_MAX_S = 0.05
cdef int THREADS_TIMED_ROUNDS = 3
# A timed sample of a program faster than THREADS_SAMPLE_S is the mean of
# enough runs to last that long (at most THREADS_SAMPLE_MAX_RUNS): one run of
# LeNet-5 at batch 1 (9 us) is within the noise of the 5% rule, and 2 threads
# chosen on it ran 10.4 us against 9.1 on one.
cdef double THREADS_SAMPLE_S = 0.001
cdef int THREADS_SAMPLE_MAX_RUNS = 200
# A count of fewer threads than asked for is probed on these calls with that
# count (the powers of two from 4 to 1024): the call runs on all the threads
# asked for, and if it is 5% faster than the fastest call on the chosen
# count, the counts are timed again. Timed while another process held a
# core, the program would otherwise keep one thread for good (a frozen
# ResNet-18 at batch 1 on 2 shared cores: 13.2 ms on the count chosen so,
# 7.5 on both); a probe disturbed as well gets the next one (on a busy
# 2-core VM, a benchmark row of 13 calls of ResNet-18 at batch 1 on 2
# threads, whose only probe was then the 8th call, ran at its 1-thread
# speed: 22.8 ms, 13.6 in reruns). A probe costs one call,
# where timing again costs several samples: a latency spike on a fast
# program.
cdef tuple THREADS_PROBED_AT = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


cdef class Program:
    """The steps of one graph for one input shape and mode, and its memory plan."""
    cdef readonly tuple in_shape, out_shape
    cdef readonly bint training
    cdef readonly tuple offsets         # per slot: arena offset, or -1 (external)
    cdef readonly int64_t arena_bytes
    cdef readonly object graph
    cdef list steps
    cdef int n
    cdef void **args                    # per step: its argument struct (native steps)
    cdef step_fn *fwd
    cdef step_fn *bwd
    cdef int *par_base                  # per step: its first entry in the frame's par
    cdef int *acc_start                 # per step: its accumulations acc_*[start[i]:start[i+1]]
    cdef int *acc_dst
    cdef int *acc_src
    cdef int64_t *acc_n
    cdef int npar
    cdef int x_slot, y_slot, dy_slot, dx_slot
    cdef bint y_is_x, dx_is_dy          # output a view of the input / input grad of dy
    cdef int first_param                # index of the first step with parameters
    cdef list idle                      # frames ready for reuse (inference)
    cdef readonly dict threads_chosen   # inference: threads asked for -> threads run on
    cdef readonly int threads_timed     # times _time_threads ran
    cdef readonly dict threads_best     # inference: threads asked for -> fastest call on
                                        # the chosen count since it was timed (seconds)
    cdef dict calls_with                # inference: threads asked for -> calls with it
    cdef int settled_asked, settled_threads     # the last count whose choice is final

    def __init__(self, graph, steps, offsets, arena_bytes, slots, bint training,
                 accumulate=None):
        """accumulate: per step, (dst slot, src slot, n) sums dst += src run after
        its backward (the gradients of a tensor several steps read)."""
        self.graph, self.steps, self.training = graph, list(steps), training
        self.offsets, self.arena_bytes = tuple(offsets), arena_bytes
        self.in_shape, self.out_shape = tuple(slots["in_shape"]), tuple(slots["out_shape"])
        self.x_slot, self.y_slot = slots["x"], slots["y"]
        self.dy_slot, self.dx_slot = slots["dy"], slots["dx"]
        self.y_is_x, self.dx_is_dy = slots["y_is_x"], slots["dx_is_dy"]
        self.n = len(self.steps)
        cdef int i, n = max(self.n, 1)
        self.par_base = <int *> malloc(n * sizeof(int))
        self.args = <void **> malloc(n * sizeof(void *))
        self.fwd = <step_fn *> malloc(n * sizeof(step_fn))
        self.bwd = <step_fn *> malloc(n * sizeof(step_fn))
        accumulate = accumulate or [[] for _ in range(self.n)]
        cdef int q = sum(len(a) for a in accumulate)
        self.acc_start = <int *> malloc((n + 1) * sizeof(int))
        self.acc_dst = <int *> malloc(max(q, 1) * sizeof(int))
        self.acc_src = <int *> malloc(max(q, 1) * sizeof(int))
        self.acc_n = <int64_t *> malloc(max(q, 1) * sizeof(int64_t))
        if not (self.par_base and self.args and self.fwd and self.bwd and self.acc_start
                and self.acc_dst and self.acc_src and self.acc_n):
            raise MemoryError("fastcnn: out of memory for a program")
        q = 0
        for i in range(self.n):
            self.acc_start[i] = q
            for dst, src, count in accumulate[i]:
                self.acc_dst[q], self.acc_src[q], self.acc_n[q] = dst, src, count
                q += 1
        self.acc_start[self.n] = q
        self.first_param = self.n
        cdef Step s
        for i, s in enumerate(self.steps):
            self.args[i], self.fwd[i], self.bwd[i] = s.args, s.fwd, s.bwd
            self.par_base[i] = self.npar
            self.npar += s.npar
            if s.has_params and self.first_param == self.n:
                self.first_param = i
        self.idle = []
        self.threads_chosen = {}
        self.threads_best = {}
        self.calls_with = {}
        self.settled_asked = 0

    def __dealloc__(self):
        free(self.par_base)
        free(self.args)
        free(self.fwd)
        free(self.bwd)
        free(self.acc_start)
        free(self.acc_dst)
        free(self.acc_src)
        free(self.acc_n)

    def forward(self, x):
        """Run the steps on x (float32, C-contiguous, of in_shape). Returns
        (a fresh output array, the frame): in training the caller keeps the
        frame for backward; in inference it is back in the pool already."""
        cdef Frame f = self._frame()
        cdef int asked = get_num_threads(), nt, conv_choices = 0
        cdef bint watch
        cdef double t0
        f.x = x
        f.bind(self.x_slot, x)
        try:
            nt = self._threads(f, asked, &watch)
            probing = watch and nt == asked
            t0 = time.perf_counter()
            if probing:                 # its convolutions probe their kept threads too
                conv_choices = c.conv2d_tune_threads_chosen()
                c.conv2d_tune_probe_all(1)
            try:
                self._run(f, False, 0, True, nt, _profiler)
            finally:
                if probing:
                    c.conv2d_tune_probe_all(0)
            out = self._result(f, self.y_slot, self.out_shape, self.y_is_x, x)
            # a probe whose convolutions timed their threads again took that
            # timing's time too: no verdict (the next probe gives one)
            if watch and not (probing and c.conv2d_tune_threads_chosen() != conv_choices):
                self._watch(f, asked, nt, time.perf_counter() - t0)
        except BaseException:
            f.x = None
            raise
        if not self.training:
            f.x = None
            self._release(f)
            return out, None
        return out, f

    def backward(self, Frame f, dy, bint need_grad_input):
        """Accumulate every parameter gradient; returns a fresh input gradient
        (or None). dy: float32, C-contiguous, of out_shape (read only)."""
        f.dy = dy
        f.bind(self.dy_slot, dy)
        try:
            self._run(f, True, 0 if need_grad_input else self.first_param, need_grad_input,
                      get_num_threads(), _profiler)
            if not need_grad_input:
                return None
            return self._result(f, self.dx_slot, self.in_shape, self.dx_is_dy, dy)
        finally:
            f.dy = None

    cdef int _threads(self, Frame f, int asked, bint *watch) except -1:
        """The threads to run this call on: those asked for (fastcnn.get_num_threads),
        or, in inference, the fewer that ran the program faster when timed on its
        first call with that count (a small input cannot feed many threads, and
        waking them costs more than they save: batch-1 latency must not grow as
        threads are added); the calls THREADS_PROBED_AT counts run on those
        asked for (a probe). *watch: whether the call's time goes to _watch."""
        watch[0] = False
        if self.training or asked == 1:
            return asked
        if asked == self.settled_asked:     # no dictionary lookups: 1-2% of a 15 us call
            return self.settled_threads
        chosen = self.threads_chosen.get(asked)
        if chosen is None:
            chosen = self._time_threads(f, asked)
            self.threads_chosen[asked] = chosen
            self.threads_best[asked], self.calls_with[asked] = float("inf"), 1
            watch[0] = chosen < asked
            return chosen
        cdef int calls = self.calls_with[asked]
        if chosen == asked or calls >= THREADS_PROBED_AT[len(THREADS_PROBED_AT) - 1]:
            self.settled_asked, self.settled_threads = asked, chosen    # probed for the last time
            return chosen
        calls += 1
        self.calls_with[asked] = calls
        watch[0] = True
        return asked if calls in THREADS_PROBED_AT else chosen

    cdef int _watch(self, Frame f, int asked, int nt, double seconds) except -1:
        """After a call asking for more threads than the chosen count: keep the
        fastest call on that count; a probe on all the threads asked for that
        ran 5% faster than it has the counts timed again."""
        if nt != asked:
            self.threads_best[asked] = min(self.threads_best[asked], seconds)
        elif seconds < 0.95 * self.threads_best[asked]:
            self.threads_chosen[asked] = self._time_threads(f, asked)
            self.threads_best[asked] = float("inf")
        return 0

    cdef int _time_threads(self, Frame f, int asked) except -1:
        """Of asked, asked/2, ..., 1 threads (halving), the count whose runs of
        this inference program were fastest (the best of THREADS_TIMED_ROUNDS
        interleaved rounds, so that a disturbance hits every count alike, of
        samples lasting THREADS_SAMPLE_S or more);
        from one thread up, more only when at least 5% faster than the count
        chosen so far, so that within the timing's noise the latency never
        grows with the threads asked for. A program taking
        over THREADS_TIMED_MAX_S on `asked` threads feeds them all and is not
        timed further."""
        cdef list counts = []
        cdef int nt = asked
        self.threads_timed += 1
        while nt >= 1:
            counts.append(nt)
            nt //= 2
        best = [self._seconds(f, n, 1, True) for n in counts]    # fills caches, tunes
        if best[0] > THREADS_TIMED_MAX_S:
            return asked
        cdef int runs = max(1, min(THREADS_SAMPLE_MAX_RUNS, int(THREADS_SAMPLE_S / min(best))))
        for _ in range(THREADS_TIMED_ROUNDS):
            for i, n in enumerate(counts):
                best[i] = min(best[i], self._seconds(f, n, runs, False))
        cdef int chosen = len(counts) - 1             # one thread
        for i in range(len(counts) - 2, -1, -1):
            if best[i] < 0.95 * best[chosen]:
                chosen = i
        return counts[chosen]

    cdef double _seconds(self, Frame f, int nt, int runs, bint first) except -1.0:
        """Seconds per forward run on nt threads, of `runs` in a row; the first
        for nt runs once untimed before (it fills the caches and times the
        convolutions' paths for nt)."""
        cdef double t0
        cdef int i
        if first:
            self._run(f, False, 0, True, nt, None)
        t0 = time.perf_counter()
        for i in range(runs):
            self._run(f, False, 0, True, nt, None)
        return (time.perf_counter() - t0) / runs

    cdef int _run(self, Frame f, bint backward, int first, bint need_first, int nt,
                  object profiler) except -1:
        """Steps first..n-1 forward in order, or backward in reverse order (the
        input gradient of step `first` only if need_first), on nt threads. Each
        stretch of native steps runs without the GIL, released once: their
        parameter pointers are fetched before it. A profiler (not None) gets
        each step's seconds afterwards (its accumulations included)."""
        cdef int m = self.n - first
        cdef int j = 0, jj, end, i, failed
        cdef int need = need_first
        cdef step_fn fn
        cdef Step s
        cdef list steps = self.steps
        stamps = None if profiler is None else np.zeros(m + 1)
        cdef double *stamp = NULL if stamps is None else \
            <double *> cnp.PyArray_DATA(<cnp.ndarray> stamps)
        while j < m:
            s = steps[self._at(j, first, backward)]
            if s.fwd == NULL:                       # a step that runs Python code
                if stamp != NULL:
                    stamp[j] = _now()
                if backward:
                    s.backward(f, need_first or j < m - 1, nt)
                    if need_first or j < m - 1:
                        self._accumulate(f, self._at(j, first, backward), nt)
                else:
                    s.forward(f, nt)
                j += 1
                if stamp != NULL:
                    stamp[j] = _now()
                continue
            end = j
            while end < m:
                s = steps[self._at(end, first, backward)]
                if s.fwd == NULL:
                    break
                s.fetch(f.par + self.par_base[self._at(end, first, backward)], backward)
                end += 1
            failed = -1
            with nogil:
                if stamp != NULL:
                    stamp[j] = _now()
                for jj in range(j, end):
                    i = self._at(jj, first, backward)
                    fn = self.bwd[i] if backward else self.fwd[i]
                    if fn(self.args[i], f.ptr, f.par + self.par_base[i],
                          need or i > first, nt) != c.FASTCNN_OK:
                        failed = i
                        break
                    if backward and (need or i > first):
                        self._accumulate(f, i, nt)
                    if stamp != NULL:
                        stamp[jj + 1] = _now()
            if failed >= 0:
                s = steps[failed]
                raise MemoryError(f"{s.what}: out of memory for its scratch buffers")
            j = end
        c.fastcnn_pool_rest()       # no loop follows soon: idle workers sleep now
        if stamp != NULL:
            for j in range(m):
                s = steps[self._at(j, first, backward)]
                profiler._add(s.node, self.graph, backward, stamp[j + 1] - stamp[j])
        return 0

    cdef void _accumulate(self, Frame f, int i, int nt) noexcept nogil:
        """Add step i's partial input gradients into the tensors' gradients."""
        cdef int q
        for q in range(self.acc_start[i], self.acc_start[i + 1]):
            c.add_accumulate(<float *> f.ptr[self.acc_dst[q]], <float *> f.ptr[self.acc_src[q]],
                             self.acc_n[q], nt)

    cdef inline int _at(self, int j, int first, bint backward) noexcept nogil:
        """The step run j-th: forward from `first` up, backward from the last down."""
        return self.n - 1 - j if backward else first + j

    cdef object _result(self, Frame f, int slot, tuple shape, bint view, object src):
        if view:                    # nothing computed: a view of the caller's array
            return src.reshape(shape)
        out = _empty(shape)
        cdef cnp.ndarray o = out
        cdef size_t nbytes = o.nbytes
        cdef void *dst = cnp.PyArray_DATA(o)
        cdef void *p = f.ptr[slot]
        if nbytes:                  # (an empty result: no copy, and p may be NULL)
            with nogil:
                memcpy(dst, p, nbytes)
        return out

    def recycle(self, Frame f):
        """Take back a training frame whose backward pass is no longer needed."""
        f.x = f.dy = None
        self._release(f)

    cdef Frame _frame(self):
        try:
            return self.idle.pop()          # atomic under the GIL
        except IndexError:
            return Frame(self.offsets, self.arena_bytes, self.npar)

    cdef void _release(self, Frame f):
        if len(self.idle) < _MAX_IDLE_FRAMES:
            self.idle.append(f)
cdef class LayerStep(Step):
    """A layer that runs its own Python forward and backward (a subclass that
    overrides them): the one step that calls Python. A node with several
    inputs (attr ``in_shapes``: one shape per input) calls
    ``layer.forward(*xs)``, and its ``backward`` returns one gradient per input."""
    cdef step_slots sl
    cdef object layer
    cdef tuple in_shapes, out_shape, x_slots, dx_slots

    def __init__(self, node, slots, tuple in_shape, tuple out_shape):
        super().__init__(node)
        self.set_slots(&self.sl, slots)
        self.layer = node.layer
        self.in_shapes = tuple(node.attrs.get("in_shapes", (in_shape,)))
        self.x_slots = tuple(slots["x" + (str(j) if j else "")]
                             for j in range(len(self.in_shapes)))
        self.dx_slots = tuple(slots["dx" + (str(j) if j else "")]
                              for j in range(len(self.in_shapes)))
        self.out_shape = out_shape
        self.has_params = bool(self.layer.parameters())

    cdef int forward(self, Frame f, int nt) except -1:
        xs = [f.array(s, shape) for s, shape in zip(self.x_slots, self.in_shapes)]
        y = np.asarray(self.layer.forward(*xs), np.float32)
        if y.shape != self.out_shape:
            raise ValueError(f"{type(self.layer).__name__}.forward returned shape {y.shape}; "
                             f"it returned {self.out_shape} when the model was compiled")
        f.array(self.sl.y, self.out_shape)[...] = y
        return 0

    cdef int backward(self, Frame f, bint need_dx, int nt) except -1:
        dy = f.array(self.sl.dy, self.out_shape)
        dxs = self.layer.backward(dy, need_grad_input=need_dx)
        if not need_dx:
            return 0
        if len(self.in_shapes) == 1:
            dxs = (dxs,)
        for s, shape, dx in zip(self.dx_slots, self.in_shapes, dxs):
            f.array(s, shape)[...] = dx
        return 0
