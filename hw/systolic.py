"""Reconfigurable weight-stationary systolic array: P independent sub-arrays of R x Cp PEs.

Users stream whole rows in and whole rows out; the skew and de-skew, the double-buffered
weight banks and the flow control all live in here. See docs/architecture.md ("Systolic
array") for the contract in prose with the measured numbers.

Geometry of one partition (``R = config.rows`` PE rows, ``Cp = config.partition_cols`` PE
columns)::

                 col 0        col 1          col Cp-1
    lane 0 -->  PE[0][0] --> PE[0][1] ... --> PE[0][Cp-1]       activations move right,
    lane 1 -->  PE[1][0] --> PE[1][1] ...                        partial sums move down,
      ...          |            |                  |             weights stay (2 banks)
    lane R-1 -> PE[R-1][0] ...                 PE[R-1][Cp-1]
                   v            v                  v
                 out 0        out 1            out Cp-1

``PE[r][c]`` holds ``W[r][c]``: the weight that multiplies input lane ``r`` into output
column ``c``, so column ``c`` of the partition computes ``sum_r x[r] * W[r][c]`` top to
bottom.

Timing of one row accepted on ``acts`` in cycle ``t`` (every number below is derived here
once and checked by tests/test_systolic.py):

* cycle ``t + 1``: the input register holds it; lane ``r`` is delayed ``r`` more cycles
  (input skew), so ``PE[r][c]`` sees lane ``r`` in cycle ``t + 1 + r + c``, the same cycle
  the partial sum of the lanes above arrives from ``PE[r-1][c]``.
* cycle ``t + R + c + 1 + L`` (``L`` = ``PRODUCT_LATENCY`` = 2, the PE's operand and
  product registers): column ``c``'s finished sum leaves ``PE[R-1][c]``; it is delayed ``Cp - 1 - c``
  cycles (output de-skew), so the whole row is aligned in cycle ``t + R + Cp + L`` and
  written into the output FIFO, which shows it two cycles later
  (:func:`pipeline_latency` = ``R + Cp + L + 2``).

Weights are loaded through the PEs' own shift chain. The chain of column ``c`` runs *upward*
(``PE[R-1][c]`` takes the new value, ``PE[r][c]`` takes ``PE[r+1][c]``'s), so after ``R``
shifts the first beat (weight row 0, as the contract wants) sits in ``PE[0][c]``: no row
buffer and no reversal are needed. Column ``c`` shifts ``c`` cycles after column 0 (its beat
lane and its shift enable are delayed like the activations), which

* lets each column wait only for the activations passing through *that* column, so a bank
  is free again ``R - 1`` cycles after its tile's last row was accepted (rather than
  ``R + Cp - 2`` with one partition-wide shift), and
* gives each column's shift enable a fan-out of ``R`` PEs, not ``R x Cp``.

The PEs never stall. Flow control happens at the edges with state kept in the control:

* every bank is *free* (loading), *full* (loaded, its tile's rows may go) or *draining*
  (the tile's last row was accepted and is still passing through the PEs). Weight beats are
  accepted into the bank being loaded while it is free; a row is accepted only when its
  tile's bank is full (so a new tile takes effect exactly at its first row, with no bubble);
* a row is accepted only with an output credit: rows in flight plus rows held in the output
  FIFO stay below the FIFO's depth (:func:`result_fifo_depth` = latency + 1, the least that
  sustains one row per cycle), so the FIFO can never overflow while the array runs on.

The PEs carry only activations, their bank bits and partial sums; valid and ``last`` travel
in a delay line next to them (with a copy of the bank bit, for the drain bookkeeping).
"""

from amaranth import Module, ResetSignal, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.pe import PRODUCT_LATENCY, ProcessingElement
from rpaccel.hw.shared import add_shared
from rpaccel.hw.stream import StreamFIFO

__all__ = ["SystolicArray", "SystolicPartition", "PERow", "weight_layout", "act_layout",
           "result_layout", "pipeline_latency", "result_fifo_depth", "PERF_COUNTER_WIDTH"]

#: Width of the performance counters. They count from reset and wrap (34 s at 125 MHz):
#: readers take differences.
PERF_COUNTER_WIDTH = 32


