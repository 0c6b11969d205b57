"""Model of the embedding subsystem's streams: table sets, lookup streams (random and
MovieLens cascade traffic) and the pooled vectors and counters it must answer.

Shared by ``tests/test_embedding.py`` (Amaranth simulator) and ``tb/test_embedding.py``
(cocotb). Counters come from :class:`rpaccel.sim.cache_model.EmbeddingCacheModel`, pooled
vectors from :func:`rpaccel.sim.numerics.pool_sum`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rpaccel.hw.axi import PAGE_BYTES
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.embedding import KIND_BAD, STAGES
from rpaccel.sim import numerics
from rpaccel.sim.cache_model import (EmbeddingCacheModel, Lookup, TableDescriptor,
                                     place_tables)

__all__ = ["TableSet", "random_tables", "random_lookups", "bags_to_lookups",
           "expected_pooled", "static_writes", "check_pooled", "movielens_stimulus",
           "check_address"]


@dataclass
class TableSet:
    """Tables of one or more models with their memory layout and static-cache plan."""

    config: AccelConfig
    tables: dict                       # (model, table) -> int array (rows, dim)
    descriptors: list
    image: dict                        # beat address -> beat integer
    static: dict = field(default_factory=dict)   # (model, table) -> (base, rows)

    @classmethod
    def build(cls, config: AccelConfig, tables: dict, static: dict | None = None,
              base: int = PAGE_BYTES) -> "TableSet":
        descriptors, image = place_tables(config, tables, base=base, static=static)
        return cls(config, tables, descriptors, image, dict(static or {}))

    def descriptor(self, model: int, table: int) -> TableDescriptor:
        return next(d for d in self.descriptors if (d.model, d.table) == (model, table))

    def model(self, **options) -> EmbeddingCacheModel:
        return EmbeddingCacheModel(self.config, self.descriptors, **options)


def random_tables(rng: np.random.Generator, config: AccelConfig, *, models: int = 2,
                  tables: int | None = None, max_rows: int = 300) -> dict:
    """Random int tables: per model up to ``max_tables`` tables of random row counts and
    dimensions (the models' own dims, as the cascade's models differ), full int range."""
    lo, hi = -(1 << (config.operand_width - 1)), (1 << (config.operand_width - 1)) - 1
    out = {}
    for mdl in range(min(models, config.model_slots)):
        dim = int(rng.choice([1, config.emb_dim_max, int(rng.integers(1, config.emb_dim_max + 1))]))
        for t in range(tables or config.max_tables):
            n = int(rng.integers(1, max_rows + 1))
            style = rng.random()
            if style < 0.15:      # the extremes, where saturation and sign matter
                rows = rng.choice([lo, hi, lo + 1, hi - 1, 0, -1], (n, dim))
            else:
                rows = rng.integers(lo, hi, (n, dim), endpoint=True)
            out[(mdl, t)] = rows.astype(np.int64)
    return out


def split_static(config: AccelConfig, tables: dict, rng: np.random.Generator) -> dict:
    """A random static-cache plan: a prefix of each table, within ``static_cache_rows``."""
    plan, base = {}, 0
    for key in sorted(tables):
        room = config.static_cache_rows - base
        take = int(min(room, rng.integers(0, tables[key].shape[0] + 1) // 2)) if room > 0 else 0
        if rng.random() < 0.15:
            take = min(room, tables[key].shape[0])     # a small table pinned whole
        take = max(0, take)
        plan[key] = (base if take else 0, take)   # no rows: base 0 (it must fit the field)
        base += take
    return plan


def bags_to_lookups(bags, *, stage: int = 0) -> list[Lookup]:
    """Lookups of candidates given as lists of ``(model, table, rows)`` bags (the last bag
    of each candidate ends the sample; an empty ``rows`` is an empty bag)."""
    out = []
    for candidate in bags:
        for b, (mdl, table, rows) in enumerate(candidate):
            last_bag = b == len(candidate) - 1
            if len(rows) == 0:
                out.append(Lookup(mdl, table, 0, 1, int(last_bag), 1, stage))
                continue
            for i, r in enumerate(rows):
                end = i == len(rows) - 1
                out.append(Lookup(mdl, table, int(r), int(end), int(end and last_bag), 0, stage))
    return out


def random_lookups(rng: np.random.Generator, config: AccelConfig, tables: dict,
                   candidates: int, *, zipf: float = 1.3, bad: float = 0.0) -> list[Lookup]:
    """Random candidates: per candidate one model and every table of it, bags of 1 to
    ``max_bag`` rows drawn Zipf-skewed (so the caches hit). With ``bad`` > 0 that fraction
    of bags is malformed: a row outside the table, an unconfigured table, an empty bag or
    one of ``max_bag + 1`` rows."""
    models = sorted({m for m, _ in tables})
    bags = []
    stage_of = {}
    for _ in range(candidates):
        mdl = int(rng.choice(models))
        stage_of[len(bags)] = mdl % STAGES
        cand = []
        for (m, t), rows in sorted(tables.items()):
            if m != mdl:
                continue
            n = rows.shape[0]
            k = 1 if rng.random() < 0.5 else int(rng.integers(1, config.max_bag + 1))
            idx = [int(min(n - 1, rng.zipf(zipf) - 1)) if rng.random() < 0.7
                   else int(rng.integers(0, n)) for _ in range(k)]
            if bad and rng.random() < bad:
                what = rng.integers(0, 4)
                if what == 0:
                    idx[int(rng.integers(0, k))] = n + int(rng.integers(0, 3))
                elif what == 1:             # a model number no table set uses
                    m = config.model_slots - 1
                    assert (m, t) not in tables, "leave the last model unconfigured"
                elif what == 2:
                    idx = []
                else:
                    idx = [int(rng.integers(0, n)) for _ in range(config.max_bag + 1)]
            cand.append((m, t, idx))
        bags.append(cand)
    out = []
    for i, cand in enumerate(bags):
        out += bags_to_lookups([cand], stage=stage_of[i])
    return out


def static_writes(config: AccelConfig, tset: TableSet) -> list[dict]:
    """The ``static_write`` payloads that load the static cache of ``tset``."""
    out = []
    for key, (base, n) in sorted(tset.static.items()):
        rows = tset.tables[key]
        for r in range(n):
            vec = [0] * config.emb_dim_max
            vec[:rows.shape[1]] = [int(v) for v in rows[r]]
            out.append({"addr": base + r, "data": vec})
    return out


def expected_pooled(config: AccelConfig, tset: TableSet, lookups, *,
                    model: EmbeddingCacheModel | None = None) -> tuple[list[dict], dict]:
    """The pooled beats the subsystem must deliver for ``lookups`` and its counters
    (``read_latency`` excluded), from the cache model and ``numerics.pool_sum``."""
    model = model or tset.model()
    beats, rows, error = [], [], False
    for lk in lookups:
        access = model.access(lk)
        error = error or access.error
        if access.kind != KIND_BAD:
            rows.append(tset.tables[(lk.model, lk.table)][lk.row])
        if lk.bag_end or lk.empty:
            vec = [0] * config.emb_dim_max
            if not error:
                pooled = numerics.pool_sum(np.array(rows), width=config.operand_width)
                vec[:pooled.size] = [int(v) for v in pooled]
            beats.append({"data": vec, "last": int(lk.sample_end), "error": int(error)})
            rows, error = [], False
    return beats, dict(model.counters)


def check_pooled(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want), f"{len(got)} pooled vectors, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"vector {i}: got {g}, expected {w}"


def check_address(tset: TableSet, addr: int, beats: int, bus_bytes: int) -> None:
    """Every burst reads inside one table's region and within one 4 KiB page."""
    end = addr + beats * bus_bytes
    assert addr // PAGE_BYTES == (end - 1) // PAGE_BYTES, f"burst {addr:#x}+{beats} crosses 4 KiB"
    for d in tset.descriptors:
        lo, hi = d.region
        if lo <= addr and end <= hi:
            return
    raise AssertionError(f"burst {addr:#x}..{end:#x} is outside every table's region")


