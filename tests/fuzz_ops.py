"""The argument spaces, float64 references and the property of tests/test_fuzz.py.

Each op of fastcnn.functional is one `fuzz_op(name, family)` entry: a
hypothesis strategy of its keyword arguments and a plain-numpy float64
reference that either returns the expected result or raises `Refused` (the
arguments are invalid, so fastcnn must raise ValueError or TypeError). To
fuzz a new argument, draw it in the op's strategy (only where the function's
signature has it: `accepts`) and honour it in its reference.

`check(name, args)` is the property: the reference's verdict and fastcnn's
outcome agree, results match within float32 tolerance (NaN where the
reference has NaN), and no input that is not an output is modified.
"""
import inspect
import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastcnn.functional as F

INT32_MAX = 2**31 - 1
RTOL = 1e-5          # float32 accumulates; the bound is relative to the terms' magnitude
ATOL = 1e-6


class Refused(Exception):
    """The reference's verdict: fastcnn must raise ValueError or TypeError."""


class Near:
    """An expected float64 array and the magnitude of the terms that made it."""

    def __init__(self, value, scale=None):
        self.value = np.asarray(value, dtype=np.float64)
        self.scale = np.abs(self.value) if scale is None else np.asarray(scale, np.float64)


class MayRefuse(Exception):
    """The reference's verdict where the API leaves it open (a corner another
    branch may refuse): the expected result, or a clear ValueError/TypeError."""

    def __init__(self, expected):
        super().__init__("the result or a refusal")
        self.expected = expected


class Free:
    """An expected array with positions (mask) where any value is accepted."""

    def __init__(self, near, free):
        self.near, self.free = near, np.asarray(free, dtype=bool)


OPS = {}
ACCUMULATORS = ("grad_weight", "grad_bias")


def fuzz_op(name, family, strategy, *, inplace=(), accumulates=()):
    """Register the decorated reference of fastcnn.functional.<name>; `strategy()`
    returns the strategy of its keyword arguments; `inplace` names the arguments
    that are outputs (updated in place): they are the result, compared after the call;
    `accumulates` names outputs that are also returned (gradient accumulators)."""
    def register(reference):
        if not hasattr(F, name):        # an op another branch adds: fuzzed once it lands
            return reference
        OPS[name] = {"family": family, "strategy": strategy, "reference": reference,
                     "inplace": inplace, "outputs": inplace + accumulates}
        return reference
    return register


def accepts(function, argument):
    """Whether fastcnn.functional.<function> takes `argument` (other branches add some)."""
    return argument in inspect.signature(getattr(F, function)).parameters


# ---- arrays: dtypes, values, memory layouts -------------------------------------

REAL = ([np.float32] * 10 + [np.float64] * 3 + [np.float16, np.int8, np.int32, np.int64,
                                                np.uint8]) * 3
NOT_REAL = [np.bool_, np.complex64, np.object_, np.str_]      # about 1 array in 16
DTYPES = st.sampled_from(REAL + NOT_REAL)
LAYOUTS = st.sampled_from(["C", "C", "F", "strided", "reversed", "broadcast", "readonly", "list"])
SPECIALS = [np.nan, np.inf, -np.inf]


@st.composite
def values(draw, shape, bound=10.0, specials=True):
    """float64 values of `shape` in [-bound, bound], now and then a NaN or an Inf."""
    a = draw(hnp.arrays(np.float64, shape, elements=st.floats(-bound, bound, width=32)))
    if specials and a.size and draw(st.integers(0, 5)) == 5:
        for _ in range(draw(st.integers(1, 2))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(SPECIALS))
    return a


@np.errstate(invalid="ignore", over="ignore")
def cast(a, dtype):
    """float64 values as `dtype` (integers rounded and clipped, NaN/Inf cleared for them)."""
    kind = np.dtype(dtype).kind
    if kind in "iu":
        info = np.iinfo(dtype)
        a = np.clip(np.round(np.nan_to_num(a, posinf=info.max, neginf=info.min)),
                    info.min, info.max)
    if kind == "b":
        return a > 0
    return a.astype(dtype)


@st.composite
def layout(draw, a):
    """`a`'s values (or a broadcast of part of them) in a random memory layout."""
    how = draw(LAYOUTS)
    if a.ndim == 0:
        return a.copy() if how != "list" else a.item()
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if how == "reversed":
        axes = tuple(range(a.ndim))
        return np.flip(np.flip(a, axes).copy(), axes)
    if how == "broadcast" and a.ndim and a.shape[0]:
        return np.broadcast_to(a[:1], a.shape)
    if how == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if how == "list" and a.dtype != np.object_:
        return a.tolist()
    return np.ascontiguousarray(a)


@st.composite
def array(draw, shape, dtype=None, bound=10.0, specials=True):
    """An input array: random dtype (some not real), layout and values."""
    dtype = draw(DTYPES) if dtype is None else dtype
    return draw(layout(cast(draw(values(shape, bound, specials)), dtype)))


@st.composite
def state(draw, shape, fill=None):
    """An in-place float32 buffer; now and then one fastcnn must refuse."""
    a = (draw(values(shape, 1.0, False)) if fill is None else np.full(shape, fill)).astype(np.float32)
    how = draw(st.sampled_from(["float64", "F", "readonly", "strided"])) if rarely(draw) else "ok"
    if how == "float64":
        return a.astype(np.float64)
    if how == "readonly":
        a.setflags(write=False)
        return a
    if how in ("F", "strided") and a.ndim and a.size > 1:
        return draw(layout(a)) if how == "strided" else np.asfortranarray(a.T).T[..., ::-1]
    return a


@st.composite
def dims(draw, lo=0, hi=3):
    """A size in [max(lo, 1), hi], now and then (1 in 32) lo (0: an empty array)."""
    n = draw(st.integers(max(lo, 1), max(lo, 1, hi)))
    return lo if draw(st.integers(0, 31)) == 31 else n


@st.composite
def shapes(draw, max_dims=4, hi=4):
    """A shape of 0 to max_dims sizes (from dims)."""
    return tuple(draw(dims(0, hi)) for _ in range(draw(st.integers(0, max_dims))))


# ---- scalars ------------------------------------------------------------------------

def rarely(draw):
    """True about once in 16 draws (a branch that builds invalid arguments)."""
    return draw(st.integers(0, 15)) == 15


@st.composite
def int_or_pair(draw, lo, hi):
    """An int in [lo, hi] or a pair of them; rarely one below lo or of a refused form."""
    if rarely(draw):
        return draw(st.sampled_from([lo - 1, (lo, lo - 1), 1.0, True, "1", None, (1, 1, 1), [2]]))
    good = st.integers(lo, hi)
    return draw(st.one_of(good, st.tuples(good, good), st.lists(good, min_size=2, max_size=2),
                          good.map(np.int64)))


@st.composite
def real(draw, lo, hi):
    """A float in [lo, hi]; rarely a value or type that must be refused."""
    if rarely(draw):
        return draw(st.sampled_from([lo - 1.0, np.nan, np.inf, "0.5", None, True]))
    return draw(st.floats(lo, hi))


def ref_int(v, name, minimum=None):
    """The documented int rule: ints and numpy ints, never bools or floats."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise Refused(f"{name}={v!r} is not an int")
    if minimum is not None and v < minimum:
        raise Refused(f"{name}={v!r} < {minimum}")
    return int(v)


def ref_pair(v, name, minimum=None):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise Refused(f"{name}={v!r} is not a pair")
        return ref_int(v[0], name, minimum), ref_int(v[1], name, minimum)
    v = ref_int(v, name, minimum)
    return v, v


def ref_float(v, name, lo=-math.inf, hi=math.inf, hi_open=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise Refused(f"{name}={v!r} is not a real number")
    v = float(v)
    if not math.isfinite(v) or v < lo or v > hi or (hi_open and v == hi):
        raise Refused(f"{name}={v!r} out of range")
    return v


def ref_bool(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise Refused(f"{name}={v!r} is not a bool")
    return bool(v)


# ---- reference inputs ---------------------------------------------------------------

def f64(a, name, ndim=None):
    """A data argument as fastcnn reads it: real, non-empty, float32-rounded, in float64."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise Refused(f"{name} has dtype {arr.dtype}")
    if arr.size == 0:
        raise Refused(f"{name} is empty")
    if ndim is not None and arr.ndim != ndim:
        raise Refused(f"{name} is {arr.ndim}-dimensional")
    return arr.astype(np.float32).astype(np.float64)


def shape_is(a, shape, name):
    if a.shape != tuple(shape):
        raise Refused(f"{name}.shape={a.shape}, not {tuple(shape)}")


def f32_state(a, shape, name):
    """An in-place buffer: a writeable C-contiguous float32 array of `shape`."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous \
            or not a.flags.writeable:
        raise Refused(f"{name} is not a writeable C-contiguous float32 array")
    shape_is(a, shape, name)
    return a.astype(np.float64)


def f32_read(a, shape, name):
    """A buffer only read: a C-contiguous float32 array of `shape`, writeable or not."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise Refused(f"{name} is not a C-contiguous float32 array")
    shape_is(a, shape, name)
    return a.astype(np.float64)


def accumulator(a, shape, name):
    """An optional gradient accumulator (zeros when None)."""
    return np.zeros(shape) if a is None else f32_state(a, shape, name)


