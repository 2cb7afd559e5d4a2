"""fastcnn.sklearn: CNNClassifier / CNNRegressor against scikit-learn's estimator contract."""
import functools
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed "
                              "(pip install \"fastcnn[sklearn]\")")

from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn.sklearn import CNNClassifier, CNNRegressor  # noqa: E402
from subproc import run_python  # noqa: E402


def _digits(n=300):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).astype(np.float32), y[:n]


# scikit-learn's own checks, on small fast instances ------------------------------
@parametrize_with_checks([CNNClassifier(epochs=10, lr=0.01, random_state=0),
                          CNNRegressor(epochs=10, lr=0.01, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# behaviour ------------------------------------------------------------------------
def test_import_fastcnn_does_not_import_sklearn(tmp_path):
    out = run_python("import sys, fastcnn; print('sklearn' in sys.modules)", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_sklearn_message(tmp_path):
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import fastcnn.sklearn\nexcept ImportError as e:\n    print(e)")
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'pip install "fastcnn[sklearn]"' in out.stdout


def test_classifier_digits_images_and_string_labels():
    X, y = _digits()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                      "eight", "nine"])[y]
    clf = CNNClassifier(input_shape=(1, 8, 8), epochs=15, lr=3e-3, random_state=0)
    clf.fit(X[:240], names[:240])
    assert clf.image_shape_ == (1, 8, 8) and clf.n_features_in_ == 64
    assert set(clf.classes_) == set(names)
    proba = clf.predict_proba(X[240:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    pred = clf.predict(X[240:])
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert clf.score(X[240:], names[240:]) > 0.8
    # 4-D input is taken as images as is, and gives the same network the same answers
    img = CNNClassifier(epochs=15, lr=3e-3, random_state=0).fit(X[:240].reshape(-1, 1, 8, 8),
                                                                 names[:240])
    np.testing.assert_array_equal(img.predict(X[240:].reshape(-1, 1, 8, 8)), pred)


def test_random_state_reproducible_and_none_varies():
    X, y = _digits(120)
    a = CNNClassifier(epochs=2, random_state=3).fit(X, y).predict_proba(X)
    b = CNNClassifier(epochs=2, random_state=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = CNNClassifier(epochs=2, random_state=4).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)
    d = CNNClassifier(epochs=2).fit(X, y).predict_proba(X)
    e = CNNClassifier(epochs=2).fit(X, y).predict_proba(X)
    assert not np.array_equal(d, e)


def test_partial_fit_keeps_model_and_needs_classes():
    X, y = _digits(200)
    clf = CNNClassifier(input_shape=(8, 8), lr=3e-3, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
    model = clf.model_
    first = clf.score(X, y)
    for _ in range(8):
        clf.partial_fit(X, y)
    assert clf.model_ is model and clf.score(X, y) > first
    with pytest.raises(ValueError):
        clf.partial_fit(X[:, :-1], y)


def test_custom_model_and_optimizer_callables():
    X, y = _digits(200)

    def net(input_shape, n_outputs):
        c, h, w = input_shape
        return fastcnn.Sequential(fastcnn.Conv2d(c, 4, 3, padding=1), fastcnn.ReLU(),
                                  fastcnn.MaxPool2d(2), fastcnn.Flatten(),
                                  fastcnn.Linear(4 * (h // 2) * (w // 2), n_outputs))

    clf = CNNClassifier(input_shape=(1, 8, 8), model=net, epochs=10, lr=0.05,
                        optimizer=functools.partial(fastcnn.SGD, momentum=0.9), random_state=0)
    clf.fit(X, y)
    assert isinstance(clf.optimizer_, fastcnn.SGD) and len(clf.model_) == 5
    assert clf.score(X, y) > 0.8
    with pytest.raises(ValueError, match="optimizer"):
        CNNClassifier(optimizer="rmsprop").fit(X, y)
    with pytest.raises(ValueError, match="input_shape"):
        CNNClassifier(input_shape=(1, 7, 7)).fit(X, y)


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 12)).astype(np.float32)
    w = rng.standard_normal((12, 2))
    Y = X @ w
    reg = CNNRegressor(input_shape=(3, 2, 2), epochs=30, lr=3e-3, random_state=0)
    assert reg.fit(X, Y[:, 0]).predict(X).shape == (200,)
    assert reg.score(X, Y[:, 0]) > 0.9
    assert reg.fit(X, Y).predict(X).shape == (200, 2)
    assert reg.score(X, Y) > 0.9


def test_pickle_fitted_estimator():
    X, y = _digits(120)
    clf = CNNClassifier(epochs=2, random_state=0).fit(X, y)
    clf.predict(X)                                   # compiles the model's graph
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_pipeline_cross_val_score_and_grid_search_in_loky_workers():
    X, y = _digits(300)
    pipe = make_pipeline(StandardScaler(), CNNClassifier(input_shape=(1, 8, 8), epochs=8,
                                                         lr=3e-3, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.75
    grid = GridSearchCV(pipe, {"cnnclassifier__lr": [1e-4, 3e-3],
                               "cnnclassifier__batch_size": [32]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["cnnclassifier__lr"] == 3e-3
    assert grid.score(X, y) > 0.8
    serial = GridSearchCV(pipe, {"cnnclassifier__lr": [1e-4, 3e-3],
                                 "cnnclassifier__batch_size": [32]}, cv=2, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(serial.cv_results_["mean_test_score"],
                               grid.cv_results_["mean_test_score"])
