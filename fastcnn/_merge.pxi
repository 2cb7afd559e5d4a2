# Bindings of csrc/merge.c: the element-wise sum and product of two branches
# with numpy broadcasting (a residual connection, squeeze-and-excitation) and
# the concatenation along a dim, forward and backward; dropout (a product
# with a random mask); and the executor's steps for them.
import math

import numpy as np
from libc.stdlib cimport free, malloc

from . cimport _fastcnn as c
from ._fastcnn cimport fptr
from ._checks import as_float, as_float32, as_int, check_shape
from ._config import get_num_threads


def add(a, b, *, reference=False):
    """Element-wise sum with numpy broadcasting (a residual connection, a bias).

    Args:
        a, b: arrays whose shapes broadcast (numpy's rule: aligned at the last
            dim, each dim equal or 1), any real dtype (converted to float32).
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array ``a + b`` of the broadcast shape.

    Raises:
        ValueError: the shapes do not broadcast (naming both), or one is empty.

    Example:
        >>> fastcnn.functional.add(np.ones((2, 3)), np.arange(3))
        array([[1., 2., 3.],
               [1., 2., 3.]], dtype=float32)
    """
    return _merge_binary(a, b, False, reference)


def add_backward(grad_y, a_shape=None, b_shape=None, *, reference=False):
    """Gradients of ``add(a, b)``: grad_y summed over the dims each input was
    broadcast along, so each has its input's shape (default: grad_y's shape).

    Returns:
        (grad_a, grad_b), fresh float32 arrays.
    """
    g = as_float32(grad_y, "grad_y")
    a_shape = g.shape if a_shape is None else tuple(a_shape)
    b_shape = g.shape if b_shape is None else tuple(b_shape)
    _merge_check_grad(g, a_shape, b_shape, "add_backward")
    plan = _merge_plan(a_shape, b_shape)
    return (_merge_reduce_to(g, None, a_shape, plan, 0, reference),
            _merge_reduce_to(g, None, b_shape, plan, 1, reference))


def mul(a, b, *, reference=False):
    """Element-wise product with numpy broadcasting (squeeze-and-excitation's
    (N, C, 1, 1) channel weights times (N, C, H, W) maps).

    Args:
        a, b: arrays whose shapes broadcast, any real dtype (converted to float32).
        reference: use the plain reference kernel (the test oracle).

    Returns:
        float32 array ``a * b`` of the broadcast shape.

    Raises:
        ValueError: the shapes do not broadcast (naming both), or one is empty.

    Example:
        >>> fastcnn.functional.mul(np.ones((2, 3)), np.arange(3))
        array([[0., 1., 2.],
               [0., 1., 2.]], dtype=float32)
    """
    return _merge_binary(a, b, True, reference)


def mul_backward(grad_y, a, b, *, reference=False):
    """Gradients of ``mul(a, b)``: ``grad_y * b`` and ``grad_y * a``, each
    summed over the dims its input was broadcast along (its input's shape).

    Returns:
        (grad_a, grad_b), fresh float32 arrays.
    """
    g = as_float32(grad_y, "grad_y")
    aa, ba = as_float32(a, "a"), as_float32(b, "b")
    _merge_check_grad(g, aa.shape, ba.shape, "mul_backward")
    plan = _merge_plan(aa.shape, ba.shape)
    return (_merge_reduce_to(g, ba, aa.shape, plan, 0, reference),
            _merge_reduce_to(g, aa, ba.shape, plan, 1, reference))


