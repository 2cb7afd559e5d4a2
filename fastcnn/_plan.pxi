# Plans: a Sequential model's layers run back to back from Cython, with the
# buffers reused from call to call. Internal: used only by fastcnn.Sequential.
#
# A Plan is built for one input shape, one mode (training or inference) and one
# list of layers, AFTER a checked forward pass of that shape has gone through
# the layers (so every shape and argument has been validated once). From then
# on it calls the C kernels directly:
#
# - every activation, argmax and input-gradient buffer is allocated once, at
#   build time, and written again on every call (no allocation, no page faults;
#   memory stays flat);
# - a ReLU or sigmoid whose input is a buffer nobody reads again (the output of
#   a convolution, a linear layer or a pooling) writes in place; a ReLU's
#   backward works in place on the gradient buffer it receives (never on the
#   caller's array), and a ReLU feeding a max pooling has its mask applied by the
#   pooling's backward scatter (one pass instead of two); in inference the ReLU
#   runs after the pooling instead, on its smaller output (they commute);
# - the parameters are re-read (and their type, shape and contiguity checked) on
#   every call, because optimizers may rebind ``Parameter.data`` and ``.grad``.
#
# What the caller gets is never a plan buffer: ``forward`` returns a copy of the
# last output and ``backward`` a fresh input gradient, so results held by the
# user are never overwritten by a later call.
#
# Threads: a plan's buffers belong to one call at a time. ``acquire`` (with the
# GIL held, so atomic) marks the plan busy; a second Python thread that calls
# the same model meanwhile is sent to the checked, allocating path instead.

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr, iptr
from ._config import get_num_threads
# _geometry (_conv2d.pxi) and _pool2d_shape (_pool2d.pxi) are defined in this module


cdef float *_plan_param(object a, tuple shape, bint writeable, str what) except NULL:
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
    raise ValueError(f"{what} must be a C-contiguous float32 array of shape {shape}. "
                     f"Received: {type(a).__name__}"
                     + (f" of shape {a.shape}, dtype={a.dtype}" if isinstance(a, np.ndarray)
                        else ""))


cdef class Op:
    """One layer of a plan: forward(x) -> y and backward(dy) -> dx (or None)."""
    cdef object layer
    cdef tuple in_shape, out_shape
    cdef object gx              # input-gradient buffer (None if never needed)
    cdef bint training          # the plan's mode (every layer's, checked by Plan.matches)
    cdef bint dy_owned          # backward's dy is a plan buffer (may be overwritten)

    cdef object forward(self, object x, int nt):
        raise NotImplementedError

    cdef object backward(self, object dy, bint need, int nt):
        raise NotImplementedError


cdef class ConvOp(Op):
    cdef c.conv2d_shape s
    cdef object y, x
    cdef tuple wshape, bshape

    def __init__(self, layer, tuple in_shape):
        g = _geometry(in_shape, layer.weight.data.shape, layer.stride, layer.padding)
        self.s.N, self.s.C, self.s.H, self.s.W, self.s.K, self.s.R, self.s.S = g[:7]
        self.s.sh, self.s.sw, self.s.ph, self.s.pw, self.s.P, self.s.Q = g[7:]
        self.wshape = (self.s.K, self.s.C, self.s.R, self.s.S)
        self.bshape = (self.s.K,)
        self.out_shape = (self.s.N, self.s.K, self.s.P, self.s.Q)
        self.y = np.empty(self.out_shape, np.float32)

    cdef object forward(self, object x, int nt):
        layer = self.layer
        cdef const float *pw = _plan_param(layer.weight.data, self.wshape, False, "weight")
        cdef const float *pb = NULL
        if layer.bias is not None:
            pb = _plan_param(layer.bias.data, self.bshape, False, "bias")
        cdef float *py = fptr(self.y)
        cdef const float *px = fptr(x)
        cdef int err
        with nogil:
            err = c.conv2d_forward(py, px, pw, pb, &self.s, nt)
        if err != c.FASTCNN_OK:
            raise MemoryError("conv2d: out of memory for the im2col scratch buffer")
        self.x = x if self.training else None
        return self.y

    cdef object backward(self, object dy, bint need, int nt):
        layer = self.layer
        cdef const float *pw = _plan_param(layer.weight.data, self.wshape, False, "weight")
        cdef float *pgw = _plan_param(layer.weight.grad, self.wshape, True, "weight.grad")
        cdef float *pgb = NULL
        if layer.bias is not None:
            pgb = _plan_param(layer.bias.grad, self.bshape, True, "bias.grad")
        if need and self.gx is None:
            self.gx = np.empty(self.in_shape, np.float32)
        cdef float *pgx = fptr(self.gx) if need else NULL
        cdef const float *pdy = fptr(dy)
        cdef const float *px = fptr(self.x)
        cdef int err = c.FASTCNN_OK
        with nogil:
            if pgx != NULL:
                err = c.conv2d_backward_data(pgx, pdy, pw, &self.s, nt)
            if err == c.FASTCNN_OK:
                err = c.conv2d_backward_weight(pgw, pgb, pdy, px, &self.s, nt)
        if err != c.FASTCNN_OK:
            raise MemoryError("conv2d_backward: out of memory for the im2col scratch buffer")
        return self.gx if need else None