def reference_flag(draw, function):
    return {"reference": draw(st.booleans())} if accepts(function, "reference") else {}


# ---- element-wise activations ----------------------------------------------------------

def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[float])(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _hardsigmoid(x):
    return np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 6.0 + 0.5))


# name -> (forward(x, a, b), derivative(x, a, b), parameter strategies)
def _lrelu_grad(x, s, _):
    return np.where(x > 0, 1.0, s)


def _htanh_grad(x, lo, hi):
    return np.where((x <= lo) | (x >= hi), 0.0, 1.0)


def _hswish(x, a, b):
    """PyTorch's piecewise definition: 0 up to -3 (so at -inf too), x from 3 on."""
    return np.where(x <= -3, 0.0, np.where(x >= 3, x, x * (x + 3.0) / 6.0))


def _hswish_grad(x, a, b):
    return np.where(x <= -3, 0.0, np.where(x < 3, x / 3.0 + 0.5, 1.0))


def _silu_grad(x, a, b):
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _gelu_grad(x, a, b):
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(x / math.sqrt(2.0))) \
        + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_tanh_grad(x, a, b):
    k = math.sqrt(2.0 / math.pi)
    inner = k * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x)


POINTWISE = {
    "tanh": (lambda x, a, b: np.tanh(x), lambda x, a, b: 1.0 - np.tanh(x) ** 2, {}),
    "leaky_relu": (lambda x, s, b: np.where(x > 0, x, s * x), _lrelu_grad,
                   {"negative_slope": real(-2.0, 2.0)}),
    "hardtanh": (lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), _htanh_grad,
                 {"min_val": real(-3.0, 1.0), "max_val": real(-1.0, 3.0)}),
    "relu6": (lambda x, a, b: np.minimum(np.maximum(x, 0.0), 6.0),
              lambda x, a, b: _htanh_grad(x, 0.0, 6.0), {}),
    "hardsigmoid": (lambda x, a, b: _hardsigmoid(x),
                    lambda x, a, b: np.where((x > -3) & (x < 3), 1.0 / 6.0, 0.0), {}),
    "hardswish": (_hswish, _hswish_grad, {}),
    "silu": (lambda x, a, b: x * _sigmoid(x), _silu_grad, {}),
    "gelu": (None, None, {"approximate": st.sampled_from(["none", "none", "tanh", "exact"])}),
}
DEFAULTS = {"negative_slope": 0.01, "min_val": -1.0, "max_val": 1.0}


def _pointwise_params(name, args):
    """(a, b) for the forward/derivative functions, from args (Refused if invalid)."""
    if name == "gelu":
        approx = args.get("approximate", "none")
        if approx not in ("none", "tanh"):
            raise Refused(f"approximate={approx!r}")
        return approx, None
    # the kernels take their parameters as float32
    p = [float(np.float32(ref_float(args.get(k, DEFAULTS[k]), k))) for k in POINTWISE[name][2]]
    if name == "hardtanh" and args.get("min_val", -1.0) > args.get("max_val", 1.0):
        raise Refused("min_val > max_val")
    return (p + [0.0, 0.0])[:2]


def _pointwise_functions(name, args):
    a, b = _pointwise_params(name, args)
    if name == "gelu":
        return (_gelu, lambda x, *_: _gelu_grad(x, 0, 0)) if a == "none" else \
            (_gelu_tanh, lambda x, *_: _gelu_tanh_grad(x, 0, 0))
    fwd, grad, _ = POINTWISE[name]
    return (lambda x: fwd(x, a, b)), (lambda x: grad(x, a, b))


def _pointwise_strategy(name, backward):
    @st.composite
    def strategy(draw):
        shape = draw(shapes())
        args = {"x": draw(array(shape))}
        if backward:
            args["grad_y"] = draw(array(shape if not rarely(draw) else shape + (1,)))
        for k, v in POINTWISE[name][2].items():
            if draw(st.booleans()):
                args[k] = draw(v)
        return args
    return strategy


def _pointwise_forward_ref(name):
    def reference(args):
        forward, _ = _pointwise_functions(name, args)
        with np.errstate(all="ignore"):
            return Near(forward(f64(args["x"], "x")))
    return reference


def _pointwise_backward_ref(name):
    def reference(args):
        _, derivative = _pointwise_functions(name, args)
        x = f64(args["x"], "x")
        dy = f64(args["grad_y"], "grad_y")
        shape_is(dy, x.shape, "grad_y")
        with np.errstate(all="ignore"):
            d = derivative(x)
            # the derivative is undefined at a NaN (and at +-inf for the smooth ones);
            # where it is 0, a non-finite grad_y may give 0 (torch's select) or NaN
            return Free(Near(dy * d), np.isnan(x) | (np.isinf(x) & np.isnan(d)) |
                        ((d == 0) & ~np.isfinite(dy)))
    return reference


for _name in POINTWISE:
    fuzz_op(_name, "pointwise", _pointwise_strategy(_name, False))(_pointwise_forward_ref(_name))
    fuzz_op(f"{_name}_backward", "pointwise", _pointwise_strategy(_name, True))(
        _pointwise_backward_ref(_name))


@st.composite
def _activation_args(draw, function, backward):
    shape = draw(shapes())
    if not backward:
        return {"x": draw(array(shape)), **reference_flag(draw, function)}
    other = shape if not rarely(draw) else shape + (2,)
    y = draw(array(other))
    if function == "sigmoid_backward" and draw(st.booleans()):
        y = _sigmoid(np.asarray(y, dtype=np.float64) if np.asarray(y).dtype.kind in "fiu"
                     else np.zeros(other)).astype(np.float32)
    return {"grad_y": draw(array(shape)), "y": y, **reference_flag(draw, function)}


@fuzz_op("relu", "activation", lambda: _activation_args("relu", False))
def _relu_ref(args):
    x = f64(args["x"], "x")
    return Near(np.where(np.isnan(x), x, np.maximum(x, 0.0)))



@fuzz_op("sigmoid", "activation", lambda: _activation_args("sigmoid", False))
def _sigmoid_ref(args):
    return Near(_sigmoid(f64(args["x"], "x")))



def _activation_backward_inputs(args):
    dy = f64(args["grad_y"], "grad_y")
    y = f64(args["y"], "y")
    shape_is(y, dy.shape, "y")
    return dy, y


@fuzz_op("relu_backward", "activation", lambda: _activation_args("relu_backward", True))
def _relu_backward_ref(args):
    dy, y = _activation_backward_inputs(args)
    return Free(Near(np.where(y > 0, dy, 0.0)), np.isnan(y))



@fuzz_op("sigmoid_backward", "activation", lambda: _activation_args("sigmoid_backward", True))
def _sigmoid_backward_ref(args):
    dy, y = _activation_backward_inputs(args)
    with np.errstate(all="ignore"):
        return Near(dy * y * (1.0 - y), np.abs(dy * y) * (1.0 + np.abs(y)))



# ---- merges: add, dropout ------------------------------------------------------------

def _any_shape():
    return shapes()


def _add_broadcasts():
    """Whether F.add broadcasts (another branch adds it); without it, one shape only."""
    try:
        F.add(np.ones((2, 1), np.float32), np.ones((1, 3), np.float32))
    except ValueError:
        return False
    return True


@st.composite
def _add_args(draw):
    shape = draw(_any_shape())
    other = draw(_any_shape()) if draw(st.integers(0, 5)) == 5 else shape
    return {"a": draw(array(shape)), "b": draw(array(other)), **reference_flag(draw, "add")}


@fuzz_op("add", "merge", _add_args)
def _add_ref(args):
    a, b = f64(args["a"], "a"), f64(args["b"], "b")
    if a.shape != b.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise Refused("shapes do not broadcast") from None
        if not _add_broadcasts():
            raise Refused("add takes one shape")
    return Near(a + b, np.abs(a) + np.abs(b))


@st.composite
def _add_backward_args(draw):
    sa, sb = draw(_broadcast_pair())
    try:
        out = np.broadcast_shapes(sa, sb)
    except ValueError:
        out = sa
    args = {"grad_y": draw(array(out))}
    if accepts("add_backward", "a_shape") and draw(st.integers(0, 3)):
        args["a_shape"], args["b_shape"] = draw(st.sampled_from([(sa, sb), (list(sa), list(sb))]))
    return args


@fuzz_op("add_backward", "merge", _add_backward_args)
def _add_backward_ref(args):
    g = f64(args["grad_y"], "grad_y")
    shapes_ = [tuple(args.get(k, g.shape)) for k in ("a_shape", "b_shape")]
    try:
        out = np.broadcast_shapes(*shapes_)
    except ValueError:
        raise Refused(f"shapes {shapes_} do not broadcast") from None
    if out != g.shape:
        raise Refused(f"grad_y.shape={g.shape}, not the broadcast shape {out}")
    with np.errstate(all="ignore"):
        return tuple(Near(unbroadcast(g, s), unbroadcast(np.abs(g), s)) for s in shapes_)