def cat(arrays, dim=1):
    """Concatenation along ``dim`` (torch.cat; channels by default: DenseNet,
    Inception).

    Args:
        arrays: a sequence of one or more arrays of one rank whose shapes agree
            except along ``dim``, any real dtype (converted to float32).
        dim: the dim to join along, negative counting from the end. Default 1.

    Returns:
        float32 array.

    Raises:
        ValueError: no arrays, ranks or shapes that do not fit (naming them),
            ``dim`` out of range.

    Example:
        >>> fastcnn.functional.cat([np.zeros((2, 3, 4, 4)), np.ones((2, 5, 4, 4))]).shape
        (2, 8, 4, 4)
    """
    xs = [as_float32(x, f"arrays[{i}]") for i, x in enumerate(_merge_sequence(arrays))]
    shape, d = _merge_cat_shape([x.shape for x in xs], dim)
    y = _empty(shape)
    outer, widths = _merge_cat_sizes([x.shape for x in xs], d)
    cdef int k = len(xs)
    cdef const float **px = <const float **> malloc(k * sizeof(float *))
    cdef int64_t *pw = <int64_t *> malloc(k * sizeof(int64_t))
    if px == NULL or pw == NULL:
        free(px)
        free(pw)
        raise MemoryError("fastcnn: out of memory for cat")
    for i in range(k):
        px[i], pw[i] = fptr(xs[i]), widths[i]
    cdef float *py = fptr(y)
    cdef int64_t o = outer
    cdef int nt = get_num_threads()
    with nogil:
        c.cat_forward(py, px, pw, k, o, nt)
    free(px)
    free(pw)
    return y


def cat_backward(grad_y, sizes, dim=1):
    """Gradients of ``cat``: grad_y split along ``dim`` into pieces of
    ``sizes`` (the inputs' extents along dim).

    Returns:
        list of fresh float32 arrays, one per input.
    """
    g = as_float32(grad_y, "grad_y")
    sizes = [as_int(s, f"sizes[{i}]") for i, s in enumerate(_merge_sequence(sizes, "sizes"))]
    d = _merge_dim(dim, g.ndim, "cat_backward")
    if any(s < 1 for s in sizes) or sum(sizes) != g.shape[d]:
        raise ValueError(f"cat_backward: sizes must be positive and sum to "
                         f"grad_y.shape[{d}]={g.shape[d]}. Received: sizes={sizes}")
    shapes = [g.shape[:d] + (s,) + g.shape[d + 1:] for s in sizes]
    dxs = [_empty(shape) for shape in shapes]
    outer, widths = _merge_cat_sizes(shapes, d)
    cdef int k = len(dxs)
    cdef float **px = <float **> malloc(k * sizeof(float *))
    cdef int64_t *pw = <int64_t *> malloc(k * sizeof(int64_t))
    if px == NULL or pw == NULL:
        free(px)
        free(pw)
        raise MemoryError("fastcnn: out of memory for cat_backward")
    for i in range(k):
        px[i], pw[i] = fptr(dxs[i]), widths[i]
    cdef const float *pg = fptr(g)
    cdef int64_t o = outer
    cdef int nt = get_num_threads()
    with nogil:
        c.cat_backward(px, pg, pw, k, o, nt)
    free(px)
    free(pw)
    return dxs


# ---- shapes ---------------------------------------------------------------------

def _merge_broadcast_shape(a, b, what="add"):
    """The broadcast shape of shapes a and b (numpy's rule); ValueError naming both."""
    a, b = tuple(a), tuple(b)
    if 0 in a or 0 in b:
        raise ValueError(f"{what} needs non-empty inputs. Received: a.shape={a}, b.shape={b}")
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(x != y and x != 1 and y != 1 for x, y in zip(pa, pb)):
        raise ValueError(f"{what}: the shapes do not broadcast (numpy's rule: aligned at the "
                         f"last dim, each pair of dims equal or one of them 1). "
                         f"Received: a.shape={a}, b.shape={b}")
    return tuple(max(x, y) for x, y in zip(pa, pb))


