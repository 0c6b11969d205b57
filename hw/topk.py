"""Exact streaming top-k filter: keeps the ``k`` best (score, candidate id) pairs of a query.

The payload layouts (defined in ``rpaccel.hw.topk_common``, re-exported here) are
module-level functions of the configuration, so testbenches and the host pack and unpack
beats with the hardware's own layouts (``score_layout(config).const({...}).as_bits()``),
never by re-deriving bit positions.
"""

from amaranth import Module, Mux, ResetSignal, Signal

from rpaccel.hw.config import AccelConfig

from .topk_common import (ERROR_COUNTER_WIDTH, TopKPorts, _k_out_of_range, _rank_key, _unkey,
                          k_shape, result_layout, score_layout)
from .topk_heap import BANK_SLOT_CYCLES, HeapTopK

__all__ = ["TopKFilter", "TopKPorts", "InsertionTopK", "score_layout", "result_layout", "k_shape",
           "topk_structure", "first_result_delays", "error_result_delay", "input_interval",
           "INSERTION_MAX", "ERROR_COUNTER_WIDTH"]

#: Largest ``topk_max`` built as the parallel insertion array; above it the pipelined heap
#: (:mod:`rpaccel.hw.topk_heap`). docs/architecture.md ("Top-k filter") gives the figures.
INSERTION_MAX = 32


def _beats(m: Module, key_a, key_b):
    """A 1-bit signal, high when ``key_a > key_b`` (both unsigned, equal widths).

    Written as the borrow of ``key_b - key_a`` so that yosys maps it to one plain carry
    chain; its ``>`` is split into a shorter chain plus a LUT tree on ECP5, which measured
    slower.
    """
    diff = Signal(len(key_a) + 1, name=f"diff_{key_a.name}_{key_b.name}")
    m.d.comb += diff.eq(key_b - key_a)
    return diff[-1]


def topk_structure(config: AccelConfig) -> str:
    """``"insertion"`` (parallel insertion array) for ``topk_max <= INSERTION_MAX``, else
    ``"heap"`` (``topk_heaps`` pipelined heaps in memories)."""
    return "insertion" if config.topk_max <= INSERTION_MAX else "heap"


def input_interval(config: AccelConfig) -> int:
    """Cycles per candidate within a query when candidates are offered on every cycle: 1 for
    the insertion array; for the heaps :data:`~rpaccel.hw.topk_heap.BANK_SLOT_CYCLES` (8)
    divided by ``topk_heaps``, since each bank of a heap issues an operation every eighth
    cycle. Exactly: each heap takes one candidate per eight cycles, so the candidate
    ``topk_heaps`` places after one is accepted at most ``topk_heaps * input_interval``
    cycles after it, for the insertion array one cycle (two heaps may alternate unequal
    steps; a query's first two candidates may come closer, as the buffer issues as it
    fills)."""
    if topk_structure(config) == "insertion":
        return 1
    return BANK_SLOT_CYCLES // config.topk_heaps


