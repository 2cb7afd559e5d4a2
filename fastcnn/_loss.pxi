# Bindings of csrc/loss.c: softmax cross-entropy over integer labels.
import numpy as np
from libc.stdint cimport int64_t

from . cimport _fastcnn as c
from ._fastcnn cimport fptr, lptr
from ._checks import as_float, as_float32, as_labels
from ._config import get_num_threads


def cross_entropy(logits, labels, *, reference=False):
    """Mean softmax cross-entropy, as torch.nn.functional.cross_entropy(logits, labels).

    Stable for any finite logits (log-sum-exp). A NaN logit makes the loss
    NaN, as in PyTorch.

    Args:
        logits: unnormalized class scores, any real dtype (converted to float32).
        labels: integer class indices (whole-number floats are accepted).
        reference: use the plain reference kernel (the test oracle).

    Input shape:
        logits: (N, L). labels: (N,), values in [0, L).

    Returns:
        The loss, a Python float: mean over N of -log softmax(logits)[i, labels[i]].

    Raises:
        TypeError: non-numeric logits, non-integer labels.
        ValueError: logits not 2-D or empty, labels of the wrong shape or out of range.

    Example:
        >>> fastcnn.functional.cross_entropy(np.zeros((2, 4)), [0, 3])
        1.3862943611198906
    """
    z, lab = _loss_inputs(logits, labels)
    probs = _empty(z.shape)
    return _loss_forward(probs, z, lab, reference)


def cross_entropy_backward(logits, labels, *, grad_loss=1.0, reference=False):
    """Gradient of the mean cross-entropy with respect to the logits.

    Args:
        logits, labels: as for ``cross_entropy``.
        grad_loss: gradient of the final objective with respect to the loss
            (1.0 when the loss is the objective).
        reference: use the plain reference kernels (the test oracle).

    Output shape:
        (N, L), like logits.

    Returns:
        float32 array ``grad_loss * (softmax(logits) - onehot(labels)) / N``.

    Raises:
        as ``cross_entropy``; also TypeError/ValueError for a non-finite or
        non-real grad_loss.
    """
    z, lab = _loss_inputs(logits, labels)
    g = as_float(grad_loss, "grad_loss")
    grad = _empty(z.shape)
    _loss_forward(grad, z, lab, reference)
    _loss_backward_in_place(grad, lab, g, reference)
    return grad


def cross_entropy_with_grad(logits, labels, *, reference=False):
    """The mean cross-entropy and its gradient with respect to the logits, in one call.

    Args:
        logits, labels: as for ``cross_entropy``.
        reference: use the plain reference kernels (the test oracle).

    Returns:
        (loss, grad): the Python float ``cross_entropy(logits, labels)`` and the
        (N, L) float32 ``cross_entropy_backward(logits, labels)``.

    Raises:
        as ``cross_entropy``.

    Example:
        >>> loss, grad = fastcnn.functional.cross_entropy_with_grad(scores, y)
    """
    z, lab = _loss_inputs(logits, labels)
    grad = _empty(z.shape)
    loss = _loss_forward(grad, z, lab, reference)
    _loss_backward_in_place(grad, lab, 1.0, reference)
    return loss, grad


def _loss_inputs(logits, labels):
    z = as_float32(logits, "logits")
    if z.ndim != 2:
        raise ValueError("logits must be 2-dimensional (N, L). "
                         f"Received: logits.shape={z.shape}")
    return z, as_labels(labels, z.shape[0], z.shape[1])


def _loss_forward(probs, z, lab, bint reference):
    """probs = softmax(z); returns the mean loss."""
    cdef int64_t N = z.shape[0], L = z.shape[1]
    cdef float *pp = fptr(probs)
    cdef const float *pz = fptr(z)
    cdef const int64_t *pl = lptr(lab)
    cdef int nt = get_num_threads()
    cdef double loss
    with nogil:
        if reference:
            loss = c.cross_entropy_forward_ref(pp, pz, pl, N, L)
        else:
            loss = c.cross_entropy_forward(pp, pz, pl, N, L, nt)
    return loss


def _loss_backward_in_place(probs, lab, float grad_loss, bint reference):
    """probs (the softmax) becomes the gradient of grad_loss * the mean loss."""
    cdef int64_t N = probs.shape[0], L = probs.shape[1]
    cdef float *pp = fptr(probs)
    cdef const int64_t *pl = lptr(lab)
    cdef int nt = get_num_threads()
    with nogil:
        if reference:
            c.cross_entropy_backward_ref(pp, pp, pl, N, L, grad_loss)
        else:
            c.cross_entropy_backward(pp, pp, pl, N, L, grad_loss, nt)