def _merge_plan(a, b, what="add"):
    """(out shape, n, sa, sb): the broadcast of shapes a and b as collapsed dims
    (sizes n, element strides sa and sb, 0 along broadcast dims; size-1 dims
    dropped, neighbours with one stride pattern merged), at most MERGE_MAX_DIMS."""
    out = _merge_broadcast_shape(a, b, what)
    strides = [_merge_strides(s, len(out)) for s in (a, b)]
    n, sa, sb = [], [], []
    for d, size in enumerate(out):
        if size == 1:
            continue
        ta, tb = strides[0][d], strides[1][d]
        last = len(n) - 1       # (no negative indices: bounds and wraparound checks are off)
        if n and sa[last] == ta * size and sb[last] == tb * size:
            n[last] *= size
            sa[last], sb[last] = ta, tb
        else:
            n.append(size)
            sa.append(ta)
            sb.append(tb)
    if not n:
        n, sa, sb = [1], [0], [0]
    if len(n) > c.MERGE_MAX_DIMS:
        raise ValueError(f"broadcasting shapes {tuple(a)} and {tuple(b)} needs {len(n)} dims "
                         f"(limit {c.MERGE_MAX_DIMS})")
    return out, n, sa, sb


def _merge_strides(shape, ndim):
    """Element strides of a C-contiguous array of ``shape`` aligned right to
    ``ndim`` dims, 0 along its dims of size 1 (and the missing leading dims)."""
    shape = (1,) * (ndim - len(shape)) + tuple(shape)
    strides, step = [0] * ndim, 1
    for d in range(ndim - 1, -1, -1):
        strides[d] = step if shape[d] != 1 else 0
        step *= shape[d]
    return strides


cdef c.merge_shape _merge_struct(list n, list sa, list sb):
    cdef c.merge_shape s
    s.ndim = len(n)
    for d in range(s.ndim):
        s.n[d], s.sa[d], s.sb[d] = n[d], sa[d], sb[d]
    return s


def _merge_check_grad(g, a_shape, b_shape, what):
    out = _merge_broadcast_shape(a_shape, b_shape, what)
    if g.shape != out:
        raise ValueError(f"{what}: grad_y must have the broadcast shape {out} of the inputs "
                         f"{a_shape} and {b_shape}. Received: grad_y.shape={g.shape}")


def _merge_sequence(items, name="arrays"):
    if isinstance(items, np.ndarray) or not hasattr(items, "__len__"):
        raise TypeError(f"{name} must be a list or tuple. Received: {type(items).__name__}")
    if len(items) == 0:
        raise ValueError(f"{name} must not be empty. Received: {name}={items!r}")
    return list(items)


def _merge_dim(dim, ndim, what):
    d = as_int(dim, "dim")
    if not -ndim <= d < ndim:
        raise ValueError(f"{what}: dim must be in [{-ndim}, {ndim}) for {ndim}-dimensional "
                         f"inputs. Received: dim={dim!r}")
    return d + ndim if d < 0 else d


def _merge_cat_shape(shapes, dim):
    """(output shape, dim as a non-negative int) of cat over ``shapes``."""
    shapes = [tuple(s) for s in shapes]
    if any(len(s) != len(shapes[0]) for s in shapes):
        raise ValueError(f"cat needs inputs of one rank. Received: shapes {shapes}")
    if any(0 in s for s in shapes):
        raise ValueError(f"cat needs non-empty inputs. Received: shapes {shapes}")
    d = _merge_dim(dim, len(shapes[0]), "cat")
    rest = shapes[0][:d] + shapes[0][d + 1:]
    if any(s[:d] + s[d + 1:] != rest for s in shapes):
        raise ValueError(f"cat along dim {d} needs shapes that agree in every other dim. "
                         f"Received: shapes {shapes}")
    return shapes[0][:d] + (sum(s[d] for s in shapes),) + shapes[0][d + 1:], d


def _merge_cat_sizes(shapes, d):
    """(outer, widths): the product of the dims before d, and per input its
    extent along d times the dims after d."""
    outer = math.prod(shapes[0][:d])
    return outer, [math.prod(s[d:]) for s in shapes]