def weight_layout(config: AccelConfig) -> data.ArrayLayout:
    """One beat of the ``weights`` stream: weight row ``r`` of a tile, lane ``c`` = column ``c``.

    A tile is exactly ``rows`` beats, row 0 first.
    """
    return data.ArrayLayout(signed(config.operand_width), config.partition_cols)


def act_layout(config: AccelConfig) -> data.StructLayout:
    """One beat of the ``acts`` stream: one activation row (``rows`` lanes); ``last`` ends a tile."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.operand_width), config.rows),
        "last": 1,
    })


def result_layout(config: AccelConfig) -> data.StructLayout:
    """One beat of the ``results`` stream: ``x @ W`` for one row (``partition_cols`` lanes),
    ``last`` copied from the activation row."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.acc_width), config.partition_cols),
        "last": 1,
    })


def pipeline_latency(config: AccelConfig) -> int:
    """Cycles from a row's acceptance on ``acts`` (cycle ``t``) to its result being valid on
    ``results`` (cycle ``t + latency``) when the output FIFO is empty: the input register
    (1), the diagonal to the last PE ``PE[R-1][Cp-1]`` (``R - 1 + Cp - 1``), its product
    register (``PRODUCT_LATENCY``) and output register (1) bring the row to the FIFO's
    write port in cycle ``t + R + Cp + PRODUCT_LATENCY`` (the other columns are de-skewed
    to that cycle); the FIFO shows it 2 cycles later."""
    return config.rows + config.partition_cols + PRODUCT_LATENCY + 2


def result_fifo_depth(config: AccelConfig) -> int:
    """Depth of each partition's output FIFO. A row holds its credit from acceptance until
    its result is taken, ``pipeline_latency`` cycles at least, so ``latency + 1`` credits keep
    one row per cycle going with a consumer that is always ready."""
    return pipeline_latency(config) + 1


