"""Model of the vector unit (hw/vector.py): input rows, the golden result row, scoreboard.

An input row is the ``inp`` payload as a dict (``acc``, ``bias``: ``partition_cols`` lanes;
``mult``, ``shift``, ``relu``, ``score``, ``last``); the unit must answer each, in order,
with ``acc + bias`` wrapped to ``acc_width`` and then either kept (a score row) or passed
through ``rpaccel.sim.numerics.requantize`` to the signed ``operand_width`` range.

:func:`extreme_rows` is the one hand-picked list of corner cases (accumulator limits,
multiplier 0 and maximum, shifts 0 to 63, halves of both signs, the saturation bounds of
the configured operand width, scores, bias wrap-around); :func:`random_rows` adds random
ones. Used by ``tests/test_vector.py`` (Amaranth simulator) and ``tb/test_vector.py``
(cocotb).
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.sim import numerics
from rpaccel.sim.numerics import qmax, qmin, wrap

__all__ = ["expected_row", "extreme_rows", "random_rows", "check_results"]


def expected_row(config: AccelConfig, row: dict) -> list[int]:
    """The ``data`` lanes the unit must give for input ``row``."""
    s = wrap(np.add(row["acc"], row["bias"], dtype=np.int64), config.acc_width)
    if row["score"]:
        return [int(v) for v in s]
    return [int(v) for v in numerics.requantize(
        s, row["mult"], row["shift"], relu=bool(row["relu"]), width=config.operand_width,
        acc_width=config.acc_width, mult_width=config.requant_mult_width)]


def extreme_rows(config: AccelConfig) -> list[dict]:
    """Hand-picked rows: accumulator limits, multiplier 0 and max, shifts 0/1/31/47/63,
    halves of both signs, ReLU on and off, score mode, saturation at both ends of the
    operand range, bias wrap-around. ``last`` on every third row."""
    aw, cp = config.acc_width, config.partition_cols
    lo, hi = qmin(aw), qmax(aw)
    omin, omax = qmin(config.operand_width), qmax(config.operand_width)   # -128, 127 for int8
    mmax = (1 << config.requant_mult_width) - 1
    values = [lo, hi, -1, 0, 1, -5, 5, -3, 3, -2, 2, 2 * omax + 1, 2 * omin, 2 * omax,
              2 * omin - 1, 1 << 20, -(1 << 20), lo + 1, hi - 1, omax, omax + 1, omin, omin - 1]
    rows = []

    def row(accs, bias, mult, shift, relu=0, score=0):
        accs = (list(accs) * cp)[:cp]
        bias = (list(bias) * cp)[:cp]
        rows.append({"acc": [int(wrap(v, aw)) for v in accs],
                     "bias": [int(wrap(v, aw)) for v in bias], "mult": mult, "shift": shift,
                     "relu": relu, "score": score, "last": int(len(rows) % 3 == 0)})

    for shift in (0, 1, 2, 31, 32, 47, 48, 62, 63):
        for mult in (0, 1, 3, mmax):
            for relu in (0, 1):
                for start in range(0, len(values), cp):
                    row(values[start:start + cp], [0], mult, shift, relu)
    # Negative halves round towards +infinity: -2.5 -> -2, -0.5 -> 0, 2.5 -> 3, -1.5 -> -1.
    row([-5, -1, 5, -3], [0], 1, 1)
    row([-10, -2, 10, -6], [0], 1, 2)
    row([-5, -1, 5, 3], [0], 1, 1, relu=1)
    # Scores: the accumulator sum, whatever mult/shift/relu say.
    row([lo, hi, -1, 12345], [0], 7, 9, relu=1, score=1)
    row([hi, lo, 100, -100], [1, -1, hi, lo], mmax, 63, score=1)  # wraps modulo 2**aw
    # Bias wrap-around before requantization.
    row([hi, lo], [hi, lo], 1, 0)
    row([hi, lo], [1, -1], 1, 24, relu=1)
    # Just inside and outside the saturation bounds.
    row([omax, omax + 1, omin, omin - 1], [0], 1, 0)
    row([2 * omax, 2 * omax + 1, 2 * omin, 2 * omin - 1], [0], 1, 1)
    row([2 * omax - 1, 2 * omax + 1, 2 * omin + 1, 2 * omin - 2], [0], 1, 1, relu=1)
    row([hi], [0], mmax, aw + 14)
    row([lo], [0], mmax, aw + 14)
    row([lo], [0], mmax, aw + 15)
    row([hi], [0], mmax, aw + 15)
    return rows


def random_rows(config: AccelConfig, rng: np.random.Generator, count: int) -> list[dict]:
    """Random rows; the shift is mostly chosen near the product's magnitude so that results
    spread over the operand range instead of all saturating. The last row has ``last``."""
    aw, cp, mw = config.acc_width, config.partition_cols, config.requant_mult_width
    ow = config.operand_width
    rows = []
    for _ in range(count):
        scale = int(rng.integers(1, aw))
        accs = [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)]
        bias = [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)]
        if rng.random() < 0.1:
            accs = [int(v) for v in rng.integers(qmin(aw), qmax(aw), cp, endpoint=True)]
        mult = int(rng.integers(0, 1 << mw))
        shift = int(np.clip(scale + mw - ow + int(rng.integers(-3, 4)), 0, 63))
        if rng.random() < 0.15:
            shift = int(rng.integers(0, 64))
        rows.append({"acc": [int(wrap(v, aw)) for v in accs],
                     "bias": [int(wrap(v, aw)) for v in bias], "mult": mult, "shift": shift,
                     "relu": int(rng.integers(0, 2)), "score": int(rng.random() < 0.1),
                     "last": int(rng.random() < 0.2)})
    if rows:
        rows[-1]["last"] = 1
    return rows


def check_results(config: AccelConfig, rows: list[dict], got: list[dict]) -> None:
    """Scoreboard: ``got`` (``out`` payloads, in order) must be the expected rows, ``last``
    passed through; the message names the first wrong row with its input."""
    assert len(got) == len(rows), f"{len(got)} results for {len(rows)} rows"
    for index, (row, out) in enumerate(zip(rows, got)):
        want = expected_row(config, row)
        assert out["data"] == want and out["last"] == int(row["last"]), (
            f"row {index}: got {out['data']} last={out['last']}, expected {want} "
            f"last={int(row['last'])} for {row}")