# ---- kernels ----------------------------------------------------------------------

def _merge_binary(a, b, bint is_mul, bint reference):
    aa, ba = as_float32(a, "a"), as_float32(b, "b")
    out, n, sa, sb = _merge_plan(aa.shape, ba.shape, "mul" if is_mul else "add")
    y = _empty(out)
    cdef c.merge_shape s = _merge_struct(n, sa, sb)
    cdef float *py = fptr(y)
    cdef const float *pa = fptr(aa)
    cdef const float *pb = fptr(ba)
    cdef int nt = get_num_threads()
    with nogil:
        if reference and is_mul:
            c.mul_broadcast_ref(py, pa, pb, &s)
        elif reference:
            c.add_broadcast_ref(py, pa, pb, &s)
        elif is_mul:
            c.mul_broadcast(py, pa, pb, &s, nt)
        else:
            c.add_broadcast(py, pa, pb, &s, nt)
    return y


def _merge_reduce_to(g, other, shape, plan, int which, bint reference):
    """The gradient of input ``which`` (0: a, 1: b) of shape ``shape``: g (times
    ``other``, the other input, or None) summed over its broadcast dims."""
    out, n, sa, sb = plan
    dx = _empty(shape)
    cdef c.merge_shape s = _merge_struct(n, sa, sb)
    cdef int64_t sx[8]
    cdef int64_t so[8]
    for d in range(s.ndim):
        sx[d] = sa[d] if which == 0 else sb[d]
        so[d] = sb[d] if which == 0 else sa[d]
    cdef float *pdx = fptr(dx)
    cdef const float *pg = fptr(g)
    cdef const float *po = NULL if other is None else fptr(other)
    cdef int nt = get_num_threads()
    with nogil:
        if reference:
            c.merge_reduce_ref(pdx, pg, po, &s, sx, so)
        else:
            c.merge_reduce(pdx, pg, po, &s, sx, so, nt)
    return dx


def dropout(x, p=0.5, training=True, *, generator=None, return_mask=False):
    """Dropout (torch.nn.functional.dropout): in training, each element is
    zeroed with probability p and the others scaled by 1 / (1 - p); the
    identity otherwise.

    Args:
        x: array of any shape, any real dtype.
        p: the probability of zeroing, in [0, 1).
        training: apply it. Default True.
        generator: a numpy Generator for the mask; default fastcnn's seeded
            generator (fastcnn.manual_seed).
        return_mask: also return the mask (for dropout_backward).

    Returns:
        float32 array of x's shape (and the float32 mask: 0 or 1 / (1 - p)).
    """
    xa = as_float32(x, "x")
    p = _dropout_p(p)           # checked in eval mode too, as torch does
    mask = dropout_mask(xa.shape, p, generator) if training else np.ones_like(xa)
    y = _empty(xa.shape)
    _merge_mul(y, xa, mask)
    return (y, mask) if return_mask else y


def dropout_backward(grad_y, mask):
    """Gradient of dropout: ``grad_y * mask``."""
    dy = as_float32(grad_y, "grad_y")
    m = as_float32(mask, "mask")
    check_shape(m, dy.shape, "mask")
    dx = _empty(dy.shape)
    _merge_mul(dx, dy, m)
    return dx


def dropout_mask(shape, p, generator=None):
    """A float32 dropout mask of ``shape``: 0 with probability p, else 1 / (1 - p)."""
    p = _dropout_p(p)
    if generator is None:
        from . import layers
        generator = layers._generator
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or None. "
                        f"Received: generator={generator!r}")
    # an array even for shape (): a numpy scalar here would reach C as a bad pointer
    mask = np.asarray(generator.random(shape, dtype=np.float32) >= p).astype(np.float32)
    mask *= np.float32(1.0 / (1.0 - p))
    return mask


def _dropout_p(p):
    p = as_float(p, "p")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1). Received: p={p!r}")
    return p


