"""The embedding subsystem: table descriptors, the static and dynamic embedding caches, the
AXI4 memory port and the gather-and-pool pipeline that turns row lookups into pooled vectors.

``docs/architecture.md`` ("Embedding subsystem") gives the design and its reasons (lookup
structure of each cache, counter semantics, cycles); ``rpaccel.sim.cache_model`` is the
Python model that predicts every counter of :class:`EmbeddingSubsystem` exactly.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AxiRowReader, PAGE_BYTES, axi4_read_signature, bus_bytes, read_request_layout, row_bits
from .config import AccelConfig
from .shared import index_bits, times_const
from .stream import StreamFIFO

__all__ = ["EmbeddingSubsystem", "lookup_layout", "descriptor_layout", "pooled_layout",
           "static_write_layout", "counter_layout", "COUNTERS", "STAGES", "set_index",
           "row_beats", "model_bits", "table_bits", "acc_width", "KIND_BAD", "KIND_STATIC",
           "KIND_HIT", "KIND_MISS", "SET_HASH_MULT", "LOOKUP_LATENCY"]

#: Cascade stages the dynamic cache can be split between (the ``stage`` field of a lookup).
STAGES = 4
#: Kinds of a classified lookup (the in-flight queue's ``kind`` field).
KIND_BAD, KIND_STATIC, KIND_HIT, KIND_MISS = 0, 1, 2, 3
#: Cycles from a lookup's acceptance to its one-row vector when its row is on chip and
#: nothing stalls: F, C and B (classification), the in-flight FIFO's two, R1, R2, R3 and R4.
LOOKUP_LATENCY = 9
#: The (model, table) number is multiplied by this before it is folded into the set index,
#: so the same row of different tables lands in different sets.
SET_HASH_MULT = 37

#: Every counter of :attr:`EmbeddingSubsystem.counters`, in layout order (32 bits, wrapping).
COUNTERS = (
    "lookups",            # lookup beats accepted
    "bad_lookups",        # beats classified bad (empty bag, unconfigured table, row out of
                          # range, beyond max_bag): never looked up, never read from memory
    "static_accesses",    # good lookups (each is first checked against the static range)
    "static_hits",
    "dynamic_accesses",   # good lookups the static cache misses
    "dynamic_hits",       # includes hits on a line whose fill is still on its way
    "dynamic_misses",     # every one reads memory (one burst)
    "dynamic_fills",      # misses that install a line (the stage owns at least one way)
    "dynamic_evictions",  # fills that replace a valid line
    "bursts",             # AR handshakes
    "beats",              # R handshakes
    "bytes",              # beats * bus bytes
    "read_latency",       # sum over bursts of cycles from AR handshake to last R beat
    "axi_errors",         # bursts with a SLVERR or DECERR response
    "vectors",            # pooled vectors delivered
    "bad_vectors",        # pooled vectors delivered with error = 1
    "descriptor_errors",  # descriptor writes rejected (stored as unconfigured)
)


def model_bits(config: AccelConfig) -> int:
    return index_bits(config.model_slots)


def table_bits(config: AccelConfig) -> int:
    return index_bits(config.max_tables)


def _static_addr_bits(config: AccelConfig) -> int:
    return index_bits(config.static_cache_rows)


def acc_width(config: AccelConfig) -> int:
    """Width of a pooling accumulator element: the exact sum of ``max_bag`` rows."""
    return config.operand_width + config.max_bag.bit_length()


def row_beats(config: AccelConfig, dim: int) -> int:
    """Bus beats of a row of ``dim`` elements: ``ceil(dim * operand_width / mem_bus_width)``."""
    return -(-dim * config.operand_width // config.mem_bus_width)


def set_index(config: AccelConfig, model: int, table: int, row: int) -> int:
    """The dynamic-cache set of a row: the row's low ``log2(sets)`` bits XOR the next
    ``log2(sets)`` bits XOR ``(model * max_tables + table) * SET_HASH_MULT`` (mod sets)."""
    sets = config.dynamic_cache_sets
    if sets <= 1:
        return 0
    bits = sets.bit_length() - 1
    mask = sets - 1
    mt = model * config.max_tables + table
    return (row & mask) ^ ((row >> bits) & mask) ^ ((mt * SET_HASH_MULT) & mask)


def lookup_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`EmbeddingSubsystem.lookups`: one row lookup."""
    return data.StructLayout({
        "model": unsigned(model_bits(config)),
        "table": unsigned(table_bits(config)),
        "row": unsigned(config.emb_row_width),
        "bag_end": 1,      # last row of this table's bag (1 on every single-valued lookup)
        "sample_end": 1,   # on the bag end of the candidate's last table
        "empty": 1,        # this table's bag is empty: no row, ends the bag (flagged)
        "stage": unsigned((STAGES - 1).bit_length()),
    })


