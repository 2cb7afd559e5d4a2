"""scikit-learn estimators around fastcnn models: CNNClassifier and CNNRegressor.

They follow scikit-learn's estimator contract (``get_params`` / ``set_params``,
``fit`` / ``predict`` / ``score``, ``partial_fit``, cloning, pickling), so a
fastcnn network works in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``
(joblib's process workers too). scikit-learn is an optional dependency:
``pip install "fastcnn[sklearn]"``; ``import fastcnn`` never imports it.

Example:
    >>> from fastcnn.sklearn import CNNClassifier
    >>> clf = CNNClassifier(input_shape=(1, 8, 8), epochs=10, random_state=0)
    >>> clf.fit(X_train, y_train).score(X_test, y_test)      # X: (N, 64) pixels
"""
import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:                      # pragma: no cover - exercised without sklearn
    raise ImportError('fastcnn.sklearn needs scikit-learn: pip install "fastcnn[sklearn]"') from exc

try:                                            # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:                             # pragma: no cover - older scikit-learn
    _sk_validate_data = None

from .layers import Conv2d, Flatten, Linear, ReLU, manual_seed
from .optim import SGD, Adam, AdamW, Optimizer
from .sequential import Sequential

__all__ = ["CNNClassifier", "CNNRegressor", "default_model"]

_OPTIMIZERS = {"adam": Adam, "sgd": SGD, "adamw": AdamW}
_DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "adamw": 1e-3}


def default_model(input_shape, n_outputs, channels=16):
    """The default network: Conv(3x3, padding 1)-ReLU-Conv(3x3, padding 1)-ReLU-
    Flatten-Linear. The padding keeps every spatial size, so it takes any
    (C, H, W), 1xN rows of tabular features included.

    Args:
        input_shape: (C, H, W) of one example.
        n_outputs: number of outputs (classes, or regression targets).
        channels: feature maps of both convolutions. Default 16.

    Returns:
        a :class:`fastcnn.Sequential`.
    """
    c, h, w = input_shape
    return Sequential(
        Conv2d(c, channels, 3, padding=1), ReLU(),
        Conv2d(channels, channels, 3, padding=1), ReLU(),
        Flatten(), Linear(channels * h * w, n_outputs))


def _validate(est, X, y="no_validation", reset=True, **kw):
    """validate_data as the installed scikit-learn spells it: X alone (y left
    out), or X and y (y=None then raises scikit-learn's 'requires y' error)."""
    kw.setdefault("allow_nd", True)
    kw.setdefault("dtype", [np.float32, np.float64])
    kw["y"] = y
    if _sk_validate_data is not None:
        return _sk_validate_data(est, X, reset=reset, **kw)
    return est._validate_data(X, reset=reset, **kw)     # pragma: no cover - sklearn < 1.6


