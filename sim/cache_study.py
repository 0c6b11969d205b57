"""Embedding-cache study on real cascade traffic (``rpaccel cache-study``).

**Traffic.** For MovieLens-100K test users, the golden cascades of ``sim.golden.PIPELINES``
(2- and 3-stage) are run; every stage looks up, for each of its input candidates, the 7
single-valued rows and the genre bag of that stage's model (the candidates of stage 1 are
all the user's test candidates, those of later stages the previous stage's kept list).
Each model has its own tables (table set = model), as on the accelerator.

**Static cache policy.** The host counts each table's row accesses on the *training split*
(a user's row once per training interaction, an item's likewise, a categorical row by the
users or items carrying it, a genre by its items' interactions), renumbers every table
hottest-first (:func:`rpaccel.sim.cache_model.hotness_order`) and pins the globally hottest
rows (:func:`rpaccel.sim.cache_model.plan_static`); the static cache then holds rows
``[0, h_t)`` of each table.

**Measure.** :class:`rpaccel.sim.cache_model.EmbeddingCacheModel` classifies every lookup
exactly as the RTL (it predicts the RTL counters bit for bit, which the tests check), so the
hit rates and memory bytes here are the hardware's. Capacity is counted in rows (one row per
line, the same on-chip bytes per row in both caches) and compared at equal total rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.embedding import STAGES
from rpaccel.sim.cache_model import (EmbeddingCacheModel, Lookup, TableDescriptor,
                                     hotness_order, plan_static)
from rpaccel.sim.features import TABLES

__all__ = ["training_counts", "renumber", "cascade_traffic", "Traffic", "simulate",
           "zipf_traffic", "study", "STUDY_USERS"]

#: Test users of the default study (every 10th user: 95 queries).
STUDY_USERS = tuple(range(0, 943, 10))


def training_counts(features, split) -> list[np.ndarray]:
    """Per table of :data:`~rpaccel.sim.features.TABLES`, the training-split access count of
    every row."""
    users, items = split.pairs("train")
    us, its = features.user_sparse, features.item_sparse
    n = features.table_rows
    counts = [np.bincount(us[users, 0], minlength=n[0]), np.bincount(its[items, 0], minlength=n[1])]
    for col in range(1, 5):
        counts.append(np.bincount(us[users, col], minlength=n[1 + col]))
    counts.append(np.bincount(its[items, 1], minlength=n[6]))
    counts.append(features.item_genres[items].sum(axis=0).astype(np.int64))
    return [np.asarray(c, dtype=np.int64) for c in counts]


def renumber(counts: list[np.ndarray]) -> list[np.ndarray]:
    """Per table, ``new_index[old]`` of the hottest-first renumbering."""
    out = []
    for c in counts:
        order = hotness_order(c)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        out.append(inverse)
    return out


@dataclass
class Traffic:
    """A lookup stream and what the caches need to know about its tables."""

    name: str
    lookups: list                 # Lookup beats (rows already renumbered hottest-first)
    table_rows: dict              # (model, table) -> rows
    counts: dict                  # (model, table) -> training counts in the new numbering
    dims: dict                    # (model, table) -> dimension
    queries: int


def cascade_traffic(setup, pipeline: str, users=STUDY_USERS, *,
                    max_candidates: int | None = None) -> Traffic:
    """The renumbered lookup stream of ``pipeline`` over ``users`` (see the module doc)."""
    from rpaccel.sim.golden import PIPELINES

    golden, features = setup.golden, setup.features
    pipe = PIPELINES[pipeline]
    models = tuple(dict.fromkeys(s.model for s in pipe.stages))
    counts = training_counts(features, setup.split)
    new = renumber(counts)
    cache: dict = {}
    lookups = []
    n_single = len(TABLES) - 1
    genre_new = new[n_single]
    for user in users:
        result = golden.run(pipe, int(user), setup.split.test_candidates(int(user)), cache=cache)
        for stage_no, stage in enumerate(result.stages):
            mi = models.index(stage.model)
            cands = stage.candidates[:max_candidates] if max_candidates else stage.candidates
            batch = golden.batch(int(user), cands)
            sparse = np.column_stack([new[t][batch.sparse[:, t]] for t in range(n_single)])
            for c in range(len(cands)):
                for t in range(n_single):
                    lookups.append(Lookup(mi, t, int(sparse[c, t]), 1, 0, 0, stage_no))
                genres = sorted(int(genre_new[g]) for g in np.flatnonzero(batch.genres[c]))
                if not genres:
                    lookups.append(Lookup(mi, n_single, 0, 1, 1, 1, stage_no))
                for i, g in enumerate(genres):
                    end = int(i == len(genres) - 1)
                    lookups.append(Lookup(mi, n_single, g, end, end, 0, stage_no))
    rows, cnt, dims = {}, {}, {}
    for mi, name in enumerate(models):
        qm = golden.quantized[name]
        for t, table in enumerate(qm.tables):
            rows[(mi, t)] = table.shape[0]
            cnt[(mi, t)] = np.sort(counts[t])[::-1]
            dims[(mi, t)] = table.shape[1]
    return Traffic(pipeline, lookups, rows, cnt, dims, len(users))


def zipf_traffic(*, tables: int = 8, rows: int = 10 ** 6, exponent: float = 1.05,
                 queries: int = 20, candidates: int = 1000, dim: int = 32,
                 seed: int = 2021) -> Traffic:
    """A synthetic one-stage trace at RecPipe's scale: ``tables`` tables of ``rows`` rows,
    each lookup's row drawn from a Zipf law of ``exponent`` over the table (rank = row index,
    i.e. already hottest-first), one row per table per candidate. Training counts are the
    law's expected frequencies."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, rows + 1, dtype=np.float64)
    p = ranks ** -exponent
    p /= p.sum()
    cdf = np.cumsum(p)
    lookups = []
    draws = np.searchsorted(cdf, rng.random((queries * candidates, tables)))
    draws = np.minimum(draws, rows - 1)
    for c in range(draws.shape[0]):
        for t in range(tables):
            lookups.append(Lookup(0, t, int(draws[c, t]), 1, int(t == tables - 1), 0, 0))
    expected = (p * 1e9).astype(np.int64)
    return Traffic(f"zipf-{rows}x{tables}-s{exponent}", lookups,
                   {(0, t): rows for t in range(tables)},
                   {(0, t): expected for t in range(tables)},
                   {(0, t): dim for t in range(tables)}, queries)


