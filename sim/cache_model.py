"""The host side of the embedding subsystem and an exact Python model of its caches and port.

* :class:`TableDescriptor` and :func:`place_tables` lay a model's tables out in memory the
  way the hardware expects (row ``r`` of a table at ``base + r * 2**row_shift``, elements
  packed little-endian, ``operand_width`` bits each) and give the descriptors to write.
* :func:`hotness_order` and :func:`plan_static` are the host's static-cache policy: each
  table's rows are renumbered by their training-split access counts (hottest first), so the
  static cache holds rows ``[0, h_t)`` of table ``t`` at a per-table base.
* :class:`EmbeddingCacheModel` classifies a lookup stream exactly as
  :class:`rpaccel.hw.embedding.EmbeddingSubsystem` does (in request order: descriptor check,
  static range, dynamic-cache tag compare and true LRU restricted to the stage's ways, a miss
  installing its line at once) and so predicts every counter but ``read_latency`` (which is
  the memory's), bit for bit, whatever the memory latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import numpy as np

from rpaccel.hw.axi import PAGE_BYTES, bus_bytes
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.embedding import (COUNTERS, KIND_BAD, KIND_HIT, KIND_MISS, KIND_STATIC,
                                  STAGES, row_beats, set_index)
from rpaccel.hw.errors import RpaccelError

__all__ = ["CacheModelError", "Lookup", "TableDescriptor", "place_tables", "pack_row",
           "unpack_row", "hotness_order", "plan_static", "EmbeddingCacheModel", "Access"]


class CacheModelError(RpaccelError, ValueError):
    """Tables that do not fit the configuration (too wide, too many, memory too small)."""


class Lookup(NamedTuple):
    """One beat of the lookup stream (the fields of ``hw.embedding.lookup_layout``)."""

    model: int
    table: int
    row: int
    bag_end: int = 1
    sample_end: int = 0
    empty: int = 0
    stage: int = 0

    def payload(self) -> dict:
        return self._asdict()


@dataclass(frozen=True)
class TableDescriptor:
    """One table of one model (the fields of ``hw.embedding.descriptor_layout``)."""

    model: int
    table: int
    base: int
    rows: int
    row_shift: int
    dim: int
    static_base: int = 0
    static_rows: int = 0

    def payload(self) -> dict:
        return dict(self.__dict__)

    def problem(self, config: AccelConfig) -> str | None:
        """Why the hardware rejects this descriptor (``None``: it accepts it). ``rows == 0``
        (unconfigure) is accepted."""
        stride = 1 << self.row_shift
        if not 0 <= self.table < config.max_tables:
            return f"table {self.table} beyond max_tables={config.max_tables}"
        if not 1 <= self.dim <= config.emb_dim_max:
            return f"dim {self.dim} not in 1..{config.emb_dim_max}"
        if not bus_bytes(config).bit_length() - 1 <= self.row_shift <= 12:
            return f"row_shift {self.row_shift} outside [log2(bus bytes), 12]"
        if row_beats(config, self.dim) * bus_bytes(config) > stride:
            return f"a row of {self.dim} elements does not fit a {stride}-byte stride"
        if self.base % stride:
            return f"base {self.base:#x} not aligned to the {stride}-byte stride"
        if self.base + self.rows * stride > 1 << config.mem_addr_width:
            return "the table's region does not fit the address space"
        if self.static_rows > self.rows:
            return f"static_rows {self.static_rows} > rows {self.rows}"
        if self.static_base + self.static_rows > config.static_cache_rows:
            return f"static rows [{self.static_base}, {self.static_base + self.static_rows}) " \
                   f"beyond static_cache_rows={config.static_cache_rows}"
        return None

    def address(self, row: int) -> int:
        return self.base + (row << self.row_shift)

    @property
    def region(self) -> tuple[int, int]:
        """The byte range ``[start, end)`` the table occupies."""
        return self.base, self.base + (self.rows << self.row_shift)


def pack_row(config: AccelConfig, values) -> int:
    """A row as the integer of its bits: element ``e`` in ``[e*w, (e+1)*w)``, two's
    complement (``w = operand_width``)."""
    w = config.operand_width
    bits = 0
    for e, v in enumerate(np.asarray(values).tolist()):
        bits |= (int(v) & ((1 << w) - 1)) << (e * w)
    return bits


def unpack_row(config: AccelConfig, bits: int, dim: int | None = None) -> list[int]:
    w = config.operand_width
    out = []
    for e in range(config.emb_dim_max if dim is None else dim):
        v = (bits >> (e * w)) & ((1 << w) - 1)
        out.append(v - (1 << w) if v >> (w - 1) else v)
    return out


def place_tables(config: AccelConfig, tables: dict, *, base: int = 0,
                 static: dict | None = None) -> tuple[list[TableDescriptor], dict[int, int]]:
    """Lay out ``tables`` (``{(model, table): int array (rows, dim)}``) from byte address
    ``base``, each table starting on a 4 KiB boundary with a stride of the smallest power of
    two holding its row (at least one bus beat). ``static`` maps ``(model, table)`` to
    ``(static_base, static_rows)``. Returns the descriptors and the memory image as
    ``{beat address: beat integer}`` (only the beats that hold data)."""
    static = static or {}
    beat_bytes = bus_bytes(config)
    descriptors, image = [], {}
    addr = base
    for (model, table), rows in sorted(tables.items()):
        rows = np.asarray(rows)
        n, dim = rows.shape
        if dim > config.emb_dim_max:
            raise CacheModelError(f"table ({model}, {table}) has dimension {dim} > "
                                  f"emb_dim_max={config.emb_dim_max}")
        row_bytes = row_beats(config, dim) * beat_bytes
        shift = max(row_bytes - 1, 1).bit_length()
        shift = max(shift, beat_bytes.bit_length() - 1)
        addr = -(-addr // PAGE_BYTES) * PAGE_BYTES
        sbase, srows = static.get((model, table), (0, 0))
        desc = TableDescriptor(model, table, addr, n, shift, dim, sbase, srows)
        problem = desc.problem(config)
        if problem:
            raise CacheModelError(f"table ({model}, {table}): {problem}")
        descriptors.append(desc)
        beat_mask = (1 << config.mem_bus_width) - 1
        for r in range(n):
            bits = pack_row(config, rows[r])
            for i in range(row_beats(config, dim)):
                image[desc.address(r) + i * beat_bytes] = (bits >> (i * config.mem_bus_width)) \
                    & beat_mask
        addr = desc.region[1]
    return descriptors, image


def hotness_order(counts) -> np.ndarray:
    """The host's renumbering of a table: ``order[new] = old``, hottest row first (ties by
    lower old index, so it is deterministic)."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(counts.size), -counts))


