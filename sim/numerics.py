"""Integer numerics of RPAccel: the executable form of ``docs/numerics.md``.

Every function here is plain numpy on integer arrays and is the bit-exact reference the RTL
is compared with. Nothing wraps or clips silently: an input outside its stated range or an
accumulator that would overflow raises :class:`NumericsError` naming the value.

Conventions: integers are carried as ``np.int64`` arrays whatever their hardware width;
``width`` arguments give the hardware width (operands 8, accumulators 32 by default).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "NumericsError", "qmin", "qmax", "check_range", "saturate", "wrap", "linear", "requantize",
    "mlp_layer", "pool_sum", "interaction_pairs", "interaction", "topk",
    "quantize_multiplier", "quantize_tensor", "SHIFT_MAX",
]

#: Largest requantization shift (the hardware field is 6 bits).
SHIFT_MAX = 63


class NumericsError(ValueError):
    """A value outside the range the numerics define (never wrapped or clipped silently)."""


def qmin(width: int) -> int:
    return -(1 << (width - 1))


def qmax(width: int) -> int:
    return (1 << (width - 1)) - 1


def check_range(name: str, x, width: int) -> np.ndarray:
    """``x`` as int64, raising if any element is outside signed ``width`` bits."""
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        raise NumericsError(f"{name} must be an integer array, not {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < qmin(width) or a.max() > qmax(width)):
        bad = a.min() if a.min() < qmin(width) else a.max()
        raise NumericsError(f"{name} holds {int(bad)}, outside signed {width}-bit "
                            f"[{qmin(width)}, {qmax(width)}]")
    return a


def saturate(x, width: int = 8) -> np.ndarray:
    """Clamp to the signed ``width``-bit range (the one place clipping is the rule)."""
    return np.clip(np.asarray(x, dtype=np.int64), qmin(width), qmax(width))


def wrap(x, width: int = 32):
    """Two's-complement wrap-around to ``width`` bits: the modular arithmetic of the
    hardware's accumulators (a PE's partial sum, ``acc + bias`` in the vector unit). The
    golden functions never wrap (they raise instead); testbenches of those units use this
    to model them. An ``int`` for a scalar, else an int64 array."""
    half = 1 << (width - 1)
    if np.ndim(x) == 0:
        return (int(x) + half) % (2 * half) - half
    return (np.asarray(x, dtype=np.int64) + half) % (2 * half) - half


def linear(x, w, bias, *, operand_width: int = 8, acc_width: int = 32) -> np.ndarray:
    """``x @ w + bias`` exactly: x (B, n_in) and w (n_in, n_out) int8, bias (n_out,) int32.

    The result is the accumulator value (B, n_out). It raises if the result leaves the
    signed ``acc_width`` range. Intermediate sums are not checked: the hardware accumulates
    modulo ``2**acc_width`` (bias first, then products in tile order), and modular addition
    gives the exact result whenever the final value is in range.
    """
    x = check_range("activations", x, operand_width)
    w = check_range("weights", w, operand_width)
    bias = check_range("bias", bias, acc_width)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise NumericsError(f"shape mismatch: activations {x.shape} @ weights {w.shape}")
    if bias.shape != (w.shape[1],):
        raise NumericsError(f"bias shape {bias.shape} does not match {w.shape[1]} outputs")
    # Exact in float64: every |partial sum| < n_in * 2**(2*operand_width-2) << 2**53.
    if x.shape[1] * (1 << (2 * operand_width)) < (1 << 52):
        acc = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64) + bias
    else:  # pragma: no cover - only for very wide operands
        acc = x @ w + bias
    return check_range("accumulator", acc, acc_width)


def requantize(acc, mult: int, shift: int, *, relu: bool = False, width: int = 8,
               acc_width: int = 32, mult_width: int = 16) -> np.ndarray:
    """Fixed-point rescale of accumulators to ``width``-bit activations.

    ``y = sat(relu?((acc * mult + 2**(shift-1)) >> shift))`` with an arithmetic shift, i.e.
    round half up (towards +infinity); ``shift = 0`` means no rounding term.
    ``mult`` is unsigned ``mult_width`` bits, ``shift`` in [0, 63].
    """
    acc = check_range("accumulator", acc, acc_width)
    mult, shift = int(mult), int(shift)
    if not 0 <= mult < (1 << mult_width):
        raise NumericsError(f"requantization multiplier {mult} is outside unsigned "
                            f"{mult_width} bits")
    if not 0 <= shift <= SHIFT_MAX:
        raise NumericsError(f"requantization shift {shift} is outside [0, {SHIFT_MAX}]")
    prod = acc * mult  # |prod| < 2**(acc_width + mult_width) <= 2**63 for the widths used
    if shift:
        prod = (prod + (1 << (shift - 1))) >> shift
    if relu:
        prod = np.maximum(prod, 0)
    return saturate(prod, width)


def mlp_layer(x, w, bias, mult: int, shift: int, *, relu: bool, operand_width: int = 8,
              acc_width: int = 32, mult_width: int = 16) -> np.ndarray:
    """One hidden layer: ``requantize(linear(x, w, bias), mult, shift, relu)``."""
    acc = linear(x, w, bias, operand_width=operand_width, acc_width=acc_width)
    return requantize(acc, mult, shift, relu=relu, width=operand_width, acc_width=acc_width,
                      mult_width=mult_width)


def pool_sum(rows, *, width: int = 8) -> np.ndarray:
    """Sum-pooling of an embedding bag: ``sat(sum of rows)``, rows (k, D) -> (D,).

    The sum is exact (accumulated wide) and saturated once at the end. An empty bag pools
    to zeros.
    """
    rows = check_range("embedding rows", rows, width)
    if rows.ndim != 2:
        raise NumericsError(f"an embedding bag must be (rows, dim), not shape {rows.shape}")
    return saturate(rows.sum(axis=0), width)


def interaction_pairs(n: int) -> list[tuple[int, int]]:
    """The order of the pairwise dot products of ``n`` vectors: (i, j) for i > j, row-major
    over the strictly lower triangle: (1,0), (2,0), (2,1), (3,0), ... (as DLRM)."""
    return [(i, j) for i in range(n) for j in range(i)]


def interaction(z, mults, shifts, *, width: int = 8, acc_width: int = 32,
                mult_width: int = 16) -> np.ndarray:
    """DLRM feature interaction without self-interaction.

    ``z`` (B, n, D) int8: the bottom-MLP output and the pooled embeddings. Pair ``p = (i, j)``
    of :func:`interaction_pairs` gives ``requantize(z_i . z_j, mults[p], shifts[p])`` (no ReLU):
    every pair has its own scale because its vectors come from tables of different scales.
    Returns (B, n*(n-1)/2) int8.
    """
    z = check_range("interaction vectors", z, width)
    if z.ndim != 3:
        raise NumericsError(f"interaction input must be (batch, vectors, dim), not {z.shape}")
    n = z.shape[1]
    pairs = interaction_pairs(n)
    mults, shifts = np.asarray(mults), np.asarray(shifts)
    if mults.shape != (len(pairs),) or shifts.shape != (len(pairs),):
        raise NumericsError(f"{n} vectors make {len(pairs)} pairs; got {mults.shape} "
                            f"multipliers and {shifts.shape} shifts")
    gram = np.einsum("bnd,bmd->bnm", z, z)  # exact in int64
    out = np.empty((z.shape[0], len(pairs)), dtype=np.int64)
    for p, (i, j) in enumerate(pairs):
        out[:, p] = requantize(gram[:, i, j], mults[p], shifts[p], width=width,
                               acc_width=acc_width, mult_width=mult_width)
    return out


def topk(scores, ids, k: int) -> np.ndarray:
    """Positions of the ``min(k, N)`` best candidates, best first.

    Better means a higher score; equal scores are ordered by the lower candidate id
    (ids are unique within a query). ``k`` must be >= 1; the list must not be empty.
    """
    scores, ids = np.asarray(scores), np.asarray(ids)
    if scores.ndim != 1 or scores.shape != ids.shape:
        raise NumericsError(f"scores {scores.shape} and ids {ids.shape} must be equal 1-D shapes")
    if scores.size == 0:
        raise NumericsError("top-k of an empty candidate list")
    if int(k) < 1:
        raise NumericsError(f"k must be at least 1, not {k}")
    if np.unique(ids).size != ids.size:
        raise NumericsError("candidate ids within one query must be unique")
    order = np.lexsort((ids, -scores.astype(np.int64)))
    return order[: int(k)]


def quantize_multiplier(real: float, *, mult_width: int = 16) -> tuple[int, int]:
    """(mult, shift) with ``mult / 2**shift`` closest to ``real`` > 0 and ``mult`` normalised
    to ``[2**(mult_width-1), 2**mult_width)`` when the shift range allows it."""
    if not (real > 0 and math.isfinite(real)):
        raise NumericsError(f"a requantization scale must be positive and finite, not {real!r}")
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    shift = mult_width - exp
    if shift > SHIFT_MAX:
        shift = SHIFT_MAX
    if shift < 0:
        raise NumericsError(f"requantization scale {real!r} is too large for a "
                            f"{mult_width}-bit multiplier")
    mult = int(round(real * (1 << shift)))
    if mult >= (1 << mult_width):  # rounding carried into a new bit
        mult >>= 1
        shift -= 1
    return mult, shift


def quantize_tensor(x, scale: float, *, width: int = 8) -> np.ndarray:
    """Symmetric quantization ``sat(round_half_even(x / scale))`` to ``[-(2**(w-1)-1), 2**(w-1)-1]``
    (the most negative code is not used, so negation is exact)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise NumericsError(f"a quantization scale must be positive and finite, not {scale!r}")
    q = np.rint(np.asarray(x, dtype=np.float64) / scale)
    return np.clip(q, -qmax(width), qmax(width)).astype(np.int64)
