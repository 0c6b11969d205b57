"""DLRM feature interaction: the requantized pairwise dot products of one sample's vectors.

docs/architecture.md ("Feature interaction") says why this is a dedicated unit and not a
job for the weight-stationary systolic array, with cycles and measured area.
"""

import math

from amaranth import Cat, Module, Mux, ResetSignal, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig

from .vector import SHIFT_WIDTH, Requantizer

__all__ = ["InteractionUnit", "vector_layout", "param_layout", "out_layout", "pairs_max",
           "tree_stages", "pipeline_latency", "beats_per_pair"]


def pairs_max(config: AccelConfig) -> int:
    """Pairs of ``max_interaction_vectors`` vectors: entries of the pair-parameter memory."""
    return config.max_interaction_vectors * (config.max_interaction_vectors - 1) // 2


def tree_stages(config: AccelConfig) -> int:
    """Registers in the adder tree: one every two of its ``log2(interaction_lanes)`` levels."""
    return math.ceil(int(math.log2(config.interaction_lanes)) / 2)


def pipeline_latency(config: AccelConfig) -> int:
    """Cycles from a pair's last issue cycle to its result on ``out`` (no stalls): vector
    read, chunk select, multiply, adder tree, accumulate, requantize."""
    return 3 + tree_stages(config) + 1 + Requantizer.LATENCY


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
        "index": unsigned(max(1, (pairs_max(config) - 1).bit_length())),
        "mult": unsigned(config.requant_mult_width),
        "shift": unsigned(SHIFT_WIDTH),
    })


