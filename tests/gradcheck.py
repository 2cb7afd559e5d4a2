"""Finite-difference checks of backward passes.

A backward pass gives g = d<f(x), u>/dx for an upstream gradient u. Along a
random direction v, the central difference
    (<f(x + e v), u> - <f(x - e v), u>) / (2 e)
must equal <g, v>. Comparing these scalars (rather than every element)
averages float32 rounding over the whole tensor, so the check stays sharp.
"""
import numpy as np


def directional_fd(f, x, u, v, eps):
    """Central difference of <f(x), u> along v, computed in float64."""
    plus = np.asarray(f((x + eps * v).astype(x.dtype)), dtype=np.float64)
    minus = np.asarray(f((x - eps * v).astype(x.dtype)), dtype=np.float64)
    return float(np.sum((plus - minus) * u) / (2 * eps))


def check_directional(f, x, u, grad, rng, eps=1e-2, rtol=2e-2, atol=1e-3, directions=3):
    """Assert <grad, v> matches the finite difference for a few random v."""
    for _ in range(directions):
        v = rng.standard_normal(x.shape).astype(x.dtype)
        numeric = directional_fd(f, x, u, v, eps)
        analytic = float(np.sum(np.asarray(grad, np.float64) * v))
        assert abs(numeric - analytic) <= atol + rtol * max(abs(numeric), abs(analytic)), \
            f"finite difference {numeric} != analytic {analytic}"