@st.composite
def _batch_norm2d_fold_args(draw):
    K = draw(dims(0, 3))
    wshape = draw(st.sampled_from([(), (K,), (K, 2), (K, 2, 3, 3)]))
    vec = (K,) if not rarely(draw) else (K + 1,)
    args = {"weight": draw(array(wshape)), "running_mean": draw(array(vec)),
            "running_var": draw(array(vec))}
    for name in ("bias", "bn_weight", "bn_bias"):
        args[name] = draw(array(vec)) if draw(st.booleans()) else None
    if draw(st.booleans()):
        args["eps"] = draw(st.one_of(st.floats(1e-5, 1.0), st.sampled_from([0.0, -1.0, "x"])))
    return args


@fuzz_op("batch_norm2d_fold", "batchnorm2d", _batch_norm2d_fold_args)
def _batch_norm2d_fold_ref(args):
    w = f64(args["weight"], "weight")
    if w.ndim < 1:
        raise Refused("a 0-d weight")
    K = w.shape[0]
    vectors = {}
    for name, default in (("bias", 0.0), ("bn_weight", 1.0), ("bn_bias", 0.0),
                          ("running_mean", None), ("running_var", None)):
        v = args.get(name)
        vectors[name] = np.full(K, default) if v is None else f64(v, name)
        shape_is(vectors[name], (K,), name)
    eps = ref_float(args.get("eps", 1e-5), "eps", 0.0)
    with np.errstate(all="ignore"):
        s = vectors["bn_weight"] / np.sqrt(vectors["running_var"] + eps)
        ws = s.reshape((K,) + (1,) * (w.ndim - 1))
        bias = (vectors["bias"] - vectors["running_mean"]) * s + vectors["bn_bias"]
        scale = (np.abs(vectors["bias"]) + np.abs(vectors["running_mean"])) * np.abs(s) \
            + np.abs(vectors["bn_bias"])
        return Near(w * ws), Near(bias, scale)


@st.composite
def _dropout_args(draw):
    generator = draw(st.sampled_from([None, 42])) if rarely(draw) else \
        np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    args = {"x": draw(array(draw(_any_shape()))), "return_mask": True, "generator": generator}
    if draw(st.booleans()):
        args["p"] = draw(st.one_of(real(0.0, 0.99), st.sampled_from([0.0, 1.0])))
    if draw(st.booleans()):
        args["training"] = draw(st.booleans())
    return args


def _dropout_check(args, got):
    """dropout is random: a relation, not a value. y = x * mask, mask in {0, 1/(1-p)}."""
    x = f64(args["x"], "x")
    p = ref_float(args.get("p", 0.5), "p", 0.0, 1.0, hi_open=True)
    y, mask = got
    mask = np.asarray(mask, np.float64)
    scale = np.float64(np.float32(1.0 / (1.0 - p)))
    if not args.get("training", True) or p == 0.0:
        assert np.all(mask == 1.0), f"a mask of ones expected, got {np.unique(mask)}"
    else:
        assert np.all((mask == 0.0) | (mask == scale)), f"mask values {np.unique(mask)}, p={p}"
    with np.errstate(invalid="ignore"):
        return Near(x * mask), mask


@fuzz_op("dropout", "merge", _dropout_args)
def _dropout_ref(args):
    f64(args["x"], "x")
    generator = args["generator"]       # only read in training
    if args.get("training", True) and generator is not None \
            and not isinstance(generator, np.random.Generator):
        raise Refused(f"generator={generator!r}")
    ref_float(args.get("p", 0.5), "p", 0.0, 1.0, hi_open=True)
    return _dropout_check


@st.composite
def _dropout_backward_args(draw):
    shape = draw(_any_shape())
    p = draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    keep = draw(hnp.arrays(np.bool_, shape))
    mask = (keep / np.float32(1.0 - p)).astype(np.float32)
    other = shape if not rarely(draw) else shape + (1,)
    return {"grad_y": draw(array(other)), "mask": draw(layout(mask))}


@fuzz_op("dropout_backward", "merge", _dropout_backward_args)
def _dropout_backward_ref(args):
    dy, m = f64(args["grad_y"], "grad_y"), f64(args["mask"], "mask")
    shape_is(m, dy.shape, "mask")
    with np.errstate(invalid="ignore"):
        return Near(dy * m)


# ---- batch normalization ----------------------------------------------------------------

@st.composite
def _batchnorm_args(draw, backward):
    N, C, H, W = (draw(dims(0, 3)) for _ in range(4))
    args = {"x": draw(array((N, C, H, W) if not rarely(draw) else (N, C, H)))}
    vec = (C,) if not rarely(draw) else (C + 1,)
    if draw(st.booleans()):
        args["weight"] = draw(array(vec))
    if draw(st.booleans()):
        args["eps"] = draw(st.one_of(st.floats(1e-5, 1.0), st.sampled_from([0.0, -1.0, "x"])))
    if backward:
        args["grad_y"] = draw(array((N, C, H, W)))
        args["need_grad_input"] = draw(st.booleans())
        for name in ("grad_weight", "grad_bias"):
            if draw(st.booleans()):
                args[name] = draw(state(vec))
        return args
    if draw(st.booleans()):
        args["bias"] = draw(array(vec))
    args["training"] = draw(st.booleans())
    if draw(st.booleans()) or not args["training"]:
        args["running_mean"] = draw(state(vec))
        args["running_var"] = draw(state(vec, fill=draw(st.floats(0.0, 4.0))))
    if draw(st.booleans()):
        args["momentum"] = draw(real(0.0, 1.0))
    return args


def _batchnorm_inputs(args):
    x = f64(args["x"], "x", 4)
    N, C, H, W = x.shape
    eps = ref_float(args.get("eps", 1e-5), "eps", 0.0)
    w = np.ones(C) if args.get("weight") is None else f64(args["weight"], "weight")
    shape_is(w, (C,), "weight")
    return x, eps, w


def _batchnorm_affine(x, mean, inv, w, b):
    """x * alpha + beta per channel, PyTorch's form (an Inf weight gives NaN, not Inf)."""
    alpha = inv * w
    beta = b - mean * alpha
    return x * alpha[:, None, None] + beta[:, None, None]


def _batchnorm_degenerate(mean, var, eps):
    """Channels whose float32 statistics cannot resolve the variance (var + eps
    at the rounding level of mean**2): there any normalized value is accepted."""
    return var + eps <= 1e-5 * mean**2


def _batchnorm_stats(x, eps):
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - mean[:, None, None]) ** 2).mean(axis=(0, 2, 3))
    return n, mean, var, 1.0 / np.sqrt(var + eps)


@fuzz_op("batch_norm2d", "batchnorm2d", lambda: _batchnorm_args(False),
         inplace=("running_mean", "running_var"))
def _batch_norm2d_ref(args):
    x, eps, w = _batchnorm_inputs(args)
    C = x.shape[1]
    b = np.zeros(C) if args.get("bias") is None else f64(args["bias"], "bias")
    shape_is(b, (C,), "bias")
    rm, rv = args.get("running_mean"), args.get("running_var")
    stat = f32_state if args["training"] else f32_read     # inference only reads them
    rm = None if rm is None else stat(rm, (C,), "running_mean")
    rv = None if rv is None else stat(rv, (C,), "running_var")
    momentum = ref_float(args.get("momentum", 0.1), "momentum")
    c = (slice(None), None, None)
    with np.errstate(all="ignore"):
        if not args["training"]:
            if rm is None or rv is None:
                raise Refused("inference needs the running statistics")
            inv = 1.0 / np.sqrt(rv + eps)
            y = _batchnorm_affine(x, rm, inv, w, b)
            near = Near(y, (np.abs(x) + np.abs(rm)[c]) * np.abs(inv * w)[c] + np.abs(b)[c])
            return {"result": Free(near, np.broadcast_to((rv + eps == 0)[c], y.shape)),
                    "running_mean": Near(rm), "running_var": Near(rv)}
        n, mean, var, inv = _batchnorm_stats(x, eps)
        y = _batchnorm_affine(x, mean, inv, w, b)
        near = Near(y, (np.abs(x) + np.abs(mean)[c]) * np.abs(inv * w)[c] * (4.0 + n)
                    * (1.0 + (mean**2 / (var + eps))[c]) + np.abs(b)[c])
        out = {"result": Free(near, np.broadcast_to(_batchnorm_degenerate(mean, var, eps)[c],
                                                    y.shape))}
        if rm is not None and rv is not None:
            out["running_mean"] = Near((1 - momentum) * rm + momentum * mean)
            out["running_var"] = Near((1 - momentum) * rv + momentum * var * n / max(n - 1, 1))
        return out


@fuzz_op("batch_norm2d_backward", "batchnorm2d", lambda: _batchnorm_args(True),
         accumulates=ACCUMULATORS)
def _batch_norm2d_backward_ref(args):
    x, eps, w = _batchnorm_inputs(args)
    C = x.shape[1]
    dy = f64(args["grad_y"], "grad_y")
    shape_is(dy, x.shape, "grad_y")
    gw0 = accumulator(args.get("grad_weight"), (C,), "grad_weight")
    gb0 = accumulator(args.get("grad_bias"), (C,), "grad_bias")
    c = (slice(None), None, None)
    with np.errstate(all="ignore"):
        n, mean, var, inv = _batchnorm_stats(x, eps)
        xhat = (x - mean[c]) * inv[c]
        gb = dy.sum(axis=(0, 2, 3))
        gw = (dy * xhat).sum(axis=(0, 2, 3))
        scale = (np.abs(dy) * (np.abs(x) + np.abs(mean)[c]) * inv[c]).sum(axis=(0, 2, 3))
        dx = (w * inv)[c] * (dy - gb[c] / n - xhat * gw[c] / n)
        dx_scale = np.abs(w * inv)[c] * (np.abs(dy) + np.abs(dy).sum(axis=(0, 2, 3))[c] / n
                                        + np.abs(xhat) * scale[c] / n) * 8.0
    return (Near(dx, dx_scale) if args["need_grad_input"] else None,
            Near(gw0 + gw, np.abs(gw0) + scale * 4.0), Near(gb0 + gb, np.abs(gb0)
                                                             + np.abs(dy).sum(axis=(0, 2, 3))))