def descriptor_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`EmbeddingSubsystem.descriptors`: one table descriptor."""
    return data.StructLayout({
        "model": unsigned(model_bits(config)),
        "table": unsigned(table_bits(config)),
        "base": unsigned(config.mem_addr_width),           # byte address of row 0
        "rows": unsigned(config.emb_row_width + 1),        # 0 = unconfigure this table
        "row_shift": unsigned(4),                          # row stride = 2**row_shift bytes
        "dim": range(config.emb_dim_max + 1),
        "static_base": unsigned(_static_addr_bits(config)),
        "static_rows": range(config.static_cache_rows + 1),
    })


def _stored_descriptor_layout(config: AccelConfig) -> data.StructLayout:
    return data.StructLayout({
        "valid": 1,
        "base": unsigned(config.mem_addr_width),
        "rows": unsigned(config.emb_row_width + 1),
        "row_shift": unsigned(4),
        "dim": range(config.emb_dim_max + 1),
        "len": unsigned(8),                                # ARLEN of one row
        "static_base": unsigned(_static_addr_bits(config)),
        "static_rows": range(config.static_cache_rows + 1),
    })


def _vector(config: AccelConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(config.operand_width), config.emb_dim_max)


def pooled_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`EmbeddingSubsystem.pooled`: one pooled vector (``data`` and
    ``last`` as the interaction unit's ``vector_layout``, plus ``error``)."""
    return data.StructLayout({"data": _vector(config), "last": 1, "error": 1})


