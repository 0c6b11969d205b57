"""The command processor of the top level: the command ring, model and static-cache
loads, query hand-off and completions.

It implements the ring semantics of ``hw/descriptors.py`` and the error codes of
``hw/regmap.ERROR_CODES`` exactly as the functional model (``sim/accel_model.py``) does;
``tests/test_command.py`` compares the two entry by entry.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import descriptors as d
from . import embedding, mlp_engine
from .axi import axi4_read_signature
from .axi_arbiter import AxiReadArbiter
from .axi_read import AxiWordReader
from .axi_write import write_beat_layout, write_job_layout
from .config import AccelConfig
from .shared import index_bits, times_const
from .geometry import EngineGeometry
from .interaction import pairs_max
from .regmap import ERROR_CODES

__all__ = ["CommandProcessor", "query_layout", "query_done_layout", "model_info_layout",
           "MAX_LAYERS", "ERROR", "engine_word_bytes"]

ERROR = {name: code for code, (name, _) in ERROR_CODES.items()}
#: Layers one model may have (bottom and top MLP together).
MAX_LAYERS = 16


def engine_word_bytes(bits: int) -> int:
    """Bytes an engine memory word of ``bits`` takes in memory: a power of two (so the
    word reader can unpack it), at least one."""
    n = -(-bits // 8)
    return 1 << (n - 1).bit_length()


def query_layout(config: AccelConfig) -> data.StructLayout:
    """A validated ``RUN_QUERY`` handed to the query engine: the entry and its ring index."""
    return data.StructLayout({"index": 16, "entry": d.run_query_layout(config)})


def query_done_layout(config: AccelConfig) -> data.StructLayout:
    """A query the engine finished: the fields of its completion it knows."""
    return data.StructLayout({
        "index": 16, "tag": 16, "error": 8, "n_stages": 8, "total_cycles": 32,
        "kept": data.ArrayLayout(16, config.max_stages),
        "stage_cycles": data.ArrayLayout(32, config.max_stages),
    })


def model_info_layout(config: AccelConfig) -> data.StructLayout:
    """What a loaded model slot holds (the layers and pairs are in the memories)."""
    return data.StructLayout({
        "loaded": 1, "ganged": 1, "partition_mask": 8, "n_bottom": 4, "n_top": 4, "n_tables": 8,
        "emb_dim": 16, "n_dense": 8, "n_pairs": 16, "pairs_addr": config.mem_addr_width,
    })


class CommandProcessor(wiring.Component):
    """Fetches ring entries, runs loads, hands queries on, writes every completion.

    Ports
    -----
    enable, ring_base, ring_log2, tail, completion_base, region_base, region_size : In
        From the CSRs (``CTRL.ENABLE``, ``RING_*``, ``COMPLETION_BASE``, ``REGION_*``).
    head, busy, last_error, last_error_index, errors, entries_done : Out
        To the CSRs. ``head`` is the next entry to fetch (it advances when an entry has
        been fetched); ``busy`` while an entry is in progress or a query is out.
    done_pulse, error_pulse : Out(1)
        One cycle per completion written (``error_pulse`` when its code is not 0), and
        ``error_pulse`` once when the tail overruns the ring (below).

    Queue overrun: when ``tail - head`` (16-bit indices) exceeds the ring's entries, the
    host has written past entries not yet fetched. Nothing more is fetched; the error
    registers get ``QUEUE_OVERRUN`` with the tail as its index (once per overrun, counted
    in ``errors``) and, as soon as the host writes a tail within the ring again, fetching
    goes on from the head: no entry is lost or run twice. A written ``tail`` takes effect
    one cycle later (emptiness and overrun are registers).
    rd_bus : Out(AXI4 read)
        Ring entries and load data (word readers of each size behind an arbiter).
    wr_jobs, wr_data / wr_done : completions to an ``AxiBlockWriter`` (64 bytes each).
    weight_write[p], bias_write[p] : the engines' memories (``LOAD_MODEL``; a word goes to
        every partition of the mask, each port offered until it takes it).
    emb_descriptors, static_write : the embedding subsystem's table descriptors and
        static-cache rows.
    model_info : Out(ArrayLayout(model_info_layout, model_slots)), and the layer and pair
        memories' read ports, one per partition's stage runner: ``layer_addr[p]``/
        ``layer_data[p]`` (address ``slot * MAX_LAYERS + layer``) and ``pair_addr[p]``/
        ``pair_data[p]`` (``slot * pairs_max + pair``), data two cycles after the address
        (an address held from cycle t shows its word from t + 2 on).
    query / query_done : a validated ``RUN_QUERY`` out, its results back (in any order);
        the completion is written when the results come back. Loads wait until no query
        is out, so weights never change under a running stage.

    Each fetched entry spends three cycles in its checks (state ``SUMS``: the end address of
    every range; ``CHECK``: address ranges, sizes, model slots, ``k``; ``CODE``: the first
    failed check's code), registered before they decide anything; the region's end
    (``region_base + region_size``) is registered too, so a region written by the host
    applies from the next cycle. Bad entries complete with their code (``ERROR_CODES``)
    and nothing else happens; the next entry runs. While reset is asserted nothing is
    offered or accepted. A ``LOAD_MODEL`` whose descriptor is fine but one of whose layers
    the engines would refuse (:func:`~rpaccel.hw.mlp_engine.layer_refused`) completes
    with ``BAD_LAYER`` after its words were read: the slot is then not loaded (queries
    naming it get ``MODEL_NOT_LOADED``), so no query ever reaches a layer the engine
    refuses.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        cfg = config
        self._geo = geo = EngineGeometry.of(config)
        aw = cfg.mem_addr_width
        self._wbytes = engine_word_bytes(geo.cols * cfg.operand_width)
        self._bbytes = engine_word_bytes(geo.cols * cfg.acc_width)
        self._rowbytes = cfg.emb_dim_max * cfg.operand_width // 8
        # One reader per word size, all behind one arbiter.
        self._sizes = self._word_sizes(cfg)
        self._arbiter_ids = self.read_id_width(cfg)
        self._pairs_max = pairs_max(cfg)
        self._gang_masks = mlp_engine.gang_masks(cfg)
        super().__init__({
            "enable": In(1), "ring_base": In(aw), "ring_log2": In(5), "tail": In(16),
            "completion_base": In(aw), "region_base": In(aw), "region_size": In(aw + 1),
            "head": Out(16), "busy": Out(1), "last_error": Out(8), "last_error_index": Out(16),
            "errors": Out(32), "entries_done": Out(32),
            "done_pulse": Out(1), "error_pulse": Out(1),
            "rd_bus": Out(axi4_read_signature(aw, cfg.mem_bus_width, self._arbiter_ids)),
            "wr_jobs": Out(stream.Signature(write_job_layout(cfg))),
            "wr_data": Out(stream.Signature(write_beat_layout(cfg))),
            "wr_done": In(stream.Signature(data.StructLayout({"error": 1}))),
            "weight_write": Out(stream.Signature(mlp_engine.weight_write_layout(cfg))).array(
                cfg.partitions),
            "bias_write": Out(stream.Signature(mlp_engine.bias_write_layout(cfg))).array(
                cfg.partitions),
            "emb_descriptors": Out(stream.Signature(embedding.descriptor_layout(cfg))),
            "static_write": Out(stream.Signature(embedding.static_write_layout(cfg))),
            "model_info": Out(data.ArrayLayout(model_info_layout(cfg), cfg.model_slots)),
            # one read port per stage runner: runners of concurrent stages read their
            # layers and pairs at the same time
            "layer_addr": In(range(cfg.model_slots * MAX_LAYERS)).array(cfg.partitions),
            "layer_data": Out(d.layer_layout(cfg)).array(cfg.partitions),
            "pair_addr": In(range(cfg.model_slots * self._pairs_max)).array(cfg.partitions),
            "pair_data": Out(d.pair_layout(cfg)).array(cfg.partitions),
            "query": Out(stream.Signature(query_layout(cfg))),
            "query_done": In(stream.Signature(query_done_layout(cfg))),
        })

    @staticmethod
    def _word_sizes(config: AccelConfig) -> list[int]:
        """The word sizes of the command processor's readers (one reader each)."""
        geo = EngineGeometry.of(config)
        return sorted({d.COMMAND_BYTES, engine_word_bytes(geo.cols * config.operand_width),
                       engine_word_bytes(geo.cols * config.acc_width), d.LAYER_BYTES,
                       d.TABLE_BYTES, d.PAIR_BYTES,
                       engine_word_bytes(config.emb_dim_max * config.operand_width)})

    @staticmethod
    def read_id_width(config: AccelConfig) -> int:
        """Width of ``rd_bus``'s ARID: the index of one of its word readers plus their own
        1-bit ID."""
        return index_bits(len(CommandProcessor._word_sizes(config))) + 1

    @property
    def word_sizes(self) -> list[int]:
        return self._sizes

    def elaborate(self, platform):
        m = Module()
        cfg, geo = self._config, self._geo
        P = cfg.partitions
        in_reset = ResetSignal()
        aw = cfg.mem_addr_width
        B = cfg.mem_bus_width // 8

        # -- readers and their arbiter ---------------------------------------------------------
        m.submodules.arbiter = arbiter = AxiReadArbiter(cfg, len(self._sizes))
        wiring.connect(m, arbiter.bus, wiring.flipped(self.rd_bus))
        readers = {}
        for i, size in enumerate(self._sizes):
            r = m.submodules[f"reader{size}"] = AxiWordReader(cfg, size)
            wiring.connect(m, r.bus, arbiter.clients[i])
            readers[size] = r
            m.d.comb += r.words.ready.eq(0)

        def reader(size):
            return readers[size]

        # -- model table -----------------------------------------------------------------------
        # Written only by LOAD_MODEL, which waits until no query is in flight, and read only
        # by the stage runners of queries: never both in one cycle, so no collision logic.
        # Each read port's data is registered (no reset) before it leaves: on the ECP5 that
        # register is the block RAM's own output register (gen/ebr_outreg.py), and the
        # runners get their descriptors from a flip-flop, not a block RAM's slow output.
        no_collision = {"no_rw_check": 1}
        layer_mem = Memory(shape=d.layer_layout(cfg), depth=cfg.model_slots * MAX_LAYERS,
                           init=[], attrs=no_collision)
        pair_mem = Memory(shape=d.pair_layout(cfg), depth=cfg.model_slots * self._pairs_max,
                          init=[], attrs=no_collision)
        m.submodules.layer_mem, m.submodules.pair_mem = layer_mem, pair_mem
        lw, pw = layer_mem.write_port(), pair_mem.write_port()
        for p in range(P):
            lr, pr = layer_mem.read_port(), pair_mem.read_port()
            layer_q = Signal.like(lr.data, name=f"layer_data_q{p}", reset_less=True)
            pair_q = Signal.like(pr.data, name=f"pair_data_q{p}", reset_less=True)
            m.d.sync += [layer_q.eq(lr.data), pair_q.eq(pr.data)]
            m.d.comb += [lr.addr.eq(self.layer_addr[p]), self.layer_data[p].eq(layer_q),
                         pr.addr.eq(self.pair_addr[p]), self.pair_data[p].eq(pair_q)]
        info = Signal(data.ArrayLayout(model_info_layout(cfg), cfg.model_slots))
        m.d.comb += self.model_info.eq(info)

        # -- the entry in progress -----------------------------------------------------------------
        entry = Signal(8 * d.COMMAND_BYTES)
        index = Signal(16)
        header = d.command_header_layout()(entry[:32])
        lm = d.load_model_layout(cfg)(entry[:d.load_model_layout(cfg).size])
        ls = d.load_static_layout(cfg)(entry[:d.load_static_layout(cfg).size])
        rq = d.run_query_layout(cfg)(entry[:d.run_query_layout(cfg).size])
        code = Signal(8)
        out = Signal(16)                       # queries handed on, not yet done

        # completion record being written
        comp = Signal(d.completion_layout(cfg))
        comp_bits = Signal(8 * d.COMPLETION_BYTES)
        m.d.comb += comp_bits.eq(comp.as_value())
        beat_n = Signal(range(d.COMPLETION_BYTES // B + 1))

        mask = (Const(1, 17) << self.ring_log2) - 1
        # registered: the region CSRs are written long before a ring starts, and the sum
        # would otherwise lead every range check's carry chain (Fmax, issue 10)
        region_end = Signal(aw + 2)
        m.d.sync += region_end.eq(self.region_base + self.region_size)

        def fits(addr64, nbytes):
            """A 64-bit descriptor address: its high bits zero and the bytes in the region.
            Two cycles: the end address (the byte count is a product) and the compares
            with the region's base are registered in state SUMS, the comparison with the
            region's end is made in CHECK (three carry chains in one cycle were this unit's
            longest path)."""
            nbytes = Value.cast(nbytes)
            hi_zero, above_base = Signal(name="fits_hi_zero"), Signal(name="fits_above_base")
            end = Signal(aw + len(nbytes) + 1, name="fits_end")
            m.d.sync += [hi_zero.eq(addr64[aw:] == 0),
                         above_base.eq(addr64[:aw] >= self.region_base),
                         end.eq(addr64[:aw] + nbytes)]
            return hi_zero & above_base & (end <= region_end)

        # -- LOAD_MODEL checks -------------------------------------------------------------------
        n_layers = lm.n_bottom + lm.n_top
        bad_model = Signal()
        m.d.comb += bad_model.eq(
            (lm.slot >= cfg.model_slots) | (lm.partition_mask == 0) |
            ((lm.partition_mask >> P) != 0) |
            (lm.weight_word_base + lm.weight_words > geo.weight_words) |
            (lm.bias_word_base + lm.bias_words > geo.bias_words) |
            (lm.n_tables > cfg.max_tables) | (lm.emb_dim > cfg.emb_dim_max) |
            (lm.n_dense > cfg.max_dense) | (n_layers > MAX_LAYERS) |
            (lm.n_pairs > self._pairs_max))
        model_range_ok = Signal()
        m.d.comb += model_range_ok.eq(
            fits(lm.weights_addr, times_const(lm.weight_words, self._wbytes)) &
            fits(lm.bias_addr, times_const(lm.bias_words, self._bbytes)) &
            fits(lm.layers_addr, times_const(n_layers, d.LAYER_BYTES)) &
            fits(lm.tables_addr, times_const(lm.n_tables, d.TABLE_BYTES)) &
            fits(lm.pairs_addr, times_const(lm.n_pairs, d.PAIR_BYTES)))

        # -- RUN_QUERY checks (the order of the functional model) -------------------------------
        stages = rq.stages
        n_st = rq.n_stages
        q_code = Signal(8)
        last_k = Signal(16)
        with m.Switch(n_st):
            for s in range(1, cfg.max_stages + 1):
                with m.Case(s):
                    m.d.comb += last_k.eq(stages[s - 1].k)
        rec_bytes = d.record_bytes(cfg)
        checks = []                     # (condition for an error, code), first match wins
        # without on-chip top-k a query is one stage: the host filters between stages
        max_stages = cfg.max_stages if cfg.onchip_topk else 1
        checks.append(((n_st == 0) | (n_st > max_stages), "BAD_STAGES"))
        checks.append((rq.n_candidates == 0, "ZERO_CANDIDATES"))
        checks.append((~fits(rq.records_addr, times_const(rq.n_candidates, rec_bytes)),
                       "ADDRESS_RANGE"))
        # the results: the last stage's kept list, or (no on-chip top-k) every score
        results = last_k if cfg.onchip_topk else rq.n_candidates
        checks.append((~fits(rq.result_addr, times_const(results, d.RESULT_BYTES)),
                       "ADDRESS_RANGE"))
        checks.append(((rq.kept_addr != 0) &
                       ~fits(rq.kept_addr, times_const(n_st, cfg.topk_max * d.RESULT_BYTES)),
                       "ADDRESS_RANGE"))
        stage_checks = []
        for s in range(cfg.max_stages):
            st = stages[s]
            active = n_st > s
            slot_info = Signal(model_info_layout(cfg), name=f"stage{s}_model")
            with m.Switch(st.slot):
                for slot in range(cfg.model_slots):
                    with m.Case(slot):
                        m.d.comb += slot_info.eq(info[slot])
            # a stage's input: the candidates, or the previous stage's k (every stage before
            # an active one is active); k > min(input, topk_max) as two compares side by side
            inputs = rq.n_candidates if s == 0 else stages[s - 1].k
            # a ganged stage: its mask one of the gangs the configuration forms, and its
            # model loaded ganged on exactly those partitions (and only then)
            gang_mask = Cat(st.partition_mask == mask for mask in self._gang_masks).any() \
                if self._gang_masks else Const(0)
            stage_checks += [
                (active & ((st.slot >= cfg.model_slots) | ~slot_info.loaded), "MODEL_NOT_LOADED"),
                (active & ((st.partition_mask == 0) | ((st.partition_mask >> P) != 0) |
                           (st.topk_unit >= cfg.topk_units) | (st.gang & ~gang_mask)),
                 "BAD_PARTITION"),
                (active & (((st.partition_mask & ~slot_info.partition_mask[:4]) != 0) |
                           (st.gang != slot_info.ganged) |
                           (st.gang & (st.partition_mask != slot_info.partition_mask[:4]))),
                 "MODEL_NOT_LOADED"),
                (active & ((st.k == 0) | (st.k > inputs) | (st.k > cfg.topk_max)), "BAD_K"),
            ]
        stage_checks.append((rq.n_candidates > (1 << cfg.id_width), "BAD_K"))
        # every condition is registered in CHECK and the first one that holds gives the code
        # in CODE: the priority chain does not follow the compares in one cycle
        conditions = checks + stage_checks
        held_conditions = Signal(len(conditions))
        for i, (cond, name) in reversed(list(enumerate(conditions))):
            with m.If(held_conditions[i]):
                m.d.comb += q_code.eq(ERROR[name])

        # -- LOAD_STATIC check ---------------------------------------------------------------------
        static_bad = Signal()
        m.d.comb += static_bad.eq((ls.static_base + ls.rows > cfg.static_cache_rows) |
                                  ~fits(ls.src_addr, times_const(ls.rows, self._rowbytes)))
        # The entry's opcode decoded into one bit per opcode, registered in state CODE (the
        # compares and the state's priority chain into the completion record were the
        # unit's longest path, 90.6 MHz on `default`), and whether a LOAD_STATIC is empty.
        OPCODE_ORDER = ("NOP", "RUN_QUERY", "LOAD_STATIC", "LOAD_MODEL")
        opcode_is = Signal(len(OPCODE_ORDER))
        static_empty = Signal()

        def is_op(name):
            return opcode_is[OPCODE_ORDER.index(name)]
        # the checks' results, taken in state CHECK (the entry does not change after it)
        checked = Signal(data.StructLayout({"q_code": 8, "bad_model": 1, "model_range_ok": 1,
                                            "static_bad": 1}))

        # -- word loops of the loads -----------------------------------------------------------------
        count = Signal(20)                    # words handled of the current array
        last_count = Signal(20)               # count of its last word (weights, biases)
        pending = Signal(P)                   # partitions still to take the held word
        held = Signal(max(8 * self._wbytes, 8 * self._bbytes))
        dma_error = Signal()
        layer_error = Signal()                # a LOAD_MODEL layer the engines would refuse
        # each layer descriptor is checked in stages as it arrives (the one-cycle check,
        # a product of tile counts, was this unit's longest path); MODEL_DONE, which reads
        # layer_error, waits until the last layer's verdict is in
        layer_in = Signal()
        layer_word = Signal(d.layer_layout(cfg))
        layer_checking, layer_refused, _ = mlp_engine.layer_refused_pipelined(
            m, cfg, layer_in, layer_word.in_dim, layer_word.out_dim, layer_word.weight_tile,
            layer_word.bias_word, layer_word.score)
        with m.If(layer_refused):
            m.d.sync += layer_error.eq(1)

        def start(size, addr, n):
            r = reader(size)
            return [r.jobs.valid.eq(1), r.jobs.payload.addr.eq(addr[:aw]),
                    r.jobs.payload.count.eq(n)]

        resume = Signal()                     # return to DECODE after this completion
        resume_query = Signal()               # return to QUERY after this completion

        def capture(done):
            """The completion of a finished query."""
            return comp.eq(Cat(done.tag, done.index, done.error, done.n_stages, Const(0, 16),
                               done.total_cycles, done.kept.as_value(),
                               done.stage_cycles.as_value()))

        def array_start(kind, size, base, n, nxt, also):
            """The state starting the read of an array of ``n`` words of ``size`` bytes
            (state ``kind`` handles its words); an empty array goes on to ``nxt``."""
            with m.State(f"{kind}_START"):
                m.d.comb += self.busy.eq(1)
                with m.If(n == 0):
                    m.next = nxt
                with m.Else():
                    m.d.comb += start(size, base, n)
                    with m.If(reader(size).jobs.ready):
                        m.d.sync += [count.eq(0), *also]
                        m.next = kind

        m.d.comb += [self.busy.eq(0)]
        # Queue overrun: more entries pending than the ring holds (see the class docstring).
        # The processor works from the CSR's tail one cycle late (``tail_q``), so whether
        # the ring holds an entry and whether it is overrun are registers computed from the
        # CSR's tail and the head's next value: the 16-bit subtract and the compare with
        # the ring size had run from ``head`` into the state machine's clock enable and
        # into ``error_pulse`` (the unit's critical path, 80-90 MHz).
        # Both values are computed for the head as it is and as it will be after a fetch,
        # and the fetch (which depends on the state and the reader's handshake) only picks
        # one of the two bits: a fetch through the head's increment, the subtract and the
        # compare was the next longest path (88.2 MHz on `default`).
        tail_q = Signal(16)
        fetching = Signal()
        overrun, has_entry = Signal(), Signal()
        overrun_flagged, overrun_event = Signal(), Signal()
        ring_size = Const(1, 17) << self.ring_log2
        pending_now, pending_after = Signal(16), Signal(16)
        m.d.comb += [pending_now.eq(self.tail - self.head),
                     pending_after.eq(self.tail - self.head - 1)]
        m.d.sync += [tail_q.eq(self.tail),
                     overrun.eq(Mux(fetching, pending_after > ring_size, pending_now > ring_size)),
                     has_entry.eq(Mux(fetching, pending_after != 0, pending_now != 0))]
        m.d.comb += [
            # not while a completion updates the same registers (next cycle then)
            overrun_event.eq(self.enable & overrun & ~overrun_flagged & ~in_reset &
                             ~(self.wr_done.valid & self.wr_done.ready))]
        with m.If(overrun_event):
            m.d.sync += [overrun_flagged.eq(1), self.errors.eq(self.errors + 1),
                         self.error_pulse.eq(1),
                         self.last_error.eq(ERROR["QUEUE_OVERRUN"]),
                         self.last_error_index.eq(tail_q)]
        with m.Elif(~overrun):
            m.d.sync += overrun_flagged.eq(0)
        with m.FSM(name="command"):
            with m.State("IDLE"):
                # finished queries first: their completions
                with m.If(self.query_done.valid & ~in_reset):
                    m.d.comb += self.query_done.ready.eq(1)
                    m.d.sync += [capture(self.query_done.payload), out.eq(out - 1)]
                    m.next = "COMPLETE"
                with m.Elif(self.enable & has_entry & ~overrun & ~in_reset):
                    r = reader(d.COMMAND_BYTES)
                    m.d.comb += start(d.COMMAND_BYTES,
                                      self.ring_base + ((self.head & mask) << 6), 1)
                    with m.If(r.jobs.ready):
                        m.d.comb += fetching.eq(1)
                        m.d.sync += [index.eq(self.head & mask), self.head.eq(self.head + 1)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                r = reader(d.COMMAND_BYTES)
                m.d.comb += [r.words.ready.eq(1), self.busy.eq(1)]
                with m.If(r.words.valid):
                    m.d.sync += [entry.eq(r.words.payload.data), code.eq(0),
                                 dma_error.eq(r.words.payload.error), layer_error.eq(0)]
                    m.next = "SUMS"
            with m.State("SUMS"):
                # the range checks' end addresses are registered (see `fits`)
                m.d.comb += self.busy.eq(1)
                m.next = "CHECK"
            with m.State("CHECK"):
                # the entry's checks (compares on every field), registered so that none of
                # them drives the FSM or the model table
                m.d.comb += self.busy.eq(1)
                m.d.sync += [held_conditions.eq(Cat(cond for cond, _ in conditions)),
                             checked.bad_model.eq(bad_model),
                             checked.model_range_ok.eq(model_range_ok),
                             checked.static_bad.eq(static_bad)]
                m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [checked.q_code.eq(q_code),
                             opcode_is.eq(Cat(header.opcode == d.OPCODES[name]
                                              for name in OPCODE_ORDER)),
                             static_empty.eq(ls.rows == 0)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += self.busy.eq(1)
                is_load = is_op("LOAD_MODEL") | is_op("LOAD_STATIC")
                with m.If(is_load & (out != 0) & ~dma_error):
                    # A load waits until no query is out; their completions go meanwhile.
                    m.d.comb += self.query_done.ready.eq(1)
                    with m.If(self.query_done.valid):
                        m.d.sync += [capture(self.query_done.payload), out.eq(out - 1),
                                     resume.eq(1)]
                        m.next = "COMPLETE"
                with m.Else():
                    m.d.sync += [comp.eq(0), comp.tag.eq(header.tag), comp.index.eq(index)]
                    with m.If(dma_error):
                        m.d.sync += comp.error.eq(ERROR["AXI"])
                        m.next = "COMPLETE"
                    with m.Elif(is_op("NOP")):
                        m.next = "COMPLETE"
                    with m.Elif(is_op("RUN_QUERY")):
                        with m.If(checked.q_code != 0):
                            m.d.sync += comp.error.eq(checked.q_code)
                            m.next = "COMPLETE"
                        with m.Else():
                            m.next = "QUERY"
                    with m.Elif(is_op("LOAD_STATIC")):
                        with m.If(checked.static_bad):
                            m.d.sync += comp.error.eq(ERROR["ADDRESS_RANGE"])
                            m.next = "COMPLETE"
                        with m.Elif(static_empty):
                            m.next = "COMPLETE"
                        with m.Else():
                            m.next = "STATIC_START"
                    with m.Elif(is_op("LOAD_MODEL")):
                        with m.If(checked.bad_model):
                            m.d.sync += comp.error.eq(ERROR["BAD_PARTITION"])
                            m.next = "COMPLETE"
                        with m.Elif(~checked.model_range_ok):
                            m.d.sync += comp.error.eq(ERROR["ADDRESS_RANGE"])
                            m.next = "COMPLETE"
                        with m.Else():
                            m.d.sync += info[lm.slot].loaded.eq(0)
                            m.next = "WEIGHTS_START"
                    with m.Else():
                        m.d.sync += comp.error.eq(ERROR["BAD_OPCODE"])
                        m.next = "COMPLETE"

            with m.State("QUERY"):
                # While the query engine is busy with an earlier query, that query's
                # results may come back first: write its completion, then offer again.
                m.d.comb += [self.busy.eq(1), self.query.valid.eq(1),
                             self.query.payload.index.eq(index),
                             self.query.payload.entry.eq(rq)]
                with m.If(self.query.ready):
                    m.d.sync += out.eq(out + 1)
                    m.next = "IDLE"
                with m.Elif(self.query_done.valid):
                    m.d.comb += self.query_done.ready.eq(1)
                    m.d.sync += [capture(self.query_done.payload), out.eq(out - 1),
                                 resume_query.eq(1)]
                    m.next = "COMPLETE"

            # weights and biases: one word at a time to every partition of the mask
            for kind, size, base, n, ports, nxt in (
                    ("WEIGHTS", self._wbytes, lm.weights_addr, lm.weight_words,
                     self.weight_write, "BIASES_START"),
                    ("BIASES", self._bbytes, lm.bias_addr, lm.bias_words, self.bias_write,
                     "LAYERS_START")):
                word_base = lm.weight_word_base if kind == "WEIGHTS" else lm.bias_word_base
                lanes_bits = geo.cols * (cfg.operand_width if kind == "WEIGHTS" else cfg.acc_width)
                # (the last word's count registered as the array starts: `count + 1 == n`,
                # a carry chain and a compare, ran into the state machine's clock enable)
                array_start(kind, size, base, n, nxt, [pending.eq(0), last_count.eq(n - 1)])
                with m.State(kind):
                    r = reader(size)
                    m.d.comb += self.busy.eq(1)
                    for p in range(P):
                        m.d.comb += [ports[p].valid.eq(pending[p]),
                                     ports[p].payload.addr.eq(word_base + count),
                                     ports[p].payload.data.eq(held[:lanes_bits])]
                    accepted = Cat(ports[p].valid & ports[p].ready for p in range(P))
                    remaining = pending & ~accepted
                    with m.If(pending != 0):
                        m.d.sync += pending.eq(remaining)
                        with m.If(remaining == 0):
                            m.d.sync += count.eq(count + 1)
                            with m.If(count == last_count):
                                m.next = nxt
                    with m.Else():
                        m.d.comb += r.words.ready.eq(1)
                        with m.If(r.words.valid):
                            m.d.sync += [held.eq(r.words.payload.data),
                                         pending.eq(lm.partition_mask[:P]),
                                         dma_error.eq(dma_error | r.words.payload.error)]

            for kind, size, base, n, nxt in (
                    ("LAYERS", d.LAYER_BYTES, lm.layers_addr, n_layers, "TABLES_START"),
                    ("TABLES", d.TABLE_BYTES, lm.tables_addr, lm.n_tables, "PAIRS_START"),
                    ("PAIRS", d.PAIR_BYTES, lm.pairs_addr, lm.n_pairs, "MODEL_DONE"),
                    ("STATIC", engine_word_bytes(8 * self._rowbytes), ls.src_addr, ls.rows,
                     "COMPLETE")):
                array_start(kind, size, base, n, nxt, [])
                with m.State(kind):
                    r = reader(size)
                    word = r.words.payload.data
                    m.d.comb += self.busy.eq(1)
                    if kind == "LAYERS":
                        layout = d.layer_layout(cfg)
                        ly = layout(word[:layout.size])
                        m.d.comb += [r.words.ready.eq(1),
                                     lw.addr.eq(lm.slot * MAX_LAYERS + count),
                                     lw.data.eq(ly), lw.en.eq(r.words.valid)]
                        fire = r.words.valid
                        m.d.comb += [layer_in.eq(fire), layer_word.eq(ly)]   # checked above
                    elif kind == "PAIRS":
                        m.d.comb += [r.words.ready.eq(1),
                                     pw.addr.eq(times_const(lm.slot, self._pairs_max) + count),
                                     pw.data.eq(word[:d.pair_layout(cfg).size]),
                                     pw.en.eq(r.words.valid)]
                        fire = r.words.valid
                    elif kind == "TABLES":
                        t = d.table_layout(cfg)(word[:d.table_layout(cfg).size])
                        e = self.emb_descriptors
                        shift = Signal(4)
                        for k in range(15, -1, -1):     # log2 of the (power-of-two) row bytes
                            with m.If(t.row_bytes == (1 << k)):
                                m.d.comb += shift.eq(k)
                        m.d.comb += [e.valid.eq(r.words.valid), r.words.ready.eq(e.ready),
                                     e.payload.model.eq(lm.slot), e.payload.table.eq(count),
                                     e.payload.base.eq(t.base_addr[:aw]),
                                     e.payload.rows.eq(t.rows), e.payload.row_shift.eq(shift),
                                     e.payload.dim.eq(t.dim),
                                     e.payload.static_base.eq(t.static_base),
                                     e.payload.static_rows.eq(t.static_rows)]
                        fire = r.words.valid & e.ready
                    else:
                        s = self.static_write
                        m.d.comb += [s.valid.eq(r.words.valid), r.words.ready.eq(s.ready),
                                     s.payload.addr.eq(ls.static_base + count),
                                     s.payload.data.eq(word[:8 * self._rowbytes])]
                        fire = r.words.valid & s.ready
                    with m.If(fire):
                        m.d.sync += [count.eq(count + 1),
                                     dma_error.eq(dma_error | r.words.payload.error)]
                        with m.If(r.words.payload.last):
                            m.next = nxt
                            if kind == "STATIC":
                                with m.If(dma_error | r.words.payload.error):
                                    m.d.sync += comp.error.eq(ERROR["AXI"])

            with m.State("MODEL_DONE"):
                m.d.comb += self.busy.eq(1)
                # (the tables and pairs states come between the last layer and here, so its
                # verdict is normally in already)
                with m.If(~layer_checking):
                    with m.If(dma_error):
                        m.d.sync += comp.error.eq(ERROR["AXI"])
                    with m.Elif(layer_error):
                        m.d.sync += comp.error.eq(ERROR["BAD_LAYER"])
                    with m.Else():
                        slot = info[lm.slot]
                        # a gang member's slice adds its partition to the slot's earlier
                        # gang loads (d.LOAD_MODEL_GANG; `loaded` is cleared while a load
                        # runs, `ganged` and the mask change only here)
                        gang_load = lm.header.flags[0]
                        m.d.sync += [slot.loaded.eq(1), slot.ganged.eq(gang_load),
                                     slot.partition_mask.eq(Mux(
                                         gang_load & slot.ganged,
                                         slot.partition_mask | lm.partition_mask,
                                         lm.partition_mask)),
                                     slot.n_bottom.eq(lm.n_bottom), slot.n_top.eq(lm.n_top),
                                     slot.n_tables.eq(lm.n_tables),
                                     slot.emb_dim.eq(lm.emb_dim),
                                     slot.n_dense.eq(lm.n_dense),
                                     slot.n_pairs.eq(lm.n_pairs),
                                     slot.pairs_addr.eq(lm.pairs_addr[:aw])]
                    m.next = "COMPLETE"

            # the completion: one 64-byte block
            with m.State("COMPLETE"):
                m.d.comb += [self.busy.eq(1), self.wr_jobs.valid.eq(1),
                             self.wr_jobs.payload.addr.eq(self.completion_base +
                                                          (comp.index << 6)),
                             self.wr_jobs.payload.bytes.eq(d.COMPLETION_BYTES)]
                with m.If(self.wr_jobs.ready):
                    m.d.sync += beat_n.eq(0)
                    m.next = "COMPLETION_DATA"
            with m.State("COMPLETION_DATA"):
                m.d.comb += [self.busy.eq(1), self.wr_data.valid.eq(1),
                             self.wr_data.payload.data.eq(comp_bits.word_select(beat_n, 8 * B))]
                with m.If(self.wr_data.ready):
                    m.d.sync += beat_n.eq(beat_n + 1)
                    with m.If(beat_n == d.COMPLETION_BYTES // B - 1):
                        m.next = "COMPLETION_RESPONSE"
            with m.State("COMPLETION_RESPONSE"):
                m.d.comb += [self.busy.eq(1), self.wr_done.ready.eq(1)]
                with m.If(self.wr_done.valid):
                    m.d.sync += [self.entries_done.eq(self.entries_done + 1),
                                 self.done_pulse.eq(1)]
                    with m.If(comp.error != 0):
                        m.d.sync += [self.errors.eq(self.errors + 1), self.error_pulse.eq(1),
                                     self.last_error.eq(comp.error),
                                     self.last_error_index.eq(comp.index)]
                    with m.If(resume):
                        m.d.sync += resume.eq(0)
                        m.next = "DECODE"
                    with m.Elif(resume_query):
                        m.d.sync += resume_query.eq(0)
                        m.next = "QUERY"
                    with m.Else():
                        m.next = "IDLE"
        with m.If(~(self.wr_done.valid & self.wr_done.ready) & ~overrun_event):
            m.d.sync += [self.done_pulse.eq(0), self.error_pulse.eq(0)]
        with m.If(out != 0):
            m.d.comb += self.busy.eq(1)
        return m