def plan_static(table_rows: dict, counts: dict, capacity: int) -> dict:
    """Static-cache rows per table for a budget of ``capacity`` rows: the globally hottest
    rows (by ``counts[(model, table)]``, per row in hotness order), which under the
    renumbering of :func:`hotness_order` is a prefix of each table. Returns
    ``{(model, table): (static_base, static_rows)}`` with consecutive bases (0 for a
    table that gets no rows)."""
    candidates = []
    for key in sorted(table_rows):
        c = np.sort(np.asarray(counts[key]))[::-1]
        candidates += [(-int(c[i]), key, i) for i in range(min(int(table_rows[key]), capacity))]
    candidates.sort()
    take: dict = {}
    for _, key, _ in candidates[:capacity]:
        take[key] = take.get(key, 0) + 1
    plan, base = {}, 0
    for key in sorted(table_rows):
        rows = take.get(key, 0)
        # a table with no static rows gets base 0 (the field is sized for the cache, so
        # a base equal to the capacity would not fit it)
        plan[key] = (base if rows else 0, rows)
        base += rows
    return plan


class Access(NamedTuple):
    """How one lookup was classified: ``kind`` (``KIND_*`` of ``hw.embedding``), the burst it
    caused (``(address, beats)``, or ``None``) and whether its row arrives with an error."""

    kind: int
    burst: tuple | None
    error: bool


_BAD = Access(KIND_BAD, None, True)
_STATIC = Access(KIND_STATIC, None, False)
_HIT = Access(KIND_HIT, None, False)
_HIT_POISONED = Access(KIND_HIT, None, True)