def _config(base: AccelConfig, static_rows: int, dyn_rows: int, ways: int) -> AccelConfig:
    sets = dyn_rows // ways if dyn_rows else 0
    row_width = max(base.emb_row_width, 21)
    return base.replace(static_cache_rows=static_rows, dynamic_cache_sets=sets,
                        dynamic_cache_ways=ways, emb_row_width=row_width,
                        model_slots=max(base.model_slots, 4))


def simulate(traffic: Traffic, base: AccelConfig, *, static_rows: int, dyn_rows: int,
             ways: int = 4, stage_ways: tuple | None = None) -> dict:
    """Counters of one cache configuration on ``traffic`` (``dyn_rows`` a multiple of
    ``ways`` whose quotient is a power of two, or 0)."""
    cfg = _config(base, static_rows, dyn_rows, ways)
    plan = plan_static(traffic.table_rows, traffic.counts, static_rows) if static_rows else {}
    descriptors = []
    addr = 0
    for key in sorted(traffic.table_rows):
        n, dim = traffic.table_rows[key], traffic.dims[key]
        beat = cfg.mem_bus_width // 8
        row_bytes = -(-dim * cfg.operand_width // cfg.mem_bus_width) * beat
        shift = max(max(row_bytes - 1, 1).bit_length(), beat.bit_length() - 1)
        addr = -(-addr // 4096) * 4096
        sbase, srows = plan.get(key, (0, 0))
        descriptors.append(TableDescriptor(key[0], key[1], addr, n, shift, dim, sbase, srows))
        addr += n << shift
    if addr > 1 << cfg.mem_addr_width:
        cfg = cfg.replace(mem_addr_width=min(64, max(cfg.mem_addr_width, addr.bit_length())))
    model = EmbeddingCacheModel(cfg, descriptors,
                                stage_ways=stage_ways or ((1 << ways) - 1,) * STAGES)
    model.run(traffic.lookups)
    c = model.counters
    hits = c["static_hits"] + c["dynamic_hits"]
    return {"static_rows": static_rows, "dynamic_rows": dyn_rows,
            "hit_rate": hits / max(1, c["static_accesses"]),
            "static_hit_rate": c["static_hits"] / max(1, c["static_accesses"]),
            "bytes_per_query": c["bytes"] / max(1, traffic.queries),
            "counters": dict(c)}


def _dyn_sizes(total: int, ways: int) -> int:
    """The largest power-of-two-sets dynamic capacity not above ``total`` rows."""
    if total < ways:
        return 0
    return ways << int(math.log2(total // ways))


def study(traffics: list[Traffic], base: AccelConfig, capacities: list[int], *,
          ways: int = 4) -> dict:
    """For each traffic and total capacity (rows): static-only, dynamic-only and an even
    static+dynamic mix at equal total rows; for multi-stage traffic also the dynamic cache
    split between stages (way masks) at each capacity."""
    out = {"capacities": capacities, "ways": ways, "traffic": {}}
    for tr in traffics:
        rows_total = sum(tr.table_rows.values())
        entry = {"capacities": list(capacities), "queries": tr.queries, "lookups": len(tr.lookups), "table_rows": rows_total,
                 "static_only": [], "dynamic_only": [], "static_dynamic": [], "split": []}
        stages = 1 + max(lk.stage for lk in tr.lookups)
        for cap in capacities:
            dyn = _dyn_sizes(cap, ways)
            entry["static_only"].append(simulate(tr, base, static_rows=cap, dyn_rows=0,
                                                 ways=ways))
            entry["dynamic_only"].append(simulate(tr, base, static_rows=0, dyn_rows=dyn,
                                                  ways=ways))
            half = _dyn_sizes(cap // 2, ways)
            entry["static_dynamic"].append(simulate(tr, base, static_rows=cap - half,
                                                    dyn_rows=half, ways=ways))
            if stages > 1:
                best = []
                for first in range(1, ways):
                    m0 = (1 << first) - 1
                    m1 = ((1 << ways) - 1) & ~m0
                    masks = (m0, m1, m1, m1)
                    r = simulate(tr, base, static_rows=0, dyn_rows=dyn, ways=ways,
                                 stage_ways=masks)
                    r["stage0_ways"] = first
                    best.append(r)
                entry["split"].append(best)
        out["traffic"][tr.name] = entry
    return out
