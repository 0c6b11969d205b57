"""Model of the systolic array (hw/systolic.py): tiles, stream beats, golden, schedule.

A *tile* is ``(W, X)``: weights ``W`` (``rows x partition_cols``) and activation rows ``X``
(``B x rows``, any ``B >= 1``); a partition's job is a list of tiles. The array must answer
every activation row ``x``, in order, with ``x @ W`` wrapped to ``acc_width`` bits, ``last``
on the tile's final row. Values span the configuration's signed ``operand_width`` range.

Used by ``tests/test_systolic.py`` (Amaranth simulator: numerics and exact timing) and
``tb/test_systolic.py`` (cocotb), so stimulus, expected rows, scoreboard and the documented
schedule are written once.
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.sim.numerics import qmax, qmin, wrap

__all__ = ["operand_range", "random_tiles", "mixed_row_counts", "extreme_tiles",
           "weight_beats", "act_beats", "expected_rows", "check_results",
           "expected_accept_cycles"]


def operand_range(config: AccelConfig) -> tuple[int, int]:
    """Most negative and most positive operand (inclusive)."""
    return qmin(config.operand_width), qmax(config.operand_width)


def random_tiles(config: AccelConfig, rng: np.random.Generator, row_counts) -> list:
    """Tiles of uniformly random operands, one per entry of ``row_counts`` (its row count)."""
    R, Cp = config.rows, config.partition_cols
    lo, hi = operand_range(config)
    return [(rng.integers(lo, hi, (R, Cp), endpoint=True),
             rng.integers(lo, hi, (b, R), endpoint=True)) for b in row_counts]


def mixed_row_counts(config: AccelConfig, rng: np.random.Generator, partition: int) -> list[int]:
    """Row counts of partition ``partition``'s tiles: 1, fewer than R, R and more than 2R,
    plus ``4 + partition`` random ones (so partitions differ), shuffled."""
    R = config.rows
    counts = [1, R - 1, R, 2 * R + 1] + [int(b) for b in rng.integers(1, 2 * R, 4 + partition)]
    rng.shuffle(counts)
    return counts


def extreme_tiles(config: AccelConfig) -> list:
    """The largest magnitudes of every sign combination: each tile with every weight and
    activation at one end of the operand range, then a checkerboard of both ends."""
    R, Cp = config.rows, config.partition_cols
    lo, hi = operand_range(config)
    tiles = [(np.full((R, Cp), w), np.full((2, R), a)) for a in (lo, hi) for w in (lo, hi)]
    mixed = np.where(np.indices((R, Cp)).sum(axis=0) % 2, hi, lo)
    tiles.append((mixed, np.array([[lo] * R, [hi] * R, [(lo, hi)[r % 2] for r in range(R)]])))
    return tiles


def weight_beats(tiles) -> list[list[int]]:
    """Payloads of the ``weights`` stream: a tile's rows, row 0 first."""
    return [[int(v) for v in row] for w, _ in tiles for row in w]


def act_beats(tiles) -> list[dict]:
    """Payloads of the ``acts`` stream: every activation row, ``last`` on a tile's final row."""
    return [{"data": [int(v) for v in row], "last": int(i == len(x) - 1)}
            for _, x in tiles for i, row in enumerate(x)]


def expected_rows(config: AccelConfig, tiles) -> list[dict]:
    """The ``results`` payloads the tiles must give, in order."""
    out = []
    for w, x in tiles:
        rows = wrap(np.asarray(x, dtype=np.int64) @ np.asarray(w, dtype=np.int64),
                    config.acc_width)
        out += [{"data": row.tolist(), "last": int(i == len(x) - 1)}
                for i, row in enumerate(rows)]
    return out


def check_results(config: AccelConfig, partition: int, tiles, got: list[dict]) -> None:
    """Scoreboard: ``got`` (result payloads, in order) must be exactly the expected rows; the
    message shows the first mismatching row, actual against expected."""
    expected = expected_rows(config, tiles)
    assert len(got) == len(expected), \
        f"partition {partition}: {len(got)} results, expected {len(expected)}"
    for i, (row, exp) in enumerate(zip(got, expected)):
        assert row == exp, (f"partition {partition} row {i}: got {row['data']} "
                            f"last={row['last']}, expected {exp['data']} last={exp['last']}")


def expected_accept_cycles(config: AccelConfig, row_counts) -> list[int]:
    """The documented schedule (docs/architecture.md): the cycle each activation row is
    accepted in, with weights offered from cycle 0 at full rate, every row offered as soon
    as the one before went, and the results taken at once.

    Tile n loads into bank n % 2 once the weights stream has finished tile n - 1 and bank
    n % 2 is free: ``R - 1`` cycles after the last row of tile n - 2 was accepted. A load of
    ``R`` beats starting in cycle s lets the tile's first row go in cycle s + R.
    """
    R = config.rows
    cycles, last_row, loader_free, previous = [], [], 0, -1
    for n, rows in enumerate(row_counts):
        start = loader_free if n < 2 else max(loader_free, last_row[n - 2] + R - 1)
        loader_free = start + R
        first = max(previous + 1, start + R)
        cycles += range(first, first + rows)
        previous = first + rows - 1
        last_row.append(previous)
    return cycles