def _seed_from(random_state):
    """An integer seed drawn from ``random_state`` (None: unpredictable)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _CNNBase(BaseEstimator):
    """Shared machinery of CNNClassifier and CNNRegressor (not public)."""

    _loss = None            # 'cross_entropy' or 'mse'

    def __init__(self, input_shape=None, model=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=None, random_state=None, verbose=0):
        self.input_shape = input_shape
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.random_state = random_state
        self.verbose = verbose

    # tags ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    def _more_tags(self):                          # pragma: no cover - sklearn < 1.6
        return {"allow_nan": False}

    # parameter checks (in fit, never in __init__ / set_params) --------------
    def _check_params(self):
        if not isinstance(self.epochs, numbers.Integral) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer. Received: epochs={self.epochs!r}")
        if not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. "
                             f"Received: batch_size={self.batch_size!r}")
        if self.lr is not None and (not isinstance(self.lr, numbers.Real) or not self.lr > 0):
            raise ValueError(f"lr must be a positive number or None. Received: lr={self.lr!r}")
        if self.model is not None and not callable(self.model):
            raise TypeError(f"model must be a callable (input_shape, n_outputs) -> fastcnn model, "
                            f"or None. Received: {type(self.model).__name__}")
        opt = self.optimizer
        if not (callable(opt) or (isinstance(opt, str) and opt.lower() in _OPTIMIZERS)):
            raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)} or a callable "
                             f"(params, lr) -> fastcnn Optimizer. Received: optimizer={opt!r}")
        if self.verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={self.verbose!r}")

    def _image_shape(self, X):
        """(C, H, W) of one example of validated X (2-D tabular or 4-D images)."""
        if X.ndim == 4:
            shape = X.shape[1:]
            if self.input_shape is not None and tuple(self.input_shape) != shape[-len(self.input_shape):]:
                raise ValueError(f"X holds images of shape {shape}, but input_shape="
                                 f"{tuple(self.input_shape)}")
            return shape
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features) or 4-D images (N, C, H, W). "
                             f"Received: X.shape={X.shape}")
        n_features = X.shape[1]
        if self.input_shape is None:
            return (1, 1, n_features)
        shape = tuple(int(d) for d in self.input_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), (H, W) or None. "
                             f"Received: input_shape={self.input_shape!r}")
        if int(np.prod(shape)) != n_features:
            raise ValueError(f"input_shape={self.input_shape!r} needs {int(np.prod(shape))} "
                             f"features per sample, X has {n_features}")
        return shape

    def _images(self, X, reset):
        X = _validate(self, X, reset=reset)
        return self._to_images(X)

    def _to_images(self, X):
        if X.ndim == 4 and X.shape[1:] != self.image_shape_:
            raise ValueError(f"X holds images of shape {X.shape[1:]}, the estimator was fitted "
                             f"on {self.image_shape_}")
        return np.ascontiguousarray(X, np.float32).reshape((X.shape[0],) + self.image_shape_)

    def _build(self, X, n_outputs):
        """A fresh network and optimizer for images X, seeded by random_state."""
        self._check_params()
        self.image_shape_ = tuple(int(d) for d in self._image_shape(X))
        self._rng = check_random_state(self.random_state)
        if self.random_state is not None:
            manual_seed(_seed_from(self._rng))
        factory = default_model if self.model is None else self.model
        net = factory(self.image_shape_, n_outputs)
        if not hasattr(net, "fit") or not hasattr(net, "parameters"):
            raise TypeError(f"model(input_shape, n_outputs) must return a fastcnn model "
                            f"(Sequential or Module). Received: {type(net).__name__}")
        name = self.optimizer.lower() if isinstance(self.optimizer, str) else None
        lr = self.lr if self.lr is not None else _DEFAULT_LR.get(name, 1e-3)
        if name is not None:
            opt = _OPTIMIZERS[name](net.parameters(), lr=lr)
        else:
            opt = self.optimizer(net.parameters(), lr=lr)
            if not isinstance(opt, Optimizer):
                raise TypeError(f"optimizer(params, lr) must return a fastcnn Optimizer. "
                                f"Received: {type(opt).__name__}")
        self.model_ = net
        self.optimizer_ = opt
        self.n_outputs_ = n_outputs

    def _train(self, X, y, epochs):
        seed = _seed_from(self._rng) if self.random_state is not None else None
        self.history_ = self.model_.fit(
            X, y, epochs=epochs, batch_size=int(self.batch_size), optimizer=self.optimizer_,
            loss=self._loss, shuffle=True, seed=seed, verbose=int(self.verbose))
        return self

    def _outputs(self, X):
        check_is_fitted(self, "model_")
        X = self._images(X, reset=False)
        return self.model_.predict(X, batch_size=max(int(self.batch_size), 256))


class CNNClassifier(ClassifierMixin, _CNNBase):
    """A fastcnn network as a scikit-learn classifier (softmax cross-entropy).

    Args:
        input_shape: (C, H, W) (or (H, W), one channel) that each row of 2-D
            tabular X of C*H*W features is reshaped to. None: rows become
            (1, 1, n_features) images; 4-D X (N, C, H, W) is taken as images as is.
        model: a callable ``model(input_shape, n_outputs)`` returning a fastcnn
            model (Sequential or Module) that maps (N, C, H, W) to (N, n_outputs)
            logits. None: :func:`default_model`, a small CNN for any input size.
        epochs: passes over the data per ``fit``. Default 10.
        batch_size: examples per step. Default 32.
        optimizer: 'adam', 'sgd', 'adamw', or a callable ``(params, lr)``
            returning a fastcnn Optimizer (e.g. ``fastcnn.SGD`` or
            ``functools.partial(fastcnn.SGD, momentum=0.9)``). Default 'adam'.
        lr: learning rate. None: 1e-3 for Adam(W), 1e-2 for SGD.
        random_state: int, RandomState or None. Seeds the model's
            initialisation and the shuffling, so fits with an int repeat exactly.
        verbose: 0 silent, 1 progress bar, 2 a line per epoch.

    Attributes:
        classes_: the sorted class labels (any type ``np.unique`` sorts).
        model_: the trained fastcnn model. optimizer_: its optimizer.
        n_features_in_: features of the 2-D X (channels of 4-D X).
        image_shape_: (C, H, W) the network sees. history_: the last fit's History.

    Example:
        >>> clf = CNNClassifier(input_shape=(1, 8, 8), epochs=10, random_state=0)
        >>> clf.fit(X, y).predict_proba(X[:2]).sum(axis=1)
        array([1., 1.])
    """

    _loss = "cross_entropy"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def _encode(self, y):
        check_classification_targets(y)
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[codes] == y):
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            raise ValueError(f"y holds labels not in classes_: {unknown[:5]!r}")
        return codes.astype(np.int64)

    def fit(self, X, y):
        """Train a fresh network on X (N, features) or (N, C, H, W) and labels y (N,).

        Returns:
            self.
        """
        X, y = _validate(self, X, y, reset=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        self._build(X, len(self.classes_))
        return self._train(self._to_images(X), self._encode(y), int(self.epochs))

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y), keeping the network of earlier calls.

        Args:
            classes: every label of the problem; required on the first call.

        Returns:
            self.
        """
        first = not hasattr(self, "model_")
        X, y = _validate(self, X, y, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
            self._build(X, len(self.classes_))
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes_ of the first "
                             f"call: {self.classes_!r}")
        return self._train(self._to_images(X), self._encode(y), 1)

    def predict_proba(self, X):
        """Class probabilities (N, n_classes): the softmax of the logits, in float64."""
        z = self._outputs(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict(self, X):
        """The most probable class of each example, as a label of ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class CNNRegressor(RegressorMixin, _CNNBase):
    """A fastcnn network as a scikit-learn regressor (mean squared error).

    Takes the arguments of :class:`CNNClassifier`. y may be (N,) or (N, T)
    for T targets; ``predict`` returns the same layout.

    Example:
        >>> reg = CNNRegressor(epochs=20, random_state=0).fit(X, y)
        >>> reg.score(X, y)        # R^2
    """

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self):                          # pragma: no cover - sklearn < 1.6
        return {"allow_nan": False, "multioutput": True}

    def _targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def fit(self, X, y):
        """Train a fresh network on X and targets y (N,) or (N, T).

        Returns:
            self.
        """
        X, y = _validate(self, X, y, reset=True, multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        t = self._targets(y)
        self._build(X, t.shape[1])
        return self._train(self._to_images(X), t, int(self.epochs))

    def partial_fit(self, X, y):
        """One epoch on (X, y), keeping the network of earlier calls.

        Returns:
            self.
        """
        first = not hasattr(self, "model_")
        X, y = _validate(self, X, y, reset=first, multi_output=True, y_numeric=True)
        t = self._targets(y)
        if first:
            self._y_1d = y.ndim == 1
            self._build(X, t.shape[1])
        elif t.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {t.shape[1]} targets, the estimator was fitted on "
                             f"{self.n_outputs_}")
        return self._train(self._to_images(X), t, 1)

    def predict(self, X):
        """Predicted targets, (N,) when fitted on 1-D y, else (N, T)."""
        out = self._outputs(X).astype(np.float64)
        return out.ravel() if self._y_1d else out

