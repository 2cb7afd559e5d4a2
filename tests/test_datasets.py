"""Data sets (fastcnn/datasets.py): the bundled digits, IDX files, random shifts."""
import gzip
import os

import numpy as np
import pytest

from fastcnn import datasets


def test_mnist_5k_split_shapes_types_and_ranges():
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist_5k()
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert x_train.flags.c_contiguous and x_test.flags.c_contiguous
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_train).tolist() == [400] * 10      # stratified
    assert np.bincount(y_test).tolist() == [100] * 10
    assert not np.all(np.diff(y_train) >= 0)                # not sorted by label


def test_mnist_5k_split_is_fixed_and_disjoint():
    (a_x, a_y), (b_x, b_y) = datasets.load_mnist_5k()
    (c_x, c_y), (d_x, d_y) = datasets.load_mnist_5k()
    np.testing.assert_array_equal(a_x, c_x)
    np.testing.assert_array_equal(b_y, d_y)
    raw = np.load(os.path.join(os.path.dirname(datasets.__file__), "data", "mnist_5k.npz"))
    images = raw["images"].reshape(5000, -1)
    index = {img.tobytes(): i for i, img in enumerate(images)}
    def positions(x):
        return {index[(np.rint(img * 255)).astype(np.uint8).tobytes()] for img in x.reshape(len(x), -1)}
    train, test = positions(a_x), positions(b_x)
    assert not train & test
    assert len(train | test) == len(set(index))            # every distinct image used


def test_bundled_data_carries_its_attribution():
    readme = os.path.join(os.path.dirname(datasets.__file__), "data", "README.md")
    text = open(readme).read()
    assert "LeCun" in text and "CC BY-SA 3.0" in text


def write_idx(path, array, code, compress=False, tamper=None):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    data = header + big.tobytes()
    if tamper:
        data = tamper(data)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                         (np.int32, 0x0C), (np.float32, 0x0D),
                                         (np.float64, 0x0E)])
def test_load_idx_round_trip(dtype, code, compress, tmp_path, rng):
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, code, compress)
    out = datasets.load_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1                                        # a writeable copy


def test_load_idx_mnist_like_labels_and_gzip_detected_by_content(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-no-gz-suffix"
    write_idx(path, labels, 0x08, compress=True)
    np.testing.assert_array_equal(datasets.load_idx(str(path)), labels)


@pytest.mark.parametrize("tamper, match", [
    (lambda d: b"\x01" + d[1:], r"is not an IDX file: it must start with two zero bytes"),
    (lambda d: d[:2] + b"\x07" + d[3:], r"has an unknown IDX element type. Received: 0x07"),
    (lambda d: d[:-1], r"is truncated: shape \(2, 3\) of uint8 needs 18 bytes, the file has 17"),
    (lambda d: d + b"\x00", r"is longer than its header says"),
    (lambda d: d[:7], r"is truncated or malformed: its header declares 2 dimensions"),
    (lambda d: d[:3] + b"\x00" + d[4:], r"is truncated or malformed: its header declares 0"),
    (lambda d: b"", r"is not an IDX file"),
])
def test_load_idx_bad_files(tamper, match, tmp_path):
    path = tmp_path / "bad.idx"
    write_idx(path, np.zeros((2, 3), np.uint8), 0x08, tamper=tamper)
    with pytest.raises(ValueError, match=r"bad.idx' " + match):
        datasets.load_idx(path)


def test_load_idx_bad_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    good = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")
    path.write_bytes(good[:-6])
    with pytest.raises(ValueError, match=r"bad.gz' is not a valid gzip file"):
        datasets.load_idx(path)
    with pytest.raises(FileNotFoundError):
        datasets.load_idx(tmp_path / "missing.idx")


def test_random_shift_moves_whole_images(rng):
    x = np.zeros((50, 1, 6, 6), np.float32)
    x[:, 0, 2, 3] = 1.0
    out = datasets.random_shift(x, 2, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == np.float32
    ones = np.argwhere(out[:, 0] == 1.0)
    assert len(ones) == 50 and out.sum() == 50              # the pixel moved, never lost
    assert np.all(np.abs(ones[:, 1] - 2) <= 2) and np.all(np.abs(ones[:, 2] - 3) <= 2)
    assert len({(r, c) for _, r, c in ones}) > 5            # shifts vary
    again = datasets.random_shift(x, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    assert datasets.random_shift(x, 0) is x
    with pytest.raises(ValueError, match=r"max_shift must be non-negative. Received: max_shift=-1"):
        datasets.random_shift(x, -1)
    with pytest.raises(ValueError, match=r"x must be 4-dimensional \(N, C, H, W\)"):
        datasets.random_shift(x[0], 1)