def out_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`InteractionUnit.out`: one result (or the error beat)."""
    return data.StructLayout({"data": signed(config.operand_width), "last": 1, "error": 1})


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
    out : Out(stream.Signature({data: signed(operand_width), last, error}))
        The ``n(n-1)/2`` results of a sample in ``interaction_pairs`` order, ``last`` on the
        final one, ``error`` low.

    Reset: while ``rst`` is high, ``vectors.ready`` and ``pair_params.ready`` are low and
    ``out.valid`` is low: nothing is taken (so nothing is lost) and nothing is offered. A
    sample cut by the reset is forgotten; the pair parameters written before it stay.

    Bad input: a sample of fewer than 2 or more than ``max_interaction_vectors`` vectors,
    or a ``dim`` of 0 or above ``emb_dim_max``, is consumed up to its ``last`` and
    discarded, and one beat ``{data: 0, last: 1, error: 1}`` stands for it on ``out``; the
    next sample is processed normally.

    Architecture: the vectors of a sample are stored in one half of a double buffer
    (``2 * max_interaction_vectors`` vectors) while the other half is computed on, so the
    next sample loads while the current one computes. A pair takes
    ``ceil(D / interaction_lanes)`` cycles on ``interaction_lanes`` int8 multipliers and an
    adder tree, accumulated over those cycles, then goes through a :class:`Requantizer`.

    Timing, without stalls on ``out``:

    * loading a sample takes ``n`` cycles (one vector per cycle);
    * its first pair is issued on the cycle after its last vector is transferred (when the
      previous sample has finished issuing), and pairs are issued back to back:
      ``n(n-1)/2 * ceil(D / lanes)`` cycles (1 cycle for a bad sample);
    * a pair's result is offered :attr:`latency` cycles after its last issue cycle
      (``9 + ceil(log2(lanes) / 2)``: vector read, chunk select, multiply, adder tree with a
      register every two levels, accumulate, requantize).

    So one sample alone takes ``n + pairs * ceil(D / lanes) + latency`` cycles from its first
    vector to its last result, and back-to-back samples take
    ``max(n, pairs * ceil(D / lanes))`` cycles each. Flow control on ``out`` is one global
    advance (``~out.valid | out.ready``) over the compute pipeline; loading depends only on a
    free buffer, never on ``out``.
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

        # -- storage ------------------------------------------------------------------------
        # Vector v of buffer b lives at address 2*v + b.
        m.submodules.vectors = vmem = Memory(
            shape=data.ArrayLayout(signed(ow), emb), depth=2 * vmax, init=[])
        vwrite = vmem.write_port()
        read_i, read_j = vmem.read_port(), vmem.read_port()
        m.submodules.params = pmem = Memory(
            shape=data.StructLayout({"mult": unsigned(cfg.requant_mult_width),
                                     "shift": unsigned(SHIFT_WIDTH)}),
            depth=self._pairs_max, init=[])
        pwrite = pmem.write_port()
        pread = pmem.read_port()

        # Reset contract: while rst is high no ready is high and nothing is offered (the
        # registers hold their old values during the first reset cycle, so gate the
        # handshakes combinationally).
        in_reset = ResetSignal()
        pp = self.pair_params.payload
        m.d.comb += [
            self.pair_params.ready.eq(~in_reset),
            pwrite.addr.eq(pp.index),
            pwrite.data.mult.eq(pp.mult),
            pwrite.data.shift.eq(pp.shift),
            pwrite.en.eq(self.pair_params.valid & self.pair_params.ready
                         & (pp.index < self._pairs_max)),
        ]

        # -- loader: one vector per cycle into the free half of the double buffer ----------------
        # Samples loaded and not yet issued (0..2); the loader fills buffer wb, the issuer
        # works on buffer rb, both in order, so the count says which halves are full.
        loaded = Signal(range(3))
        job_last = [Signal(range(vmax + 1), name=f"job_last{b}") for b in range(2)]  # n - 1
        job_beats = [Signal(range(chunks + 1), name=f"job_beats{b}") for b in range(2)]
        job_ok = [Signal(name=f"job_ok{b}") for b in range(2)]
        wb = Signal()                            # buffer being loaded
        first = Signal(init=1)                   # the next vector starts a sample
        count = Signal(range(vmax + 1))          # vectors of this sample so far (saturating)
        dim_kept = Signal(range(emb + 1))

        vin = self.vectors
        cur_dim = Mux(first, self.dim, dim_kept)
        dim_ok = (cur_dim != 0) & (cur_dim <= emb)
        cur_beats = (cur_dim + (lanes - 1)) >> log_lanes
        take = Signal()
        m.d.comb += [
            vin.ready.eq((loaded != 2) & ~in_reset),
            take.eq(vin.valid & vin.ready),
            vwrite.addr.eq(Cat(wb, count)),
            vwrite.en.eq(take & (count < vmax)),
        ]
        for e in range(emb):
            m.d.comb += vwrite.data[e].eq(Mux(cur_dim > e, vin.payload.data[e], 0))

        # Plain expressions (continuous assignments in Verilog) rather than assignments inside
        # If blocks: a 4-state simulator then never sees them undriven at time zero.
        set_full = Signal()
        m.d.comb += set_full.eq(take & vin.payload.last)
        with m.If(take):
            with m.If(vin.payload.last):
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += [
                            job_last[b].eq(count),
                            job_beats[b].eq(cur_beats),
                            job_ok[b].eq(dim_ok & (count >= 1) & (count < vmax)),
                        ]
                m.d.sync += [wb.eq(~wb), first.eq(1), count.eq(0)]
            with m.Else():
                m.d.sync += [first.eq(0), dim_kept.eq(cur_dim),
                             count.eq(Mux(count == vmax, vmax, count + 1))]

        # -- issue: pairs (i, j), i > j, row-major, ceil(D/lanes) chunks each ----------------------
        out = self.out
        advance = Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)

        rb = Signal()                            # buffer being computed on
        i = Signal(range(vmax), init=1)
        j = Signal(range(vmax))
        c = Signal(range(chunks))
        p = Signal(range(self._pairs_max))
        has_job = loaded != 0
        last_i = Mux(rb, job_last[1], job_last[0])
        beats = Mux(rb, job_beats[1], job_beats[0])
        ok = Mux(rb, job_ok[1], job_ok[0])
        chunk_end = c == beats - 1
        row_end = j == i - 1
        emit = ~ok | chunk_end
        sample_end = ~ok | (chunk_end & row_end & (i == last_i))
        issue = has_job & advance

        clear_full = Signal()
        m.d.comb += clear_full.eq(issue & sample_end)
        with m.If(issue):
            with m.If(sample_end):
                m.d.sync += [i.eq(1), j.eq(0), c.eq(0), p.eq(0), rb.eq(~rb)]
            with m.Elif(chunk_end):
                m.d.sync += [c.eq(0), p.eq(p + 1)]
                with m.If(row_end):
                    m.d.sync += [j.eq(0), i.eq(i + 1)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += c.eq(c + 1)
        m.d.sync += loaded.eq(loaded + set_full - clear_full)

        m.d.comb += [
            read_i.addr.eq(Cat(rb, i)), read_j.addr.eq(Cat(rb, j)),
            read_i.en.eq(advance), read_j.en.eq(advance),
        ]

        # -- datapath: every register advances together --------------------------------------
        def stage(prev: dict, name: str) -> dict:
            """The token's tags, one register later."""
            regs = {}
            for key, value in prev.items():
                value = Value.cast(value)
                reg = Signal(value.shape(), name=f"{name}_{key}", reset_less=key != "valid")
                regs[key] = reg
                m.d.sync += reg.eq(value)
            return regs

        with m.If(advance):
            tags1 = stage({"valid": has_job, "first": c == 0, "emit": emit,
                           "last": sample_end, "error": ~ok, "chunk": c, "pair": p}, "read")

            # Stage 2: the chunk of both vectors this cycle works on.
            a2 = [Signal(signed(ow), name=f"a{lane}", reset_less=True) for lane in range(lanes)]
            b2 = [Signal(signed(ow), name=f"b{lane}", reset_less=True) for lane in range(lanes)]
            with m.Switch(tags1["chunk"]):
                for k in range(chunks):
                    with m.Case(k):
                        m.d.sync += [a2[lane].eq(read_i.data[k * lanes + lane])
                                     for lane in range(lanes)]
                        m.d.sync += [b2[lane].eq(read_j.data[k * lanes + lane])
                                     for lane in range(lanes)]
            tags2 = stage(tags1, "select")

            # Stage 3: lanes products.
            prods = [Signal(signed(2 * ow), name=f"prod{lane}", reset_less=True)
                     for lane in range(lanes)]
            m.d.sync += [prods[lane].eq(a2[lane] * b2[lane]) for lane in range(lanes)]
            tags, before = stage(tags2, "mul"), tags2

            # Adder tree, registered every two levels and at the root.
            values = list(prods)
            level = 0
            while len(values) > 1:
                values = [values[k] + values[k + 1] for k in range(0, len(values), 2)]
                level += 1
                if level % 2 == 0 or len(values) == 1:
                    regs = [Signal(signed(2 * ow + level), name=f"sum{level}_{k}",
                                   reset_less=True) for k in range(len(values))]
                    m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
                    values = regs
                    tags, before = stage(tags, f"tree{level}"), tags
            chunk_sum = values[0]

            # Accumulate the chunks of one pair. The pair's parameters are read one stage
            # ahead and registered beside the sum: an EBR's output is too slow to feed the
            # requantizer's DSPs directly.
            acc = Signal(signed(self.dot_width), name="dot", reset_less=True)
            mult = Signal(cfg.requant_mult_width, name="pair_mult", reset_less=True)
            shift = Signal(SHIFT_WIDTH, name="pair_shift", reset_less=True)
            with m.If(tags["valid"]):
                m.d.sync += acc.eq(Mux(tags["first"], chunk_sum, acc + chunk_sum))
            m.d.sync += [mult.eq(pread.data.mult), shift.eq(pread.data.shift)]
            param_pair = before["pair"]
            tags = stage(tags, "acc")
        m.d.comb += [pread.addr.eq(param_pair), pread.en.eq(advance)]

        rq = m.submodules.requant = Requantizer(
            value_width=self.dot_width, mult_width=cfg.requant_mult_width, operand_width=ow,
            result_width=ow)
        m.d.comb += [rq.en.eq(advance), rq.value.eq(acc), rq.mult.eq(mult), rq.shift.eq(shift),
                     rq.relu.eq(0), rq.bypass.eq(0)]
        result = {"valid": tags["valid"] & tags["emit"], "last": tags["last"],
                  "error": tags["error"]}
        with m.If(advance):
            for k in range(Requantizer.LATENCY):
                result = stage(result, f"rq{k}")
        m.d.comb += [
            out.valid.eq(result["valid"] & ~in_reset),
            out.payload.last.eq(result["last"]),
            out.payload.error.eq(result["error"]),
            out.payload.data.eq(Mux(result["error"], 0, rq.result)),
        ]
        return m
