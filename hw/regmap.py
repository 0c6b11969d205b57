"""The register map of RPAccel: the one definition of every control and status register.

Everything register-shaped is derived from :func:`register_map`: the CSR block in the RTL
(:class:`rpaccel.hw.csr.CSRBlock`), the host's register accessors
(:mod:`rpaccel.sim.registers`), and the exports of ``rpaccel regmap`` (a Markdown table
for the docs, a C header and a SystemRDL file that ``systemrdl-compiler`` compiles, so the
PeakRDL tools can be run on it), each stamped with the configuration hash.

Registers are 32 bits wide at byte offsets that are multiples of 4, on an AXI4-Lite slave
port. Field access types:

* ``rw``: written and read by the host; the hardware sees the value.
* ``ro``: driven by the hardware; host writes are ignored (the write still gets OKAY).
* ``w1c``: a sticky flag the hardware sets; the host clears it by writing 1.
* ``w1p``: write-1-to-pulse: a write of 1 gives the hardware a one-cycle pulse; reads 0.

A read or write of an offset no register occupies gets the AXI response SLVERR and changes
nothing. Counters wider than 32 bits are split into ``_LO`` / ``_HI`` registers; reading
``_LO`` snapshots the whole counter, so ``_HI`` read next belongs to the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import AccelConfig

__all__ = ["Field", "Register", "RegisterMap", "register_map", "ACCESS", "MAGIC",
           "REGMAP_VERSION", "ERROR_CODES", "counter_names"]

#: Field access types (see the module docstring).
ACCESS = ("rw", "ro", "w1c", "w1p")
#: The ID register reads 'RPAC'.
MAGIC = 0x52504143
#: Bumped when the register map changes incompatibly.
REGMAP_VERSION = 2

#: Error codes of the ERROR register and of query completions, with their meaning. 0 is
#: success. The top level sets one per rejected command and keeps serving.
ERROR_CODES = {
    0: ("OK", "no error"),
    1: ("BAD_OPCODE", "unknown command opcode"),
    2: ("ZERO_CANDIDATES", "a query with no candidates"),
    3: ("BAD_K", "k of a stage is 0, above topk_max or above the stage's input"),
    4: ("ADDRESS_RANGE", "a command address outside the allowed memory region"),
    5: ("BAD_PARTITION", "a partition (or top-k unit) that does not exist, or a gang the "
                         "configuration cannot form"),
    6: ("QUEUE_OVERRUN", "the tail register moved past unfinished entries"),
    7: ("MODEL_NOT_LOADED", "a stage names a model slot that holds no model for its "
                            "partitions (or ganged when the stage is not, or the reverse)"),
    8: ("EMBEDDING", "an embedding lookup was out of range or unconfigured"),
    9: ("AXI", "the memory answered SLVERR or DECERR"),
    10: ("BAD_STAGES", "a query with 0 stages, more than max_stages, or more than one "
                       "without on-chip top-k"),
    11: ("BAD_LAYER", "a LOAD_MODEL layer the MLP engines refuse: a dimension 0 or above "
                      "max_layer_dim, weights or biases beyond the engine memories, or a "
                      "score layer with more than one output"),
}


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    access: str
    desc: str
    reset: int = 0

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"field {self.name}: access must be one of {ACCESS}, "
                             f"not {self.access!r}")
        if not (0 <= self.lsb and self.width >= 1 and self.lsb + self.width <= 32):
            raise ValueError(f"field {self.name}: bits [{self.lsb + self.width - 1}:"
                             f"{self.lsb}] do not fit a 32-bit register")

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    desc: str
    fields: tuple

    def __post_init__(self):
        if self.offset % 4:
            raise ValueError(f"register {self.name}: offset {self.offset:#x} is not a "
                             f"multiple of 4")
        used = 0
        for f in self.fields:
            if used & f.mask:
                raise ValueError(f"register {self.name}: field {f.name} overlaps another")
            used |= f.mask

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: "
                       f"{', '.join(f.name for f in self.fields)}")

    @property
    def reset(self) -> int:
        return sum(f.reset << f.lsb for f in self.fields)


@dataclass(frozen=True)
class RegisterMap:
    config_hash: str
    registers: tuple

    def __post_init__(self):
        offsets = {}
        for r in self.registers:
            if r.offset in offsets:
                raise ValueError(f"registers {offsets[r.offset]} and {r.name} share offset "
                                 f"{r.offset:#x}")
            offsets[r.offset] = r.name

    def __getitem__(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name!r}")

    def __iter__(self):
        return iter(self.registers)

    @property
    def size(self) -> int:
        """Bytes of address space the registers span (a power of two)."""
        end = max(r.offset for r in self.registers) + 4
        return 1 << (end - 1).bit_length()


def counter_names(config: AccelConfig) -> list[tuple[str, str]]:
    """The 64-bit performance counters, ``(name, description)``, in register order."""
    names = [("CYCLES", "clock cycles since reset"),
             ("BUSY_CYCLES", "cycles with at least one command in progress"),
             ("QUERIES_DONE", "queries completed (with or without error)"),
             ("COMMANDS_DONE", "ring entries completed")]
    for p in range(config.partitions):
        names.append((f"ENGINE{p}_BUSY", f"cycles partition {p}'s MLP engine ran a layer"))
    if config.partitions > 1:
        # the measure of concurrency across partitions (stages of consecutive queries, or one
        # stage's sub-batches dealt over several): the busy counters alone cannot show it
        names.append(("ENGINES_OVERLAP", "cycles in which two or more partitions' MLP "
                                         "engines ran a layer"))
    names += [("STATIC_ACCESSES", "embedding lookups that checked the static cache"),
              ("STATIC_HITS", "lookups served by the static cache"),
              ("DYNAMIC_ACCESSES", "lookups that checked the dynamic cache"),
              ("DYNAMIC_HITS", "dynamic-cache hits"),
              ("DYNAMIC_MISSES", "dynamic-cache misses"),
              ("DYNAMIC_FILLS", "lines filled in the dynamic cache"),
              ("DYNAMIC_EVICTIONS", "valid lines replaced in the dynamic cache"),
              ("MEM_READ_BURSTS", "AXI read bursts issued"),
              ("MEM_READ_BYTES", "bytes read from memory"),
              ("MEM_READ_LATENCY", "sum over bursts of cycles from AR handshake to last R"),
              ("MEM_WRITE_BYTES", "bytes written to memory")]
    return names


def register_map(config: AccelConfig) -> RegisterMap:
    """Every register of the accelerator built for ``config``."""
    h = config.hash
    regs = []

    def reg(name, offset, desc, *fields):
        regs.append(Register(name, offset, desc, tuple(fields)))

    reg("ID", 0x000, "identifies the block", Field("MAGIC", 0, 32, "ro", "reads 'RPAC'", MAGIC))
    reg("VERSION", 0x004, "register map version",
        Field("REGMAP", 0, 16, "ro", "register map version", REGMAP_VERSION))
    reg("CONFIG_HASH_LO", 0x008, "configuration hash, hex digits 5..12",
        Field("VALUE", 0, 32, "ro", "low 32 bits of the 48-bit hash", int(h, 16) & 0xFFFFFFFF))
    reg("CONFIG_HASH_HI", 0x00C, "configuration hash, hex digits 1..4",
        Field("VALUE", 0, 16, "ro", "high 16 bits of the 48-bit hash", int(h, 16) >> 32))
    reg("CAPS", 0x010, "what this build has",
        Field("PARTITIONS", 0, 4, "ro", "array partitions", config.partitions),
        Field("TOPK_UNITS", 4, 5, "ro", "top-k units", config.topk_units),
        Field("ROWS_LOG2", 9, 4, "ro", "log2 of the array rows", config.rows.bit_length() - 1),
        Field("COLS_LOG2", 13, 4, "ro", "log2 of the array columns",
              config.cols.bit_length() - 1),
        Field("STATIC_CACHE", 17, 1, "ro", "static embedding cache present",
              int(config.static_cache_rows > 0)),
        Field("DYNAMIC_CACHE", 18, 1, "ro", "dynamic embedding cache present",
              int(config.dynamic_cache_sets > 0)))
    reg("CTRL", 0x014, "control",
        Field("ENABLE", 0, 1, "rw", "fetch and run ring entries while set"),
        Field("IRQ_ENABLE", 1, 1, "rw", "drive the interrupt output from IRQ_STATUS"),
        Field("CLEAR_COUNTERS", 2, 1, "w1p", "zero every performance counter"))
    reg("STATUS", 0x018, "state of the accelerator",
        Field("BUSY", 0, 1, "ro", "a command is in progress"),
        Field("RING_EMPTY", 1, 1, "ro", "head equals tail"),
        Field("ERROR", 2, 1, "ro", "an error was recorded since the last IRQ_STATUS clear"))
    reg("IRQ_STATUS", 0x01C, "interrupt causes (the output is their OR, if enabled)",
        Field("DONE", 0, 1, "w1c", "a ring entry completed"),
        Field("ERROR", 1, 1, "w1c", "a ring entry completed with an error"))
    reg("ERROR", 0x020, "the last error",
        Field("CODE", 0, 8, "ro", "error code (ERROR_CODES)"),
        Field("INDEX", 8, 16, "ro", "ring index of the entry that failed"))
    reg("ERROR_COUNT", 0x024, "entries completed with an error",
        Field("VALUE", 0, 32, "ro", "count since reset"))
    reg("RING_BASE_LO", 0x030, "command ring base address, low", Field("VALUE", 0, 32, "rw", "bits 31..0 (64-byte aligned)"))
    reg("RING_BASE_HI", 0x034, "command ring base address, high", Field("VALUE", 0, 32, "rw", "bits 63..32"))
    reg("RING_ENTRIES", 0x038, "command ring size",
        Field("LOG2", 0, 5, "rw", "the ring holds 2**LOG2 entries of 64 bytes"))
    reg("RING_HEAD", 0x03C, "next entry the accelerator fetches",
        Field("INDEX", 0, 16, "ro", "consumer index (wraps at 2**16)"))
    reg("RING_TAIL", 0x040, "next entry the host fills",
        Field("INDEX", 0, 16, "rw", "producer index (wraps at 2**16)"))
    reg("COMPLETION_BASE_LO", 0x044, "completion ring base, low", Field("VALUE", 0, 32, "rw", "bits 31..0"))
    reg("COMPLETION_BASE_HI", 0x048, "completion ring base, high", Field("VALUE", 0, 32, "rw", "bits 63..32"))
    reg("REGION_BASE_LO", 0x050, "memory region commands may use, base, low", Field("VALUE", 0, 32, "rw", "bits 31..0"))
    reg("REGION_BASE_HI", 0x054, "region base, high", Field("VALUE", 0, 32, "rw", "bits 63..32"))
    reg("REGION_SIZE_LO", 0x058, "region size in bytes, low", Field("VALUE", 0, 32, "rw", "bits 31..0"))
    reg("REGION_SIZE_HI", 0x05C, "region size in bytes, high", Field("VALUE", 0, 32, "rw", "bits 63..32"))
    ways = max(config.dynamic_cache_ways, 1)
    for s in range(config.max_stages):
        reg(f"DYNAMIC_WAYS{s}", 0x060 + 4 * s, f"dynamic-cache ways stage {s} may use",
            Field("MASK", 0, ways, "rw", f"way mask of stage {s} (all ways after reset)",
                  (1 << ways) - 1))
    base = 0x100
    for n, (name, desc) in enumerate(counter_names(config)):
        reg(f"{name}_LO", base + 8 * n, f"{desc}, low word (reading it snapshots _HI)",
            Field("VALUE", 0, 32, "ro", "bits 31..0"))
        reg(f"{name}_HI", base + 8 * n + 4, f"{desc}, high word",
            Field("VALUE", 0, 32, "ro", "bits 63..32"))
    return RegisterMap(h, tuple(regs))