cdef class LinearOp(Op):
    cdef int64_t N, F, O
    cdef object y, x
    cdef tuple wshape, bshape

    def __init__(self, layer, tuple in_shape):
        self.F, self.O = layer.in_features, layer.out_features
        self.N = int(np.prod(in_shape)) // self.F
        self.wshape, self.bshape = (self.O, self.F), (self.O,)
        self.out_shape = in_shape[:len(in_shape) - 1] + (self.O,)
        self.y = np.empty(self.out_shape, np.float32)

    cdef object forward(self, object x, int nt):
        layer = self.layer
        cdef const float *pw = _plan_param(layer.weight.data, self.wshape, False, "weight")
        cdef const float *pb = NULL
        if layer.bias is not None:
            pb = _plan_param(layer.bias.data, self.bshape, False, "bias")
        cdef float *py = fptr(self.y)
        cdef const float *px = fptr(x)
        cdef int err
        with nogil:
            err = c.linear_forward(py, px, pw, pb, self.N, self.F, self.O, nt)
        if err != c.FASTCNN_OK:
            raise MemoryError("linear: out of memory for the matrix-multiply buffers")
        self.x = x if self.training else None
        return self.y

    cdef object backward(self, object dy, bint need, int nt):
        layer = self.layer
        cdef const float *pw = _plan_param(layer.weight.data, self.wshape, False, "weight")
        cdef float *pgw = _plan_param(layer.weight.grad, self.wshape, True, "weight.grad")
        cdef float *pgb = NULL
        if layer.bias is not None:
            pgb = _plan_param(layer.bias.grad, self.bshape, True, "bias.grad")
        if need and self.gx is None:
            self.gx = np.empty(self.in_shape, np.float32)
        cdef float *pgx = fptr(self.gx) if need else NULL
        cdef const float *pdy = fptr(dy)
        cdef const float *px = fptr(self.x)
        cdef int err
        with nogil:
            err = c.linear_backward(pgx, pgw, pgb, pdy, px, pw, self.N, self.F, self.O, nt)
        if err != c.FASTCNN_OK:
            raise MemoryError("linear_backward: out of memory for the matrix-multiply buffers")
        return self.gx if need else None


cdef class ActivationOp(Op):
    """ReLU (sigmoid=False) or sigmoid, in place when the input may be overwritten."""
    cdef bint sigmoid, in_place, masked_by_next, after_next
    cdef int64_t n
    cdef object y, buf

    def __init__(self, layer, tuple in_shape, bint sigmoid, bint in_place):
        self.sigmoid, self.in_place = sigmoid, in_place
        self.out_shape = in_shape
        self.n = int(np.prod(in_shape))
        self.buf = None if in_place else np.empty(in_shape, np.float32)

    cdef object forward(self, object x, int nt):
        if self.after_next:
            return x            # the max pooling applies relu to its (smaller) output
        y = x if self.in_place else self.buf
        cdef float *py = fptr(y)
        cdef const float *px = fptr(x)
        with nogil:
            if self.sigmoid:
                c.sigmoid_forward(py, px, self.n, nt)
            else:
                c.relu_forward(py, px, self.n, nt)
        self.y = y if self.training else None
        return y

    cdef object backward(self, object dy, bint need, int nt):
        if not need:
            return None
        if self.masked_by_next and self.dy_owned:
            return dy           # the max pooling's scatter already applied relu's mask
        if self.dy_owned:
            dx = dy
        else:
            if self.gx is None:
                self.gx = np.empty(self.in_shape, np.float32)
            dx = self.gx
        cdef float *pdx = fptr(dx)
        cdef const float *pdy = fptr(dy)
        cdef const float *py = fptr(self.y)
        with nogil:
            if self.sigmoid:
                c.sigmoid_backward(pdx, pdy, py, self.n, nt)
            else:
                c.relu_backward(pdx, pdy, py, self.n, nt)
        return dx


