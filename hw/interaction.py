"""DLRM feature interaction: the requantized pairwise dot products of one sample's vectors.

docs/architecture.md ("Feature interaction") says why this is a dedicated unit and not a
job for the weight-stationary systolic array, with cycles and measured area.
"""

import math

from amaranth import Cat, Module, Mux, ResetSignal, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rpaccel.hw.config import AccelConfig

from .shared import index_bits
from .pe import ecp5_multiplier
from .stream import StreamFIFO
from .vector import SHIFT_WIDTH, Requantizer

__all__ = ["InteractionUnit", "vector_layout", "param_layout", "out_layout", "pairs_max",
           "tree_stages", "pipeline_latency", "beats_per_pair", "PACK_MAX", "pack_max",
           "pack_factor", "issue_cycles", "pair_groups"]

#: Most pairs the unit computes per cycle. Each needs its own requantizer (2 DSPs on ECP5),
#: and 4 is what a D = 4 sample needs on 16 lanes (the small MovieLens model).
PACK_MAX = 4


def pack_max(config: AccelConfig) -> int:
    """Results per ``out`` beat: ``min(PACK_MAX, interaction_lanes)``."""
    return min(PACK_MAX, config.interaction_lanes)


def pack_factor(config: AccelConfig, dim: int) -> int:
    """Pairs issued per cycle for dimension ``dim``: the largest power of two ``P <=
    pack_max(config)`` with ``dim <= interaction_lanes / P`` (1 when ``dim`` is above
    ``lanes / 2``)."""
    p = 1
    while 2 * p <= pack_max(config) and dim <= config.interaction_lanes // (2 * p):
        p *= 2
    return p


def pair_groups(config: AccelConfig, n: int, dim: int) -> list[int]:
    """How many pairs each ``out`` beat of a sample carries, in order: row ``i`` (pairs
    ``(i, 0) .. (i, i - 1)``) in groups of ``pack_factor`` consecutive pairs, the last group
    of a row possibly shorter."""
    p = pack_factor(config, dim)
    return [min(p, i - j) for i in range(1, n) for j in range(0, i, p)]


def issue_cycles(config: AccelConfig, n: int, dim: int) -> int:
    """Issue cycles of a good sample of ``n`` vectors: ``n(n-1)/2 * ceil(dim / lanes)``
    unpacked, else one per group of :func:`pair_groups`
    (``sum(ceil(i / P) for i in 1 .. n-1)``)."""
    if pack_factor(config, dim) == 1:
        return n * (n - 1) // 2 * beats_per_pair(config, dim)
    return len(pair_groups(config, n, dim))


def pairs_max(config: AccelConfig) -> int:
    """Pairs of ``max_interaction_vectors`` vectors: entries of the pair-parameter memory."""
    return config.max_interaction_vectors * (config.max_interaction_vectors - 1) // 2


def tree_stages(config: AccelConfig) -> int:
    """Registers in the adder tree: one every two of its ``log2(interaction_lanes)`` levels."""
    return math.ceil(int(math.log2(config.interaction_lanes)) / 2)


def pipeline_latency(config: AccelConfig) -> int:
    """Cycles from a pair's last issue cycle to its result on ``out`` (no stalls): vector
    read, chunk select, operand register, multiply, adder tree, accumulate, requantize, the
    output FIFO's two cycles."""
    return 4 + tree_stages(config) + 1 + Requantizer.LATENCY + 2


def beats_per_pair(config: AccelConfig, dim: int) -> int:
    """Cycles one pair takes for dimension ``dim``: ``ceil(dim / interaction_lanes)``."""
    return -(-dim // config.interaction_lanes)


def vector_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`InteractionUnit.vectors`: one vector of a sample."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.operand_width), config.emb_dim_max),
        "last": 1,
    })


def param_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`InteractionUnit.pair_params`: one pair's requantization."""
    return data.StructLayout({
        "index": unsigned(index_bits(pairs_max(config))),
        "mult": unsigned(config.requant_mult_width),
        "shift": unsigned(SHIFT_WIDTH),
    })