@dataclass
class EmbeddingCacheModel:
    """The classification and counters of :class:`~rpaccel.hw.embedding.EmbeddingSubsystem`.

    ``descriptors`` as written (rejected ones count as ``descriptor_errors`` and leave the
    table unconfigured, exactly as the hardware); ``stage_ways[s]`` the way mask of stage
    ``s``; ``error_address(addr)`` (optional) says whether a burst from ``addr`` gets an error
    response (a row fetched with one is poisoned in its line, so later hits are errors too).
    """

    config: AccelConfig
    descriptors: Iterable[TableDescriptor] = ()
    stage_ways: tuple | None = None
    error_address: Callable[[int], bool] | None = None
    counters: dict = field(default_factory=dict)

    def __post_init__(self):
        cfg = self.config
        self.counters = {name: 0 for name in COUNTERS if name != "read_latency"}
        self.tables: dict = {}
        for desc in self.descriptors:
            self.write_descriptor(desc)
        if self.stage_ways is None:
            self.stage_ways = ((1 << cfg.dynamic_cache_ways) - 1,) * STAGES
        self.flush()
        sets = cfg.dynamic_cache_sets
        self._sets = sets
        self._set_mask = max(sets - 1, 0)
        self._set_bits = max(sets.bit_length() - 1, 0)
        self._mt_hash = [[set_index(cfg, mdl, t, 0) for t in range(cfg.max_tables)]
                         for mdl in range(cfg.model_slots)]
        self._beats = [row_beats(cfg, d) for d in range(cfg.emb_dim_max + 1)]
        self._bus_bytes = bus_bytes(cfg)
        self._all_ways = (1 << cfg.dynamic_cache_ways) - 1
        self._bag_count = 0
        self._bag_error = False
        self.vectors: list = []  # per delivered vector: error flag

    def write_descriptor(self, desc: TableDescriptor) -> None:
        if not 0 <= desc.table < self.config.max_tables:
            self.counters["descriptor_errors"] += int(desc.rows != 0)
            return
        key = (desc.model, desc.table)
        self.tables.pop(key, None)
        if desc.rows == 0:
            return
        if desc.problem(self.config) is not None:
            self.counters["descriptor_errors"] += 1
            return
        self.tables[key] = desc

    def flush(self) -> None:
        cfg = self.config
        ways = cfg.dynamic_cache_ways
        self.tags = [[None] * ways for _ in range(cfg.dynamic_cache_sets)]
        self.ages = [list(range(ways)) for _ in range(cfg.dynamic_cache_sets)]
        self.poison = [[False] * ways for _ in range(cfg.dynamic_cache_sets)]

    def _victim(self, s: int, mask: int) -> int:
        ways = self.config.dynamic_cache_ways
        owned = [w for w in range(ways) if mask >> w & 1]
        for w in owned:
            if self.tags[s][w] is None:
                return w
        return max(owned, key=lambda w: self.ages[s][w])

    def _touch(self, s: int, way: int) -> None:
        ages = self.ages[s]
        old = ages[way]
        for w in range(len(ages)):
            if w == way:
                ages[w] = 0
            elif ages[w] < old:
                ages[w] += 1

    def _set(self, model: int, table: int, row: int) -> int:
        # set_index() with the configuration's constants hoisted (the study runs millions)
        mask, bits = self._set_mask, self._set_bits
        return (row & mask) ^ ((row >> bits) & mask) ^ self._mt_hash[model][table]

    def access(self, lk: Lookup) -> Access:
        """Classify one lookup beat and update the counters (the RTL's stage B)."""
        cfg, c = self.config, self.counters
        model, table, row, bag_end, _, empty, stage = lk
        c["lookups"] += 1
        desc = self.tables.get((model, table))
        bad = (empty or desc is None or not 0 <= row < desc.rows
               or self._bag_count >= cfg.max_bag)
        ends = bag_end or empty
        if ends:
            self._bag_count = 0
        elif self._bag_count != cfg.max_bag:
            self._bag_count += 1
        if bad:
            c["bad_lookups"] += 1
            result = _BAD
        else:
            c["static_accesses"] += 1
            if row < desc.static_rows:
                c["static_hits"] += 1
                result = _STATIC
            else:
                result = self._dynamic(model, table, row, stage, desc)
        self._bag_error = self._bag_error or result.error
        if ends:
            self.vectors.append(self._bag_error)
            c["vectors"] += 1
            c["bad_vectors"] += int(self._bag_error)
            self._bag_error = False
        return result

    def _dynamic(self, model, table, row, stage, desc: TableDescriptor) -> Access:
        c = self.counters
        c["dynamic_accesses"] += 1
        key = (model, table, row)
        if self._sets:
            s = self._set(model, table, row)
            tags = self.tags[s]
            if key in tags:
                way = tags.index(key)
                c["dynamic_hits"] += 1
                self._touch(s, way)
                return _HIT_POISONED if self.poison[s][way] else _HIT
        addr = desc.base + (row << desc.row_shift)
        beats = self._beats[desc.dim]
        error = bool(self.error_address and self.error_address(addr))
        c["dynamic_misses"] += 1
        c["bursts"] += 1
        c["beats"] += beats
        c["bytes"] += beats * self._bus_bytes
        c["axi_errors"] += int(error)
        mask = self.stage_ways[stage] & self._all_ways
        if self._sets and mask:
            way = self._victim(s, mask)
            c["dynamic_fills"] += 1
            c["dynamic_evictions"] += int(tags[way] is not None)
            tags[way] = key
            self.poison[s][way] = error
            self._touch(s, way)
        return Access(KIND_MISS, (addr, beats), error)

    def run(self, lookups: Iterable[Lookup]) -> list[Access]:
        return [self.access(lk) for lk in lookups]
