"""Seeded random *valid* configurations, for the tests that check any configuration works.

:func:`random_config` draws every hardware field of :class:`~rpaccel.hw.config.AccelConfig`
from one seed (the same seed, the same configuration, on every machine), favouring the
values where generators break: 1, powers of two and ``2**n - 1`` for counts, the extremes of
the widths. Sizes stay small enough to simulate in seconds (arrays up to 8 x 16).
Fields it does not know keep their defaults. A draw that the configuration rejects
(a constraint between fields) is drawn again from the same generator, so the result is
always valid and still a function of the seed.

``tests/test_random_configs.py`` lints every unit and runs cocotb smoke tests on a few seeds
(the seed is in the test id; ``RPACCEL_SEEDS=5,17`` replays chosen ones).
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.config import DEFAULT, AccelConfig, ConfigError

__all__ = ["random_config", "describe"]


def _edge_count(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi], half the time one of 1, 2**n, 2**n - 1 (within the range)."""
    if rng.random() < 0.5:
        edges = sorted({v for n in range(13) for v in (1 << n, (1 << n) - 1, (1 << n) + 1)
                        if lo <= v <= hi})
        if edges:
            return int(rng.choice(edges))
    return int(rng.integers(lo, hi + 1))


def _pow2(rng: np.random.Generator, lo: int, hi: int) -> int:
    choices = [1 << n for n in range(16) if lo <= 1 << n <= hi]
    return int(rng.choice(choices))


def _draw(rng: np.random.Generator) -> dict:
    rows = _pow2(rng, 2, 8)
    partitions = int(rng.choice([1, 2, 4]))
    cols = _pow2(rng, max(2, 2 * partitions), 16)
    ow = int(rng.integers(4, 17))
    aw = int(rng.integers(2 * ow + 4, 49))
    tile = rows * cols // partitions
    emb = _pow2(rng, 2, 64)
    tables = int(rng.integers(1, 9))
    topk_max = _edge_count(rng, 1, 64)
    values = {
        "rows": rows, "cols": cols, "partitions": partitions,
        "operand_width": ow, "acc_width": aw,
        "requant_mult_width": int(rng.integers(8, 25)),
        "sub_batch": _edge_count(rng, 1, 64),
        "max_layer_dim": rows * int(rng.integers(1, max(2, 64 // rows) + 1)),
        "weight_capacity": tile * int(rng.integers(1, 65)),
        "bias_capacity": cols * int(rng.integers(1, 9)) + int(rng.integers(0, cols)),
        "emb_dim_max": emb,
        "interaction_lanes": _pow2(rng, 1, emb),
        "max_tables": tables,
        "max_interaction_vectors": int(rng.integers(tables + 1, min(64, tables + 8) + 1)),
        "static_cache_rows": int(rng.integers(0, 1025)),
        "dynamic_cache_sets": int(rng.choice([0, 1, 2, 8, 64])),
        "dynamic_cache_ways": int(rng.integers(1, 5)),
        "topk_max": topk_max,
        "topk_units": int(rng.integers(partitions, partitions + 3)),
        "id_width": int(rng.integers(max(4, topk_max.bit_length()), 21)),
        "mem_bus_width": _pow2(rng, 32, 256),
        "clock_mhz": float(round(rng.uniform(50, 250), 1)),
    }
    # the stage runner needs 3 activation buffers (4 to overlap sub-batches); one fewer is
    # drawn now and then, so the units that take fewer (the MLP engine) see it too
    overlap = bool(rng.integers(0, 2))
    values.update(subbatch_overlap=overlap, onchip_topk=bool(rng.integers(0, 2)),
                  act_buffers=3 + overlap + int(rng.integers(-1, 2)))
    values["topk_heaps"] = int(rng.integers(1, 3))     # drawn last: earlier draws unchanged
    return values


def random_config(seed: int, *, base: AccelConfig = DEFAULT, tries: int = 100) -> AccelConfig:
    """A valid configuration drawn from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    error = None
    for _ in range(tries):
        values = _draw(rng)
        known = {k: v for k, v in values.items() if k in base.to_dict()}
        try:
            return base.replace(**known)
        except ConfigError as err:
            error = err
    raise ConfigError(f"no valid configuration drawn from seed {seed} in {tries} tries "
                      f"(last: {error})")


def describe(config: AccelConfig) -> str:
    """The fields that differ from the defaults, as one TOML-like line (for test output)."""
    default = DEFAULT.to_dict()
    return ", ".join(f"{k} = {v}" for k, v in config.to_dict().items() if default[k] != v)


def random_cosim_case(seed: int) -> tuple[AccelConfig, str, int, list[bool]]:
    """A ``tiny`` accelerator with random partitions, sub-batch, cache sizes and feature
    switches (sub-batch overlap, on-chip top-k), a two-stage cascade (small, then medium)
    with random ``k`` per stage, each stage with two partitions dealt over both or ganged
    on both (one in three), and a candidate count, all from ``seed``: the cases the
    whole-accelerator cosimulation runs. ``(config, pipeline spec, candidates per query,
    gang flag per stage)``."""
    from rpaccel.hw.config import PRESETS

    rng = np.random.default_rng(seed)
    partitions = int(rng.choice([1, 2]))
    overlap = bool(rng.integers(0, 2))
    topk_max = int(rng.choice([8, 15, 16, 32]))
    config = PRESETS["tiny"].replace(
        partitions=partitions, topk_units=partitions + int(rng.integers(0, 2)),
        sub_batch=_edge_count(rng, 1, 32),
        static_cache_rows=int(rng.choice([0, 1, 17, 64, 256])),
        dynamic_cache_sets=int(rng.choice([0, 1, 2, 8])),
        dynamic_cache_ways=int(rng.integers(1, 4)),
        topk_max=topk_max, subbatch_overlap=overlap, onchip_topk=bool(rng.integers(0, 2)),
        act_buffers=3 + overlap + int(rng.integers(0, 2)))
    n = int(rng.integers(topk_max, 3 * topk_max + 20))
    k1 = int(rng.integers(1, min(topk_max, n) + 1))
    k2 = int(rng.integers(1, k1 + 1))
    gangs = [partitions == 2 and bool(rng.integers(0, 3) == 0) for _ in range(2)]
    return config, f"small:{k1},medium:{k2}", n, gangs