# ---- linear ------------------------------------------------------------------------------

@st.composite
def _linear_args(draw, backward):
    lead = draw(shapes(2, 3))
    F_, O = draw(dims(0, 5)), draw(dims(0, 4))
    xf = F_ if not rarely(draw) else F_ + 1
    args = {"x": draw(array(lead + (xf,) if not rarely(draw) else ())),
            "weight": draw(array((O, F_) if not rarely(draw) else (O, F_, 1))),
            **reference_flag(draw, "linear")}
    if backward:
        args["grad_y"] = draw(array(lead + (O,) if not rarely(draw) else lead + (O + 1,)))
        _backward_flags(draw, args, (O, F_), (O,))
    elif draw(st.booleans()):
        args["bias"] = draw(array((O,) if not rarely(draw) else (O, 1)))
    return args


def _backward_flags(draw, args, wshape, bshape):
    args["has_bias"] = draw(st.booleans())
    args["need_grad_input"] = draw(st.booleans())
    if draw(st.booleans()):
        args["grad_weight"] = draw(state(wshape))
    if rarely(draw) or (args["has_bias"] and draw(st.booleans())):
        args["grad_bias"] = draw(state(bshape))


def _grad_accumulators(args, wshape, bshape):
    if not args["has_bias"] and args.get("grad_bias") is not None:
        raise Refused("grad_bias without has_bias")
    return (accumulator(args.get("grad_weight"), wshape, "grad_weight"),
            accumulator(args.get("grad_bias"), bshape, "grad_bias"))


def _linear_inputs(args):
    w = f64(args["weight"], "weight", 2)
    x = f64(args["x"], "x")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise Refused(f"x.shape={x.shape} for weight {w.shape}")
    return x, w


@fuzz_op("linear", "linear", lambda: _linear_args(False))
def _linear_ref(args):
    x, w = _linear_inputs(args)
    b = np.zeros(w.shape[0]) if args.get("bias") is None else f64(args["bias"], "bias")
    shape_is(b, (w.shape[0],), "bias")
    with np.errstate(all="ignore"):
        return Near(x @ w.T + b, np.abs(x) @ np.abs(w).T + np.abs(b))


@fuzz_op("linear_backward", "linear", lambda: _linear_args(True), accumulates=ACCUMULATORS)
def _linear_backward_ref(args):
    x, w = _linear_inputs(args)
    dy = f64(args["grad_y"], "grad_y")
    shape_is(dy, x.shape[:-1] + (w.shape[0],), "grad_y")
    gw0, gb0 = _grad_accumulators(args, w.shape, (w.shape[0],))
    x2, dy2 = x.reshape(-1, w.shape[1]), dy.reshape(-1, w.shape[0])
    with np.errstate(all="ignore"):
        gx = Near(dy @ w, np.abs(dy) @ np.abs(w)) if args["need_grad_input"] else None
        gw = Near(gw0 + dy2.T @ x2, np.abs(gw0) + np.abs(dy2).T @ np.abs(x2))
        gb = Near(gb0 + dy2.sum(0), np.abs(gb0) + np.abs(dy2).sum(0)) if args["has_bias"] \
            else None
    return gx, gw, gb


# ---- conv2d -------------------------------------------------------------------------------

PADDINGS = st.one_of(int_or_pair(0, 2), int_or_pair(0, 2), st.sampled_from(["same", "valid", "full"]))


def _try(function, fallback):
    try:
        return function()
    except Refused:
        return fallback


@st.composite
def _conv2d_args(draw, function):
    groups = 1 if not accepts(function, "groups") else \
        draw(st.sampled_from([0, 2.0])) if rarely(draw) else draw(st.integers(1, 3))
    g = groups if isinstance(groups, int) and groups > 0 else 1
    N, Cg, H, W = draw(dims(0, 2)), draw(dims(0, 2)), draw(dims(0, 6)), draw(dims(0, 6))
    K, R, S = g * draw(dims(0, 2)) + draw(st.sampled_from([0] * 9 + [1])), draw(dims(0, 3)), \
        draw(dims(0, 3))
    args = {"x": draw(array((N, g * Cg + draw(st.sampled_from([0] * 9 + [1])), H, W))),
            "weight": draw(array((K, Cg, R, S))),
            "stride": draw(int_or_pair(1, 3)), "padding": draw(PADDINGS),
            **reference_flag(draw, function)}
    if accepts(function, "dilation"):
        args["dilation"] = draw(int_or_pair(1, 2))
    if accepts(function, "groups"):
        args["groups"] = groups
    if function == "conv2d":
        if draw(st.booleans()):
            args["bias"] = draw(array((K,) if not rarely(draw) else (K + 1,)))
        return args
    P, Q = _try(lambda: _conv2d_geometry(args)[-1], (1, 1))
    args["grad_y"] = draw(array((N, K, P, Q) if not rarely(draw) else (N, K, P + 1, Q)))
    _backward_flags(draw, args, (K, Cg, R, S), (K,))
    return args