cdef class PoolOp(Op):
    """MaxPool2d (avg=False) or AvgPool2d."""
    cdef c.pool2d_shape s
    cdef bint avg, relu_mask, relu_after
    cdef int incl
    cdef object y, idx
    cdef object relu_op         # the ActivationOp whose mask this pooling applies

    def __init__(self, layer, tuple in_shape, bint avg):
        d = _pool2d_shape(in_shape, layer.kernel_size, layer.stride, layer.padding)
        self.s.N, self.s.C, self.s.H, self.s.W = d["N"], d["C"], d["H"], d["W"]
        self.s.R, self.s.S, self.s.sh, self.s.sw = d["R"], d["S"], d["sh"], d["sw"]
        self.s.ph, self.s.pw, self.s.P, self.s.Q = d["ph"], d["pw"], d["P"], d["Q"]
        self.avg = avg
        self.incl = 1 if avg and layer.count_include_pad else 0
        self.out_shape = (self.s.N, self.s.C, self.s.P, self.s.Q)
        self.y = np.empty(self.out_shape, np.float32)
        self.idx = None if avg else np.empty(self.out_shape, np.int32)

    cdef object forward(self, object x, int nt):
        cdef float *py = fptr(self.y)
        cdef const float *px = fptr(x)
        cdef int32_t *pi = NULL if self.avg else iptr(self.idx)
        cdef int64_t n = self.s.N * self.s.C * self.s.P * self.s.Q
        with nogil:
            if self.avg:
                c.avgpool2d_forward(py, px, &self.s, self.incl, nt)
            else:
                c.maxpool2d_forward(py, pi, px, &self.s, nt)
            if self.relu_after:
                c.relu_forward(py, py, n, nt)
        return self.y

    cdef object backward(self, object dy, bint need, int nt):
        if not need:
            return None
        if self.gx is None:
            self.gx = np.empty(self.in_shape, np.float32)
        cdef float *pdx = fptr(self.gx)
        cdef const float *pdy = fptr(dy)
        cdef const int32_t *pi = NULL if self.avg else iptr(self.idx)
        cdef const float *pmask = NULL
        if self.relu_mask:
            pmask = fptr((<ActivationOp> self.relu_op).y)
        cdef int err = c.FASTCNN_OK
        with nogil:
            if self.avg:
                err = c.avgpool2d_backward(pdx, pdy, &self.s, self.incl, nt)
            elif pmask != NULL:
                c.maxpool2d_relu_backward(pdx, pdy, pi, pmask, &self.s, nt)
            else:
                c.maxpool2d_backward(pdx, pdy, pi, &self.s, nt)
        if err != c.FASTCNN_OK:
            raise MemoryError("avg_pool2d_backward: out of memory for its scratch rows")
        return self.gx


cdef class FlattenOp(Op):
    def __init__(self, layer, tuple in_shape, tuple out_shape):
        self.out_shape = out_shape

    cdef object forward(self, object x, int nt):
        return x.reshape(self.out_shape)

    cdef object backward(self, object dy, bint need, int nt):
        return dy.reshape(self.in_shape) if need else None


# Layers whose output buffer no backward pass reads (their own backward needs
# their input or indices): an activation right after them may write in place.
_IN_PLACE_OK = ("Conv2d", "Linear", "MaxPool2d", "AvgPool2d")


