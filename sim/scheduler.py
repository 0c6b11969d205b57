"""The host scheduler of the RPAccel top level: pipelines and real queries in, a memory image
and command ring out, ranked lists and per-stage figures back.

:class:`Scheduler` takes a pipeline (``"small:256,large:10"``) and the golden setup, and

* **validates** the pipeline against the configuration before anything reaches the
  hardware (:class:`SchedulerError` naming the stage and value): stages within
  ``max_stages``, ``k`` within ``topk_max`` and never growing, known models that fit the
  engines' weight and bias memories, partitions and top-k units that exist, records that
  fit ``max_dense`` / ``max_lookups``;
* **compiles** each model into the engine's weight and bias images and layer descriptors
  (``sim/mlp_program.py``), table descriptors, interaction parameters, and the embedding
  tables in memory with their rows stored **hottest first** (training-split access counts,
  :func:`access_counts`), so the static cache holds each table's first rows
  (``docs/architecture.md``); it picks the static rows per model, weighting each model's
  rows by the candidates its stage scores;
* **maps stages to partitions**: every stage's sub-batches are dealt over all partitions
  (mask ``2**partitions - 1``) and stage ``s`` uses top-k unit ``s % topk_units`` unless
  told otherwise, except that a later stage with fewer sub-batches than partitions runs
  ganged on all of them where they form a gang (:meth:`Scheduler._gang_by_default`); a
  stage may instead run **ganged** (``stage_gangs``) on one gang of
  ``hw/mlp_engine.gangs`` (``3`` on two partitions), every layer's output columns split
  over the gang's engines: its model is compiled once more for that gang, one column
  slice (``mlp_program.gang_slice``) per partition, each loaded with
  ``LOAD_MODEL_GANG`` into its own slot. Every model is placed in one engine's memories anyway
  (:func:`~rpaccel.sim.host.allocate_models`), so loading each into every engine always
  fits, and dealing balances the engines: on `default` the large model's stage 2 is 62 %
  of a query's stage cycles, and with one partition per stage (masks ``1, 2``: query
  ``q``'s stage 2 beside query ``q + 1``'s stage 1) its engine is the bottleneck (20 real
  users: 338,374 cycles per query and 174,120 back to back against 291,966 and 149,039
  dealt, docs/architecture.md "Mapping");
* **builds** the memory image (:class:`MemoryImage`): tables, model images, static rows,
  the command ring (``LOAD_MODEL``, ``LOAD_STATIC``, one ``RUN_QUERY`` per query), the
  completion ring, each query's candidate records (ascending item id, so the top-k's
  position tie-break is the golden's id tie-break) and result buffers;
* **round trips** without on-chip top-k (``onchip_topk`` off): a query's stage ``s`` is one
  ``RUN_QUERY`` over the candidates the host kept; :meth:`Scheduler.advance` reads each
  stage's scores, keeps the top ``k`` with the golden's tie-break, writes the kept
  candidates' records anew and submits the next stage, so the answers equal the on-chip
  cascade's;
* **collects** the ranked lists (item ids and scores of the final stage, and every stage's
  kept list), error codes and per-stage cycles from the image after a backend ran it.

Backends (:class:`Backend`) execute the ring on the image. :class:`rpaccel.sim.accel_model.
AccelModel` is the golden one (the functional model of the top level); the RTL top level
will be another, driven only through its CSRs, the ring and memory, so the two compare
directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rpaccel.hw import descriptors as d
from rpaccel.hw.command import engine_word_bytes
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.mlp_engine import gang_masks
from rpaccel.hw.regmap import ERROR_CODES
from rpaccel.hw.shared import index_bits

from . import numerics
from .features import TABLES
from .golden import GoldenError, Pipeline
from .host import HostError, allocate_models
from .mlp_program import MLPProgram, gang_slice, model_mlps

__all__ = ["SchedulerError", "MemoryImage", "access_counts", "hot_order", "Scheduler",
           "QueryResult", "Backend", "RingState", "MEMORY_BASE"]

#: Where the host's memory image starts (address 0 stays unused, so a zero address is
#: never valid data).
MEMORY_BASE = 0x1000
#: The one error after which a query still has results (an embedding row out of range).
ERROR_EMBEDDING = next(c for c, (n, _) in ERROR_CODES.items() if n == "EMBEDDING")


class SchedulerError(RpaccelError, ValueError):
    """A pipeline or query the accelerator cannot run; the message names what and why."""


class MemoryImage:
    """The accelerator's memory as the host lays it out: a bump allocator over a byte array
    starting at ``base``; every region 64-byte aligned (one command, one cache line)."""

    def __init__(self, base: int = MEMORY_BASE):
        self.base = base
        self.data = bytearray()

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def alloc(self, nbytes: int, align: int = 64) -> int:
        start = -(-len(self.data) // align) * align
        self.data.extend(bytes(start + max(nbytes, 0) - len(self.data)))
        return self.base + start

    def put(self, data: bytes, align: int = 64) -> int:
        addr = self.alloc(len(data), align)
        self.write(addr, data)
        return addr

    def _offset(self, addr: int, n: int) -> int:
        off = addr - self.base
        if off < 0 or off + n > len(self.data):
            raise IndexError(f"memory access {addr:#x}+{n} outside the image "
                             f"[{self.base:#x}, {self.end:#x})")
        return off

    def write(self, addr: int, data: bytes) -> None:
        off = self._offset(addr, len(data))
        self.data[off:off + len(data)] = data

    def read(self, addr: int, n: int) -> bytes:
        off = self._offset(addr, n)
        return bytes(self.data[off:off + n])

    def words(self, width_bytes: int) -> list[int]:
        """The image as little-endian words of ``width_bytes`` (a bus width), for a memory
        model's ``$readmemh`` file; padded with zeros to a whole word."""
        raw = bytes(self.data) + bytes(-len(self.data) % width_bytes)
        return [int.from_bytes(raw[i:i + width_bytes], "little")
                for i in range(0, len(raw), width_bytes)]