def _conv2d_geometry(args):
    """(x, weight, stride, (top, bottom, left, right), dilation, groups, (P, Q)), or Refused."""
    x, w = f64(args["x"], "x", 4), f64(args["weight"], "weight", 4)
    groups = ref_int(args.get("groups", 1), "groups", 1)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    if C % groups or K % groups or Cg * groups != C:
        raise Refused(f"channels: x {x.shape}, weight {w.shape}, groups {groups}")
    stride = ref_pair(args.get("stride", 1), "stride", 1)
    dil = ref_pair(args.get("dilation", 1), "dilation", 1)
    eR, eS = dil[0] * (R - 1) + 1, dil[1] * (S - 1) + 1
    padding = args.get("padding", 0)
    if isinstance(padding, str):
        if padding not in ("same", "valid") or (padding == "same" and stride != (1, 1)):
            raise Refused(f"padding={padding!r} with stride {stride}")
        pads = (0, 0, 0, 0) if padding == "valid" else \
            ((eR - 1) // 2, eR - 1 - (eR - 1) // 2, (eS - 1) // 2, eS - 1 - (eS - 1) // 2)
    else:
        ph, pw = ref_pair(padding, "padding", 0)
        pads = (ph, ph, pw, pw)
    Hp, Wp = H + pads[0] + pads[1], W + pads[2] + pads[3]
    if eR > Hp or eS > Wp:
        raise Refused("the kernel is larger than the padded input")
    return x, w, stride, pads, dil, groups, ((Hp - eR) // stride[0] + 1, (Wp - eS) // stride[1] + 1)


def _conv2d_windows(xp, r, s, stride, dil, P, Q):
    """xp[:, :, the (r, s) tap of every output position] -> (N, C, P, Q)."""
    h, w = r * dil[0], s * dil[1]
    return xp[:, :, h:h + stride[0] * (P - 1) + 1:stride[0], w:w + stride[1] * (Q - 1) + 1:stride[1]]


def _conv2d_oracle_leeway(args, near, operand):
    """The C reference kernels (reference=True) skip the padding instead of
    multiplying it by zero, so a non-finite weight (forward) or grad_y (weight
    gradient) does not reach the border outputs there as it does in PyTorch and
    the fast path: with reference=True such non-finite outputs may be anything."""
    if not args.get("reference") or np.isfinite(operand).all():
        return near
    return Free(near, ~np.isfinite(near.value))


def _conv2d_groups(x, w, groups):
    """[(channel slice, output slice)] of each group."""
    Cg, Kg = x.shape[1] // groups, w.shape[0] // groups
    return [(slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)) for g in range(groups)]


def _conv2d_forward64(x, w, stride, pads, dil, groups, P, Q):
    """(y, magnitude) of the float64 convolution."""
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    y = np.zeros((x.shape[0], w.shape[0], P, Q))
    mag = np.zeros_like(y)
    for cs, ks in _conv2d_groups(x, w, groups):
        for r in range(w.shape[2]):
            for s in range(w.shape[3]):
                patch = _conv2d_windows(xp[:, cs], r, s, stride, dil, P, Q)
                y[:, ks] += np.einsum("ncpq,kc->nkpq", patch, w[ks, :, r, s])
                mag[:, ks] += np.einsum("ncpq,kc->nkpq", np.abs(patch), np.abs(w[ks, :, r, s]))
    return y, mag


@fuzz_op("conv2d", "conv2d", lambda: _conv2d_args("conv2d"))
def _conv2d_ref(args):
    x, w, stride, pads, dil, groups, (P, Q) = _conv2d_geometry(args)
    b = np.zeros(w.shape[0]) if args.get("bias") is None else f64(args["bias"], "bias")
    shape_is(b, (w.shape[0],), "bias")
    with np.errstate(all="ignore"):
        y, mag = _conv2d_forward64(x, w, stride, pads, dil, groups, P, Q)
        c = (slice(None), None, None)
        return _conv2d_oracle_leeway(args, Near(y + b[c], mag + np.abs(b)[c]), w)


@fuzz_op("conv2d_backward", "conv2d", lambda: _conv2d_args("conv2d_backward"),
         accumulates=ACCUMULATORS)
def _conv2d_backward_ref(args):
    x, w, stride, pads, dil, groups, (P, Q) = _conv2d_geometry(args)
    dy = f64(args["grad_y"], "grad_y", 4)
    shape_is(dy, (x.shape[0], w.shape[0], P, Q), "grad_y")
    gw0, gb0 = _grad_accumulators(args, w.shape, (w.shape[0],))
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    gxp, gxm = np.zeros_like(xp), np.zeros_like(xp)
    gw, gwm = gw0.copy(), np.abs(gw0)
    with np.errstate(all="ignore"):
        for cs, ks in _conv2d_groups(x, w, groups):
            for r in range(w.shape[2]):
                for s in range(w.shape[3]):
                    taps = (ks, slice(None), r, s)
                    _conv2d_windows(gxp[:, cs], r, s, stride, dil, P, Q)[...] += \
                        np.einsum("nkpq,kc->ncpq", dy[:, ks], w[taps])
                    _conv2d_windows(gxm[:, cs], r, s, stride, dil, P, Q)[...] += \
                        np.einsum("nkpq,kc->ncpq", np.abs(dy[:, ks]), np.abs(w[taps]))
                    patch = _conv2d_windows(xp[:, cs], r, s, stride, dil, P, Q)
                    gw[ks, :, r, s] += np.einsum("nkpq,ncpq->kc", dy[:, ks], patch)
                    gwm[ks, :, r, s] += np.einsum("nkpq,ncpq->kc", np.abs(dy[:, ks]),
                                                  np.abs(patch))
    crop = (slice(None), slice(None), slice(pads[0], pads[0] + x.shape[2]),
            slice(pads[2], pads[2] + x.shape[3]))
    gx = Near(gxp[crop], gxm[crop]) if args["need_grad_input"] else None
    gb = Near(gb0 + dy.sum(axis=(0, 2, 3)), np.abs(gb0) + np.abs(dy).sum(axis=(0, 2, 3))) \
        if args["has_bias"] else None
    return gx, _conv2d_oracle_leeway(args, Near(gw, gwm), dy), gb


# ---- pooling ------------------------------------------------------------------------------

@st.composite
def _pool2d_args(draw, function):
    N, C, H, W = draw(dims(0, 2)), draw(dims(0, 2)), draw(dims(0, 6)), draw(dims(0, 6))
    args = {"kernel_size": draw(int_or_pair(1, 4)), **reference_flag(draw, function)}
    for name, space in (("stride", st.one_of(st.none(), int_or_pair(1, 3))),
                        ("padding", int_or_pair(0, 2)), ("dilation", int_or_pair(1, 2)),
                        ("ceil_mode", st.sampled_from([False, True, 1])),
                        ("count_include_pad", st.sampled_from([True, False, 0]))):
        if accepts(function, name) and draw(st.booleans()):
            args[name] = draw(space)
    shape = (N, C, H, W) if not rarely(draw) else (N, C, H)
    if function == "avg_pool2d_backward":
        args["input_shape"] = draw(st.sampled_from([(1, 1, 2), (1, 1, 2.0, 2), None])) \
            if rarely(draw) else shape
        P, Q = _try(lambda: _pool2d_geometry(args, args["input_shape"])[-1], (1, 1))
        args["grad_y"] = draw(array((N, C, P, Q) if not rarely(draw) else (N, C, Q)))
    else:
        args["x"] = draw(array(shape))
        if function == "max_pool2d":
            args["return_indices"] = True
    return args


def _pool2d_geometry(args, shape):
    """(kernel, stride, padding, dilation, ceil_mode, (P, Q)) of pooling `shape`, or Refused."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise Refused(f"input shape {shape!r} is not (N, C, H, W)")
    N, C, H, W = (ref_int(v, "input_shape", 1) for v in shape)
    k = ref_pair(args["kernel_size"], "kernel_size", 1)
    stride = k if args.get("stride") is None else ref_pair(args["stride"], "stride", 1)
    pad = ref_pair(args.get("padding", 0), "padding", 0)
    dil = ref_pair(args.get("dilation", 1), "dilation", 1)
    ceil = ref_bool(args.get("ceil_mode", False), "ceil_mode")
    ek = [d * (n - 1) + 1 for d, n in zip(dil, k)]
    if 2 * pad[0] > k[0] or 2 * pad[1] > k[1]:
        raise Refused("padding above half the kernel")
    out = []
    for size, e, s, p in zip((H, W), ek, stride, pad):
        n = (size + 2 * p - e + (s - 1 if ceil else 0)) // s + 1     # torch's rule
        if ceil and (n - 1) * s >= size + p:      # a window must start inside the image
            n -= 1
        if n < 1:
            raise Refused("the kernel is larger than the padded input")
        out.append(n)
    return k, stride, pad, dil, ceil, tuple(out)


def _pool2d_windows(H, W, k, stride, pad, dil, P, Q):
    """For each output (p, q): the in-image (h, w) positions of its window, row-major."""
    for p in range(P):
        for q in range(Q):
            hs = [p * stride[0] - pad[0] + i * dil[0] for i in range(k[0])]
            ws = [q * stride[1] - pad[1] + j * dil[1] for j in range(k[1])]
            inside = [(h, w) for h in hs for w in ws if 0 <= h < H and 0 <= w < W]
            yield p, q, inside, (min(hs[-1], H + pad[0] - 1) - hs[0] + 1) * \
                (min(ws[-1], W + pad[1] - 1) - ws[0] + 1)


def _max_pool2d_plane(plane, windows):
    """(max, flat index) per window: NaN wins (the last one), else the first maximum."""
    y, idx = np.empty(len(windows)), np.empty(len(windows), np.int64)
    W = plane.shape[1]
    for i, cells in enumerate(windows):
        if not cells:                   # a dilated window may miss the image: -inf
            y[i], idx[i] = -np.inf, -1  # and an index of no meaning (-1: any accepted)
            continue
        best = cells[0]
        for h, w in cells:
            v = plane[h, w]
            if np.isnan(v) or v > plane[best]:
                best = (h, w)
        y[i], idx[i] = plane[best], best[0] * W + best[1]
    return y, idx


@fuzz_op("max_pool2d", "pool2d", lambda: _pool2d_args("max_pool2d"))
def _max_pool2d_ref(args):
    x = f64(args["x"], "x", 4)
    N, C, H, W = x.shape
    k, stride, pad, dil, _, (P, Q) = _pool2d_geometry(args, x.shape)
    windows = [cells for _, _, cells, _ in _pool2d_windows(H, W, k, stride, pad, dil, P, Q)]
    y, idx = np.empty((N, C, P * Q)), np.empty((N, C, P * Q), np.int64)
    for n in range(N):
        for c in range(C):
            y[n, c], idx[n, c] = _max_pool2d_plane(x[n, c], windows)
    out = Near(y.reshape(N, C, P, Q)), idx.reshape(N, C, P, Q)
    if not all(windows):                # torch gives -inf there; a clear refusal is fine too
        raise MayRefuse(out)
    return out


def _avg_pool2d_scatter(args, shape, k, stride, pad, dil, P, Q):
    """[(p, q, cells, divisor)] of avg pooling."""
    include = ref_bool(args.get("count_include_pad", True), "count_include_pad")
    return [(p, q, cells, size if include else len(cells))
            for p, q, cells, size in _pool2d_windows(shape[2], shape[3], k, stride, pad, dil,
                                                     P, Q)]


@fuzz_op("avg_pool2d", "pool2d", lambda: _pool2d_args("avg_pool2d"))
def _avg_pool2d_ref(args):
    x = f64(args["x"], "x", 4)
    k, stride, pad, dil, _, (P, Q) = _pool2d_geometry(args, x.shape)
    y, mag = np.zeros(x.shape[:2] + (P, Q)), np.zeros(x.shape[:2] + (P, Q))
    with np.errstate(all="ignore"):
        for p, q, cells, divisor in _avg_pool2d_scatter(args, x.shape, k, stride, pad, dil, P, Q):
            for h, w in cells:
                y[:, :, p, q] += x[:, :, h, w] / divisor
                mag[:, :, p, q] += np.abs(x[:, :, h, w]) / divisor
    return Near(y, mag)


@fuzz_op("avg_pool2d_backward", "pool2d", lambda: _pool2d_args("avg_pool2d_backward"))
def _avg_pool2d_backward_ref(args):
    k, stride, pad, dil, _, (P, Q) = _pool2d_geometry(args, args["input_shape"])
    shape = tuple(args["input_shape"])
    if shape[2] * shape[3] > INT32_MAX:
        raise Refused("the plane is too large for int32 indices")
    dy = f64(args["grad_y"], "grad_y")
    shape_is(dy, shape[:2] + (P, Q), "grad_y")
    dx, mag = np.zeros(shape), np.zeros(shape)
    with np.errstate(all="ignore"):
        for p, q, cells, divisor in _avg_pool2d_scatter(args, shape, k, stride, pad, dil, P, Q):
            for h, w in cells:
                dx[:, :, h, w] += dy[:, :, p, q] / divisor
                mag[:, :, h, w] += np.abs(dy[:, :, p, q]) / divisor
    return Near(dx, mag)


@st.composite
def _adaptive_pool2d_args(draw, function):
    N, C, H, W = draw(dims(0, 2)), draw(dims(0, 2)), draw(dims(0, 7)), draw(dims(0, 7))
    args = reference_flag(draw, function)
    shape = (N, C, H, W) if not rarely(draw) else (N, C, H)
    if function == "adaptive_avg_pool2d_backward":     # the output size is grad_y's
        args["input_shape"] = shape
        oh, ow = draw(dims(0, 5)), draw(dims(0, 5))
        args["grad_y"] = draw(array((N, C, oh, ow) if not rarely(draw) else (N, C, ow)))
    else:
        args["output_size"] = draw(int_or_pair(1, 5))
        args["x"] = draw(array(shape))
        if function == "adaptive_max_pool2d":
            args["return_indices"] = True
    return args


def _adaptive_windows(H, W, oh, ow):
    """Torch's adaptive windows: rows [floor(p H / oh), ceil((p + 1) H / oh)), columns likewise."""
    for p in range(oh):
        for q in range(ow):
            rows = range(p * H // oh, -(-(p + 1) * H // oh))
            cols = range(q * W // ow, -(-(q + 1) * W // ow))
            yield p, q, [(h, w) for h in rows for w in cols]


@fuzz_op("adaptive_max_pool2d", "pool2d", lambda: _adaptive_pool2d_args("adaptive_max_pool2d"))
def _adaptive_max_pool2d_ref(args):
    x = f64(args["x"], "x", 4)
    N, C, H, W = x.shape
    oh, ow = ref_pair(args["output_size"], "output_size", 1)
    windows = [cells for _, _, cells in _adaptive_windows(H, W, oh, ow)]
    y, idx = np.empty((N, C, oh * ow)), np.empty((N, C, oh * ow), np.int64)
    for n in range(N):
        for c in range(C):
            y[n, c], idx[n, c] = _max_pool2d_plane(x[n, c], windows)
    return Near(y.reshape(N, C, oh, ow)), idx.reshape(N, C, oh, ow)


@fuzz_op("adaptive_avg_pool2d", "pool2d", lambda: _adaptive_pool2d_args("adaptive_avg_pool2d"))
def _adaptive_avg_pool2d_ref(args):
    x = f64(args["x"], "x", 4)
    N, C, H, W = x.shape
    oh, ow = ref_pair(args["output_size"], "output_size", 1)
    y, mag = np.zeros((N, C, oh, ow)), np.zeros((N, C, oh, ow))
    with np.errstate(all="ignore"):
        for p, q, cells in _adaptive_windows(H, W, oh, ow):
            for h, w in cells:
                y[:, :, p, q] += x[:, :, h, w] / len(cells)
                mag[:, :, p, q] += np.abs(x[:, :, h, w]) / len(cells)
    return Near(y, mag)


@fuzz_op("adaptive_avg_pool2d_backward", "pool2d",
         lambda: _adaptive_pool2d_args("adaptive_avg_pool2d_backward"))
def _adaptive_avg_pool2d_backward_ref(args):
    shape = args["input_shape"]
    if len(shape) != 4:
        raise Refused("input_shape is not (N, C, H, W)")
    N, C, H, W = (ref_int(v, "input_shape", 1) for v in shape)
    dy = f64(args["grad_y"], "grad_y", 4)
    oh, ow = dy.shape[2:]
    shape_is(dy, (N, C, oh, ow), "grad_y")
    dx, mag = np.zeros((N, C, H, W)), np.zeros((N, C, H, W))
    with np.errstate(all="ignore"):
        for p, q, cells in _adaptive_windows(H, W, oh, ow):
            for h, w in cells:
                dx[:, :, h, w] += dy[:, :, p, q] / len(cells)
                mag[:, :, h, w] += np.abs(dy[:, :, p, q]) / len(cells)
    return Near(dx, mag)


@st.composite
def _max_pool2d_backward_args(draw):
    N, C, H, W = draw(dims(1, 2)), draw(dims(0, 2)), draw(dims(0, 5)), draw(dims(1, 5))
    P, Q = draw(dims(0, 3)), draw(dims(0, 3))
    shape = (N, C, P, Q) if not rarely(draw) else (N, C + 1, P, Q)
    plane = max(H * W, 1)
    lo, hi = (-1, plane) if rarely(draw) else (0, plane - 1)
    idx = draw(hnp.arrays(np.int64, (N, C, P, Q), elements=st.integers(lo, hi)))
    dtype = draw(st.sampled_from([np.int32, np.int32, np.int64, np.int16, np.uint8, np.float32]))
    if np.dtype(dtype).kind == "u":
        idx = np.abs(idx)
    input_shape = draw(st.sampled_from([(N, C, H), (N, C, H, 0), (N, C, float(H), W)])) \
        if rarely(draw) else draw(st.sampled_from([(N, C, H, W), [N, C, H, W]]))
    return {"grad_y": draw(array(shape)), "indices": draw(layout(idx.astype(dtype))),
            "input_shape": input_shape, **reference_flag(draw, "max_pool2d_backward")}


@fuzz_op("max_pool2d_backward", "pool2d", _max_pool2d_backward_args)
def _max_pool2d_backward_ref(args):
    shape = args["input_shape"]
    if len(shape) != 4:
        raise Refused("input_shape is not (N, C, H, W)")
    N, C, H, W = (ref_int(v, "input_shape", 1) for v in shape)
    dy = f64(args["grad_y"], "grad_y", 4)
    if dy.shape[:2] != (N, C):
        raise Refused("grad_y does not match input_shape")
    idx = np.asarray(args["indices"])
    if idx.dtype.kind not in "iu":
        raise Refused(f"indices of dtype {idx.dtype}")
    shape_is(idx, dy.shape, "indices")
    if idx.size and (idx.min() < 0 or idx.max() >= H * W):
        raise Refused("an index outside the plane")
    dx, mag = np.zeros((N, C, H * W)), np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            np.add.at(dx[n, c], idx[n, c].ravel(), dy[n, c].ravel())
            np.add.at(mag[n, c], idx[n, c].ravel(), np.abs(dy[n, c].ravel()))
    return Near(dx.reshape(N, C, H, W), mag.reshape(N, C, H, W))


# ---- cross-entropy ----------------------------------------------------------------------------

@st.composite
def _loss_args(draw, function):
    N, L = draw(dims(0, 4)), draw(dims(0, 5))
    logits = draw(array((N, L) if not rarely(draw) else (N,), bound=30.0))
    labels = draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, max(L - 1, 0))))
    how = draw(st.sampled_from(["fraction", "range", "bool", "shape", "str"] if rarely(draw)
                               else ["int64", "int32", "uint8", "float"]))
    if how == "fraction" and N:
        labels = labels + 0.5
    elif how == "range" and N:
        labels[draw(st.integers(0, N - 1))] = draw(st.sampled_from([-1, L]))
    elif how == "shape":
        labels = labels[:, None]
    elif how not in ("int64", "range"):
        labels = labels.astype({"int32": np.int32, "uint8": np.uint8, "float": np.float64,
                                "bool": np.bool_, "str": np.str_}[how])
    args = {"logits": logits, "labels": draw(layout(labels)), **reference_flag(draw, function)}
    if function == "cross_entropy_backward" and draw(st.booleans()):
        args["grad_loss"] = draw(real(-2.0, 2.0))
    return args