def static_write_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`EmbeddingSubsystem.static_write`: one static-cache row."""
    return data.StructLayout({"addr": unsigned(_static_addr_bits(config)),
                              "data": _vector(config)})


def counter_layout(config: AccelConfig) -> data.StructLayout:
    return data.StructLayout({name: unsigned(32) for name in COUNTERS})


def _tag_layout(config: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"valid": 1, "model": unsigned(model_bits(config)),
                              "table": unsigned(table_bits(config)),
                              "row": unsigned(config.emb_row_width)})


def _age_bits(config: AccelConfig) -> int:
    return index_bits(config.dynamic_cache_ways)


def _set_layout(config: AccelConfig) -> data.StructLayout:
    ways = config.dynamic_cache_ways
    return data.StructLayout({"tags": data.ArrayLayout(_tag_layout(config), ways),
                              "ages": data.ArrayLayout(unsigned(_age_bits(config)), ways)})


def _set_init(config: AccelConfig) -> dict:
    """A flushed set: every way invalid, LRU ages 0..ways-1 (a permutation, as true LRU
    keeps them), so way ``ways-1`` is the first victim once every way is valid."""
    ways = config.dynamic_cache_ways
    zero_tag = {"valid": 0, "model": 0, "table": 0, "row": 0}
    return {"tags": [zero_tag] * ways, "ages": list(range(ways))}


class EmbeddingSubsystem(wiring.Component):
    """Row lookups in, pooled embedding vectors out, rows from the static cache, the dynamic
    cache or memory (AXI4).

    Ports
    -----
    lookups : In(stream.Signature(lookup_layout))
        One beat per row lookup, in model order: for each candidate, for each table, the
        rows of the table's bag (``bag_end`` on its last row; a single-valued feature is a
        bag of one), ``sample_end`` on the bag end of the candidate's last table; an empty
        bag is one beat with ``empty`` (its row is ignored; it ends the bag). ``model``
        selects the table set (descriptors), ``stage`` the cascade stage whose dynamic-cache
        ways a miss may fill.
    pooled : Out(stream.Signature(pooled_layout))
        One beat per bag, in request order: ``data`` the exact sum of the bag's rows
        saturated once (``numerics.pool_sum``), elements at and beyond the table's
        dimension zero; ``last`` the bag's ``sample_end``; ``error`` set (and ``data`` all
        zero) if any beat of the bag was bad or any of its rows came back with an AXI error.
    descriptors : In(stream.Signature(descriptor_layout))
        Host writes of table descriptors (always ready). A descriptor is accepted if
        ``1 <= dim <= emb_dim_max``, ``log2(bus bytes) <= row_shift <= 12``, the row's data
        fits its stride (``row_beats * bus bytes <= 2**row_shift``), ``base`` is aligned to
        the stride, the region ``[base, base + rows * 2**row_shift)`` fits the address space,
        ``static_rows <= rows`` and ``static_base + static_rows <= static_cache_rows``;
        otherwise the table is stored unconfigured and ``descriptor_errors`` counts it.
        ``rows = 0`` unconfigures a table (not an error). Rows are aligned to a power-of-two
        stride of at most 4 KiB, so no burst crosses a 4 KiB boundary. Written before
        lookups use the table (a write under traffic may or may not reach lookups in flight).
    static_write : In(stream.Signature(static_write_layout))
        Host writes of static-cache rows (always ready); before the queries that use them.
    stage_ways : In(ArrayLayout(unsigned(dynamic_cache_ways), STAGES))
        Per cascade stage, the dynamic-cache ways its misses may fill (RecPipe's capacity
        split); 0 = the stage never fills (static-only). Hits are found in any way. Its
        ``init`` is all ones (the value when an Amaranth parent leaves it undriven).
    flush : In(1)
        A pulse invalidates the dynamic cache: new lookups wait, then one set per cycle is
        cleared (``dynamic_cache_sets`` cycles). ``busy`` is high meanwhile.
    clear_counters : In(1)
        Clears every counter.
    counters : Out(counter_layout)
        The counters of :data:`COUNTERS` (32 bits, wrapping); an event shows one cycle
        after the cycle it happens in.
    idle : Out(1)
        Nothing in flight (no lookup queued, no vector pending, not flushing, no event
        still to be counted).
    m_axi : Out(axi4_read_signature(mem_addr_width, mem_bus_width))
        The memory port (AXI4 manager, read channels only).

    Pipeline: lookups are **classified in request order** (stages F, C, B: descriptor check,
    static range compare, dynamic-cache tag compare and true-LRU update, miss -> line installed at
    once and one AR request queued), so every cache counter depends on the access stream
    alone, never on memory latency. Classified lookups wait in an in-order queue of
    ``emb_inflight`` entries; the retire stage takes them in order: a static or dynamic hit
    reads its on-chip memory, a miss takes its row from the fill queue (bursts return in
    order) and writes it into its line **at retirement**, so a later hit on that line
    (counted a hit though its fill was pending at lookup time) reads it after it landed, and
    a line is never overwritten while an earlier lookup still has to read it. Hits are served
    under misses, ``emb_inflight`` misses can be outstanding, vectors leave in order.

    Throughput: one lookup per cycle when the rows are on chip (all hits); a miss costs the
    memory's latency, overlapped with up to ``emb_inflight - 1`` other lookups. Latency: a
    lookup accepted on cycle t whose row is on chip leaves on t + :data:`LOOKUP_LATENCY`.
    """

    def __init__(self, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {config!r}")
        self._config = config
        ways = config.dynamic_cache_ways
        super().__init__({
            "lookups": In(stream.Signature(lookup_layout(config))),
            "pooled": Out(stream.Signature(pooled_layout(config))),
            "descriptors": In(stream.Signature(descriptor_layout(config))),
            "static_write": In(stream.Signature(static_write_layout(config))),
            "stage_ways": In(data.ArrayLayout(unsigned(ways), STAGES),
                             init=[(1 << ways) - 1] * STAGES),
            "flush": In(1),
            "clear_counters": In(1),
            "counters": Out(counter_layout(config)),
            "idle": Out(1),
            "busy": Out(1),
            "m_axi": Out(axi4_read_signature(config.mem_addr_width, config.mem_bus_width)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        ow, dmax = cfg.operand_width, cfg.emb_dim_max
        rbits = row_bits(cfg)
        sets, ways = cfg.dynamic_cache_sets, cfg.dynamic_cache_ways
        has_dynamic = sets > 0
        has_static = cfg.static_cache_rows > 0
        bus_shift = bus_bytes(cfg).bit_length() - 1
        n_desc = cfg.model_slots * cfg.max_tables
        incr = {name: Signal(name=f"incr_{name}") for name in COUNTERS}

        # -- descriptors ------------------------------------------------------------------
        stored = _stored_descriptor_layout(cfg)
        m.submodules.descriptors = desc_mem = Memory(shape=stored, depth=n_desc, init=[])
        desc_wp = desc_mem.write_port()
        desc_rp = desc_mem.read_port(domain="sync")
        w = self.descriptors.payload
        m.d.comb += self.descriptors.ready.eq(1)
        dim_bits = Signal(range(dmax * ow + 1))
        beats = Signal(range(dmax * ow // cfg.mem_bus_width + 2))
        stride = Signal(14)
        region_end = Signal(cfg.mem_addr_width + cfg.emb_row_width + 14)
        m.d.comb += [
            dim_bits.eq(w.dim * ow),
            beats.eq((dim_bits + cfg.mem_bus_width - 1) >> (cfg.mem_bus_width.bit_length() - 1)),
            stride.eq(Const(1, 14) << w.row_shift),
            region_end.eq(w.base + (w.rows << w.row_shift)),
        ]
        desc_ok = ((w.table < cfg.max_tables) & (w.dim >= 1) & (w.dim <= dmax)
                   & (w.row_shift >= bus_shift) & (w.row_shift <= PAGE_BYTES.bit_length() - 1)
                   & ((beats << bus_shift) <= stride)
                   & ((w.base & (stride - 1)) == 0)
                   & (region_end <= (1 << cfg.mem_addr_width))
                   & (w.static_rows <= w.rows)
                   & (w.static_base + w.static_rows <= cfg.static_cache_rows))
        unconfigure = w.rows == 0
        m.d.comb += [
            desc_wp.addr.eq(times_const(w.model, cfg.max_tables) + w.table),
            desc_wp.en.eq(self.descriptors.valid & (w.table < cfg.max_tables)),
            desc_wp.data.valid.eq(desc_ok & ~unconfigure),
            desc_wp.data.base.eq(w.base), desc_wp.data.rows.eq(w.rows),
            desc_wp.data.row_shift.eq(w.row_shift), desc_wp.data.dim.eq(w.dim),
            desc_wp.data.len.eq(beats - 1),
            desc_wp.data.static_base.eq(w.static_base),
            desc_wp.data.static_rows.eq(w.static_rows),
            incr["descriptor_errors"].eq(self.descriptors.valid & ~desc_ok & ~unconfigure),
        ]

        # -- static cache memory ------------------------------------------------------------
        m.d.comb += self.static_write.ready.eq(1)
        if has_static:
            # (written by the host before the queries that read it: no collision logic)
            m.submodules.static_rows = static_mem = Memory(
                shape=unsigned(rbits), depth=cfg.static_cache_rows, init=[],
                attrs={"no_rw_check": 1})
            st_wp = static_mem.write_port()
            st_rp = static_mem.read_port(domain="sync")
            m.d.comb += [st_wp.addr.eq(self.static_write.payload.addr),
                         st_wp.data.eq(self.static_write.payload.data.as_value()),
                         st_wp.en.eq(self.static_write.valid)]

        # -- queues ------------------------------------------------------------------------
        entry = data.StructLayout({
            "kind": 2, "alloc": 1,
            "line": unsigned(index_bits(max(1, sets) * ways)),
            "static_addr": unsigned(_static_addr_bits(cfg)),
            "dim": range(dmax + 1), "bag_end": 1, "sample_end": 1})
        # (one entry more than they ever hold: B's room for them is registered, see B)
        m.submodules.inflight = rob = StreamFIFO(entry, cfg.emb_inflight + 1)
        m.submodules.ar_queue = arq = StreamFIFO(read_request_layout(cfg), cfg.emb_inflight + 1)
        m.submodules.reader = reader = AxiRowReader(cfg)
        m.submodules.fills = fills = StreamFIFO(reader.rows.payload.shape(), cfg.emb_inflight)
        wiring.connect(m, arq.r, reader.requests)
        wiring.connect(m, reader.rows, fills.w)
        wiring.connect(m, wiring.flipped(self.m_axi), reader.bus)
        m.d.comb += reader.clear.eq(self.clear_counters)

        # -- stages F, C, B: classification in request order ------------------------------------
        # Three cycles: the accepted beat's memory words arrive in F ("fetch") and are
        # registered as F hands the beat to C ("compare"), which compares the set's tags
        # and picks the victim into registers of B, which classifies the beat and updates
        # the set from those registers. No block-RAM output feeds the classification logic,
        # and the tag compare and the LRU update are a cycle each (in one cycle they were the
        # unit's longest path, 85.4 MHz on `default`).
        lk = self.lookups.payload
        f_valid = Signal()
        f = Signal(lookup_layout(cfg))
        f_advance = Signal()
        c_valid = Signal()
        c = Signal(lookup_layout(cfg))
        c_advance = Signal()
        b_valid = Signal()
        b = Signal(lookup_layout(cfg))
        b_advance = Signal()
        flushing = Signal()
        flush_pending = Signal()
        accept = self.lookups.valid & self.lookups.ready
        # F does not move up behind a lookup in C or B that may write the same set (a dynamic
        # candidate, from their one-bit registers): it moves once that write is in the
        # registered write (``wq``) and takes the word from there. Forwarding B's new word
        # straight into F ran B's whole classification (tag compare, victim, LRU update)
        # into F's set-word register, the unit's longest path (79.6 MHz on `default`). One or
        # two bubbles for dynamic lookups of one set within three (about 2 in
        # `dynamic_cache_sets` of them).
        same_set = Signal()
        m.d.comb += [
            c_advance.eq(c_valid & (~b_valid | b_advance)),
            f_advance.eq(f_valid & (~c_valid | c_advance) & ~same_set),
            self.lookups.ready.eq((~f_valid | f_advance) & ~flushing & ~flush_pending),
            desc_rp.addr.eq(times_const(lk.model, cfg.max_tables) + lk.table),
        ]
        # The read ports are enabled every cycle (reading the offered lookup's address) and
        # F keeps its own copy of the words: on the cycle after the accept they come from
        # the ports (``f_fresh``) and are registered; later F's words are those registers.
        # With the accept as the ports' enables the classification in B (its advance, and
        # with it ``ready`` and the accept) ran into every tag and descriptor block RAM's
        # clock enable, the unit's critical path (12.81 ns, 9.58 of it routing, on
        # `default`). The words F sees are those the ports held before, cycle for cycle.
        f_fresh = Signal()
        m.d.sync += f_fresh.eq(accept)

        def f_word(port, shape, name):
            """F's word of a read port: the port's output on the cycle after the accept,
            the register that took it from then on."""
            held, word = Signal(shape, name=f"{name}_held"), Signal(shape, name=name)
            with m.If(f_fresh):
                m.d.sync += held.eq(port.data)
            m.d.comb += word.eq(Mux(f_fresh, port.data, held))
            return word
        with m.If(accept):
            m.d.sync += [f.eq(lk), f_valid.eq(1)]
        with m.Elif(f_advance):
            m.d.sync += f_valid.eq(0)
        with m.If(f_advance):
            m.d.sync += [c.eq(f), c_valid.eq(1)]
        with m.Elif(c_advance):
            m.d.sync += c_valid.eq(0)
        with m.If(c_advance):
            m.d.sync += [b.eq(c), b_valid.eq(1)]
        with m.Elif(b_advance):
            m.d.sync += b_valid.eq(0)

        d = Signal(stored)
        c_d = Signal(stored)
        fd = f_word(desc_rp, stored, "f_desc")
        with m.If(f_advance):
            m.d.sync += c_d.eq(fd)
        with m.If(c_advance):
            m.d.sync += d.eq(c_d)
        # The row's checks against its descriptor are made in F, from its descriptor word
        # into registers of B: B's classification then starts
        # from one-bit registers instead of two row-wide comparisons, which led its path
        # into the tag memory's write data (68.6 MHz on `default`).
        bag_count = Signal(range(cfg.max_bag + 1))
        f_table_ok = (f.model < cfg.model_slots) & (f.table < cfg.max_tables)
        b_bad_desc = Signal()      # empty, no such table, unconfigured, row beyond the table
        b_static_row = Signal()    # row within the table's static rows
        c_bad_desc, c_static_row = Signal(), Signal()
        with m.If(f_advance):
            m.d.sync += [c_bad_desc.eq(f.empty | ~f_table_ok | ~fd.valid | (f.row >= fd.rows)),
                         c_static_row.eq(f.row < fd.static_rows)]
        with m.If(c_advance):
            m.d.sync += [b_bad_desc.eq(c_bad_desc), b_static_row.eq(c_static_row)]
        bad = Signal()
        static_hit = Signal()
        dyn = Signal()
        m.d.comb += [
            bad.eq(b_bad_desc | (bag_count >= cfg.max_bag)),
            static_hit.eq(~bad & b_static_row),
            dyn.eq(~bad & ~static_hit),
        ]
        hit, miss, alloc, evict = Signal(), Signal(), Signal(), Signal()
        line = Signal(entry["line"].shape)
        if has_dynamic:
            set_bits = sets.bit_length() - 1
            set_l = _set_layout(cfg)
            # (a one-set cache keeps a second, unused set: no zero-width address)
            tag_depth = max(sets, 2)
            m.submodules.tags = tag_mem = Memory(shape=set_l, depth=tag_depth,
                                                 init=[_set_init(cfg)] * tag_depth)
            tag_wp = tag_mem.write_port()
            tag_rp = tag_mem.read_port(domain="sync", transparent_for=(tag_wp,))

            def hash_of(p):
                mt = times_const(p.model, cfg.max_tables) + p.table
                if sets == 1:
                    return Const(0, 1)
                mask = sets - 1
                return ((p.row & mask) ^ ((p.row >> set_bits) & mask)
                        ^ (times_const(mt, SET_HASH_MULT) & mask))[:set_bits]

            # The set of the accepted lookup, registered for F, C and B (the hash's multiply
            # stays out of their forwarding compares)
            lk_set = Signal(range(max(sets, 2)))
            b_set = Signal(range(max(sets, 2)))
            c_set = Signal(range(max(sets, 2)))
            f_set = Signal(range(max(sets, 2)))
            m.d.comb += [lk_set.eq(hash_of(lk)), tag_rp.addr.eq(lk_set)]
            with m.If(accept):
                m.d.sync += f_set.eq(lk_set)
            with m.If(f_advance):
                m.d.sync += c_set.eq(f_set)
            with m.If(c_advance):
                m.d.sync += b_set.eq(c_set)
            # B's set word goes into the memory one cycle after B computes it, from
            # registers (``wq``: the tag compare and LRU update reached the memory's write
            # data through routing across the device, the unit's longest path). F's set word
            # was read when its lookup was accepted (a write on that same cycle is seen: the
            # port is transparent), so two later writes are forwarded as F moves up: the
            # registered one being written this cycle, and one written while F waited
            # (``f_fwd``, the last of them). B's own write of this cycle never needs
            # forwarding, nor does C's set word later: F waits behind a C or B of its set
            # (``same_set``), so no write of C's set is pending when C takes its word.
            cur = Signal(set_l)
            new = Signal(set_l)
            writes = Signal()
            wq_en = Signal()
            wq_set = Signal.like(b_set)
            wq_data = Signal(set_l)
            m.d.sync += wq_en.eq(writes)
            with m.If(writes):
                m.d.sync += [wq_set.eq(b_set), wq_data.eq(new)]
            f_fwd = Signal()
            f_fwd_data = Signal(set_l)
            wq_to_f = wq_en & (wq_set == f_set)
            with m.If(accept):
                m.d.sync += f_fwd.eq(0)
            with m.Elif(f_valid & ~f_advance & wq_to_f):
                m.d.sync += [f_fwd.eq(1), f_fwd_data.eq(wq_data)]
            # F's word: the port's on the cycle after the accept (f_fresh), later the copy
            # F took then; a registered write of F's set (wq) or one written while F waited
            # (f_fwd, never on the fresh cycle: the accept clears it) replaces it. Selected so
            # that the block RAM's output, late in the cycle, meets one multiplexer.
            f_held_word = Signal(set_l)
            with m.If(f_fresh):
                m.d.sync += f_held_word.eq(tag_rp.data)
            f_use_port = Signal()
            m.d.comb += f_use_port.eq(f_fresh & ~wq_to_f)
            m.d.comb += same_set.eq(
                (c_valid & ~c_bad_desc & ~c_static_row & (f_set == c_set)) |
                (b_valid & ~b_bad_desc & ~b_static_row & (f_set == b_set)))
            c_cur = Signal(set_l)       # C's set word
            with m.If(f_advance):
                m.d.sync += c_cur.eq(Mux(f_use_port, tag_rp.data,
                                         Mux(wq_to_f, wq_data,
                                             Mux(f_fwd, f_fwd_data, f_held_word))))
            with m.If(c_advance):
                m.d.sync += cur.eq(c_cur)
            # C: the tag compare, the victim (the lowest invalid way the stage owns, else
            # its least recently used) and which ways are younger than which, registered
            # into B as one-hot vectors, so B's LRU update is a few gates deep.
            hitv = Signal(ways)
            victim_oh = Signal(ways)
            victim_valid = Signal()      # the victim way holds a line (a fill evicts it)
            younger = [Signal(ways, name=f"younger{i}") for i in range(ways)]   # [i][j]: age i < j
            c_mask = Signal(ways)
            c_invalid = Signal(ways)
            c_oldest = Signal(ways)
            c_victim = Signal(ways)
            m.d.comb += c_mask.eq(self.stage_ways[c.stage])
            for i in range(ways):
                t = c_cur.tags[i]
                cond = c_mask[i]
                for j in range(ways):
                    if j != i:
                        cond = cond & (~c_mask[j] | (c_cur.ages[i] > c_cur.ages[j]))
                m.d.comb += [c_invalid[i].eq(c_mask[i] & ~t.valid), c_oldest[i].eq(cond)]
            for i in range(ways):
                first_invalid = c_invalid[i] & ~c_invalid[:i].any() if i else c_invalid[i]
                m.d.comb += c_victim[i].eq(Mux(c_invalid.any(), first_invalid, c_oldest[i]))
            with m.If(c_advance):
                m.d.sync += [victim_oh.eq(c_victim),
                             victim_valid.eq((c_victim & Cat(t.valid for t in c_cur.tags)).any())]
                for i in range(ways):
                    t = c_cur.tags[i]
                    m.d.sync += [
                        hitv[i].eq(t.valid & (t.model == c.model) & (t.table == c.table)
                                   & (t.row == c.row)),
                        younger[i].eq(Cat(c_cur.ages[i] < c_cur.ages[j] for j in range(ways)))]
            mask = Signal(ways)
            m.d.comb += mask.eq(self.stage_ways[b.stage])
            any_hit = hitv.any()
            m.d.comb += [
                hit.eq(dyn & any_hit),
                miss.eq(dyn & ~any_hit),
                alloc.eq(dyn & ~any_hit & mask.any()),
            ]
            # the way this lookup uses: its hit, else the victim (what it is when B does not
            # write, a bad or static lookup or a miss that fills nothing, does not matter)
            touched_oh = Signal(ways)
            m.d.comb += touched_oh.eq(Mux(any_hit, hitv, victim_oh))
            touched = Signal(range(max(ways, 2)))
            for i in reversed(range(ways)):
                with m.If(touched_oh[i]):
                    m.d.comb += touched.eq(i)
            m.d.comb += evict.eq(alloc & victim_valid)
            # Every field of the new set word is assigned once (no default-then-override:
            # Icarus re-runs such a combinational block forever). True LRU: the touched way
            # gets age 0, the ways younger than it one year more.
            for i in range(ways):
                fill_here = alloc & victim_oh[i]
                older = (touched_oh & younger[i]).any()
                m.d.comb += [
                    new.ages[i].eq(Mux(touched_oh[i], 0, cur.ages[i] + older)),
                    new.tags[i].valid.eq(fill_here | cur.tags[i].valid),
                    new.tags[i].model.eq(Mux(fill_here, b.model, cur.tags[i].model)),
                    new.tags[i].table.eq(Mux(fill_here, b.table, cur.tags[i].table)),
                    new.tags[i].row.eq(Mux(fill_here, b.row, cur.tags[i].row)),
                ]
            m.d.comb += line.eq(b_set * ways + touched)

            # Flush walks the sets; it owns the write port (lookups are held off meanwhile).
            flush_set = Signal(range(max(sets, 2)))
            with m.If(flushing):
                m.d.comb += [tag_wp.addr.eq(flush_set), tag_wp.en.eq(1),
                             tag_wp.data.eq(set_l.const(_set_init(cfg)))]
            with m.Else():
                m.d.comb += [tag_wp.addr.eq(wq_set), tag_wp.data.eq(wq_data),
                             tag_wp.en.eq(wq_en)]
            m.d.comb += writes.eq(b_advance & (hit | alloc))
            with m.If(self.flush):
                m.d.sync += flush_pending.eq(1)
            with m.If(flush_pending & ~f_valid & ~c_valid & ~b_valid & ~flushing & ~wq_en):
                m.d.sync += [flushing.eq(1), flush_pending.eq(0), flush_set.eq(0)]
            with m.If(flushing):
                m.d.sync += flush_set.eq(flush_set + 1)
                with m.If(flush_set == sets - 1):
                    m.d.sync += flushing.eq(0)
        else:
            m.d.comb += miss.eq(dyn)
        m.d.comb += self.busy.eq(flushing | flush_pending)

        # B advances on the two queues' room alone, not on its own classification (a hit
        # waits for the AR queue's room too, which only lacks it while the queue holds
        # `emb_inflight` requests not yet issued), and on room registered a cycle earlier
        # (each queue is one entry deeper than it needs: fewer than `emb_inflight - 1`
        # entries then, so at most `emb_inflight` now, and one more always fits): so C's and
        # F's advance, the lookups' ready and every register they enable start from a few
        # flip-flops, not from the queues' level logic.
        room = Signal()
        m.d.sync += room.eq((rob.level < cfg.emb_inflight - 1)
                            & (arq.level < cfg.emb_inflight - 1))
        m.d.comb += [
            b_advance.eq(b_valid & room),
            rob.w.valid.eq(b_advance),          # (room: both queues are ready)
            rob.w.payload.kind.eq(Mux(bad, KIND_BAD, Mux(static_hit, KIND_STATIC,
                                                        Mux(hit, KIND_HIT, KIND_MISS)))),
            rob.w.payload.alloc.eq(alloc),
            rob.w.payload.line.eq(line),
            rob.w.payload.static_addr.eq(d.static_base + b.row),
            rob.w.payload.dim.eq(d.dim),
            rob.w.payload.bag_end.eq(b.bag_end | b.empty),
            rob.w.payload.sample_end.eq(b.sample_end),
            arq.w.valid.eq(b_advance & miss),
            arq.w.payload.addr.eq(d.base + (b.row << d.row_shift)),
            arq.w.payload.len.eq(d.len),
        ]
        with m.If(b_advance):
            with m.If(b.bag_end | b.empty):
                m.d.sync += bag_count.eq(0)
            with m.Elif(bag_count != cfg.max_bag):
                m.d.sync += bag_count.eq(bag_count + 1)
        m.d.comb += [
            incr["lookups"].eq(b_advance),
            incr["bad_lookups"].eq(b_advance & bad),
            incr["static_accesses"].eq(b_advance & ~bad),
            incr["static_hits"].eq(b_advance & static_hit),
            incr["dynamic_accesses"].eq(b_advance & dyn),
            incr["dynamic_hits"].eq(b_advance & hit),
            incr["dynamic_misses"].eq(b_advance & miss),
            incr["dynamic_fills"].eq(b_advance & alloc),
            incr["dynamic_evictions"].eq(b_advance & evict),
        ]

        # -- retire: R1 pops in order and reads the on-chip row, R2 pools ---------------------
        out = self.pooled
        adv = ~out.valid | out.ready
        head = rob.r.payload
        need_fill = head.kind == KIND_MISS
        go = adv & rob.r.valid & (~need_fill | fills.r.valid)
        m.d.comb += [rob.r.ready.eq(go), fills.r.ready.eq(go & need_fill)]
        line_l = data.StructLayout({"data": unsigned(rbits), "poison": 1})
        if has_dynamic:
            # R1 reads the head's line on every cycle and writes it only for a miss, whose
            # row comes from the fill, not from that read: no collision logic.
            m.submodules.lines = line_mem = Memory(shape=line_l, depth=max(sets * ways, 2),
                                                   init=[], attrs={"no_rw_check": 1})
            ln_wp = line_mem.write_port()
            ln_rp = line_mem.read_port(domain="sync")
            m.d.comb += [
                ln_rp.addr.eq(head.line), ln_rp.en.eq(adv),
                ln_wp.addr.eq(head.line), ln_wp.en.eq(go & need_fill & head.alloc),
                ln_wp.data.data.eq(fills.r.payload.data),
                ln_wp.data.poison.eq(fills.r.payload.error),
            ]
        if has_static:
            m.d.comb += [st_rp.addr.eq(head.static_addr), st_rp.en.eq(adv)]

        r2_valid = Signal()
        r2 = Signal(entry)
        r2_fill = Signal(rbits)
        r2_fill_error = Signal()
        with m.If(adv):
            m.d.sync += [r2_valid.eq(go), r2.eq(head), r2_fill.eq(fills.r.payload.data),
                         r2_fill_error.eq(fills.r.payload.error)]

        # R3 takes each on-chip memory's word into its own register (no reset, enabled with
        # the pipeline: on the ECP5 the block RAMs' output registers, gen/ebr_outreg.py) and
        # selects the row from registers: a block RAM's output into the selection was the
        # unit's longest path (100.2 MHz on `default`).
        r3_valid = Signal()
        r3 = Signal(entry)
        r3_fill = Signal(rbits)
        r3_fill_error = Signal()
        # which lanes of the row the table has (e < dim), decided here from R2's register:
        # in R3 the comparison and its fan-out to every lane's multiplexer were the start of
        # the `tiny` top level's critical path into the accumulators (51.1 MHz)
        r3_lanes = Signal(dmax)
        with m.If(adv):
            m.d.sync += [r3_valid.eq(r2_valid), r3.eq(r2), r3_fill.eq(r2_fill),
                         r3_fill_error.eq(r2_fill_error),
                         r3_lanes.eq(Cat(e < r2.dim for e in range(dmax)))]
        r3_static = Signal(rbits, reset_less=True)
        r3_line = Signal(line_l, reset_less=True)
        with m.If(adv):
            if has_static:
                m.d.sync += r3_static.eq(st_rp.data)
            if has_dynamic:
                m.d.sync += r3_line.eq(ln_rp.data)
        r3_row = Signal(rbits)
        r3_row_error = Signal()
        with m.Switch(r3.kind):
            with m.Case(KIND_STATIC):
                m.d.comb += r3_row.eq(r3_static)
            with m.Case(KIND_HIT):
                m.d.comb += [r3_row.eq(r3_line.data), r3_row_error.eq(r3_line.poison)]
            with m.Case(KIND_MISS):
                m.d.comb += [r3_row.eq(r3_fill), r3_row_error.eq(r3_fill_error)]
            with m.Case(KIND_BAD):
                m.d.comb += r3_row_error.eq(1)

        aw = acc_width(cfg)
        acc = Signal(data.ArrayLayout(signed(aw), dmax))
        bag_error = Signal()
        first = Signal(init=1)
        total = Signal(data.ArrayLayout(signed(aw), dmax))
        error_now = Signal()
        qmax, qmin = (1 << (ow - 1)) - 1, -(1 << (ow - 1))
        for e in range(dmax):
            element = Mux(r3_lanes[e], r3_row[e * ow:(e + 1) * ow].as_signed(), 0)
            m.d.comb += total[e].eq(Mux(first, 0, acc[e]) + element)
        m.d.comb += error_now.eq((~first & bag_error) | r3_row_error)
        # R4 holds a finished bag's sums; its saturation goes into the output register in
        # the next cycle (the sum and the saturation in one cycle were the unit's longest
        # path once the classification was cut: 73.2 MHz on `default`).
        r4_valid = Signal()
        r4_total = Signal.like(total)
        r4_error = Signal()
        r4_last = Signal()
        with m.If(adv):
            m.d.sync += r4_valid.eq(r3_valid & r3.bag_end)
        with m.If(adv & r3_valid):
            with m.If(r3.bag_end):
                m.d.sync += [r4_total.eq(total), r4_error.eq(error_now),
                             r4_last.eq(r3.sample_end), first.eq(1)]
            with m.Else():
                m.d.sync += [acc.eq(total), bag_error.eq(error_now), first.eq(0)]
        result = Signal(_vector(cfg))
        for e in range(dmax):
            t = r4_total[e]
            m.d.comb += result[e].eq(Mux(r4_error, 0, Mux(t > qmax, qmax,
                                                          Mux(t < qmin, qmin, t))))

        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(adv & r4_valid):
            m.d.sync += [out.valid.eq(1), out.payload.data.eq(result),
                         out.payload.last.eq(r4_last), out.payload.error.eq(r4_error)]
        delivered = out.valid & out.ready
        m.d.comb += [incr["vectors"].eq(delivered),
                     incr["bad_vectors"].eq(delivered & out.payload.error)]

        # -- counters -------------------------------------------------------------------------
        # An event is counted one cycle after it (its increment registered): the adders start
        # from a flip-flop, not from B's classification (the counters' carry chains were the
        # end of its longest path on `tiny`). ``idle`` waits for the last increment.
        port = {"bursts": reader.bursts, "beats": reader.beats, "axi_errors": reader.errors,
                "read_latency": reader.latency}
        steps = []
        for name in COUNTERS:
            if name in port:
                m.d.comb += self.counters[name].eq(port[name])
            elif name == "bytes":
                m.d.comb += self.counters.bytes.eq(reader.beats << bus_shift)
            else:
                count = Signal(32, name=f"count_{name}")
                step = Signal(name=f"step_{name}")
                steps.append(step)
                m.d.comb += self.counters[name].eq(count)
                # (an event on the cycle of a clear is not counted, as before the clear)
                m.d.sync += step.eq(incr[name] & ~self.clear_counters)
                with m.If(self.clear_counters):
                    m.d.sync += count.eq(0)
                with m.Else():
                    m.d.sync += count.eq(count + step)

        m.d.comb += self.idle.eq(~f_valid & ~c_valid & ~b_valid & ~rob.r.valid & (rob.level == 0)
                                 & ~r2_valid & ~r3_valid & ~r4_valid & ~out.valid & ~flushing
                                 & ~flush_pending
                                 & ~Cat(*steps).any())
        return m