def _delayed(m: Module, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` registers (``value`` itself for 0)."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{i + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class PERow(wiring.Component):
    """One row of ``partition_cols`` PEs of a partition: the activation enters at the left
    and moves right, each column's partial sum and weight chain pass through.

    Ports: ``act_in``/``bank_in`` (into ``PE[r][0]``), ``psum_in``/``psum_out``
    (``Cp x acc_width`` bits, lane ``c`` = column ``c``) and ``weight_in``/``weight_out``
    (``Cp x operand_width`` bits), ``weight_shift`` and ``weight_bank`` (bit ``c`` for column
    ``c``). The lanes are plain bit vectors, not ``ArrayLayout`` views: Amaranth names a
    view's elements ``psum_in[0]``, which clashes with yosys's names of the port's bits in a
    synthesis that keeps the hierarchy. Timing is the PE's (``hw/pe.py``). In Verilog the
    row is one module instantiated ``rows`` times per partition, and the PE one module
    instantiated ``Cp`` times in it (``hw/shared.py``): a 128 x 128 array is then a few
    hundred instances instead of 16,384 copies of the PE.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        ow, aw, cp = config.operand_width, config.acc_width, config.partition_cols
        super().__init__({
            "act_in": In(signed(ow)),
            "bank_in": In(1),
            "psum_in": In(aw * cp),
            "psum_out": Out(aw * cp),
            "weight_in": In(ow * cp),
            "weight_out": Out(ow * cp),
            "weight_shift": In(cp),
            "weight_bank": In(cp),
        })

    def psum_lane(self, value, c: int):
        """Lane ``c`` of ``psum_in``/``psum_out``, signed."""
        aw = self._config.acc_width
        return value.word_select(c, aw).as_signed()

    def weight_lane(self, value, c: int):
        """Lane ``c`` of ``weight_in``/``weight_out``."""
        return value.word_select(c, self._config.operand_width)

    def elaborate(self, platform):
        m = Module()
        pes = [add_shared(m, platform, f"pe_{c}", "pe", ProcessingElement(self._config))
               for c in range(self._config.partition_cols)]
        for c, pe in enumerate(pes):
            m.d.comb += [
                pe.act_in.eq(self.act_in if c == 0 else pes[c - 1].act_out),
                pe.bank_in.eq(self.bank_in if c == 0 else pes[c - 1].bank_out),
                pe.psum_in.eq(self.psum_lane(self.psum_in, c)),
                self.psum_lane(self.psum_out, c).eq(pe.psum_out),
                pe.weight_in.eq(self.weight_lane(self.weight_in, c)),
                self.weight_lane(self.weight_out, c).eq(pe.weight_out),
                pe.weight_shift.eq(self.weight_shift[c]),
                pe.weight_bank.eq(self.weight_bank[c]),
            ]
        return m


class SystolicPartition(wiring.Component):
    """One independent sub-array of ``rows`` x ``partition_cols`` PEs with its own streams,
    flow control and performance counters. :class:`SystolicArray` holds ``partitions`` of
    them; the ports are those of one partition of :class:`SystolicArray` (see there).
    """

    def __init__(self, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {config!r}")
        self._config = config
        super().__init__({
            "weights": In(stream.Signature(weight_layout(config))),
            "acts": In(stream.Signature(act_layout(config))),
            "results": Out(stream.Signature(result_layout(config))),
            "busy": Out(PERF_COUNTER_WIDTH),
            "weight_stalls": Out(PERF_COUNTER_WIDTH),
            "output_stalls": Out(PERF_COUNTER_WIDTH),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        R, Cp = config.rows, config.partition_cols
        ow = config.operand_width
        depth = result_fifo_depth(config)

        rows = [add_shared(m, platform, f"row_{r}", "pe_row", PERow(config)) for r in range(R)]
        # Nothing is accepted while reset is asserted (the bookkeeping below is being reset,
        # and a beat taken then would be lost).
        in_reset = ResetSignal()

        # -- bank bookkeeping ------------------------------------------------------------
        # full[b]: bank b holds a complete tile whose rows may go. draining[b]: that tile's
        # last row was accepted and may still be reading the bank. Neither: free to load.
        full = Signal(2)
        draining = Signal(2)
        load_bank = Signal()            # bank the weights stream is loading
        load_count = Signal(range(R))   # beats of that tile received so far
        act_bank = Signal()             # bank the next activation row uses

        # -- output credits --------------------------------------------------------------
        # Rows accepted whose result has not yet been taken from `results` (in the PEs, in
        # the de-skew or in the FIFO). Kept below the FIFO depth, so the FIFO never fills.
        credits_used = Signal(range(depth + 1))
        credit_ok = credits_used != depth

        # -- weight loading --------------------------------------------------------------
        load_free = ~full.bit_select(load_bank, 1) & ~draining.bit_select(load_bank, 1)
        m.d.comb += self.weights.ready.eq(load_free & ~in_reset)
        weight_taken = self.weights.valid & self.weights.ready
        with m.If(weight_taken):
            m.d.sync += load_count.eq(load_count + 1)
            with m.If(load_count == R - 1):
                m.d.sync += [
                    load_count.eq(0),
                    full.bit_select(load_bank, 1).eq(1),
                    load_bank.eq(~load_bank),
                ]

        # One register stage (for timing: the beat comes from outside) then column c is
        # delayed c more cycles, as the activations are. The last beat of a tile, accepted
        # in cycle k, is shifted into column c at the end of cycle k + 1 + c; a row accepted
        # in cycle k + 1 (the first cycle `full` shows it) reaches PE[0][c] in k + 2 + c.
        shift0 = Signal()
        shift_bank0 = Signal()
        beat0 = Signal(weight_layout(config))
        m.d.sync += [
            shift0.eq(weight_taken),
            shift_bank0.eq(load_bank),
            beat0.eq(self.weights.payload),
        ]
        for c in range(Cp):
            shift = _delayed(m, shift0, c, f"shift_c{c}")
            shift_bank = _delayed(m, shift_bank0, c, f"shift_bank_c{c}")
            beat = _delayed(m, beat0[c], c, f"weight_c{c}")
            m.d.comb += rows[R - 1].weight_lane(rows[R - 1].weight_in, c).eq(beat)
            for row in rows:
                m.d.comb += [row.weight_shift[c].eq(shift), row.weight_bank[c].eq(shift_bank)]
        # Upward chain: the bottom row takes the beats, every other row its lower
        # neighbour's weights, so the first beat (row 0) ends up in PE[0][c].
        for r in range(R - 1):
            m.d.comb += rows[r].weight_in.eq(rows[r + 1].weight_out)

        # -- activation acceptance -------------------------------------------------------
        bank_full = full.bit_select(act_bank, 1)
        m.d.comb += self.acts.ready.eq(bank_full & credit_ok & ~in_reset)
        act_taken = self.acts.valid & self.acts.ready
        act_last = self.acts.payload.last
        with m.If(act_taken & act_last):
            m.d.sync += [
                full.bit_select(act_bank, 1).eq(0),
                draining.bit_select(act_bank, 1).eq(1),
                act_bank.eq(~act_bank),
            ]

        # Control delay line: ctl[s] describes, in cycle t + s, the row accepted in cycle t
        # (ctl[0] is the acceptance itself). Valid and last ride here, not in the PEs.
        ctl_layout = data.StructLayout({"valid": 1, "last": 1, "bank": 1})
        ctl = [Signal(ctl_layout, name="ctl_s0")]
        m.d.comb += [ctl[0].valid.eq(act_taken), ctl[0].last.eq(act_last),
                     ctl[0].bank.eq(act_bank)]
        for s in range(1, R + Cp + PRODUCT_LATENCY + 1):
            ctl.append(Signal(ctl_layout, name=f"ctl_s{s}"))
            m.d.sync += ctl[s].eq(ctl[s - 1])

        # A bank is free again once its tile's last row has read it everywhere. That row
        # (accepted in cycle t) reads PE[R-1][c] last, in cycle t + R + c; a beat accepted in
        # cycle k first changes column c at the end of cycle k + 1 + c. So k = t + R - 1 is
        # the first safe beat: clear `draining` at the end of cycle t + R - 2, i.e. when the
        # row is at ctl[R - 2]. (For R = 2 that is the acceptance cycle itself; this
        # statement comes after the one that sets `draining`, so it wins.)
        drain = ctl[R - 2]
        with m.If(drain.valid & drain.last):
            m.d.sync += draining.bit_select(drain.bank, 1).eq(0)

        # Input register and skew: lane r reaches PE[r][0] in cycle t + 1 + r, with the
        # bank it is to use. Rows that were not accepted flow through too (the PEs have no
        # enable); nothing downstream looks at them because ctl says they are not valid.
        in_data = Signal(data.ArrayLayout(signed(ow), R))
        in_bank = Signal()
        m.d.sync += [in_data.eq(self.acts.payload.data), in_bank.eq(act_bank)]
        for r in range(R):
            m.d.comb += [
                rows[r].act_in.eq(_delayed(m, in_data[r], r, f"act_r{r}")),
                rows[r].bank_in.eq(_delayed(m, in_bank, r, f"bank_r{r}")),
            ]

        # Partial sums: zero into the top row, down each column.
        m.d.comb += rows[0].psum_in.eq(0)
        for r in range(1, R):
            m.d.comb += rows[r].psum_in.eq(rows[r - 1].psum_out)

        # -- output de-skew and FIFO -----------------------------------------------------
        # Column c's sum leaves PE[R-1][c] in cycle t + R + 1 + L + c (L = PRODUCT_LATENCY);
        # delayed Cp - 1 - c cycles, every column is there in cycle t + R + Cp + L, with
        # ctl[R + Cp + L].
        m.submodules.result_fifo = fifo = StreamFIFO(result_layout(config), depth)
        out = ctl[R + Cp + PRODUCT_LATENCY]
        for c in range(Cp):
            column = _delayed(m, rows[R - 1].psum_lane(rows[R - 1].psum_out, c), Cp - 1 - c,
                              f"psum_c{c}")
            m.d.comb += fifo.w.payload.data[c].eq(column)
        # The credits guarantee fifo.w.ready whenever out.valid (see credits_used).
        m.d.comb += [fifo.w.payload.last.eq(out.last), fifo.w.valid.eq(out.valid)]
        wiring.connect(m, fifo.r, wiring.flipped(self.results))

        result_taken = self.results.valid & self.results.ready
        with m.If(act_taken & ~result_taken):
            m.d.sync += credits_used.eq(credits_used + 1)
        with m.Elif(~act_taken & result_taken):
            m.d.sync += credits_used.eq(credits_used - 1)

        # -- performance counters --------------------------------------------------------
        # Each cycle a row is waiting counts once: weights first (its tile is not loaded),
        # else output credit.
        with m.If(act_taken):
            m.d.sync += self.busy.eq(self.busy + 1)
        with m.If(self.acts.valid & ~bank_full):
            m.d.sync += self.weight_stalls.eq(self.weight_stalls + 1)
        with m.If(self.acts.valid & bank_full & ~credit_ok):
            m.d.sync += self.output_stalls.eq(self.output_stalls + 1)
        return m


class SystolicArray(wiring.Component):
    """Reconfigurable weight-stationary systolic array of ``rows`` x ``cols``
    :class:`~rpaccel.hw.pe.ProcessingElement`\\ s, split into ``partitions`` independent
    sub-arrays of ``rows`` x ``partition_cols`` (P = 1: one monolithic array).

    Every partition ``p`` computes its own matrix products at the same time as the others
    and has its own streams (``R = rows``, ``Cp = partition_cols``):

    Ports (each an array of P)
    --------------------------
    weights[p] : In(stream.Signature(weight_layout(config)))
        One weight row per beat, ``Cp`` lanes; a tile is exactly ``R`` beats, row 0 first.
        Row ``r`` multiplies input lane ``r``, lane ``c`` feeds output column ``c``. Tiles are
        used in order; tile ``n + 1`` loads while tile ``n`` computes (two banks).
    acts[p] : In(stream.Signature(act_layout(config)))
        One activation row of ``R`` lanes per beat; a tile's rows (any number >= 1) end with
        ``last = 1``. Tile ``n`` of activations uses tile ``n`` of weights.
    results[p] : Out(stream.Signature(result_layout(config)))
        For every activation row ``x``, in order, ``x @ W`` (``Cp`` values, exact modulo
        ``2**acc_width``) with ``last`` copied from ``x``.
    busy[p], weight_stalls[p], output_stalls[p] : Out(32)
        Free-running counters of cycles in which a row was accepted; a row was offered but
        its tile's weights were not loaded yet; a row was offered, its weights were there,
        but the output had no credit (the consumer of ``results`` is behind).

    Latency :func:`pipeline_latency` = ``R + Cp + 4`` cycles from a row's acceptance to its
    result. Throughput one row per cycle per partition, across tile boundaries too, for
    tiles of at least ``2R - 2`` rows when the weights keep up; in general a tile of ``B``
    rows takes ``max(B, R, (B + 2R - 2) / 2)`` cycles in steady state (a bank may be
    reloaded ``R - 1`` cycles after its tile's last row, and loading takes ``R`` beats).
    There is no invalid input: any number of rows per tile (>= 1) is valid, a tile of
    weights is always ``R`` beats, and each stream simply waits (``ready`` low) until the
    array can take it. Rows offered before their tile's weights wait for them.

    Reset: while ``rst`` is asserted ``weights[p].ready`` and ``acts[p].ready`` are low (no
    beat is taken) and ``results[p].valid`` is low (nothing is offered); reset empties the
    banks, the pipeline and the output FIFO and clears the counters, so the first beat after
    it starts a new tile. Verilog: each partition, each row of PEs and the PE are one module
    each, instantiated (``hw/shared.py``), so even the 128 x 128 ``paper`` array generates
    in seconds.
    """

    def __init__(self, config: AccelConfig):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {config!r}")
        self._config = config
        P = config.partitions
        super().__init__({
            "weights": In(stream.Signature(weight_layout(config))).array(P),
            "acts": In(stream.Signature(act_layout(config))).array(P),
            "results": Out(stream.Signature(result_layout(config))).array(P),
            "busy": Out(PERF_COUNTER_WIDTH).array(P),
            "weight_stalls": Out(PERF_COUNTER_WIDTH).array(P),
            "output_stalls": Out(PERF_COUNTER_WIDTH).array(P),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def partitions(self) -> int:
        return self._config.partitions

    @property
    def latency(self) -> int:
        """See :func:`pipeline_latency`."""
        return pipeline_latency(self._config)

    @property
    def result_fifo_depth(self) -> int:
        """See :func:`result_fifo_depth`."""
        return result_fifo_depth(self._config)

    def elaborate(self, platform):
        m = Module()
        for p in range(self._config.partitions):
            part = add_shared(m, platform, f"partition{p}", "partition",
                              SystolicPartition(self._config))
            wiring.connect(m, wiring.flipped(self.weights[p]), part.weights)
            wiring.connect(m, wiring.flipped(self.acts[p]), part.acts)
            wiring.connect(m, part.results, wiring.flipped(self.results[p]))
            m.d.comb += [
                self.busy[p].eq(part.busy),
                self.weight_stalls[p].eq(part.weight_stalls),
                self.output_stalls[p].eq(part.output_stalls),
            ]
        return m