def _loss_inputs(args):
    z = f64(args["logits"], "logits", 2)
    lab = np.asarray(args["labels"])
    if lab.dtype.kind not in "iuf" or lab.shape != (z.shape[0],):
        raise Refused(f"labels of dtype {lab.dtype}, shape {lab.shape}")
    if lab.dtype.kind == "f" and np.any(lab != np.round(lab)):
        raise Refused("fractional labels")
    if np.any((lab < 0) | (lab >= z.shape[1])):
        raise Refused("a label out of range")
    with np.errstate(all="ignore"):
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        lse = m[:, 0] + np.log(e.sum(axis=1))
        rows = np.arange(z.shape[0])
        picked = z[rows, lab.astype(np.int64)]
        loss = np.mean(lse - picked)
        onehot = np.zeros_like(z)
        onehot[rows, lab.astype(np.int64)] = 1.0
        grad = (e / e.sum(axis=1, keepdims=True) - onehot) / z.shape[0]
    return Near(loss, np.mean(np.abs(lse) + np.abs(picked)) * 4), Near(grad, np.abs(grad) + 1e-7)


@fuzz_op("cross_entropy", "loss", lambda: _loss_args("cross_entropy"))
def _cross_entropy_ref(args):
    return _loss_inputs(args)[0]


@fuzz_op("cross_entropy_backward", "loss", lambda: _loss_args("cross_entropy_backward"))
def _cross_entropy_backward_ref(args):
    g = ref_float(args.get("grad_loss", 1.0), "grad_loss")
    grad = _loss_inputs(args)[1]
    return Near(g * grad.value, abs(g) * grad.scale)


@fuzz_op("cross_entropy_with_grad", "loss", lambda: _loss_args("cross_entropy_with_grad"))
def _cross_entropy_with_grad_ref(args):
    return _loss_inputs(args)