cdef _merge_mul(out, a, b):
    cdef float *po = fptr(out)
    cdef const float *pa = fptr(a)
    cdef const float *pb = fptr(b)
    cdef int64_t n = out.size
    cdef int nt = get_num_threads()
    with nogil:
        c.mul_forward(po, pa, pb, n, nt)


# ---- the executor's steps (fastcnn/_executor.pxi) --------------------------------

ctypedef struct merge_step_args:
    int x, y, dx, dy            # step_slots
    int x1, dx1                 # the second input and its gradient
    c.merge_shape s             # y's dims; sa, sb: the strides of x and x1 in them
    int mul


cdef int merge_step_forward(const void *a, void **ptr, float **par, int need_dx,
                            int nt) noexcept nogil:
    cdef const merge_step_args *p = <const merge_step_args *> a
    if p.mul:
        c.mul_broadcast(<float *> ptr[p.y], <float *> ptr[p.x], <float *> ptr[p.x1], &p.s, nt)
    else:
        c.add_broadcast(<float *> ptr[p.y], <float *> ptr[p.x], <float *> ptr[p.x1], &p.s, nt)
    return c.FASTCNN_OK


cdef int merge_step_backward(const void *a, void **ptr, float **par, int need_dx,
                             int nt) noexcept nogil:
    # dx = dy (add) or dy * x1 (mul) summed over x's broadcast dims; dx1 likewise
    cdef const merge_step_args *p = <const merge_step_args *> a
    if not need_dx:
        return c.FASTCNN_OK
    merge_step_grad(ptr[p.dx], ptr[p.dy], ptr[p.x1] if p.mul else NULL, &p.s, p.s.sa, p.s.sb, nt)
    merge_step_grad(ptr[p.dx1], ptr[p.dy], ptr[p.x] if p.mul else NULL, &p.s, p.s.sb, p.s.sa, nt)
    return c.FASTCNN_OK


cdef void merge_step_grad(void *dx, void *dy, void *other, const c.merge_shape *s,
                          const int64_t *sx, const int64_t *so, int nt) noexcept nogil:
    cdef int64_t n = 1
    cdef int d
    for d in range(s.ndim):
        if sx[d] == 0 and s.n[d] > 1:       # a broadcast dim: reduce
            c.merge_reduce(<float *> dx, <const float *> dy, <const float *> other, s, sx, so, nt)
            return
        n *= s.n[d]
    if other != NULL:                       # x has y's shape: an element-wise product
        c.merge_reduce(<float *> dx, <const float *> dy, <const float *> other, s, sx, so, nt)
    elif dx != dy:
        c.copy_floats(<float *> dx, <const float *> dy, n, nt)


cdef class MergeStep(Step):
    """add or mul of two inputs with broadcasting: y = x + x1 or x * x1;
    backward: dy (times the other input) reduced to each input's shape."""
    cdef merge_step_args a

    def __init__(self, node, slots, tuple a_shape, tuple b_shape, bint mul):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        _, n, sa, sb = _merge_plan(a_shape, b_shape)
        self.a.x1, self.a.dx1, self.a.mul = slots["x1"], slots["dx1"], mul
        self.a.s = _merge_struct(n, sa, sb)
        self.args, self.fwd, self.bwd = &self.a, merge_step_forward, merge_step_backward


ctypedef struct cat_step_args:
    int x, y, dx, dy            # step_slots
    int k                       # inputs
    int *xs                     # their slots
    int *dxs                    # their gradients' slots
    int64_t *width              # per input: its extent along dim times the dims after
    int64_t outer               # the product of the dims before dim