def movielens_stimulus(setup, config: AccelConfig, pipeline: str, users, *,
                       max_candidates: int | None = None, static_rows: int | None = None) -> dict:
    """A real cascade stream as a JSON-able dict: the stage models' tables renumbered
    hottest-first (``sim.cache_study``), the static plan for ``static_rows`` (default
    ``static_cache_rows``), the
    lookups, and the expected vectors from ``sim.quant.embedding_vectors`` on the original
    (not renumbered) candidates, so the renumbering is checked too."""
    from rpaccel.sim.cache_model import hotness_order, plan_static
    from rpaccel.sim.cache_study import cascade_traffic, training_counts
    from rpaccel.sim.golden import PIPELINES
    from rpaccel.sim.quant import embedding_vectors

    golden = setup.golden
    traffic = cascade_traffic(setup, pipeline, users, max_candidates=max_candidates)
    counts = training_counts(setup.features, setup.split)
    models = tuple(dict.fromkeys(s.model for s in PIPELINES[pipeline].stages))
    tables = {}
    for mi, name in enumerate(models):
        for t, rows in enumerate(golden.quantized[name].tables):
            tables[(mi, t)] = np.asarray(rows, dtype=np.int64)[hotness_order(counts[t])]
    capacity = config.static_cache_rows if static_rows is None else static_rows
    static = plan_static(traffic.table_rows, traffic.counts, capacity)
    expected = []
    for user in users:
        result = golden.run(PIPELINES[pipeline], int(user),
                            setup.split.test_candidates(int(user)))
        for stage in result.stages:
            cands = stage.candidates[:max_candidates] if max_candidates else stage.candidates
            vecs = embedding_vectors(golden.quantized[stage.model], golden.batch(int(user), cands))
            for c in range(vecs.shape[0]):
                for t in range(vecs.shape[1]):
                    vec = [0] * config.emb_dim_max
                    vec[:vecs.shape[2]] = [int(v) for v in vecs[c, t]]
                    expected.append({"data": vec, "last": int(t == vecs.shape[1] - 1),
                                     "error": 0})
    return {"pipeline": pipeline, "users": [int(u) for u in users],
            "tables": [[list(k), v.tolist()] for k, v in sorted(tables.items())],
            "static": [[list(k), list(v)] for k, v in sorted(static.items())],
            "lookups": [list(lk) for lk in traffic.lookups], "expected": expected}