# ---- optimizers -----------------------------------------------------------------------------------

@st.composite
def _optim_args(draw, function):
    shape = draw(shapes(3))
    param = draw(state(shape))
    grad_shape = shape if not rarely(draw) else shape + (1,)
    args = {"param": param, "grad": draw(array(grad_shape)), "lr": draw(real(0.0, 1.0)),
            **reference_flag(draw, function)}
    for name in ("weight_decay", "maximize"):
        if draw(st.booleans()):
            args[name] = draw(real(0.0, 0.1)) if name == "weight_decay" else draw(st.booleans())
    if function == "sgd_update":
        args["momentum_buffer"] = draw(st.one_of(st.none(), state(shape), st.just(param)))
        for name, space in (("momentum", real(0.0, 0.99)), ("dampening", real(0.0, 1.0)),
                            ("nesterov", st.booleans()), ("first_step", st.booleans())):
            if draw(st.booleans()):
                args[name] = draw(space)
        return args
    args["exp_avg"] = draw(state(shape))
    args["exp_avg_sq"] = draw(state(shape, fill=draw(st.floats(0.0, 1.0))))
    args["step"] = draw(st.sampled_from([0, 1.0, True])) if rarely(draw) else \
        draw(st.integers(1, 20))
    for name, space in (("betas", st.one_of(st.tuples(st.floats(0, 0.99), st.floats(0, 0.999)),
                                            st.sampled_from([(0.9,), (1.0, 0.9), 0.9]))),
                        ("eps", real(0.0, 1e-3)), ("decoupled", st.booleans()),
                        ("amsgrad", st.booleans())):
        if draw(st.booleans()):
            args[name] = draw(space)
    if args.get("amsgrad") and draw(st.integers(0, 5)):
        args["max_exp_avg_sq"] = draw(state(shape, fill=draw(st.floats(0.0, 1.0))))
    return args


def _optim_common(args, states):
    """(param, grad) and the states in float64, the sharing and shape rules checked."""
    p = f32_state(args["param"], np.shape(args["param"]), "param")
    if p.size == 0:
        raise Refused("an empty param")
    arrays = [args["param"]]
    out = []
    for name in states:
        a = args[name]
        out.append(f32_state(a, p.shape, name))
        if any(np.may_share_memory(a, b) for b in arrays):
            raise Refused(f"{name} shares memory")
        arrays.append(a)
    g = f64(args["grad"], "grad")
    shape_is(g, p.shape, "grad")
    lr = ref_float(args["lr"], "lr", 0.0)
    wd = ref_float(args.get("weight_decay", 0.0), "weight_decay", 0.0)
    return p, (-g if args.get("maximize") else g), lr, wd, out


@fuzz_op("sgd_update", "optim", lambda: _optim_args("sgd_update"),
         inplace=("param", "momentum_buffer"))
def _sgd_update_ref(args):
    momentum = ref_float(args.get("momentum", 0.0), "momentum", 0.0)
    dampening = ref_float(args.get("dampening", 0.0), "dampening")
    with_buffer = momentum != 0
    if with_buffer and args["momentum_buffer"] is None:
        raise Refused("momentum without a buffer")
    p, g, lr, wd, states = _optim_common(args, ["momentum_buffer"] if with_buffer else [])
    if args.get("nesterov") and (momentum <= 0 or dampening != 0):
        raise Refused("nesterov needs momentum and no dampening")
    d, scale = g + wd * p, np.abs(g) + np.abs(wd * p)
    out = {}
    if with_buffer:
        buf = d if args.get("first_step") else momentum * states[0] + (1 - dampening) * d
        bscale = scale if args.get("first_step") else \
            np.abs(momentum * states[0]) + abs(1 - dampening) * scale
        out["momentum_buffer"] = Near(buf, bscale)
        d, scale = (d + momentum * buf, scale + momentum * bscale) if args.get("nesterov") \
            else (buf, bscale)
    out["param"] = Near(p - lr * d, np.abs(p) + lr * scale)
    return out