def access_counts(setup) -> list[np.ndarray]:
    """Per table (``TABLES`` order), how often each row is read by the training split's
    (user, item) pairs: the host's offline profile of which rows are hot."""
    users, items = setup.split.pairs("train")
    f = setup.features
    rows = f.table_rows
    counts = [np.bincount(users, minlength=rows[0]), np.bincount(items, minlength=rows[1])]
    for col in range(1, 5):
        counts.append(np.bincount(f.user_sparse[users, col], minlength=rows[1 + col]))
    counts.append(np.bincount(f.item_sparse[items, 1], minlength=rows[6]))
    counts.append(f.item_genres[items].sum(axis=0).astype(np.int64))
    return [c.astype(np.int64) for c in counts]


def hot_order(counts: np.ndarray) -> np.ndarray:
    """Rows hottest first (ties by the lower row): ``order[rank] = row``."""
    return np.lexsort((np.arange(counts.size), -counts))


@dataclass
class CompiledModel:
    name: str
    slot: int
    emb_dim: int
    n_dense: int
    dense_scale: float
    layers_addr: int = 0
    tables_addr: int = 0
    pairs_addr: int = 0
    weights_addr: int = 0
    bias_addr: int = 0
    weight_words: int = 0
    weight_word_base: int = 0
    bias_words: int = 0
    bias_word_base: int = 0
    n_bottom: int = 0
    n_top: int = 0
    n_pairs: int = 0
    static_rows: list = field(default_factory=list)   # per table
    partition_mask: int = 0
    ganged: bool = False      # its stages run ganged on partition_mask (one slice each)


@dataclass(frozen=True)
class QueryResult:
    """One query's answer as the host reads it back: final ``ranking`` (item ids, best
    first) and ``scores``; ``kept`` every stage's kept item ids (when kept lists were
    written); ``error`` code and name; ``stage_cycles`` and ``total_cycles`` (0 where the
    backend does not count cycles)."""

    user: int
    tag: int
    error: int
    ranking: np.ndarray
    scores: np.ndarray
    kept: tuple
    stage_cycles: tuple
    total_cycles: int

    @property
    def error_name(self) -> str:
        return ERROR_CODES.get(self.error, ("UNKNOWN", ""))[0]

    def differences(self, ref) -> list[str]:
        """What differs from the golden cascade's answer ``ref`` (``GoldenModel.run`` of
        the same pipeline, user and candidates): the error code, the final ranking and
        scores, each stage's kept list. Empty when bit-exact."""
        if self.error != 0:
            return [f"completed with error {self.error_name}"]
        problems = []
        if not np.array_equal(self.ranking, ref.ranking):
            problems.append("final ranking differs")
        if not np.array_equal(self.scores, ref.stages[-1].kept_scores):
            problems.append("final scores differ")
        if len(self.kept) != len(ref.stages):
            problems.append(f"{len(self.kept)} kept lists for {len(ref.stages)} stages")
        for s, (kept, stage) in enumerate(zip(self.kept, ref.stages)):
            if not np.array_equal(kept, stage.kept):
                problems.append(f"stage {s + 1} kept list differs")
        return problems


@dataclass
class RingState:
    """What the host writes into the CSRs before it lets a backend run the ring."""

    ring_base: int
    ring_log2: int
    completion_base: int
    region_base: int
    region_size: int
    head: int = 0
    tail: int = 0


class Backend(Protocol):
    """Runs every ring entry from ``ring.head`` to ``ring.tail`` on ``image`` and writes
    completions and results into it; returns the new head."""

    name: str

    def execute(self, image: MemoryImage, ring: RingState) -> int: ...


@dataclass
class Plan:
    image: MemoryImage
    ring: RingState
    queries: list          # (user, sorted candidate ids, tag, ring index, result/kept addrs)
    entries: list          # (opcode name, ring index)


