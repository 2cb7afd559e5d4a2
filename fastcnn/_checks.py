"""Argument validation shared by every binding: each check raises ValueError
or TypeError naming the received value, before anything reaches C."""
import numbers
import operator

import numpy as np

INT32_MAX = 2**31 - 1


def as_float32(x, name, ndim=None):
    """``x`` as a C-contiguous float32 array (converted once, here, if needed).

    Raises TypeError for non-numeric data and ValueError for a wrong ndim or
    an empty array.
    """
    arr = np.asarray(x)
    if arr.dtype == np.float32 and arr.flags.c_contiguous and (ndim is None or arr.ndim == ndim):
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty. Received: {name}.shape={arr.shape}")
        return arr
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be an array of real numbers. "
                        f"Received: {name} with dtype={arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional. "
                         f"Received: {name}.shape={arr.shape} ({arr.ndim}-dimensional)")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty. Received: {name}.shape={arr.shape}")
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    return np.asarray(arr, dtype=np.float32, order="C")


def as_labels(labels, n, classes, name="labels"):
    """``labels`` as a C-contiguous int64 vector of length n with values in [0, classes).

    Floats are accepted when every value is a whole number. Raises TypeError
    for other dtypes or fractional values and ValueError for a wrong shape or
    a label out of range, naming the first bad one.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be integers (class indices). "
                        f"Received: {name} with dtype={arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one class index per row. "
                         f"Received: {name}.shape={arr.shape}")
    if arr.dtype.kind == "f":
        fractional = np.flatnonzero(arr != np.round(arr))
        if fractional.size:
            i = int(fractional[0])
            raise TypeError(f"{name} must be integers (class indices). "
                            f"Received: {name}[{i}]={arr[i].item()!r} with dtype={arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be in [0, {classes}). "
                         f"Received: {name}[{i}]={arr[i].item()!r}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_int(value, name):
    """``value`` as a Python int; rejects bools, floats and strings."""
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an integer. Received: {name}={value!r}")


def positive_int(value, name):
    """as_int, >= 1."""
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")
    return v


def nonnegative_int(value, name):
    """as_int, >= 0."""
    v = as_int(value, name)
    if v < 0:
        raise ValueError(f"{name} must be non-negative. Received: {name}={value!r}")
    return v


def as_pair(value, name):
    """An int or a pair of ints as a tuple (a, b)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints. Received: {name}={value!r}")
        return as_int(value[0], name), as_int(value[1], name)
    v = as_int(value, name)
    return v, v


def positive_pair(value, name):
    """as_pair, each element >= 1."""
    pair = as_pair(value, name)
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")
    return pair


def nonnegative_pair(value, name):
    """as_pair, each element >= 0."""
    pair = as_pair(value, name)
    if min(pair) < 0:
        raise ValueError(f"{name} must be non-negative. Received: {name}={value!r}")
    return pair


def as_float(value, name):
    """``value`` as a finite Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number. Received: {name}={value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite. Received: {name}={value!r}")
    return v


def nonnegative_float(value, name):
    """as_float, >= 0."""
    v = as_float(value, name)
    if v < 0:
        raise ValueError(f"{name} must be non-negative. Received: {name}={value!r}")
    return v


def check_shape(arr, shape, name):
    """Raise ValueError unless arr.shape == shape."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}. Received: {name}.shape={arr.shape}")


def out_buffer(buf, shape, name):
    """A caller-given float32 accumulator (or a fresh zeroed one if buf is None)."""
    if buf is None:
        return np.zeros(shape, dtype=np.float32)
    if not isinstance(buf, np.ndarray) or buf.dtype != np.float32 or not buf.flags.c_contiguous \
            or not buf.flags.writeable:
        raise TypeError(f"{name} must be a writeable C-contiguous float32 numpy array. "
                        f"Received: {name} of type {type(buf).__name__}"
                        + (f" with dtype={buf.dtype}" if isinstance(buf, np.ndarray) else ""))
    check_shape(buf, shape, name)
    return buf