cdef int cat_step_forward(const void *a, void **ptr, float **par, int need_dx,
                          int nt) noexcept nogil:
    cdef const cat_step_args *p = <const cat_step_args *> a
    cdef const float **xs = <const float **> malloc(p.k * sizeof(float *))
    cdef int i
    if xs == NULL:
        return c.FASTCNN_ENOMEM
    for i in range(p.k):
        xs[i] = <const float *> ptr[p.xs[i]]
    c.cat_forward(<float *> ptr[p.y], xs, p.width, p.k, p.outer, nt)
    free(xs)
    return c.FASTCNN_OK


cdef int cat_step_backward(const void *a, void **ptr, float **par, int need_dx,
                           int nt) noexcept nogil:
    cdef const cat_step_args *p = <const cat_step_args *> a
    if not need_dx:
        return c.FASTCNN_OK
    cdef float **dxs = <float **> malloc(p.k * sizeof(float *))
    cdef int i
    if dxs == NULL:
        return c.FASTCNN_ENOMEM
    for i in range(p.k):
        dxs[i] = <float *> ptr[p.dxs[i]]
    c.cat_backward(dxs, <const float *> ptr[p.dy], p.width, p.k, p.outer, nt)
    free(dxs)
    return c.FASTCNN_OK


cdef class CatStep(Step):
    """cat: y = the inputs joined along dim; backward: dy split back."""
    cdef cat_step_args a

    def __init__(self, node, slots, tuple shapes, int dim):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        k = len(shapes)
        self.a.k = k
        self.a.xs = <int *> malloc(k * sizeof(int))
        self.a.dxs = <int *> malloc(k * sizeof(int))
        self.a.width = <int64_t *> malloc(k * sizeof(int64_t))
        if self.a.xs == NULL or self.a.dxs == NULL or self.a.width == NULL:
            raise MemoryError("fastcnn: out of memory for a cat step")
        outer, widths = _merge_cat_sizes(shapes, dim)
        self.a.outer = outer
        for i in range(k):
            suffix = str(i) if i else ""
            self.a.xs[i], self.a.dxs[i] = slots["x" + suffix], slots["dx" + suffix]
            self.a.width[i] = widths[i]
        self.args, self.fwd, self.bwd = &self.a, cat_step_forward, cat_step_backward

    def __dealloc__(self):
        free(self.a.xs)
        free(self.a.dxs)
        free(self.a.width)


ctypedef struct dropout_step_args:
    int x, y, dx, dy            # step_slots
    int64_t n


cdef int dropout_step_forward(const void *a, void **ptr, float **par, int need_dx,
                              int nt) noexcept nogil:
    # par: the mask drawn for this pass
    cdef const dropout_step_args *p = <const dropout_step_args *> a
    c.mul_forward(<float *> ptr[p.y], <float *> ptr[p.x], par[0], p.n, nt)
    return c.FASTCNN_OK


cdef int dropout_step_backward(const void *a, void **ptr, float **par, int need_dx,
                               int nt) noexcept nogil:
    cdef const dropout_step_args *p = <const dropout_step_args *> a
    if need_dx:
        c.mul_forward(<float *> ptr[p.dx], <float *> ptr[p.dy], par[0], p.n, nt)
    return c.FASTCNN_OK


cdef class DropoutStep(Step):
    """dropout in training: each forward draws a new mask from fastcnn's seeded
    generator (training holds the model, so the step may keep it) and its
    backward reuses it."""
    cdef dropout_step_args a
    cdef object mask, shape
    cdef double p

    def __init__(self, node, slots, tuple shape):
        super().__init__(node)
        self.set_slots(<step_slots *> &self.a, slots)
        self.a.n = 1
        for d in shape:
            self.a.n *= d
        self.shape, self.p = shape, node.attrs["p"]
        self.mask = np.ones(shape, np.float32)
        self.args, self.fwd, self.bwd = &self.a, dropout_step_forward, dropout_step_backward
        self.npar = 1

    cdef int fetch(self, float **par, bint backward) except -1:
        if not backward:
            self.mask = dropout_mask(self.shape, self.p)
        par[0] = fptr(self.mask)
        return 0