class Scheduler:
    """See the module docstring. ``stage_partitions`` / ``stage_topk_units`` override the
    default mapping (one partition mask and one top-k unit per stage, e.g. ``[1, 2]`` for
    stage ``s`` on partition ``s`` alone); ``stage_gangs`` (one flag per stage) runs a
    stage ganged on its mask, which must be one of the configuration's gangs; ``static`` = False leaves
    the static cache empty; ``write_kept`` writes every stage's kept list for checking."""

    def __init__(self, config: AccelConfig, setup, pipeline: Pipeline | str, *,
                 stage_partitions: list[int] | None = None,
                 stage_topk_units: list[int] | None = None,
                 stage_gangs: list[bool] | None = None, static: bool = True,
                 write_kept: bool = True):
        self.config, self.setup = config, setup
        try:
            self.pipeline = Pipeline.parse(pipeline) if isinstance(pipeline, str) else pipeline
            setup.golden.check_pipeline(self.pipeline)
        except GoldenError as err:
            raise SchedulerError(str(err)) from None
        self.geo = EngineGeometry.of(config)
        self.write_kept = write_kept
        stages = self.pipeline.stages
        P, U = config.partitions, config.topk_units
        self.stage_masks = list(stage_partitions or [(1 << P) - 1] * len(stages))
        self.stage_units = list(stage_topk_units or [s % U for s in range(len(stages))])
        if stage_gangs is None:
            stage_gangs = [stage_partitions is None and self._gang_by_default(n)
                           for n in range(len(stages))]
        self.stage_gangs = [bool(g) for g in stage_gangs]
        self._validate()
        # one slot per model, and one more per gang a model's stages run ganged on
        self.models: dict[str, CompiledModel] = {}
        self.stage_keys = [self._model_key(n) for n in range(len(stages))]
        for n, key in enumerate(dict.fromkeys(self.stage_keys)):
            stage = stages[self.stage_keys.index(key)]
            qm = setup.golden.quantized[stage.model]
            self.models[key] = CompiledModel(stage.model, n, qm.spec.emb_dim, qm.spec.n_dense,
                                             qm.dense_scale, ganged=key != stage.model)
        if len(self.models) > config.model_slots:
            raise SchedulerError(f"pipeline {self.pipeline.name!r} needs {len(self.models)} "
                                 f"model slots ({', '.join(self.models)}); this accelerator "
                                 f"holds model_slots={config.model_slots}")
        for s, key in enumerate(self.stage_keys):
            self.models[key].partition_mask |= self.stage_masks[s]
        scales = {m.dense_scale for m in self.models.values()}
        if len(scales) > 1:
            raise SchedulerError(f"the pipeline's models quantize the dense features with "
                                 f"different scales {sorted(scales)}: a candidate record "
                                 f"carries one set of dense codes")
        mlps = {}
        for key, m in self.models.items():
            gang = bin(m.partition_mask).count("1") if m.ganged else 1
            for part, layers in model_mlps(setup.golden.quantized[m.name]).items():
                # (a gang's slices all have slice 0's shapes: one placement serves them all)
                mlps[f"{key}.{part}"] = [gang_slice(layer, gang, 0, self.geo) for layer in layers]
        try:
            self.programs = allocate_models(mlps, self.geo)
        except HostError as err:
            raise SchedulerError(f"pipeline {self.pipeline.name!r}: {err}") from None
        self.counts = access_counts(setup)
        self.orders = [hot_order(c) for c in self.counts]
        self.ranks = [np.argsort(o) for o in self.orders]   # rank[row] = stored row
        self._pick_static(static)

    def _gang_by_default(self, n: int) -> bool:
        """Whether the default mapping gangs stage ``n`` on all partitions: when they form
        a gang and the stage has fewer sub-batches than partitions (dealt, some engines
        would get none). Measured on `default`, 20 real users, 3-stage cascade: stage 3
        (64 candidates, one sub-batch) 47,041 cycles dealt, 27,087 ganged; the query
        245,271 -> 206,810 cycles, 124,660 -> 104,945 back to back (docs/architecture.md,
        "Ganged stages"). Stages of more sub-batches stay dealt: ganged, their front end
        (gathers, interaction) runs on one runner (stage 1, 1,600 candidates: 49,321
        dealt, 85,656 ganged)."""
        cfg = self.config
        if n == 0 or (1 << cfg.partitions) - 1 not in gang_masks(cfg):
            return False
        inputs = self.pipeline.stages[n - 1].keep_k
        return -(-inputs // cfg.sub_batch) < cfg.partitions

    def _model_key(self, n: int) -> str:
        """The compiled model stage ``n`` runs: its model's name, or with the name the gang
        it runs ganged on."""
        model = self.pipeline.stages[n].model
        return f"{model}@gang{self.stage_masks[n]:#x}" if self.stage_gangs[n] else model

    # -- validation -------------------------------------------------------------------------
    def _validate(self):
        cfg, stages = self.config, self.pipeline.stages
        name = self.pipeline.name
        if len(stages) > cfg.max_stages:
            raise SchedulerError(f"pipeline {name!r} has {len(stages)} stages; this "
                                 f"accelerator runs at most max_stages={cfg.max_stages}")
        if len(self.stage_masks) != len(stages) or len(self.stage_units) != len(stages):
            raise SchedulerError(f"pipeline {name!r}: give one partition mask and one top-k "
                                 f"unit per stage ({len(stages)})")
        if len(self.stage_gangs) != len(stages):
            raise SchedulerError(f"pipeline {name!r}: give one gang flag per stage "
                                 f"({len(stages)}), not {len(self.stage_gangs)}")
        allowed = gang_masks(cfg)
        for n, (stage, mask, unit) in enumerate(zip(stages, self.stage_masks,
                                                    self.stage_units), start=1):
            where = f"pipeline {name!r} stage {n} ({stage.model})"
            if stage.keep_k > cfg.topk_max:
                raise SchedulerError(f"{where}: keep_k {stage.keep_k} is above "
                                     f"topk_max={cfg.topk_max}")
            if not 0 < mask < (1 << cfg.partitions):
                raise SchedulerError(f"{where}: partition mask {mask:#x} names no partition "
                                     f"or one beyond partitions={cfg.partitions}")
            if not 0 <= unit < cfg.topk_units:
                raise SchedulerError(f"{where}: top-k unit {unit} does not exist "
                                     f"(topk_units={cfg.topk_units})")
            if self.stage_gangs[n - 1] and mask not in allowed:
                why = (f"the gangs of this configuration are the masks "
                       f"{', '.join(f'{a:#x}' for a in allowed)}" if allowed else
                       f"this configuration forms no gang (G >= 2 partitions of "
                       f"partition_cols={cfg.partition_cols} columns must fit one activation "
                       f"word of max(rows, partition_cols)="
                       f"{max(cfg.rows, cfg.partition_cols)} lanes)")
                raise SchedulerError(f"{where}: cannot run ganged on partitions {mask:#x}: "
                                     f"{why}")
        spec_bags = int(self.setup.features.item_genres.sum(axis=1).max())
        lookups = len(TABLES) - 1 + spec_bags
        if lookups > cfg.max_lookups:
            raise SchedulerError(f"a candidate needs up to {lookups} embedding lookups; "
                                 f"records hold max_lookups={cfg.max_lookups}")
        for stage in stages:
            qm = self.setup.golden.quantized[stage.model]
            if qm.spec.n_dense > cfg.max_dense:
                raise SchedulerError(f"model {stage.model} has {qm.spec.n_dense} dense "
                                     f"inputs; records hold max_dense={cfg.max_dense}")
            if qm.spec.emb_dim > cfg.emb_dim_max:
                raise SchedulerError(f"model {stage.model} has embedding dimension "
                                     f"{qm.spec.emb_dim} > emb_dim_max={cfg.emb_dim_max}")
            if qm.spec.n_vectors > cfg.max_interaction_vectors:
                raise SchedulerError(f"model {stage.model} interacts {qm.spec.n_vectors} "
                                     f"vectors > max_interaction_vectors="
                                     f"{cfg.max_interaction_vectors}")
            if len(qm.tables) > cfg.max_tables:
                raise SchedulerError(f"model {stage.model} has {len(qm.tables)} tables > "
                                     f"max_tables={cfg.max_tables}")

    # -- static cache ---------------------------------------------------------------------------
    def _pick_static(self, enabled: bool):
        """Per model and table, how many of the hottest rows the static cache holds: every
        (model, table, row) ranked by its training count times the candidates per query
        its stage scores, the best ``static_cache_rows`` kept (a prefix of each table's
        hot order, so lookup is one compare)."""
        for m in self.models.values():
            m.static_rows = [0] * len(TABLES)
        capacity = self.config.static_cache_rows if enabled else 0
        if capacity == 0:
            return
        weight = {}
        n = self.setup.split.n_items
        for stage in self.pipeline.stages:
            weight.setdefault(stage.model, n)
            n = stage.keep_k
        cands = []
        for m in self.models.values():
            for t, counts in enumerate(self.counts):
                ranked = counts[self.orders[t]] * weight[m.name]
                cands.append(np.stack([ranked, np.full(ranked.size, m.slot),
                                       np.full(ranked.size, t), np.arange(ranked.size)], 1))
        allc = np.concatenate(cands)
        order = np.lexsort((allc[:, 3], allc[:, 2], allc[:, 1], -allc[:, 0]))[:capacity]
        slot_of = {m.slot: m for m in self.models.values()}
        for _, slot, t, rank in allc[order]:
            m = slot_of[int(slot)]
            m.static_rows[int(t)] = max(m.static_rows[int(t)], int(rank) + 1)

    # -- building the image -----------------------------------------------------------------
    def row_bytes(self, dim: int) -> int:
        """Bytes a table row of ``dim`` int8 elements takes in memory (its stride): a power
        of two of at least one bus word, so a row never straddles a bus word or a 4 KiB
        page and the embedding subsystem reads it in whole beats."""
        return max(self.config.mem_bus_width // 8, 1 << (dim - 1).bit_length())

    def _compile(self, image: MemoryImage) -> tuple[list, list]:
        """Place every model and the static rows; returns the ring entries that load them."""
        cfg, geo = self.config, self.geo
        entries, static_rows = [], []
        static_next = 0
        for key, m in self.models.items():
            qm = self.setup.golden.quantized[m.name]
            bottom, top = self.programs[f"{key}.bottom"], self.programs[f"{key}.top"]
            m.weight_word_base = bottom.weight_base * geo.rows
            m.bias_word_base = bottom.bias_base
            # the words each LOAD_MODEL loads: the model's, or each gang member's slice
            members = [p for p in range(cfg.partitions) if m.partition_mask >> p & 1] \
                if m.ganged else [None]
            # (slice 0 is the placed program; the others at its words, one layout for all)
            programs = [(bottom, top)]
            if len(members) > 1:
                mlps = model_mlps(qm)
                programs += [tuple(MLPProgram(geo, [gang_slice(layer, len(members), e, geo)
                                                    for layer in mlps[part]],
                                              weight_base=prog.weight_base,
                                              bias_base=prog.bias_base)
                                   for part, prog in (("bottom", bottom), ("top", top)))
                             for e in range(1, len(members))]
            images = []
            for progs in programs:
                words = np.concatenate([prog.weight_words for prog in progs])
                biases = np.concatenate([prog.bias_words for prog in progs])
                images.append((image.put(self._words(words, cfg.operand_width)),
                               image.put(self._words(biases, cfg.acc_width))))
            m.weight_words = len(bottom.weight_words) + len(top.weight_words)
            m.bias_words = len(bottom.bias_words) + len(top.bias_words)
            m.weights_addr, m.bias_addr = images[0]
            layers = []
            for prog in (bottom, top):
                for n, layer in enumerate(prog.layers):
                    layers.append(d.pack(d.layer_layout(cfg), {
                        "in_dim": layer.n_in, "out_dim": layer.n_out,
                        "weight_tile": prog.tile_offsets[n], "bias_word": prog.bias_offsets[n],
                        "mult": layer.mult, "shift": layer.shift, "relu": int(layer.relu),
                        "score": int(layer.score)}, d.LAYER_BYTES))
            m.n_bottom, m.n_top = len(bottom.layers), len(top.layers)
            m.layers_addr = image.put(b"".join(layers))
            tables = []
            for t, table in enumerate(qm.tables):
                rows, row_bytes = table, self.row_bytes(table.shape[1])
                stored = np.zeros((rows.shape[0], row_bytes), dtype=np.int64)
                stored[:, :rows.shape[1]] = rows[self.orders[t]]
                base = image.put((stored & 0xFF).astype(np.uint8).tobytes())
                h = m.static_rows[t]
                tables.append(d.pack(d.table_layout(cfg), {
                    "base_addr": base, "rows": rows.shape[0], "row_bytes": row_bytes,
                    "dim": rows.shape[1], "static_rows": h,
                    "static_base": static_next if h else 0},
                    d.TABLE_BYTES))
                if h:
                    padded = np.zeros((h, cfg.emb_dim_max), dtype=np.int64)
                    padded[:, :rows.shape[1]] = rows[self.orders[t][:h]]
                    static_rows.append(padded)
                    static_next += h
            m.tables_addr = image.put(b"".join(tables))
            pairs = [d.pack(d.pair_layout(cfg), {"mult": int(mu), "shift": int(sh)},
                            d.PAIR_BYTES) for mu, sh in zip(qm.inter_mults, qm.inter_shifts)]
            m.n_pairs = len(pairs)
            m.pairs_addr = image.put(b"".join(pairs))
            for member, (weights_addr, bias_addr) in zip(members, images):
                entries.append(("LOAD_MODEL", d.pack(d.load_model_layout(cfg), {
                    "header": {"opcode": d.OPCODES["LOAD_MODEL"], "tag": m.slot,
                               "flags": d.LOAD_MODEL_GANG if m.ganged else 0},
                    "slot": m.slot,
                    "partition_mask": m.partition_mask if member is None else 1 << member,
                    "n_bottom": m.n_bottom,
                    "n_top": m.n_top, "n_tables": len(qm.tables), "emb_dim": m.emb_dim,
                    "n_dense": m.n_dense, "n_pairs": m.n_pairs, "weights_addr": weights_addr,
                    "weight_words": m.weight_words, "weight_word_base": m.weight_word_base,
                    "bias_addr": bias_addr, "bias_words": m.bias_words,
                    "bias_word_base": m.bias_word_base, "layers_addr": m.layers_addr,
                    "tables_addr": m.tables_addr, "pairs_addr": m.pairs_addr}, d.COMMAND_BYTES)))
        if static_rows:
            rows = np.concatenate(static_rows)
            src = image.put((rows & 0xFF).astype(np.uint8).tobytes())
            entries.append(("LOAD_STATIC", d.pack(d.load_static_layout(cfg), {
                "header": {"opcode": d.OPCODES["LOAD_STATIC"], "tag": 0},
                "rows": rows.shape[0], "static_base": 0, "src_addr": src}, d.COMMAND_BYTES)))
        return entries, static_rows

    @staticmethod
    def _words(words: np.ndarray, width: int) -> bytes:
        """Engine memory words (rows of lanes) as little-endian bytes, lanes of ``width``
        bits packed from bit 0, each word padded to a power of two of bytes
        (``hw/command.engine_word_bytes``), so the word reader unpacks whole words."""
        words = np.asarray(words, dtype=np.int64)
        lanes = words.shape[1]
        nbytes = engine_word_bytes(lanes * width)
        out = bytearray()
        mask = (1 << width) - 1
        for row in words:
            value = 0
            for i, lane in enumerate(row):
                value |= (int(lane) & mask) << (i * width)
            out += value.to_bytes(nbytes, "little")
        return bytes(out)

    def records(self, user: int, candidates: np.ndarray) -> bytes:
        """The candidate records of one query (candidates already in the order given), in
        ``d.record_layout``. Packed with shifts at the layout's own field offsets (read from
        the layout, so they cannot drift from it): ``d.pack`` per record takes seconds for a
        query's 1,600 candidates, this takes milliseconds; ``tests/test_scheduler.py``
        checks the two give the same bytes."""
        cfg = self.config
        batch = self.setup.golden.batch(user, candidates)
        dense = numerics.quantize_tensor(batch.dense, next(iter(self.models.values())).dense_scale)
        layout, size = d.record_layout(cfg), d.record_bytes(cfg)
        f_dense, f_lookups = layout["dense"], layout["lookups"]
        dense_w = f_dense.shape.elem_shape.width
        lk = f_lookups.shape.elem_shape
        lk_w, bag_at = lk.size, lk["bag_end"].offset
        n_single = batch.sparse.shape[1]
        out = bytearray()
        for b in range(len(batch)):
            rows = [int(self.ranks[t][batch.sparse[b, t]]) for t in range(n_single)]
            ends = [1] * n_single
            genres = np.flatnonzero(batch.genres[b])
            rows += [int(self.ranks[n_single][g]) for g in genres]
            ends += [int(i == len(genres) - 1) for i in range(len(genres))]
            if len(rows) > cfg.max_lookups:
                raise SchedulerError(f"item {int(batch.items[b])} has {len(rows)} lookups; "
                                     f"records hold max_lookups={cfg.max_lookups}")
            value = (int(batch.items[b]) | len(rows) << layout["n_lookups"].offset |
                     dense.shape[1] << layout["n_dense"].offset)
            mask = (1 << dense_w) - 1
            for i, v in enumerate(dense[b]):
                value |= (int(v) & mask) << (f_dense.offset + i * dense_w)
            for i, (row, end) in enumerate(zip(rows, ends)):
                value |= (row | end << bag_at) << (f_lookups.offset + i * lk_w)
            out += value.to_bytes(size, "little")
        return bytes(out)

    def plan(self, queries: list[tuple[int, np.ndarray]], *, ring_log2: int | None = None) -> Plan:
        """The memory image and ring for ``queries`` (``(user, candidate ids)`` each): model
        loads, the static cache load, then one ``RUN_QUERY`` per query."""
        cfg = self.config
        image = MemoryImage()
        loads, _ = self._compile(image)
        n_entries = len(loads) + len(queries)
        log2 = ring_log2 if ring_log2 is not None else index_bits(n_entries)
        if n_entries > 1 << log2:
            raise SchedulerError(f"{n_entries} ring entries do not fit a ring of "
                                 f"2**{log2}")
        ring_base = image.alloc(d.COMMAND_BYTES << log2)
        completion_base = image.alloc(d.COMPLETION_BYTES << log2)
        entries, meta = [], []
        for op, raw in loads:
            entries.append((op, raw))
        stages = self.pipeline.stages
        if not cfg.onchip_topk:
            return self._plan_round_trips(image, loads, queries, ring_log2)
        for tag, (user, candidates) in enumerate(queries):
            cands = np.sort(self.setup.features.check_items(candidates))
            if stages[0].keep_k > cands.size:
                raise SchedulerError(f"query {tag} (user {user}): stage 1 keeps "
                                     f"{stages[0].keep_k} of only {cands.size} candidates")
            records = image.put(self.records(user, cands))
            result = image.alloc(stages[-1].keep_k * d.RESULT_BYTES)
            kept = image.alloc(len(stages) * cfg.topk_max * d.RESULT_BYTES) \
                if self.write_kept else 0
            stage_values = [{"slot": self.models[self.stage_keys[n]].slot,
                             "partition_mask": self.stage_masks[n],
                             "topk_unit": self.stage_units[n], "k": s.keep_k,
                             "gang": int(self.stage_gangs[n])}
                            for n, s in enumerate(stages)]
            stage_values += [{"slot": 0, "partition_mask": 0, "topk_unit": 0, "k": 0}] * \
                (cfg.max_stages - len(stages))
            entries.append(("RUN_QUERY", d.pack(d.run_query_layout(cfg), {
                "header": {"opcode": d.OPCODES["RUN_QUERY"], "tag": tag},
                "n_candidates": int(cands.size), "n_stages": len(stages),
                "records_addr": records, "result_addr": result, "kept_addr": kept,
                "stages": stage_values}, d.COMMAND_BYTES)))
            meta.append({"user": int(user), "candidates": cands, "tag": tag,
                         "index": len(entries) - 1, "result": result, "kept": kept})
        for index, (_, raw) in enumerate(entries):
            image.write(ring_base + index * d.COMMAND_BYTES, raw)
        ring = RingState(ring_base=ring_base, ring_log2=log2, completion_base=completion_base,
                         region_base=image.base, region_size=len(image.data),
                         head=0, tail=len(entries))
        return Plan(image, ring, meta, [(op, i) for i, (op, _) in enumerate(entries)])

    def _stage_values(self, stages: list[int]) -> list[dict]:
        """The ``stages`` field of a ``RUN_QUERY`` running pipeline stages ``stages``."""
        cfg, pipe = self.config, self.pipeline.stages
        values = [{"slot": self.models[self.stage_keys[n]].slot,
                   "partition_mask": self.stage_masks[n], "topk_unit": self.stage_units[n],
                   "k": pipe[n].keep_k, "gang": int(self.stage_gangs[n])} for n in stages]
        return values + [{"slot": 0, "partition_mask": 0, "topk_unit": 0, "k": 0}] * \
            (cfg.max_stages - len(values))

    def _plan_round_trips(self, image, loads, queries, ring_log2) -> Plan:
        """The plan without on-chip top-k: the ring holds the loads and every query's first
        stage; each later stage is a ``RUN_QUERY`` of its own that :meth:`advance` writes
        after the previous round ran. Every query's records and score buffers for all its
        stages are allocated now, so the region is known before the accelerator starts."""
        cfg, stages = self.config, self.pipeline.stages
        n_entries = len(loads) + len(queries) * len(stages)
        log2 = ring_log2 if ring_log2 is not None else index_bits(n_entries)
        if n_entries > 1 << log2:
            raise SchedulerError(f"{n_entries} ring entries do not fit a ring of 2**{log2}")
        ring_base = image.alloc(d.COMMAND_BYTES << log2)
        completion_base = image.alloc(d.COMPLETION_BYTES << log2)
        size = d.record_bytes(cfg)
        meta = []
        for tag, (user, candidates) in enumerate(queries):
            cands = np.sort(self.setup.features.check_items(candidates))
            if stages[0].keep_k > cands.size:
                raise SchedulerError(f"query {tag} (user {user}): stage 1 keeps "
                                     f"{stages[0].keep_k} of only {cands.size} candidates")
            inputs = [cands.size] + [st.keep_k for st in stages[:-1]]
            rounds = [{"records": image.alloc(n * size), "scores": image.alloc(n * d.RESULT_BYTES),
                       "n": n, "index": None} for n in inputs]
            image.write(rounds[0]["records"], self.records(user, cands))
            meta.append({"user": int(user), "candidates": cands, "tag": tag, "index": None,
                         "result": rounds[-1]["scores"], "kept": 0, "rounds": rounds,
                         "inputs": cands, "stage": 0, "lists": [], "error": 0})
        ring = RingState(ring_base=ring_base, ring_log2=log2, completion_base=completion_base,
                         region_base=image.base, region_size=len(image.data), head=0, tail=0)
        entries = []
        for op, raw in loads:
            image.write(ring_base + ring.tail * d.COMMAND_BYTES, raw)
            entries.append((op, ring.tail))
            ring.tail += 1
        plan = Plan(image, ring, meta, entries)
        for q in meta:
            self._submit(plan, q)
        return plan

    def _submit(self, plan: Plan, q: dict) -> None:
        """Query ``q``'s current stage as one ``RUN_QUERY`` at the ring's tail, over the
        records already written for it."""
        cfg, s = self.config, q["stage"]
        r = q["rounds"][s]
        r["index"] = plan.ring.tail
        raw = d.pack(d.run_query_layout(cfg), {
            "header": {"opcode": d.OPCODES["RUN_QUERY"], "tag": q["tag"]},
            "n_candidates": r["n"], "n_stages": 1, "records_addr": r["records"],
            "result_addr": r["scores"], "kept_addr": 0,
            "stages": self._stage_values([s])}, d.COMMAND_BYTES)
        plan.image.write(plan.ring.ring_base + r["index"] * d.COMMAND_BYTES, raw)
        plan.entries.append(("RUN_QUERY", r["index"]))
        plan.ring.tail += 1

    def advance(self, plan: Plan) -> bool:
        """The host's round trip without on-chip top-k, after a backend ran the ring up to
        its tail: every live query's scores of its current stage are read back and filtered
        with the golden's top-k (higher score first, ties to the lower item id); the kept
        candidates' records are written anew (ascending item id, so positions tie-break as
        ids do) and their next stage submitted. Returns whether anything was submitted
        (False also for a plan with on-chip top-k, which has no rounds)."""
        if self.config.onchip_topk:
            return False
        stages = self.pipeline.stages
        lay = d.result_layout(self.config)
        submitted = False
        for q in plan.queries:
            s = q["stage"]
            if s >= len(stages) or q["error"] not in (0, ERROR_EMBEDDING):
                continue
            r = q["rounds"][s]
            comp = self.completion(plan, r["index"])
            if comp["error"] not in (0, ERROR_EMBEDDING):
                q["error"] = comp["error"]
                continue
            q["error"] = q["error"] or comp["error"]
            q.setdefault("cycles", []).append((comp["stage_cycles"][0], comp["total_cycles"]))
            entries = [d.unpack(lay, plan.image.read(r["scores"] + i * d.RESULT_BYTES,
                                                     d.RESULT_BYTES)) for i in range(r["n"])]
            pos = np.array([e["position"] for e in entries], dtype=np.int64)
            if comp["kept"][0] != r["n"] or not np.array_equal(pos, np.arange(r["n"])):
                raise SchedulerError(f"query {q['tag']} stage {s + 1}: the scores are not one "
                                     f"per candidate in order")
            scores = np.array([e["score"] for e in entries], dtype=np.int64)
            order = numerics.topk(scores, q["inputs"], stages[s].keep_k)
            kept = q["inputs"][order]
            q["lists"].append((kept, scores[order]))
            q["stage"] = s + 1
            if s + 1 < len(stages):
                q["inputs"] = np.sort(kept)
                plan.image.write(q["rounds"][s + 1]["records"],
                                 self.records(q["user"], q["inputs"]))
                self._submit(plan, q)
                submitted = True
        return submitted

    # -- results ----------------------------------------------------------------------------------
    def completion(self, plan: Plan, index: int) -> dict:
        raw = plan.image.read(plan.ring.completion_base + index * d.COMPLETION_BYTES,
                              d.COMPLETION_BYTES)
        return d.unpack(d.completion_layout(self.config), raw)

    def results(self, plan: Plan) -> list[QueryResult]:
        """Every query's answer read back from the image after a backend ran the plan."""
        cfg, stages = self.config, self.pipeline.stages
        out = []
        lay = d.result_layout(cfg)

        def read_list(addr, n, cands):
            entries = [d.unpack(lay, plan.image.read(addr + i * d.RESULT_BYTES,
                                                     d.RESULT_BYTES)) for i in range(n)]
            pos = np.array([e["position"] for e in entries], dtype=np.int64)
            if pos.size and pos.max() >= cands.size:
                raise SchedulerError(f"a result names position {int(pos.max())} of only "
                                     f"{cands.size} candidates")
            return cands[pos], np.array([e["score"] for e in entries], dtype=np.int64)

        if not cfg.onchip_topk:
            return [self._round_trip_result(q) for q in plan.queries]
        for q in plan.queries:
            comp = self.completion(plan, q["index"])
            n_final = comp["kept"][len(stages) - 1] if comp["n_stages"] else 0
            ranking, scores = read_list(q["result"], n_final, q["candidates"]) \
                if comp["error"] in (0, 8) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
            kept = ()
            if q["kept"] and comp["error"] in (0, 8):
                kept = tuple(read_list(q["kept"] + s * cfg.topk_max * d.RESULT_BYTES,
                                       comp["kept"][s], q["candidates"])[0]
                             for s in range(len(stages)))
            out.append(QueryResult(
                user=q["user"], tag=comp["tag"], error=comp["error"], ranking=ranking,
                scores=scores, kept=kept,
                stage_cycles=tuple(comp["stage_cycles"][:len(stages)]),
                total_cycles=comp["total_cycles"]))
        return out

    def _round_trip_result(self, q: dict) -> QueryResult:
        """A query's answer from its host-filtered rounds (no on-chip top-k)."""
        stages = self.pipeline.stages
        done = q["error"] in (0, ERROR_EMBEDDING) and len(q["lists"]) == len(stages)
        empty = np.zeros(0, np.int64)
        ranking, scores = q["lists"][-1] if done else (empty, empty)
        cycles = q.get("cycles", [])
        return QueryResult(user=q["user"], tag=q["tag"], error=q["error"], ranking=ranking,
                           scores=scores, kept=tuple(k for k, _ in q["lists"]) if done else (),
                           stage_cycles=tuple(c for c, _ in cycles),
                           total_cycles=sum(t for _, t in cycles))

    def run(self, backend: Backend, queries: list[tuple[int, np.ndarray]]) -> list[QueryResult]:
        """Plan ``queries``, let ``backend`` execute the ring, read the answers back
        (without on-chip top-k, one round per stage, :meth:`advance` between rounds)."""
        plan = self.plan(queries)
        while True:
            head = backend.execute(plan.image, plan.ring)
            if head != plan.ring.tail:
                raise SchedulerError(f"{backend.name} stopped at ring entry {head} of "
                                     f"{plan.ring.tail}")
            if not self.advance(plan):
                return self.results(plan)
