"""The one configuration object of an RPAccel build.

Every hardware parameter lives in :class:`AccelConfig`. The RTL, the host-side constants,
the build directory names and the generation manifest are all derived from it, so hardware
and software cannot drift apart: a build is named by :attr:`AccelConfig.hash`.

Construction validates every field and raises :class:`ConfigError` (a ``ValueError``) whose
message names the field and the offending value, e.g.
``rows must be a power of two between 2 and 256, not 3``.

Named presets (:data:`PRESETS`) are built from :data:`DEFAULT` with :meth:`AccelConfig.replace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import RpaccelError

__all__ = ["AccelConfig", "ConfigError", "PRESETS", "DEFAULT", "preset", "load_toml"]


class ConfigError(RpaccelError, ValueError):
    """An invalid configuration value; the message names the field and the value."""


def _is_pow2(value: int) -> bool:
    return isinstance(value, int) and value > 0 and (value & (value - 1)) == 0


@dataclass(frozen=True, kw_only=True)
class AccelConfig:
    """Every parameter of one RPAccel build. Frozen, keyword-only, validated on construction."""

    # -- Systolic array ---------------------------------------------------------------------
    #: PE rows: the input (reduction) dimension of one weight tile. Power of two.
    rows: int = 8
    #: PE columns: the output dimension of one weight tile, over all partitions. Power of two.
    cols: int = 8
    #: Independent sub-arrays the columns are split into (1 = one monolithic array).
    partitions: int = 2

    # -- Numerics (docs/numerics.md) ---------------------------------------------------------
    #: Width of activations, weights and embedding elements (signed).
    operand_width: int = 8
    #: Width of the accumulators, biases and scores (signed).
    acc_width: int = 32
    #: Width of the unsigned requantization multiplier.
    requant_mult_width: int = 16

    # -- MLP engine --------------------------------------------------------------------------
    #: Rows per sub-batch: the most rows (candidates) one layer command processes. 128 on
    #: ``default`` (256 before 2026-12-04): measured on six real users, 2-stage cascade,
    #: it is faster on either mapping (stages on partitions 1,2: 372,149 -> 340,127 cycles
    #: per query, 203,947 -> 186,477 back to back; both stages dealt over both partitions,
    #: which a 256-candidate stage 2 of one sub-batch cannot be: 280,551 and 150,436), and
    #: halves the activation buffers' block RAM (the accelerator fits the EBR budget).
    sub_batch: int = 128
    #: Largest input or output dimension of any layer (sizes the activation buffers).
    max_layer_dim: int = 128
    #: Weight memory per partition, in int8 elements.
    weight_capacity: int = 32768
    #: Bias memory per partition, in accumulator-wide elements.
    bias_capacity: int = 1024
    #: Activation buffers per engine: a layer reads one and writes another; the others
    #: are free for the host (or the sub-batch controller) while it runs. The top level
    #: needs 3 (``X``, ``H``, ``Z``), and 4 with ``subbatch_overlap`` (a second ``Z``).
    act_buffers: int = 4

    # -- Feature interaction -----------------------------------------------------------------
    #: Most vectors (pooled embeddings plus the bottom-MLP output) one sample interacts.
    max_interaction_vectors: int = 16
    #: Multipliers of the dedicated dot-product unit (elements per cycle).
    interaction_lanes: int = 16

    # -- Embeddings ----------------------------------------------------------------------------
    #: Largest embedding dimension (elements per row).
    emb_dim_max: int = 32
    #: Most embedding tables one model uses.
    max_tables: int = 8
    #: Rows of the static (host-filled, hot rows) embedding cache.
    static_cache_rows: int = 1024
    #: Sets of the dynamic embedding cache.
    dynamic_cache_sets: int = 64
    #: Ways of the dynamic embedding cache.
    dynamic_cache_ways: int = 4
    #: Most rows one multi-hot bag pools (a longer bag is flagged as bad input).
    max_bag: int = 8
    #: Width of an embedding row index (a table has at most 2**emb_row_width rows).
    emb_row_width: int = 20
    #: Row lookups the embedding subsystem keeps in flight (misses outstanding on the bus).
    emb_inflight: int = 16

    # -- Top-k filtering -----------------------------------------------------------------------
    #: Largest k a top-k unit keeps (the quality report's cascades keep 256 after the small
    #: model; above 32 the unit is a pipelined heap in memories, see hw/topk.py).
    topk_max: int = 256
    #: Number of top-k filter units (at least one per partition).
    topk_units: int = 2
    #: Deepest heap-level memory (words, one side of a level) the heap top-k keeps in
    #: distributed RAM; deeper levels are block RAM (fewer LUTs, lower Fmax: see
    #: docs/architecture.md, "Top-k filter"). Same cycles either way.
    topk_lutram_words: int = 32
    #: Heaps in each heap top-k unit (1 or 2). Two take one candidate per cycle (they
    #: alternate); one takes a candidate every two cycles and pops ``min(k, N)`` entries
    #: instead of ``min(k, ceil(N / 2))``, for half the unit's logic and block RAM. A score
    #: layer delivers a sub-batch's scores in a burst of one per row, thousands of cycles
    #: apart, so one heap costs a stage a few hundred cycles (docs/architecture.md, "Top-k
    #: filter", has the measured cost).
    topk_heaps: int = 1
    #: Width of a candidate id.
    id_width: int = 16

    # -- Top level -----------------------------------------------------------------------------
    #: Most stages of one query's cascade (sizes descriptors, completions and CSRs).
    max_stages: int = 4
    #: Models the accelerator holds loaded at once (each may be loaded into any partitions);
    #: also the table sets whose descriptors the embedding subsystem holds.
    model_slots: int = 4
    #: Dense (int8) features a candidate record carries.
    max_dense: int = 8
    #: Embedding lookups (rows over all tables) a candidate record carries.
    max_lookups: int = 16

    # -- Feature switches (all on is RPAccel; all off, with partitions = 1 and no caches, is
    # -- the baseline accelerator built by this same generator with the same MACs) ---------
    #: Overlap sub-batch ``i + 1``'s bottom MLP and ``i - 1``'s top MLP with sub-batch
    #: ``i``'s embedding gathers and interaction (needs ``act_buffers >= 4``).
    subbatch_overlap: bool = True
    #: Filter each stage's scores with an on-chip top-k unit and feed the next stage from
    #: it; off, every stage's scores go to memory and the host filters between stages.
    onchip_topk: bool = True

    # -- System --------------------------------------------------------------------------------
    #: Data width of the AXI4 memory bus, in bits.
    mem_bus_width: int = 128
    #: Address width of the AXI4 memory bus, in bits.
    mem_addr_width: int = 32
    #: Clock frequency the design is built for, in MHz (reports convert cycles to time with it).
    clock_mhz: float = 125.0

    def __post_init__(self):
        self._validate()
        # The canonical form: a float field holds a float (``clock_mhz = 125`` and ``125.0``
        # are one configuration, with one hash and one build folder).
        for f in fields(self):
            if f.type in ("float", float):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    # -- validation ----------------------------------------------------------------------------
    def _validate(self):
        def fail(name, rule):
            raise ConfigError(f"{name} must be {rule}, not {getattr(self, name)!r}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    fail(f.name, "true or false")
            elif f.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool):
                    fail(f.name, "an integer")
            elif f.type in ("float", float):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    fail(f.name, "a number")

        for name in ("rows", "cols"):
            if not (_is_pow2(getattr(self, name)) and 2 <= getattr(self, name) <= 256):
                fail(name, "a power of two between 2 and 256")
        if self.partitions not in (1, 2, 4):
            fail("partitions", "1, 2 or 4")
        if self.cols % self.partitions or self.cols // self.partitions < 2:
            fail("partitions", f"a divisor of cols={self.cols} leaving at least 2 columns each")
        if not 4 <= self.operand_width <= 16:
            fail("operand_width", "between 4 and 16")
        if not 2 * self.operand_width + 4 <= self.acc_width <= 48:
            fail("acc_width", f"between 2*operand_width+4={2 * self.operand_width + 4} and 48")
        if not 8 <= self.requant_mult_width <= 24:
            fail("requant_mult_width", "between 8 and 24")
        if not 1 <= self.sub_batch <= 4096:
            fail("sub_batch", "between 1 and 4096")
        if not self.rows <= self.max_layer_dim <= 8192 or self.max_layer_dim % self.rows:
            fail("max_layer_dim", f"a multiple of rows={self.rows} up to 8192")
        if not 2 <= self.act_buffers <= 8:
            fail("act_buffers", "between 2 and 8")
        tile = self.rows * self.cols // self.partitions
        if self.weight_capacity < tile or self.weight_capacity % tile:
            fail("weight_capacity", f"a positive multiple of one weight tile ({tile} elements)")
        if self.bias_capacity < self.cols:
            fail("bias_capacity", f"at least cols={self.cols}")
        if not 2 <= self.max_interaction_vectors <= 64:
            fail("max_interaction_vectors", "between 2 and 64")
        if not (_is_pow2(self.interaction_lanes) and self.interaction_lanes <= self.emb_dim_max):
            fail("interaction_lanes", f"a power of two no larger than emb_dim_max={self.emb_dim_max}")
        if not (_is_pow2(self.emb_dim_max) and 2 <= self.emb_dim_max <= 512):
            fail("emb_dim_max", "a power of two between 2 and 512")
        if not 1 <= self.max_tables <= 64:
            fail("max_tables", "between 1 and 64")
        if self.max_interaction_vectors < self.max_tables + 1:
            fail("max_interaction_vectors", f"at least max_tables+1={self.max_tables + 1}")
        if not 0 <= self.static_cache_rows <= 1 << 20:
            fail("static_cache_rows", "between 0 and 1048576")
        if not (_is_pow2(self.dynamic_cache_sets) or self.dynamic_cache_sets == 0):
            fail("dynamic_cache_sets", "zero or a power of two")
        if not 1 <= self.dynamic_cache_ways <= 16:
            fail("dynamic_cache_ways", "between 1 and 16")
        if not 1 <= self.max_bag <= 255:
            fail("max_bag", "between 1 and 255")
        if not 4 <= self.emb_row_width <= 28:
            fail("emb_row_width", "between 4 and 28")
        if not 2 <= self.emb_inflight <= 256:
            fail("emb_inflight", "between 2 and 256")
        if not 1 <= self.topk_max <= 4096:
            fail("topk_max", "between 1 and 4096")
        if not 2 <= self.topk_lutram_words <= 4096:
            fail("topk_lutram_words", "between 2 and 4096")
        if self.topk_heaps not in (1, 2):
            fail("topk_heaps", "1 or 2")
        if not self.partitions <= self.topk_units <= 16:
            fail("topk_units", f"between partitions={self.partitions} and 16")
        if not 4 <= self.id_width <= 32:
            fail("id_width", "between 4 and 32")
        if self.topk_max > 1 << self.id_width:
            fail("topk_max", f"at most 2**id_width={1 << self.id_width}")
        if not 1 <= self.max_stages <= 6:
            fail("max_stages", "between 1 and 6")
        if not (_is_pow2(self.model_slots) and self.model_slots <= 16):
            fail("model_slots", "a power of two between 1 and 16")
        if not 1 <= self.max_dense <= min(64, self.max_layer_dim):
            fail("max_dense", f"between 1 and min(64, max_layer_dim={self.max_layer_dim})")
        if not self.max_tables <= self.max_lookups <= 64:
            fail("max_lookups", f"between max_tables={self.max_tables} and 64")
        if not (_is_pow2(self.mem_bus_width) and 32 <= self.mem_bus_width <= 1024):
            fail("mem_bus_width", "a power of two between 32 and 1024")
        if not 16 <= self.mem_addr_width <= 64:
            fail("mem_addr_width", "between 16 and 64")
        if not 1.0 <= float(self.clock_mhz) <= 2000.0:
            fail("clock_mhz", "between 1 and 2000")

    # -- derived values ------------------------------------------------------------------------
    @property
    def partition_cols(self) -> int:
        """Columns of one partition (sub-array)."""
        return self.cols // self.partitions

    @property
    def weight_tiles(self) -> int:
        """Weight tiles one partition's weight memory holds."""
        return self.weight_capacity // (self.rows * self.partition_cols)

    @property
    def hash(self) -> str:
        """Short stable hash of every field: names builds and stamps every output. It is
        taken over the canonical form (every field in its declared type, sorted keys), so
        equal configurations have equal hashes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # -- copying, (de)serialisation ---------------------------------------------------------
    def replace(self, **changes) -> "AccelConfig":
        """A copy with some fields changed (validated again)."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown field {unknown[0]!r}; valid fields: {', '.join(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict, *, base: "AccelConfig | None" = None) -> "AccelConfig":
        """Build from a mapping; an optional ``preset`` key names the starting point."""
        values = dict(values)
        start = base or DEFAULT
        if "preset" in values:
            name = values.pop("preset")
            if not isinstance(name, str):
                raise ConfigError(f"preset must be a preset name ({', '.join(PRESETS)}), "
                                  f"not {name!r}")
            start = preset(name)
        return start.replace(**values)

    def to_toml(self) -> str:
        lines = [f"# RPAccel configuration {self.hash}"]
        for name, value in self.to_dict().items():
            lines.append(f"{name} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


def load_toml(path: str | Path) -> AccelConfig:
    """Read a configuration from a TOML file (flat ``key = value``; optional ``preset``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte "
                          f"0x{raw[err.start]:02x} at offset {err.start}): TOML files are "
                          f"UTF-8") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"config file {str(path)!r}: tables are not supported ([{key}])")
    try:
        return AccelConfig.from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"config file {str(path)!r}: {err}") from None


DEFAULT = AccelConfig()

#: Named presets. ``paper`` is the 128x128 RPAccel of the paper: generated and synthesized,
#: never simulated in CI.
PRESETS: dict[str, AccelConfig] = {
    "tiny": DEFAULT.replace(
        rows=4, cols=4, partitions=2, sub_batch=16, max_layer_dim=128, weight_capacity=8192,
        bias_capacity=256, interaction_lanes=8, static_cache_rows=64, dynamic_cache_sets=8,
        dynamic_cache_ways=2, topk_max=16, topk_units=2, mem_bus_width=64),
    "small": DEFAULT.replace(
        rows=4, cols=8, partitions=2, sub_batch=32, max_layer_dim=128, weight_capacity=16384,
        bias_capacity=512, interaction_lanes=8, static_cache_rows=256, dynamic_cache_sets=32,
        dynamic_cache_ways=2, topk_max=32, topk_units=2, mem_bus_width=64),
    "default": DEFAULT,
    "paper": DEFAULT.replace(
        rows=128, cols=128, partitions=4, sub_batch=256, max_layer_dim=512,
        weight_capacity=262144, bias_capacity=2048, interaction_lanes=32,
        static_cache_rows=65536, dynamic_cache_sets=1024, dynamic_cache_ways=4,
        topk_max=512, topk_units=4, mem_bus_width=512),
}


def preset(name: str) -> AccelConfig:
    """The named preset; the error lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