def out_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`InteractionUnit.out`: ``count`` results (``data[0 .. count-1]``,
    consecutive pairs; the other elements 0), or the error beat (``count`` 0)."""
    pm = pack_max(config)
    return data.StructLayout({"data": data.ArrayLayout(signed(config.operand_width), pm),
                              "count": range(pm + 1), "last": 1, "error": 1})


class InteractionUnit(wiring.Component):
    """Pairwise dot products ``z_i . z_j`` (``i > j``) of a sample's ``n`` vectors, each
    requantized with its own ``(mult, shift)`` (``rpaccel.sim.numerics.interaction``).

    Ports
    -----
    vectors : In(stream.Signature({data: ArrayLayout(signed(operand_width), emb_dim_max),
                                   last}))
        One vector per beat, the ``n`` vectors of a sample in model order (bottom-MLP
        output first), ``last`` on the ``n``-th. Elements at and beyond the sample's
        dimension ``D`` are ignored (the unit zeroes them), so padding need not be zero.
    dim : In(range(emb_dim_max + 1))
        The sample's dimension ``D``, sampled on the cycle the sample's **first** vector is
        transferred (it may change freely between samples: it is per sample).
    pair_params : In(stream.Signature({index, mult: unsigned(requant_mult_width),
                                       shift: unsigned(6)}))
        Writes the requantization of pair ``index`` (its position in
        ``numerics.interaction_pairs``) into a memory of
        ``max_interaction_vectors * (max_interaction_vectors - 1) / 2`` entries. Ready except
        during reset; an index beyond the memory is ignored. The host writes these when it
        loads a model: a write while a sample is in the unit may or may not reach that
        sample.
    out : Out(stream.Signature({data: ArrayLayout(signed(operand_width), pack_max),
                                count, last, error}))
        The ``n(n-1)/2`` results of a sample in ``interaction_pairs`` order, ``count`` per
        beat (``data[0 .. count-1]``, the other elements 0) in the groups of
        :func:`pair_groups`: one result per beat unpacked, up to ``P`` consecutive pairs of
        one row per beat when packed; ``last`` on the final beat, ``error`` low.

    Reset: while ``rst`` is high, ``vectors.ready`` and ``pair_params.ready`` are low and
    ``out.valid`` is low: nothing is taken (so nothing is lost) and nothing is offered. A
    sample cut by the reset is forgotten; the pair parameters written before it stay.

    Bad input: a sample of fewer than 2 or more than ``max_interaction_vectors`` vectors,
    or a ``dim`` of 0 or above ``emb_dim_max``, is consumed up to its ``last`` and
    discarded, and one beat ``{data: 0, last: 1, error: 1}`` stands for it on ``out``; the
    next sample is processed normally.

    Architecture: the vectors of a sample are stored in one half of a double buffer
    (``2 * max_interaction_vectors`` words of ``emb_dim_max`` elements) while the other half
    is computed on, so the next sample loads while the current one computes. Unpacked
    (``D > lanes / 2``), a pair takes ``ceil(D / interaction_lanes)`` cycles on
    ``interaction_lanes`` int8 multipliers and an adder tree, accumulated over those cycles,
    then goes through a :class:`Requantizer`. Packed (``D <= lanes / 2``), the sample's
    vectors are stored in slots of ``S = lanes / P`` elements (:func:`pack_factor` ``P`` up
    to :data:`PACK_MAX`), so the ``P`` vectors ``j .. j + P - 1`` of a group are one
    lanes-wide chunk of one word: each lane group ``g`` multiplies vector ``i`` by vector
    ``j + g``, its sum is node ``g`` of the adder tree's level ``log2(S)``, and ``P``
    requantizers (pair parameters in ``P`` banks, pair ``p`` in bank ``p mod P``) finish
    the ``P`` pairs together. A group never spans two rows (that would need up to ``2P``
    vector reads a cycle instead of two), so a row of ``i`` pairs takes ``ceil(i / P)``
    cycles.

    Timing, without stalls on ``out``:

    * loading a sample takes ``n`` cycles (one vector per cycle);
    * its first pair is issued two cycles after its last vector is transferred (the vector
      is written in the cycle after it; when the previous sample has finished issuing),
      and groups are issued back to back:
      :func:`issue_cycles` (``n(n-1)/2 * ceil(D / lanes)`` unpacked,
      ``sum(ceil(i / P), i = 1 .. n-1)`` packed; 1 cycle for a bad sample), one ``out`` beat
      per group;
    * a group's results are offered :attr:`latency` cycles after its last issue cycle
      (``14 + ceil(log2(lanes) / 2)``: vector read, chunk select, operand register,
      multiply, adder tree with a register every two levels, accumulate, requantize, the
      output FIFO's two cycles).

    So one sample alone takes ``n + 1 + issue_cycles + latency`` cycles from its first vector to
    its last result, and back-to-back samples take ``max(n, issue_cycles)`` cycles each.
    Flow control on ``out`` is by credits: the compute pipeline never stalls, its results
    go into an output FIFO of :attr:`out_fifo_depth` beats, and a group that emits a beat
    is issued only while fewer beats than that are in flight or waiting, so backpressure on
    ``out`` pauses the issue (nothing is lost); loading depends only on a free buffer,
    never on ``out``.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        self._pairs_max = pairs_max(config)
        self._vector_layout = vector_layout(config)
        self._param_layout = param_layout(config)
        self._out_layout = out_layout(config)
        super().__init__({
            "vectors": In(stream.Signature(self._vector_layout)),
            "dim": In(range(config.emb_dim_max + 1)),
            "pair_params": In(stream.Signature(self._param_layout)),
            "out": Out(stream.Signature(self._out_layout)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def pairs_max(self) -> int:
        """Entries of the pair-parameter memory: pairs of ``max_interaction_vectors``."""
        return self._pairs_max

    @property
    def vector_layout(self) -> data.StructLayout:
        return self._vector_layout

    @property
    def param_layout(self) -> data.StructLayout:
        return self._param_layout

    @property
    def out_layout(self) -> data.StructLayout:
        return self._out_layout

    @property
    def out_fifo_depth(self) -> int:
        """Beats of the output FIFO, and the most beats in flight: the pipeline's latency
        plus the FIFO's own two cycles and two spare, so a free-flowing ``out`` takes a
        beat every cycle."""
        return pipeline_latency(self._config) + 4

    @property
    def tree_stages(self) -> int:
        """Registers in the adder tree (:func:`tree_stages`)."""
        return tree_stages(self._config)

    @property
    def latency(self) -> int:
        """Cycles from a pair's last issue cycle to its result on ``out`` (no stalls)."""
        return pipeline_latency(self._config)

    @property
    def dot_width(self) -> int:
        """Width of an exact dot product: ``emb_dim_max * 2**(2*ow-2)`` needs
        ``2*operand_width + log2(emb_dim_max)`` signed bits."""
        return 2 * self._config.operand_width + int(math.log2(self._config.emb_dim_max))

    def beats(self, dim: int) -> int:
        """Cycles one pair takes for dimension ``dim``."""
        return beats_per_pair(self._config, dim)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        ow, emb, vmax = cfg.operand_width, cfg.emb_dim_max, cfg.max_interaction_vectors
        lanes = cfg.interaction_lanes
        chunks = emb // lanes
        log_lanes = int(math.log2(lanes))

        pm = pack_max(cfg)
        lp_max = int(math.log2(pm))            # log2 of the largest pack factor
        log_chunks = int(math.log2(chunks))

        # -- storage ------------------------------------------------------------------------
        # Unpacked (pack factor 1), vector v of buffer b is word 2*v + b. Packed (P = 2**lp
        # pairs per cycle), each vector takes a slot of S = lanes / P elements and a word
        # holds emb / S of them: vector v is slot v mod (emb / S) of word v // (emb / S), so
        # the P vectors j .. j + P - 1 of a group (j a multiple of P) are one lanes-wide
        # chunk of one word.
        m.submodules.vectors = vmem = Memory(
            shape=data.ArrayLayout(signed(ow), emb), depth=2 * vmax, init=[])
        vwrite = vmem.write_port(granularity=1)    # per element (ArrayLayout)
        read_i, read_j = vmem.read_port(), vmem.read_port()
        # Pair parameters in pm banks, pair p in bank p mod pm, so that the pm consecutive
        # pairs of a group are read in one cycle.
        param_shape = data.StructLayout({"mult": unsigned(cfg.requant_mult_width),
                                         "shift": unsigned(SHIFT_WIDTH)})
        bank_depth = -(-self._pairs_max // pm)
        pwrites, preads = [], []
        for r in range(pm):
            pmem = Memory(shape=param_shape, depth=bank_depth, init=[])
            m.submodules[f"params{r}" if pm > 1 else "params"] = pmem
            pwrites.append(pmem.write_port())
            preads.append(pmem.read_port())

        # Reset contract: while rst is high no ready is high and nothing is offered (the
        # registers hold their old values during the first reset cycle, so gate the
        # handshakes combinationally).
        in_reset = ResetSignal()
        pp = self.pair_params.payload
        m.d.comb += self.pair_params.ready.eq(~in_reset)
        for r, pwrite in enumerate(pwrites):
            m.d.comb += [
                pwrite.addr.eq(pp.index >> lp_max),
                pwrite.data.mult.eq(pp.mult),
                pwrite.data.shift.eq(pp.shift),
                pwrite.en.eq(self.pair_params.valid & self.pair_params.ready
                             & (pp.index < self._pairs_max)
                             & ((pp.index[:lp_max] == r) if lp_max else 1)),
            ]

        # -- loader: one vector per cycle into the free half of the double buffer ----------------
        # Samples loaded and not yet issued (0..2); the loader fills buffer wb, the issuer
        # works on buffer rb, both in order, so the count says which halves are full.
        loaded = Signal(range(3))
        job_last = [Signal(range(vmax + 1), name=f"job_last{b}") for b in range(2)]  # n - 1
        job_beats = [Signal(range(chunks + 1), name=f"job_beats{b}") for b in range(2)]
        job_ok = [Signal(name=f"job_ok{b}") for b in range(2)]
        # (at least one bit wide: with a pack factor of 1 only, lp is always 0)
        job_lp = [Signal(range(max(lp_max + 1, 2)), name=f"job_lp{b}") for b in range(2)]
        wb = Signal()                            # buffer being loaded
        first = Signal(init=1)                   # the next vector starts a sample
        count = Signal(range(vmax + 1))          # vectors of this sample so far (saturating)
        dim_kept = Signal(range(emb + 1))

        vin = self.vectors
        cur_dim = Mux(first, self.dim, dim_kept)
        dim_ok = (cur_dim != 0) & (cur_dim <= emb)
        cur_beats = (cur_dim + (lanes - 1)) >> log_lanes
        # Comb logic here is plain expressions (Mux chains), not Switch/If: blocks that assign
        # part of a vector are what made Icarus loop when its builds used `always_comb`.
        cur_lp = Signal(range(max(lp_max + 1, 2)))   # log2 of this sample's pack factor
        lp_expr = 0
        for lp in range(1, lp_max + 1):
            lp_expr = Mux(cur_dim <= (lanes >> lp), lp, lp_expr)
        m.d.comb += cur_lp.eq(lp_expr)
        take = Signal()
        # A sample filled last cycle is counted in `loaded` this cycle (the write stage
        # below): until then it holds its buffer too.
        filled = Signal()
        m.d.comb += [
            vin.ready.eq((loaded != 2) & ~((loaded == 1) & filled) & ~in_reset),
            take.eq(vin.valid & vin.ready),
        ]
        # Write stage: a vector is written into the buffer the cycle after it is taken, from
        # registers that hold its elements, the word address, a one-hot of the sample's
        # pack factor, which elements are inside its dimension and which elements the write
        # changes (``w_en``, from the pack factor and the vector's index; not gated by the
        # take, whose fan-out stays one register, ``w_valid``). Deciding all that from the
        # sample's dimension in the cycle that writes the distributed RAM (its pack factor
        # fanning out to every element's data and enable) limited the unit to 98 MHz on
        # ECP5; the slot compare from a registered index in that cycle, into every RAM's
        # write enable, to 127.6 MHz on `tiny` (6 of 8 ns routing).
        w_valid = Signal()
        w_data = Signal(data.ArrayLayout(signed(ow), emb))
        w_addr = Signal.like(vwrite.addr)
        w_lp = Signal(lp_max + 1)                # one-hot pack factor
        w_inside = Signal(emb)                   # element e < D
        w_en = Signal(emb)                       # the elements this write changes
        addr = Cat(wb, count)
        for lp in range(1, lp_max + 1):
            addr = Mux(cur_lp == lp, Cat(wb, count >> (log_chunks + lp)), addr)
        en_next = []
        for e in range(emb):
            enable = cur_lp == 0                 # unpacked: the vector fills its word
            for lp in range(1, lp_max + 1):      # packed: its slot of the word
                per_word = log_chunks + lp       # log2(vectors per word)
                slot = count[:per_word] if per_word else 0
                enable = enable | ((cur_lp == lp) & (slot == e // (lanes >> lp)))
            en_next.append(enable)
        m.d.sync += [w_valid.eq(take & (count < vmax)), w_en.eq(Cat(en_next)),
                     w_data.eq(vin.payload.data),
                     w_addr.eq(addr), w_lp.eq(Cat(*(cur_lp == lp for lp in range(lp_max + 1)))),
                     w_inside.eq(Cat(*(cur_dim > e for e in range(emb)))),
                     filled.eq(take & vin.payload.last)]
        with m.If(in_reset):
            m.d.sync += [w_valid.eq(0), filled.eq(0)]
        m.d.comb += vwrite.addr.eq(w_addr)
        for e in range(emb):
            value = 0
            for lp in range(lp_max + 1):
                el = e % (lanes >> lp) if lp else e
                value = value | Mux(w_lp[lp] & w_inside[el], w_data[el], 0)
            m.d.comb += [vwrite.data[e].eq(value), vwrite.en[e].eq(w_valid & w_en[e])]

        with m.If(take):
            with m.If(vin.payload.last):
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += [
                            job_last[b].eq(count),
                            job_beats[b].eq(cur_beats),
                            job_ok[b].eq(dim_ok & (count >= 1) & (count < vmax)),
                            job_lp[b].eq(cur_lp),
                        ]
                m.d.sync += [wb.eq(~wb), first.eq(1), count.eq(0)]
            with m.Else():
                m.d.sync += [first.eq(0), dim_kept.eq(cur_dim),
                             count.eq(Mux(count == vmax, vmax, count + 1))]

        # -- issue: pairs (i, j), i > j, row-major; unpacked one pair in ceil(D/lanes) chunks,
        # packed P = 2**lp consecutive pairs (i, j .. j + P - 1) of a row per cycle -----------
        # Flow control by credits: the compute pipeline never stalls and its registers have
        # no enable (one advance over all of them, out.ready fanned out to every register's
        # enable, had held the unit near 100 MHz on ECP5). A group that emits a beat is issued
        # only while fewer than `out_depth` beats are in the pipeline or in the output FIFO,
        # so the FIFO never overflows and out's backpressure stops the issue instead.
        out = self.out
        out_depth = self.out_fifo_depth
        m.submodules.out_fifo = out_fifo = StreamFIFO(self._out_layout, out_depth)
        wiring.connect(m, out_fifo.r, wiring.flipped(out))
        in_flight = Signal(range(out_depth + 1))   # beats issued and not yet taken on out
        room = Signal()
        m.d.comb += room.eq(in_flight < out_depth)

        rb = Signal()                            # buffer being computed on
        i = Signal(range(vmax), init=1)
        j = Signal(range(vmax))
        c = Signal(range(chunks))
        p = Signal(range(self._pairs_max + 1))
        has_job = loaded != 0
        # The job of buffer rb, held in registers that follow rb's next value (its fields
        # are written at least two cycles before the buffer counts as loaded): read straight
        # through the buffer multiplexer, the pack factor fanned out from it to every lane's
        # operand select (110 MHz on ECP5).
        rb_next = Signal()
        last_i, beats = Signal.like(job_last[0]), Signal.like(job_beats[0])
        ok, lp_r = Signal(), Signal.like(job_lp[0])
        m.d.sync += [reg.eq(Mux(rb_next, job[1], job[0])) for reg, job in
                     ((last_i, job_last), (beats, job_beats), (ok, job_ok), (lp_r, job_lp))]
        step = Signal(range(pm + 1))             # the pack factor P
        m.d.comb += step.eq(1 << lp_r)
        chunk_end = c == beats - 1
        # left = i - j, the pairs of row i not yet issued, kept in a register: the row's end
        # is then a compare of it with the pack factor's constants beside the pack factor's
        # select, not an adder and a compare behind it (with `group` and the pair counter's
        # adder after them: 99 MHz on ECP5).
        left = Signal(range(vmax + 1), init=1)
        row_end = 0
        for lp in range(lp_max + 1):
            row_end = Mux(lp_r == lp, left <= (1 << lp), row_end) if lp else (left <= 1)
        group = Signal(range(pm + 1))            # pairs in this cycle's group
        m.d.comb += group.eq(Mux(row_end, left, step))
        emit = ~ok | chunk_end
        sample_end = ~ok | (chunk_end & row_end & (i == last_i))
        issue = has_job & room
        m.d.sync += in_flight.eq(in_flight + (issue & emit) - (out.valid & out.ready))

        clear_full = Signal()
        m.d.comb += [clear_full.eq(issue & sample_end), rb_next.eq(rb ^ clear_full)]
        with m.If(issue):
            with m.If(sample_end):
                m.d.sync += [i.eq(1), j.eq(0), left.eq(1), c.eq(0), p.eq(0), rb.eq(~rb)]
            with m.Elif(chunk_end):
                m.d.sync += [c.eq(0), p.eq(p + group)]
                with m.If(row_end):
                    m.d.sync += [j.eq(0), i.eq(i + 1), left.eq(i + 1)]
                with m.Else():
                    m.d.sync += [j.eq(j + step), left.eq(left - step)]
            with m.Else():
                m.d.sync += c.eq(c + 1)
        m.d.sync += loaded.eq(loaded + filled - clear_full)

        # Which words to read, and which part of them each lane takes: unpacked, chunk c of
        # both vectors; packed, slot i mod (emb / S) of vector i's word (repeated in every
        # lane group) and the chunk of vector j's word that holds j .. j + P - 1.
        a_sel = Signal(range(max(chunks, emb * pm // lanes)))
        b_sel = Signal(range(chunks))
        addr_i, addr_j, sel_a, sel_b = Cat(rb, i), Cat(rb, j), c, c
        for lp in range(1, lp_max + 1):
            per_word = log_chunks + lp
            here = lp_r == lp
            addr_i = Mux(here, Cat(rb, i >> per_word), addr_i)
            addr_j = Mux(here, Cat(rb, j >> per_word), addr_j)
            sel_a = Mux(here, i[:per_word] if per_word else 0, sel_a)
            sel_b = Mux(here, j[:per_word] >> lp if per_word else 0, sel_b)
        m.d.comb += [read_i.addr.eq(addr_i), read_j.addr.eq(addr_j), a_sel.eq(sel_a),
                     b_sel.eq(sel_b)]
        m.d.comb += [read_i.en.eq(1), read_j.en.eq(1)]

        # -- datapath: every register advances every cycle --------------------------------------
        def stage(prev: dict, name: str) -> dict:
            """The token's tags, one register later."""
            regs = {}
            for key, value in prev.items():
                value = Value.cast(value)
                reg = Signal(value.shape(), name=f"{name}_{key}", reset_less=key != "valid")
                regs[key] = reg
                m.d.sync += reg.eq(value)
            return regs

        def register(values: list, name: str) -> list:
            regs = [Signal(v.shape(), name=f"{name}_{k}", reset_less=True)
                    for k, v in enumerate(values)]
            m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
            return regs

        tags1 = stage({"valid": issue, "first": c == 0, "emit": emit,
                       "last": sample_end, "error": ~ok, "lp": lp_r, "a_sel": a_sel,
                       "b_sel": b_sel, "count": Mux(ok, group, 0), "pair": p}, "read")

        # Stage 2: the lanes' operands.
        ecp5 = getattr(platform, "multiplier", "portable") == "ecp5"
        a2 = [Signal(signed(ow), name=f"a{lane}", reset_less=True) for lane in range(lanes)]
        b2 = [Signal(signed(ow), name=f"b{lane}", reset_less=True) for lane in range(lanes)]
        # Lane `lane` takes element `k * lanes + lane` of chunk k unpacked, `k * S + lane mod
        # S` of slot k packed by P = lanes / S. Each choice among the chunks or slots is one
        # balanced selection (`word_select` by the low bits of the index: the count is a
        # power of two and the index never exceeds it), then a short chain over the pack
        # factors; plain expressions, not Switch/If (see the loader). A chain of one Mux per
        # chunk and slot was ten LUTs deep, `tiny`'s critical path (100.1 MHz).
        def pick(index, count: int, element):
            if count == 1:
                return element(0)
            return Cat(element(k) for k in range(count)).word_select(
                index[:exact_log2(count)], ow).as_signed()

        for lane in range(lanes):
            b_val = pick(tags1["b_sel"], chunks,
                         lambda k: read_j.data[k * lanes + lane])
            a_val = pick(tags1["a_sel"], chunks,
                         lambda k: read_i.data[k * lanes + lane])
            for lp in range(1, lp_max + 1):
                slot_width = lanes >> lp
                packed = pick(tags1["a_sel"], emb // slot_width,
                              lambda k: read_i.data[k * slot_width + lane % slot_width])
                a_val = Mux(tags1["lp"] == lp, packed, a_val)
            m.d.sync += [a2[lane].eq(a_val), b2[lane].eq(b_val)]
        tags2 = stage(stage(tags1, "select"), "operand")

        # Stages 3 and 4: the multipliers' operand registers, then the lanes' products. On
        # ECP5 (the conversion's ``multiplier``, as for the PEs) those are the MULT18X18D's
        # own input and output registers: through the block between fabric registers the
        # product held the unit to 109 MHz, and the operand multiplexers routed straight
        # into the blocks' inputs to 109-122 MHz.
        prods = [Signal(signed(2 * ow), name=f"prod{lane}", reset_less=True)
                 for lane in range(lanes)]
        for lane in range(lanes):
            if ecp5:
                m.submodules[f"mult{lane}"] = ecp5_multiplier(a2[lane], b2[lane], prods[lane])
            else:
                a3 = Signal(signed(ow), name=f"op_a{lane}", reset_less=True)
                b3 = Signal(signed(ow), name=f"op_b{lane}", reset_less=True)
                m.d.sync += [a3.eq(a2[lane]), b3.eq(b2[lane]), prods[lane].eq(a3 * b3)]
        tags, before = stage(tags2, "mul"), tags2

        # Adder tree, registered every two levels and at the root. Packed by P, group g's
        # sum is node g of level log2(lanes / P): those nodes are tapped and carried along.
        tap_level = {log_lanes - lp: lp for lp in range(1, lp_max + 1)}
        taps = {}
        values = list(prods)
        level = 0
        if 0 in tap_level:
            taps[tap_level[0]] = list(values)
        while len(values) > 1:
            values = [values[k] + values[k + 1] for k in range(0, len(values), 2)]
            level += 1
            if level in tap_level:
                taps[tap_level[level]] = list(values)
            if level % 2 == 0 or len(values) == 1:
                values = register(values, f"sum{level}")
                taps = {lp: register(v, f"tap{lp}_l{level}") for lp, v in taps.items()}
                tags, before = stage(tags, f"tree{level}"), tags
        group_sum = []
        for g in range(pm):
            value = values[0] if g == 0 else 0
            for lp in range(1, lp_max + 1):
                if g < 1 << lp:
                    value = Mux(tags["lp"] == lp, taps[lp][g], value)
            group_sum.append(value)

        # Accumulate the chunks of one pair (unpacked: group 0 only). The pairs'
        # parameters are read one stage ahead and registered beside the sums: an EBR's
        # output is too slow to feed the requantizers' DSPs directly. Bank r holds pair
        # p mod pm == r; group g is pair `pair + g`.
        accs = [Signal(signed(self.dot_width), name=f"dot{g}", reset_less=True)
                for g in range(pm)]
        mults = [Signal(cfg.requant_mult_width, name=f"pair_mult{g}", reset_less=True)
                 for g in range(pm)]
        shifts = [Signal(SHIFT_WIDTH, name=f"pair_shift{g}", reset_less=True)
                  for g in range(pm)]
        with m.If(tags["valid"]):
            m.d.sync += accs[0].eq(Mux(tags["first"], group_sum[0], accs[0] + group_sum[0]))
            m.d.sync += [accs[g].eq(group_sum[g]) for g in range(1, pm)]
        rot = tags["pair"][:lp_max] if lp_max else None
        for g in range(pm):
            mult, shift = preads[0].data.mult, preads[0].data.shift
            for r in range(1, pm):
                here = (rot + g)[:lp_max] == r
                mult = Mux(here, preads[r].data.mult, mult)
                shift = Mux(here, preads[r].data.shift, shift)
            m.d.sync += [mults[g].eq(mult), shifts[g].eq(shift)]
        param_pair = before["pair"]
        tags = stage(tags, "acc")
        for r, pread in enumerate(preads):
            # The pair of the group that lives in bank r: pair + ((r - pair) mod pm).
            offset = (r - param_pair[:lp_max])[:lp_max] if lp_max else 0
            m.d.comb += [pread.addr.eq((param_pair + offset) >> lp_max), pread.en.eq(1)]

        results = []
        for g in range(pm):
            rq = m.submodules[f"requant{g}" if pm > 1 else "requant"] = Requantizer(
                value_width=self.dot_width, mult_width=cfg.requant_mult_width,
                operand_width=ow, result_width=ow)
            m.d.comb += [rq.en.eq(1), rq.value.eq(accs[g]), rq.mult.eq(mults[g]),
                         rq.shift.eq(shifts[g]), rq.relu.eq(0), rq.bypass.eq(0)]
            results.append(rq.result)
        result = {"valid": tags["valid"] & tags["emit"], "last": tags["last"],
                  "error": tags["error"], "count": tags["count"]}
        for k in range(Requantizer.LATENCY):
            result = stage(result, f"rq{k}")
        beat = out_fifo.w
        m.d.comb += [
            beat.valid.eq(result["valid"]),
            beat.payload.last.eq(result["last"]),
            beat.payload.error.eq(result["error"]),
            beat.payload.count.eq(result["count"]),
        ]
        for g in range(pm):
            m.d.comb += beat.payload.data[g].eq(Mux(result["count"] > g, results[g], 0))
        return m