@fuzz_op("adam_update", "optim", lambda: _optim_args("adam_update"),
         inplace=("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
def _adam_update_ref(args):
    amsgrad = bool(args.get("amsgrad", False))
    if amsgrad and args.get("max_exp_avg_sq") is None:
        raise Refused("amsgrad without max_exp_avg_sq")
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    p, g, lr, wd, states = _optim_common(args, names)
    step = ref_int(args["step"], "step", 1)
    betas = args.get("betas", (0.9, 0.999))
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise Refused(f"betas={betas!r}")
    b1, b2 = (ref_float(b, "beta", 0.0, 1.0, hi_open=True) for b in betas)
    eps = float(np.float32(ref_float(args.get("eps", 1e-8), "eps", 0.0)))  # added in float32
    if args.get("decoupled"):
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    w = 1 - b1       # torch's lerp, two formulas by the weight (they differ at Inf)
    m = states[0] + w * (g - states[0]) if w < 0.5 else g - (g - states[0]) * (1 - w)
    v = b2 * states[1] + (1 - b2) * g * g
    out = {"exp_avg": Near(m, np.abs(states[0]) + np.abs(g)),
           "exp_avg_sq": Near(v, b2 * states[1] + (1 - b2) * g * g)}
    if amsgrad:
        v = np.maximum(states[2], v)
        out["max_exp_avg_sq"] = Near(v)
    with np.errstate(all="ignore"):
        denom = np.sqrt(v) / math.sqrt(1 - b2**step) + eps
        step_size = float(np.float32(lr / (1 - b1**step)))    # a float32 scalar, as in torch
        update = step_size * (m / denom)
        # float32 rounding of m and v moves the update by a few ulp of it; a
        # denominator below float32's normal range (eps = 0) is not resolvable
        out["param"] = Free(Near(p - update, np.abs(p) + np.abs(update) * 10), denom < 1e-30)
    return out


# ---- ops other branches add (registered once fastcnn.functional has them) ----------

def ref_dim(dim, ndim):
    """An axis in [-ndim, ndim), as an index in [0, ndim)."""
    d = ref_int(dim, "dim")
    if not -ndim <= d < ndim:
        raise Refused(f"dim={dim!r} for {ndim} dimensions")
    return d % ndim


@st.composite
def _softmax_args(draw, backward):
    shape = draw(shapes())
    dim = draw(st.sampled_from([1.0, True, None])) if rarely(draw) else \
        draw(st.integers(-len(shape) - 1, len(shape)))
    args = {"x": draw(array(shape, bound=30.0)), "dim": dim}
    if backward:
        args = {"grad_y": draw(array(shape if not rarely(draw) else shape + (2,))),
                "y": args["x"], "dim": dim}
    return args


def _softmax_inputs(args, names):
    """The named arrays in float64 (a 0-d one as shape (1,), as torch takes it with
    dim 0 or -1), the axis, and whether it was 0-d (a branch may refuse that)."""
    arrays = [f64(args[n], n) for n in names]
    zero_d = arrays[0].ndim == 0
    arrays = [a.reshape(1) if a.ndim == 0 else a for a in arrays]
    return arrays, ref_dim(args["dim"], arrays[0].ndim), zero_d


def _softmax_result(near, shape, zero_d):
    if zero_d:
        raise MayRefuse(Near(near.value.reshape(shape), near.scale.reshape(shape)))
    return near


def _softmax64(x, dim, log):
    with np.errstate(all="ignore"):
        m = x.max(axis=dim, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=dim, keepdims=True)
        return Near(x - m - np.log(s), np.abs(x) + np.abs(m) + np.abs(np.log(s))) if log else \
            Near(e / s, e / s + 1e-7)


def _softmax_ref(log):
    def reference(args):
        (x,), dim, zero_d = _softmax_inputs(args, ["x"])
        return _softmax_result(_softmax64(x, dim, log), np.shape(args["x"]), zero_d)
    return reference


def _softmax_backward_ref(log):
    def reference(args):
        (y, dy), dim, zero_d = _softmax_inputs(args, ["y", "grad_y"])
        shape_is(dy, y.shape, "grad_y")
        with np.errstate(all="ignore"):
            if log:
                near = Near(dy - np.exp(y) * dy.sum(axis=dim, keepdims=True),
                            np.abs(dy) + np.exp(y) * np.abs(dy).sum(axis=dim, keepdims=True))
            else:
                near = Near(y * (dy - (dy * y).sum(axis=dim, keepdims=True)),
                            np.abs(y) * (np.abs(dy) + np.abs(dy * y).sum(axis=dim, keepdims=True)))
        return _softmax_result(near, np.shape(args["y"]), zero_d)
    return reference


for _log, _name in ((False, "softmax"), (True, "log_softmax")):
    fuzz_op(_name, "softmax", lambda: _softmax_args(False))(_softmax_ref(_log))
    fuzz_op(f"{_name}_backward", "softmax", lambda: _softmax_args(True))(
        _softmax_backward_ref(_log))


@st.composite
def _broadcast_pair(draw):
    """Two shapes that broadcast (now and then two that do not)."""
    shape = draw(shapes())
    other = tuple(1 if draw(st.booleans()) else n for n in shape)[draw(st.integers(0, len(shape))):]
    if rarely(draw):
        other = draw(shapes())
    return (shape, other) if draw(st.booleans()) else (other, shape)


def _mul_args(backward):
    @st.composite
    def strategy(draw):
        sa, sb = draw(_broadcast_pair())
        args = {"a": draw(array(sa)), "b": draw(array(sb))}
        if backward:
            try:
                out = np.broadcast_shapes(sa, sb)
            except ValueError:
                out = sa
            args["grad_y"] = draw(array(out if not rarely(draw) else out + (1,)))
        return args
    return strategy


def _broadcast_inputs(args):
    a, b = f64(args["a"], "a"), f64(args["b"], "b")
    try:
        return a, b, np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise Refused(f"shapes {a.shape} and {b.shape} do not broadcast") from None


def unbroadcast(g, shape):
    """g summed down to `shape` (over the dimensions broadcasting added or stretched)."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True) \
        .reshape(shape)


@fuzz_op("mul", "merge", _mul_args(False))
def _mul_ref(args):
    a, b, _ = _broadcast_inputs(args)
    with np.errstate(all="ignore"):
        return Near(a * b)


@fuzz_op("mul_backward", "merge", _mul_args(True))
def _mul_backward_ref(args):
    a, b, out = _broadcast_inputs(args)
    dy = f64(args["grad_y"], "grad_y")
    shape_is(dy, out, "grad_y")
    with np.errstate(all="ignore"):
        return (Near(unbroadcast(dy * b, a.shape), unbroadcast(np.abs(dy * b), a.shape)),
                Near(unbroadcast(dy * a, b.shape), unbroadcast(np.abs(dy * a), b.shape)))


@st.composite
def _cat_args(draw, backward):
    shape = draw(shapes(4, 3).filter(len))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = [draw(dims(0, 3)) for _ in range(draw(st.integers(1, 3)))]
    if backward:
        total = sum(sizes) + (1 if rarely(draw) else 0)
        grad_shape = shape[:dim % len(shape)] + (total,) + shape[dim % len(shape) + 1:]
        return {"grad_y": draw(array(grad_shape)), "sizes": sizes, "dim": dim}
    arrays = []
    for n in sizes:
        part = list(shape)
        part[dim] = n
        if rarely(draw):
            part[(dim + 1) % len(part)] += 1
        arrays.append(draw(array(tuple(part))))
    return {"arrays": arrays, "dim": dim}


@fuzz_op("cat", "merge", lambda: _cat_args(False))
def _cat_ref(args):
    parts = [f64(a, f"arrays[{i}]") for i, a in enumerate(args["arrays"])]
    d = ref_dim(args["dim"], parts[0].ndim)
    rest = {p.shape[:d] + p.shape[d + 1:] for p in parts}
    if len({p.ndim for p in parts}) > 1 or len(rest) > 1:
        raise Refused("the arrays differ outside dim")
    return Near(np.concatenate(parts, axis=d))


@fuzz_op("cat_backward", "merge", lambda: _cat_args(True))
def _cat_backward_ref(args):
    dy = f64(args["grad_y"], "grad_y")
    d = ref_dim(args["dim"], dy.ndim)
    sizes = [ref_int(n, "sizes", 0) for n in args["sizes"]]
    if sum(sizes) != dy.shape[d]:
        raise Refused(f"sizes {sizes} do not sum to grad_y.shape[{d}]")
    parts = np.split(dy, np.cumsum(sizes)[:-1], axis=d)
    if min(sizes) == 0:                 # an empty part: a result or a refusal
        raise MayRefuse([Near(p) for p in parts])
    return [Near(p) for p in parts]


# ---- the property ------------------------------------------------------------------------------

def check(name, args, function=None):
    """Call fastcnn.functional.<name>(**args) (or `function`) and hold it to the reference.

    Returns "computed" or "refused"; raises AssertionError on a wrong result,
    a refusal of valid arguments, an acceptance of invalid ones, an unclear
    error message, or a modified input. Any other exception propagates."""
    spec = OPS[name]
    function = getattr(F, name) if function is None else function
    optional = False
    try:
        expected, refused = spec["reference"](args), None
    except Refused as why:
        expected, refused = None, str(why)
    except MayRefuse as open_case:
        expected, refused, optional = open_case.expected, None, True
    before = {k: _copy(v) for k, v in args.items() if k not in spec["outputs"]}
    try:
        got = function(**args)
    except (ValueError, TypeError) as error:
        assert refused is not None or optional, \
            f"{name} refused valid arguments: {type(error).__name__}: {error}"
        assert "Received" in str(error), \
            f"{name}'s error does not name the received value: {type(error).__name__}: {error}"
        return "refused"
    assert refused is None, f"{name} accepted invalid arguments ({refused}) and returned {got!r}"
    if spec["inplace"]:
        got = {"result": got, **{k: args[k] for k in spec["inplace"] if k in args}}
        expected = dict(expected)
        expected.setdefault("result", None)
        got = {k: got[k] for k in expected}
    if callable(expected):
        expected = expected(args, got)
    _compare(expected, got, name)
    for k, v in before.items():
        assert _same(v, args[k]), f"{name} modified its input {k}"
    return "computed"


def _copy(v):
    return np.array(v, copy=True) if isinstance(v, np.ndarray) else v


def _same(a, b):
    if not isinstance(a, np.ndarray):
        return True
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def _compare(expected, got, where):
    if isinstance(expected, dict):
        for k in expected:
            _compare(expected[k], got[k], f"{where}[{k!r}]")
    elif isinstance(expected, (tuple, list)):
        assert isinstance(got, type(expected)) and len(got) == len(expected), \
            f"{where}: expected a {type(expected).__name__} of {len(expected)}, got {got!r}"
        for i, (e, g) in enumerate(zip(expected, got)):
            _compare(e, g, f"{where}[{i}]")
    elif expected is None:
        assert got is None, f"{where}: expected None, got {got!r}"
    elif isinstance(expected, (Near, Free)):
        _compare_values(expected, got, where)
    else:                               # integers (indices), exact; -1: any value
        assert isinstance(got, np.ndarray) and got.shape == expected.shape \
            and np.all((got == expected) | (expected == -1)), \
            f"{where}: expected\n{expected!r}\ngot\n{got!r}"


def _compare_values(expected, got, where):
    near, free = (expected.near, expected.free) if isinstance(expected, Free) else \
        (expected, np.zeros(expected.value.shape, bool))
    want = near.value
    if want.ndim == 0 and isinstance(got, float):
        got = np.float64(got)
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.float32, \
            f"{where}: expected a float32 array, got {type(got).__name__} " \
            f"{getattr(got, 'dtype', '')}"
        assert got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}"
    g = np.asarray(got, np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.where(np.isnan(want), np.isnan(g),
                      np.where(np.isinf(want), g == want,
                               np.abs(g - want) <= RTOL * near.scale + ATOL))
    bad = ~(ok | free)
    assert not bad.any(), (f"{where}: {bad.sum()} of {bad.size} values differ from the float64 "
                           f"reference, first at {np.argwhere(bad)[0].tolist()}: got "
                           f"{g[bad][0]!r}, expected {want[bad][0]!r} "
                           f"(scale {near.scale[bad][0]!r})")


def describe(args):
    """A readable account of the arguments, arrays with their dtype, layout and values."""
    lines = []
    for k, v in args.items():
        if isinstance(v, np.ndarray):
            flags = "".join(c for c, f in (("C", v.flags.c_contiguous), ("F", v.flags.f_contiguous),
                                           ("W", v.flags.writeable)) if f)
            lines.append(f"  {k} = ndarray dtype={v.dtype} shape={v.shape} strides={v.strides} "
                         f"flags={flags or '-'}\n    {np.array2string(v, threshold=400)}")
        else:
            lines.append(f"  {k} = {v!r}")
    return "\n".join(lines)


# ---- the child process's run --------------------------------------------------------------------

DEFAULT_EXAMPLES = 40


def main(family):
    """Fuzz every op of `family`; prints one count line per op. Settings from the environment:
    FASTCNN_FUZZ_EXAMPLES (examples per op), FASTCNN_FUZZ_SEED (a seed instead of
    hypothesis' derandomized run), FASTCNN_FUZZ_LAST (a file that holds the example
    under way, for the parent to show after a crash)."""
    import os
    import sys

    import fastcnn
    from hypothesis import HealthCheck, given, seed, settings
    examples = int(os.environ.get("FASTCNN_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
    chosen_seed = os.environ.get("FASTCNN_FUZZ_SEED")
    last = os.environ.get("FASTCNN_FUZZ_LAST")
    for name in sorted(n for n, spec in OPS.items() if spec["family"] == family):
        counts = {"computed": 0, "refused": 0}

        @settings(max_examples=examples, derandomize=chosen_seed is None, database=None,
                  deadline=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(args=OPS[name]["strategy"](), threads=st.sampled_from([1, 2]))
        def fuzz(args, threads):
            if last:
                with open(last, "w") as f:
                    f.write(f"{name}(**args) with {threads} threads, args:\n{describe(args)}\n")
            fastcnn.set_num_threads(threads)
            counts[check(name, args)] += 1

        if chosen_seed is not None:
            fuzz = seed(int(chosen_seed))(fuzz)
        fuzz()
        print(f"fuzz {name}: {sum(counts.values())} examples, {counts['computed']} computed, "
              f"{counts['refused']} refused", flush=True)
    sys.stdout.flush()