def first_result_delays(config: AccelConfig, n: int, k: int) -> tuple[int, ...]:
    """The possible numbers of cycles from a valid query's last candidate transfer to its
    first result's, with ``topk.ready`` high and the unit otherwise idle (the previous
    queries' results gone); the results then follow one per cycle.

    Insertion array: always :attr:`InsertionTopK.LATENCY` (4). Heap: ``8 * L + 8`` to
    ``8 * L + 15`` with ``L = min(k, ceil(n / H))``, the larger heap's size, ``H`` =
    :attr:`~rpaccel.hw.config.AccelConfig.topk_heaps`: each heap pops one entry per bank
    slot (eight cycles); which of the eight depends on where in its slot the last candidate
    arrives (always ``8 * L + 15`` with one heap at the full input rate, where every
    candidate is taken on its bank's issue cycle); three of the cycles are the merge's
    lookahead, which reads each sorted array ahead of the comparison through the block
    RAM's output register. A query with a bad ``k`` is answered
    :func:`error_result_delay` cycles after its last beat instead.
    """
    if topk_structure(config) == "insertion":
        return (InsertionTopK.LATENCY,)
    heap = min(k, -(-n // config.topk_heaps))
    return tuple(BANK_SLOT_CYCLES * heap + 8 + i for i in range(BANK_SLOT_CYCLES))


def error_result_delay(config: AccelConfig) -> int:
    """Cycles from the last beat of a query with ``k = 0`` or ``k > topk_max`` to its error
    beat, with ``topk.ready`` high and the unit otherwise idle: 4 for the insertion array,
    :attr:`~rpaccel.hw.topk_heap.HeapTopK.ERROR_LATENCY` (5) for the heaps, whose bank goes
    through its pop phase without popping."""
    if topk_structure(config) == "insertion":
        return InsertionTopK.LATENCY
    return HeapTopK.ERROR_LATENCY


class InsertionTopK(TopKPorts):
    """Exact top-k on a parallel insertion array, one candidate per cycle: the structure
    :class:`TopKFilter` uses for ``topk_max <= INSERTION_MAX``.

    Same ports, payloads and error behaviour as :class:`TopKFilter`, whose docstring is the
    contract; this one gives the timing and the structure. ``scores.ready`` is low only
    while the unit cannot take another beat (see *Throughput*).

    Latency
    -------
    :attr:`LATENCY` = 4. With ``topk.ready`` held high and the previous query's results
    gone, if the last beat of a query is transferred on cycle ``t``, result ``j`` (0-based)
    is transferred on cycle ``t + LATENCY + j``: the first on ``t + 4``, the final one on
    ``t + 3 + min(k, N)``, within ``k + LATENCY`` cycles of the last input. An error beat
    comes on ``t + 4``. The cycles: stage P compares the beat with every cell (``t + 1``),
    stage I inserts it (``t + 2``), the sorted query moves to the output bank (``t + 3``),
    which offers its first result (``t + 4``).

    Throughput
    ----------
    One candidate per cycle within a query, for any ``k``. Four stages, each holding one
    item: the input register (stage P), the insertion register (stage I), the *insertion
    bank* (``topk_max`` cells) that sorts the query being received, and the *output bank*
    (``topk_max`` cells) that shifts out the previous query's results, so the next query
    streams in while results drain. The cycle after a query's last beat is inserted, the
    insertion bank is copied into the output bank in parallel if that one is empty, and on
    that same cycle it already takes the next query's first beat. If the output bank is
    still busy, the finished query waits in the insertion bank, the next query's first beat
    in stage I, the beat after it in stage P, and ``ready`` is low until the cycle after the
    last result leaves. So, with the output ready, back-to-back queries run at one beat per
    cycle whenever each query has more beats than the previous one has results
    (``N > min(k_prev, N_prev)``); a steady stream of equal queries takes
    ``max(N, min(k, N) + 1)`` cycles per query. Output backpressure stalls the output bank,
    and the input only once a finished query is waiting for it.

    Implementation and cost
    -----------------------
    The insertion bank is a parallel insertion array: each of its ``topk_max`` cells
    compares its entry with the candidate (one ``acc_width + id_width``-bit comparison per
    cell, on the rank keys of :func:`_rank_key`); the cells the candidate beats shift one
    place down and the candidate lands in the first of them, so after every beat the bank
    holds the best ``min(N, topk_max)`` candidates so far, sorted. Cells store rank keys,
    not (score, id), so no inverter sits between a register and a comparator; the output
    turns the key back into (score, id). Per stored bit a cell is a 2:1 multiplexer behind
    a per-cell clock enable, and the output bank is a shift register with parallel load
    (another 2:1 multiplexer): about one LUT4 per bank flip-flop. Area is ``O(topk_max)``:
    ``topk_max + 1`` comparators (carry chains) and ``2 * topk_max * (acc_width + id_width)``
    bank flip-flops; the output bank (half of them) is the price of overlapping a query's
    input with the previous one's output.

    Three of the four latency cycles buy clock rate and area, measured with
    ``rpaccel synth --target ecp5-85k`` (figures in docs/architecture.md):

    * The comparisons run one cycle ahead, in stage P, against the bank as it is and
      against the beat stage I is inserting; stage I picks the right registered result per
      cell (the cell kept its entry, took the one above, or took the inserted beat). So the
      candidate's broadcast to every comparator and the carry chain end at flip-flops, and
      stage I's path is a few LUTs from flip-flops to the cells' clock enables. Costs one
      more comparator and ``3 * topk_max`` flip-flops; on ``default`` it took Fmax from
      86 MHz to 103 MHz, and storing keys with subtraction-borrow comparators (one clean
      carry chain each, see :func:`_beats`) to 130 MHz with 27% fewer LUT4s.
    * Stage P registers the input, so every path is register to register and ``ready``
      never steers thousands of clock enables combinationally.
    * The output bank loads the insertion bank one cycle after the last insertion; loading
      the insertion network's next state instead needs a 3:1 multiplexer in front of both
      banks, 2.7x the LUT4s on the ``tiny`` preset (yosys ``synth_ecp5``, plus wide-mux
      cells).

    Alternatives: a systolic priority queue keeps every connection local (higher Fmax at
    large ``topk_max``, similar area), but the last candidate settles in cell ``j`` only
    ``j`` cycles after entering, so a constant latency needs a read-out that follows that
    wave; a bitonic network sorts several candidates per cycle with ``O(n log^2 n)``
    comparators; the published RecPipe artifact's histogram threshold is cheaper but
    neither exact nor sorted.
    """

    #: Cycles from the last input beat's transfer to the first result's (see *Latency*).
    LATENCY = 4

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        K, aw, iw = cfg.topk_max, cfg.acc_width, cfg.id_width
        W = aw + iw                          # width of a rank key

        def keys(prefix):
            # Data registers need no reset: a cell's contents only count while it is valid
            # (insertion bank) or while `remaining` says so (output bank).
            return [Signal(W, name=f"{prefix}_key{i}", reset_less=True) for i in range(K)]

        # Insertion bank: cells 0..K-1, best first; the valid cells are a prefix.
        a_valid = [Signal(name=f"ins_valid{i}") for i in range(K)]
        a_key = keys("ins")
        # Output bank: cell 0 is the beat offered on `topk`; shifts up on every result taken.
        b_key = keys("out")
        b_error = Signal()
        busy = Signal()                      # the output bank holds results (remaining != 0)
        remaining = Signal(range(K + 1))     # beats still to emit from the output bank

        # -- stage P: input register; compares its beat with every cell ------------------------
        p_key = Signal(W, reset_less=True)
        p_k = Signal(k_shape(cfg), reset_less=True)
        p_last = Signal(reset_less=True)
        p_valid = Signal()
        p_first = Signal()                   # the beat is the first of its query
        p_bad = Signal()                     # the beat belongs to a query with k out of range
        in_first = Signal(init=1)            # the next input beat starts a query
        in_bad = Signal()                    # the query being received has k out of range
        in_bad_now = Signal()
        advance = Signal()                   # stage P's beat moves on to stage I this cycle
        accept = Signal()
        payload = self.scores.payload
        m.d.comb += [
            self.scores.ready.eq(~p_valid | advance),
            accept.eq(self.scores.valid & self.scores.ready),
            in_bad_now.eq(Mux(in_first, _k_out_of_range(payload.k, K), in_bad)),
        ]
        with m.If(accept):
            m.d.sync += [p_key.eq(_rank_key(payload.score, payload.id)), p_k.eq(payload.k),
                         p_last.eq(payload.last), p_valid.eq(1), p_first.eq(in_first),
                         p_bad.eq(in_bad_now), in_first.eq(payload.last), in_bad.eq(in_bad_now)]
        with m.Elif(advance):
            m.d.sync += p_valid.eq(0)

        # -- stage I: inserts its beat into the insertion bank ---------------------------------
        c_key = Signal(W, reset_less=True)
        c_k = Signal(k_shape(cfg), reset_less=True)
        c_last = Signal(reset_less=True)
        c_valid = Signal()
        c_first = Signal()
        c_bad = Signal()
        # State of the query in (or just finished in) the insertion bank.
        k_reg = Signal(k_shape(cfg))         # its k, from its first beat
        bad_reg = Signal()                   # its k is out of range
        seen = Signal(range(K + 1))          # its beats so far, saturating at K
        done = Signal()                      # it is complete and waits for the output bank
        errors = Signal(ERROR_COUNTER_WIDTH)

        transfer = Signal()
        take = Signal()                      # stage I consumes its beat this cycle
        insert = Signal()
        m.d.comb += [
            # A finished query moves to the output bank as soon as that one is empty; the
            # insertion bank takes the next query's first beat on that same cycle (the output
            # bank reads it before the edge), and holds that beat while it cannot move.
            transfer.eq(done & ~busy),
            take.eq(c_valid & ~(done & busy)),
            insert.eq(take & ~c_bad),
            advance.eq(p_valid & (~c_valid | take)),
        ]
        with m.If(advance):
            m.d.sync += [c_key.eq(p_key), c_k.eq(p_k), c_last.eq(p_last), c_valid.eq(1),
                         c_first.eq(p_first), c_bad.eq(p_bad)]
        with m.Elif(take):
            m.d.sync += c_valid.eq(0)

        # -- comparisons, one cycle ahead ----------------------------------------------------
        # Stage P compares its beat with every cell of the bank as it is now (ahead[i]) and
        # with the beat stage I is inserting now (ahead_c), and registers the results; stage I
        # also registers how each cell changes (moved: the cell is rewritten; from_prev: with
        # the cell above it, otherwise with the inserted beat). Next cycle stage P's beat is
        # in stage I and each cell holds what it held, what the cell above it held, or the
        # inserted beat, so "the beat beats cell i" is one of three registered bits: the
        # comparators' carry chains end at flip-flops, and stage I's path is a few LUTs from
        # flip-flops to the cells' clock enables.
        ahead = [Signal(name=f"ahead{i}") for i in range(K)]
        ahead_c = Signal()
        m.d.sync += [ahead[i].eq(_beats(m, p_key, a_key[i])) for i in range(K)]
        m.d.sync += ahead_c.eq(_beats(m, p_key, c_key))
        moved = [Signal(name=f"moved{i}") for i in range(K)]
        from_prev = [Signal(name=f"from_prev{i}") for i in range(K)]

        # better[i]: stage I's beat goes before cell i. That is only used when the beat is
        # inserted, and then it came from stage P on the previous cycle (only a query's first
        # beat can wait in stage I, and a first beat sees every cell as empty, so the previous
        # query never has to be cleared out).
        better = [Signal(name=f"better{i}") for i in range(K)]
        for i in range(K):
            beats_cell = Mux(moved[i], Mux(from_prev[i], ahead[i - 1], ahead_c) if i else ahead_c,
                             ahead[i])
            m.d.comb += better[i].eq(c_first | ~a_valid[i] | beats_cell)
        m.d.sync += [moved[i].eq(insert & better[i]) for i in range(K)]
        m.d.sync += [from_prev[i].eq(better[i - 1]) for i in range(1, K)]
        for i in range(K):
            # `better` is monotonic (false, ..., false, true, ..., true) because the valid
            # cells are a sorted prefix: the cells the beat beats shift down one place and
            # the beat lands in the first of them. Each cell is a 2:1 multiplexer behind a
            # clock enable.
            with m.If(insert & better[i]):
                if i == 0:
                    m.d.sync += [a_valid[0].eq(1), a_key[0].eq(c_key)]
                else:
                    m.d.sync += [
                        a_valid[i].eq(Mux(better[i - 1], a_valid[i - 1] & ~c_first, 1)),
                        a_key[i].eq(Mux(better[i - 1], a_key[i - 1], c_key)),
                    ]
        with m.If(take):
            with m.If(c_first):
                m.d.sync += [k_reg.eq(c_k), bad_reg.eq(c_bad), seen.eq(1)]
            with m.Elif(seen != K):
                m.d.sync += seen.eq(seen + 1)
        with m.If(take & c_last):
            m.d.sync += done.eq(1)
        with m.Elif(transfer):
            m.d.sync += done.eq(0)

        # -- stage O: output bank -------------------------------------------------------------
        taken = Signal()
        m.d.comb += taken.eq(self.topk.valid & self.topk.ready)
        with m.If(transfer):
            m.d.sync += [b_key[i].eq(a_key[i]) for i in range(K)]
            # A valid query has k >= 1 and N >= 1, so the bank is never loaded empty.
            m.d.sync += [
                busy.eq(1),
                remaining.eq(Mux(bad_reg, 1, Mux(k_reg < seen, k_reg, seen))),
                b_error.eq(bad_reg),
                errors.eq(errors + bad_reg),
            ]
        with m.Elif(taken):
            m.d.sync += [busy.eq(remaining != 1), remaining.eq(remaining - 1)]
            m.d.sync += [b_key[i].eq(b_key[i + 1]) for i in range(K - 1)]

        score, cand_id = _unkey(b_key[0], aw, iw)
        m.d.comb += [
            self.topk.valid.eq(busy),
            self.topk.payload.score.eq(Mux(b_error, 0, score)),
            self.topk.payload.id.eq(Mux(b_error, 0, cand_id)),
            self.topk.payload.last.eq(remaining == 1),
            self.topk.payload.error.eq(b_error),
            self.errors.eq(errors),
        ]
        return m


class TopKFilter(TopKPorts):
    """Exact top-k of a stream of (score, id) candidates, one candidate every
    :func:`input_interval` cycles, for any ``k`` up to ``topk_max`` chosen per query.

    A query is a packet of ``N >= 1`` beats on ``scores``, the last one marked ``last``. The
    unit emits its ``min(k, N)`` best candidates on ``topk``, best first, ``last`` on the
    final one. Better means a higher score; equal scores go to the lower id, exactly as
    ``rpaccel.sim.numerics.topk`` (docs/numerics.md). ``k`` is read on the first beat of
    each packet; its value on later beats is ignored.

    Ports
    -----
    scores : In(stream.Signature(score_layout(config)))
        Candidates. ``ready`` is a function of registers (and ``rst``) only, never of
        ``valid`` or the payload.
    topk : Out(stream.Signature(result_layout(config)))
        Results, sorted best first; ``error`` is 0 on every result beat.
    errors : Out(unsigned(ERROR_COUNTER_WIDTH))
        Number of rejected queries since reset (wraps); a query is counted on the cycle its
        error beat is first offered.

    Bad input
    ---------
    A query whose ``k`` is 0 or larger than ``topk_max`` is rejected: all of its beats are
    consumed and discarded, exactly one beat with ``error=1, last=1`` (score and id 0) is
    emitted in its place, in order with the other queries' results, ``errors`` counts it,
    and the next query is processed normally. Nothing hangs.

    Reset
    -----
    While ``rst`` is high ``scores.ready`` and ``topk.valid`` are low: nothing is accepted
    (so nothing is lost) and nothing is offered. A query cut by a reset is forgotten; the
    first beat after it starts a new query.

    Structure, latency and throughput
    ---------------------------------
    :func:`topk_structure` picks the implementation from ``topk_max``:
    :class:`InsertionTopK` (a parallel insertion array, ``O(topk_max)`` logic, results
    :attr:`InsertionTopK.LATENCY` = 4 cycles after the last candidate) up to
    :data:`INSERTION_MAX`, :class:`~rpaccel.hw.topk_heap.HeapTopK` (``H = topk_heaps``
    pipelined heaps in memories, ``O(H log topk_max)`` logic, first result about
    ``8 * min(k, ceil(N / H))`` cycles after the last candidate) above. The insertion array
    takes one candidate per cycle within a query at any ``k``, two heaps one per four cycles,
    one heap one per eight (:func:`input_interval`); all overlap consecutive queries; their
    docstrings give the exact timing.
    """


    @property
    def structure(self) -> str:
        return topk_structure(self._config)

    def elaborate(self, platform):
        m = Module()
        if self.structure == "insertion":
            core = InsertionTopK(self._config)
        else:
            core = HeapTopK(self._config)
        m.submodules.core = core
        # During reset the registers still hold their old values for a cycle: gate the
        # handshakes combinationally so that nothing is taken or offered.
        rst = ResetSignal()
        m.d.comb += [
            core.scores.valid.eq(self.scores.valid & ~rst),
            core.scores.payload.eq(self.scores.payload),
            self.scores.ready.eq(core.scores.ready & ~rst),
            self.topk.valid.eq(core.topk.valid & ~rst),
            self.topk.payload.eq(core.topk.payload),
            core.topk.ready.eq(self.topk.ready),
            self.errors.eq(core.errors),
        ]
        return m