cdef class Plan:
    """The ops of one list of layers for one input shape and one mode."""
    cdef readonly tuple layers, shape, out_shape
    cdef readonly bint training
    cdef list ops
    cdef bint busy
    cdef int first_param         # index of the first layer with parameters

    def __init__(self, layers, tuple shape, bint training, list shapes):
        """shapes: the input shape of every layer and the last output shape, as
        recorded by a checked forward pass of an input of `shape`."""
        from . import layers as L
        kinds = {L.Conv2d: "Conv2d", L.Linear: "Linear", L.ReLU: "ReLU", L.Sigmoid: "Sigmoid",
                 L.MaxPool2d: "MaxPool2d", L.AvgPool2d: "AvgPool2d", L.Flatten: "Flatten"}
        self.layers, self.shape, self.training = tuple(layers), shape, training
        self.ops = []
        self.first_param = len(layers)
        producer = None                  # kind of the layer that owns the current buffer
        cdef Op op
        for i, layer in enumerate(layers):
            kind = kinds[type(layer)]
            ins, outs = tuple(shapes[i]), tuple(shapes[i + 1])
            if kind == "Conv2d":
                op = ConvOp(layer, ins)
            elif kind == "Linear":
                op = LinearOp(layer, ins)
            elif kind in ("ReLU", "Sigmoid"):
                op = ActivationOp(layer, ins, kind == "Sigmoid", producer in _IN_PLACE_OK)
            elif kind in ("MaxPool2d", "AvgPool2d"):
                op = PoolOp(layer, ins, kind == "AvgPool2d")
            else:
                op = FlattenOp(layer, ins, outs)
            op.layer, op.in_shape, op.training = layer, ins, training
            if op.out_shape != outs:
                raise AssertionError(f"plan: {kind} output {op.out_shape} != {outs}")
            if kind != "Flatten":
                producer = kind
            if kind in ("Conv2d", "Linear") and self.first_param == len(layers):
                self.first_param = i
            self.ops.append(op)
        self.out_shape = tuple(shapes[len(shapes) - 1])
        # dy of op i is a plan buffer when some later op (other than Flatten) made it
        owned = False
        for i in range(len(self.ops) - 1, -1, -1):
            op = self.ops[i]
            op.dy_owned = owned
            owned = owned or not isinstance(op, FlattenOp)
        # ReLU directly before a max pooling. Training: the pooling's backward
        # applies relu's mask. Inference: max pooling commutes with relu (both
        # monotone; a NaN stays a NaN), so relu runs on the pooled output.
        for i in range(len(self.ops) - 1):
            if isinstance(self.ops[i], ActivationOp) and isinstance(self.ops[i + 1], PoolOp):
                act, pool = <ActivationOp> self.ops[i], <PoolOp> self.ops[i + 1]
                if act.sigmoid or pool.avg:
                    continue
                if training:
                    act.masked_by_next = pool.relu_mask = True
                    pool.relu_op = act
                else:
                    act.after_next = pool.relu_after = True

    def matches(self, layers, tuple shape, bint training):
        if shape != self.shape or training != self.training or len(layers) != len(self.layers):
            return False
        for a, b in zip(layers, self.layers):
            if a is not b or a.training != training:
                return False
        return True

    def acquire(self):
        """Mark the plan busy; False if another thread is using it."""
        if self.busy:
            return False
        self.busy = True
        return True

    def release(self):
        self.busy = False

    def forward(self, x):
        """The model's output for x (float32, C-contiguous, of the plan's shape), a fresh array."""
        cdef int nt = get_num_threads()
        cdef Op op
        for op in self.ops:
            x = op.forward(x, nt)
        return x.copy()

    def backward(self, dy, bint need_grad_input):
        """Parameter gradients accumulated; returns a fresh input gradient or None."""
        cdef int nt = get_num_threads()
        cdef int first = 0 if need_grad_input else self.first_param
        cdef int i
        cdef Op op
        for i in range(len(self.ops) - 1, first - 1, -1):
            op = self.ops[i]
            dy = op.backward(dy, need_grad_input or i > first, nt)
        if not need_grad_input:
            return None
        return dy.copy() if self.ops else dy
