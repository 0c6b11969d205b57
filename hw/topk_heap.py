"""Pipelined-heap top-k: the structure :class:`~rpaccel.hw.topk.TopKFilter` uses for large
``topk_max`` (docs/architecture.md, "Top-k filter", says when and why).

Entries live in memories (block RAM on ECP5 for the deep levels) and the logic is one
pipeline stage per heap level, so area grows with ``log2(topk_max)`` in logic and linearly
only in memory bits.
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory

from .config import AccelConfig
from .topk_common import ERROR_COUNTER_WIDTH, TopKPorts, k_shape
from .topk_common import _k_out_of_range, _rank_key as rank_key, _unkey as unkey

__all__ = ["HeapTopK", "heap_levels", "BANK_SLOT_CYCLES"]

#: Cycles between two operations of one bank of a heap: an operation spends four cycles on
#: each level (two read cycles, a compare cycle, a write cycle), and the next operation of
#: its bank may read a level only once the previous one has written it.
BANK_SLOT_CYCLES = 8

# Phases of a query in one of the two banks.
_FREE, _INSERT, _POP, _OUT = range(4)


def beats(m: Module, a, b, name: str):
    """A 1-bit signal, high when unsigned ``a > b``: the borrow of ``b - a`` (one carry
    chain on ECP5, as in the insertion array)."""
    diff = Signal(max(len(a), len(b)) + 1, name=f"{name}_diff")
    m.d.comb += diff.eq(b - a)
    return diff[-1]


def heap_levels(config: AccelConfig) -> int:
    """Levels of each heap (pipeline stages): ``bit_length(topk_max)``."""
    return config.topk_max.bit_length()


class _LevelStore:
    """One side (left or right children) of one heap level of one bank: a memory whose read
    address is set on a write cycle (``load`` high) and whose word ``r_data`` holds through
    the two read cycles after it and the compare cycle. A write on that write cycle to the
    same word must be seen (see :class:`HeapTopK`). Up to two words are flip-flops. Deeper
    ones, up to ``lutram_words``
    (:attr:`~rpaccel.hw.config.AccelConfig.topk_lutram_words`), are a ``Memory`` read
    asynchronously at an address registered on the write cycle: distributed RAM, up to date
    by construction (nothing writes it in the cycles it is read). Deeper still, a block RAM
    read synchronously into a register that yosys's netlist gives to the block RAM's own
    output register (`gen/ebr_outreg.py`): the 5.6 ns clock-to-output of an ECP5 block RAM
    without it ends in the first read cycle, and the second starts from a register. The
    port is not transparent (the output register takes only the read data); the write of
    the same edge reaches ``r_data`` through a bypass register instead. A LUT RAM word of
    the deepest level costs about as much as the rest of the level's logic, and the top
    level of `default` does not fit the ECP5-85k's LUTs with every level in them."""

    def __init__(self, m: Module, name: str, width: int, depth: int, lutram_words: int,
                 load):
        self.depth = depth
        self.r_addr = Signal(range(max(depth, 2)), name=f"{name}_raddr")
        self.w_en = Signal(name=f"{name}_wen")
        self.w_addr = Signal(range(max(depth, 2)), name=f"{name}_waddr")
        self.w_data = Signal(width, name=f"{name}_wdata")
        self.r_data = Signal(width, name=f"{name}_rdata")
        if depth == 0:
            return
        def registered_address():
            """The read address as set on the write cycle (flip-flop and LUT RAM levels)."""
            r_addr_q = Signal.like(self.r_addr, name=f"{name}_raddr_q", reset_less=True)
            with m.If(load):
                m.d.sync += r_addr_q.eq(self.r_addr)
            return r_addr_q

        if depth <= 2:
            words = [Signal(width, name=f"{name}_w{i}", reset_less=True) for i in range(depth)]
            for i, word in enumerate(words):
                with m.If(self.w_en & (self.w_addr == i)):
                    m.d.sync += word.eq(self.w_data)
            m.d.comb += self.r_data.eq(Array(words)[registered_address()] if depth == 2
                                       else words[0])
            return
        block = depth > lutram_words
        # ram_style pins yosys's choice, which would otherwise follow its cost estimate;
        # no_rw_check: what a block RAM reads on the edge it writes the same word does not
        # matter (the bypass below takes the write), so yosys builds no collision logic
        # (which would sit between the block RAM and its output register)
        mem = Memory(shape=width, depth=depth, init=[],
                     attrs={"ram_style": "block", "no_rw_check": 1} if block
                     else {"ram_style": "distributed"})
        m.submodules[name] = mem
        wp = mem.write_port()
        m.d.comb += [wp.en.eq(self.w_en), wp.addr.eq(self.w_addr), wp.data.eq(self.w_data)]
        if not block:
            rp = mem.read_port(domain="comb")
            m.d.comb += [rp.addr.eq(registered_address()), self.r_data.eq(rp.data)]
            return
        rp = mem.read_port()
        out_q = Signal(width, name=f"{name}_outq", reset_less=True)   # the output register
        hit = Signal(name=f"{name}_hit", reset_less=True)
        bypass = Signal(width, name=f"{name}_bypass", reset_less=True)
        m.d.comb += rp.addr.eq(self.r_addr)
        m.d.sync += out_q.eq(rp.data)
        with m.If(load):
            m.d.sync += [hit.eq(self.w_en & (self.w_addr == self.r_addr)),
                         bypass.eq(self.w_data)]
        # out_q holds the word in the second read cycle (the one that uses it)
        m.d.comb += self.r_data.eq(Mux(hit, bypass, out_q))


class HeapTopK(TopKPorts):
    """Exact streaming top-k on one or two pipelined binary min-heaps in memories.

    Same ports, payloads and error behaviour as :class:`~rpaccel.hw.topk.TopKFilter`
    (whose docstring is the contract); this docstring describes the structure and timing.

    Structure
    ---------
    With two heaps (``topk_heaps = 2``) candidates of a query alternate between them (even
    beats to heap 0, odd to heap 1); each heap keeps the best ``min(k, n_h)`` of its half as
    a min-heap of rank keys (the root is the worst kept), so together they hold the query's
    top ``k``. With one heap (``topk_heaps = 1``) every candidate goes to it and the output
    reads its sorted array without a merge: half the logic for half the input rate. A heap
    has ``L = bit_length(topk_max)`` levels, level ``l`` in its own memories (left and right
    children separately), and an operation enters at the root and moves down one level
    every four cycles:

    * first read cycle: block RAMs put the words addressed on the write cycle before into
      their output registers (a level in flip-flops or distributed RAM has nothing to do);
    * second read cycle: its node (top-down step) and the node's two children (sift-down
      step) go into registers, with whether each child is inside the heap;
    * compare cycle: the comparisons on those registers, their outcome into registers
      (which word the node takes, which key goes on, whether the operation goes on);
    * write cycle: the write of its node, the hand-over to the next level, and the read
      addresses of the next level (its next node and that node's children).

    So a cycle holds one memory read, one set of comparisons or one write, never two: a
    block RAM's clock-to-output ends in its output register, the carry chains start and end
    at registers. The next operation of the same bank comes eight cycles later
    (:data:`BANK_SLOT_CYCLES`): it reads a level on the edge the previous one writes it, and
    the write reaches it (a block RAM's through a bypass register, see :class:`_LevelStore`),
    so each operation sees the heap exactly as if the previous ones had finished.

    * While a heap holds fewer than ``k`` entries a candidate is inserted top-down along the
      path to the next free position (each node keeps the smaller of itself and the carried
      key); after that, a candidate better than the root replaces it and sifts down (a
      worse one is dropped). Positions at and beyond the heap's size are never read as
      entries, so nothing needs clearing between queries or after a reset.
    * When the query's last candidate is in, the heap is emptied worst first: each *pop*
      writes the root into a sorted array (at its rank, counted from the end, so the array
      is best first) and sifts a "removed" key (above every real key) down from the root.
    * The sorted arrays are merged into ``topk``, best first, ``min(k, N)`` beats. Each
      array is read ahead into a four-entry lookahead through the block RAM's output
      register, so the merge compares registers and the arrays' read addresses are counters
      (three cycles before the first result).

    Every resource is doubled into two *banks* that queries use alternately. A heap's
    issue slot (a four-phase ring and a half bit) gives each bank one issue cycle in eight,
    the two banks four cycles apart, so every level's logic is busy on every cycle: while
    one bank's operation is at level ``j``, the other bank's is at level ``j - 1`` or
    ``j + 1``, in the same phase.
    So one query's candidates go in while the previous query pops and the one before drains
    out. Two heaps issue on alternate read cycles.

    Timing (output always ready): one candidate per :func:`~rpaccel.hw.topk.input_interval`
    cycles within a query at any ``k`` (four with two heaps, eight with one; a query's first
    candidate and the one after it may come closer: the buffer issues as it fills); the
    first result comes ``8 * L + 8`` to ``8 * L + 15`` cycles after the last candidate,
    with ``L = min(k, ceil(N / H))`` the larger heap's size
    (:func:`~rpaccel.hw.topk.first_result_delays`); results then come one per cycle. A query
    with a bad ``k`` is answered :attr:`ERROR_LATENCY` cycles after its last beat. A query
    holds its bank from its first candidate until its last result is in the output
    register, so the next-but-one query waits for that.
    """

    #: Cycles from a bad query's last beat to its error beat (output ready, unit idle).
    ERROR_LATENCY = 5

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        K, aw, iw = cfg.topk_max, cfg.acc_width, cfg.id_width
        W = aw + iw                    # rank key
        V = W + 1                      # heap entry: {key, removed}
        REMOVED = 1 << W
        D = heap_levels(cfg)
        H = cfg.topk_heaps

        # Each heap has a free-running issue slot: a one-hot phase ring (first read cycle:
        # block RAMs fill their output registers; second read cycle: an operation issues at
        # the root, every level's words go into registers; compare cycle: every level
        # compares; write cycle: every level writes and sets its next read addresses) and a
        # half bit that turns after each write cycle. Bank b of heap h issues when the half
        # bit is b ^ h, so one bank's operations are eight cycles apart and two heaps issue on
        # alternate second read cycles. Every copy counts together; the input side and each heap
        # have their own (kept apart in synthesis), because one register selecting every bank
        # multiplexer of both heaps was the unit's critical path, its fan-out routed across the
        # device.
        def slot_copy(name):
            phase = Signal(4, init=1, name=f"{name}_phase", attrs={"keep": 1})
            half = Signal(name=f"{name}_half", attrs={"keep": 1})
            m.d.sync += phase.eq(phase.rotate_left(1))
            with m.If(phase[3]):
                m.d.sync += half.eq(~half)
            return phase, half
        in_phase, in_half = slot_copy("slot")

        # -- per-bank query state ---------------------------------------------------------
        state = [Signal(2, name=f"state{b}") for b in range(2)]
        q_k = [Signal(k_shape(cfg), name=f"k{b}") for b in range(2)]
        q_bad = [Signal(name=f"bad{b}") for b in range(2)]
        rx_done = [Signal(name=f"rx_done{b}") for b in range(2)]
        size = [[Signal(range(K + 1), name=f"size{b}_{h}") for h in range(H)] for b in range(2)]
        popped = [[Signal(range(K + 1), name=f"popped{b}_{h}") for h in range(H)]
                  for b in range(2)]

        # -- input: one-entry buffer per heap ---------------------------------------------
        buf_valid = [Signal(name=f"buf_valid{h}") for h in range(H)]
        buf_key = [Signal(W, name=f"buf_key{h}", reset_less=True) for h in range(H)]
        buf_bank = [Signal(name=f"buf_bank{h}") for h in range(H)]
        issuing = [Signal(name=f"issuing{h}") for h in range(H)]
        for h in range(H):
            bank_now = in_half ^ h
            m.d.comb += issuing[h].eq(buf_valid[h] & in_phase[1] & (buf_bank[h] == bank_now)
                                      & (Mux(bank_now, state[1], state[0]) == _INSERT))
        in_first = Signal(init=1)
        in_bank = Signal()
        in_par = Signal()              # heap of the next beat (two heaps)
        target = Signal()
        accept = Signal()
        bad_now = Signal()
        payload = self.scores.payload
        in_state = Mux(in_bank, state[1], state[0])
        room = [~buf_valid[h] | issuing[h] for h in range(H)]
        m.d.comb += [
            target.eq(~in_first & in_par if H == 2 else 0),
            self.scores.ready.eq(
                (Mux(target, room[1], room[0]) if H == 2 else room[0])
                & (~in_first | (in_state == _FREE))),
            accept.eq(self.scores.valid & self.scores.ready),
            bad_now.eq(Mux(in_first, _k_out_of_range(payload.k, K),
                           Mux(in_bank, q_bad[1], q_bad[0]))),
        ]
        for h in range(H):
            with m.If(accept & ~bad_now & (target == h)):
                m.d.sync += [buf_valid[h].eq(1), buf_key[h].eq(rank_key(payload.score, payload.id)),
                             buf_bank[h].eq(in_bank)]
            with m.Elif(issuing[h]):
                m.d.sync += buf_valid[h].eq(0)
        with m.If(accept):
            m.d.sync += [in_par.eq(~target), in_first.eq(payload.last)]
            with m.If(payload.last):
                m.d.sync += in_bank.eq(~in_bank)

        # -- the heaps ----------------------------------------------------------------------
        sorted_mems = []
        for h in range(H):
            sorted_mems.append(self._heap(m, h, slot_copy(f"slot_heap{h}"), state, q_k, size,
                                          popped, buf_key[h], issuing[h], W, V, REMOVED, D, K))

        # -- bank state machine ---------------------------------------------------------------
        for b in range(2):
            with m.Switch(state[b]):
                with m.Case(_FREE):
                    with m.If(accept & in_first & (in_bank == b)):
                        m.d.sync += [state[b].eq(_INSERT), q_k[b].eq(payload.k),
                                     q_bad[b].eq(bad_now), rx_done[b].eq(0),
                                     *(size[b][h].eq(0) for h in range(H)),
                                     *(popped[b][h].eq(0) for h in range(H))]
                with m.Case(_INSERT):
                    holds = [buf_valid[h] & (buf_bank[h] == b) for h in range(H)]
                    with m.If(rx_done[b] & ~Cat(*holds).any()):
                        m.d.sync += state[b].eq(_POP)
                with m.Case(_POP):
                    with m.If(Cat(*(popped[b][h] == size[b][h] for h in range(H))).all()):
                        m.d.sync += state[b].eq(_OUT)
            with m.If(accept & payload.last & (in_bank == b)):
                m.d.sync += rx_done[b].eq(1)

        # -- output: merge the two sorted arrays -------------------------------------------
        out_ptr = Signal()             # bank whose results go out next
        out_busy = Signal()
        emitted = Signal(range(K + 1))
        count = Signal(range(K + 1))   # results of the query going out
        out_err = Signal()
        o_valid = Signal()
        o_key = Signal(W, reset_less=True)
        o_last = Signal(reset_less=True)
        o_err = Signal(reset_less=True)
        errors = Signal(ERROR_COUNTER_WIDTH)
        advance = Signal()
        m.d.comb += advance.eq(~o_valid | self.topk.ready)
        with m.If(self.topk.valid & self.topk.ready):
            m.d.sync += o_valid.eq(0)

        ob_state = Mux(out_ptr, state[1], state[0])
        ob_size = [Mux(out_ptr, size[1][h], size[0][h]) for h in range(H)]
        ob_k = Mux(out_ptr, q_k[1], q_k[0])
        ob_bad = Mux(out_ptr, q_bad[1], q_bad[0])
        total = Signal(range(H * K + 1))
        m.d.comb += total.eq(sum(ob_size))

        # Each sorted array streams into a four-entry lookahead (`look[h]`, entry 0 its head)
        # read ahead of the merge: the merge compares two registers, and the memory's read
        # address is a counter that does not wait for the comparison. A read takes two
        # cycles (address, then the block RAM's output register `word[h]`); `occ` counts the
        # entries held plus the reads in flight, and a read is issued while it is below 4, so
        # one result per cycle never waits for the memory.
        LOOK = 4
        look = [[Signal(W, name=f"look{h}_{e}", reset_less=True) for e in range(LOOK)]
                for h in range(H)]
        word = [Signal(W, name=f"sorted_word{h}", reset_less=True) for h in range(H)]
        held = [Signal(range(LOOK + 1), name=f"held{h}") for h in range(H)]
        occ = [Signal(range(LOOK + 1), name=f"occ{h}") for h in range(H)]
        pend = [Signal(2, name=f"pend{h}") for h in range(H)]   # reads 1 and 2 cycles ago
        rd_addr = [Signal(range(2 * K), name=f"rd_addr{h}") for h in range(H)]
        rd_left = [Signal(range(K + 1), name=f"rd_left{h}") for h in range(H)]
        have = [held[h] != 0 for h in range(H)]
        done = [(occ[h] == 0) & (rd_left[h] == 0) for h in range(H)]
        # the head that goes out next: array 1's when it is better (two heaps), else array 0's
        take1 = Signal()
        if H == 2:
            m.d.comb += take1.eq(have[1] & (done[0] | beats(m, look[1][0], look[0][0], "merge")))
        fire = Signal()
        m.d.comb += fire.eq(out_busy & advance &
                            (out_err | Cat(*(have[h] | done[h] for h in range(H))).all()))
        for h, (_, rp) in enumerate(sorted_mems):
            pop = Signal(name=f"pop{h}")
            issue = Signal(name=f"issue{h}")
            m.d.comb += [pop.eq(fire & ~out_err & (take1 if h else ~take1)),
                         issue.eq(out_busy & (rd_left[h] != 0) & (occ[h] != LOOK)),
                         rp.addr.eq(rd_addr[h])]
            m.d.sync += [word[h].eq(rp.data), pend[h].eq(Cat(issue, pend[h][0])),
                         occ[h].eq(occ[h] + issue - pop),
                         held[h].eq(held[h] + pend[h][1] - pop)]
            with m.If(issue):
                m.d.sync += [rd_addr[h].eq(rd_addr[h] + 1), rd_left[h].eq(rd_left[h] - 1)]
            # the word read two cycles ago goes to the first free entry after this cycle's pop
            free = held[h] - pop
            for e in range(LOOK):
                keep = look[h][e + 1] if e < LOOK - 1 else look[h][e]
                shifted = Mux(pop, keep, look[h][e])
                m.d.sync += look[h][e].eq(Mux(pend[h][1] & (free == e), word[h], shifted))
        with m.If(~out_busy):
            with m.If(ob_state == _OUT):
                m.d.sync += [out_busy.eq(1), emitted.eq(0), out_err.eq(ob_bad),
                             count.eq(Mux(ob_bad, 1, Mux(total > ob_k, ob_k, total)))]
                for h in range(H):
                    m.d.sync += [rd_addr[h].eq(Mux(out_ptr, K, 0)), rd_left[h].eq(ob_size[h]),
                                 occ[h].eq(0), held[h].eq(0), pend[h].eq(0)]
        with m.Elif(fire):
            last = emitted == count - 1
            head = Mux(take1, look[1][0], look[0][0]) if H == 2 else look[0][0]
            m.d.sync += [o_valid.eq(1), o_key.eq(head),
                         o_last.eq(last), o_err.eq(out_err), emitted.eq(emitted + 1)]
            with m.If(last):
                m.d.sync += [out_busy.eq(0), out_ptr.eq(~out_ptr), errors.eq(errors + out_err)]
                for b in range(2):
                    with m.If(out_ptr == b):
                        m.d.sync += state[b].eq(_FREE)

        score, cand_id = unkey(o_key, aw, iw)
        m.d.comb += [
            self.topk.valid.eq(o_valid),
            self.topk.payload.score.eq(Mux(o_err, 0, score)),
            self.topk.payload.id.eq(Mux(o_err, 0, cand_id)),
            self.topk.payload.last.eq(o_last),
            self.topk.payload.error.eq(o_err),
            self.errors.eq(errors),
        ]
        return m

    def _heap(self, m, h, slot, state, q_k, size, popped, buf_key, issuing, W, V, REMOVED,
              D, K):
        """One heap (both banks): its level memories, its pipeline, its issue logic and its
        sorted-array memory. Returns (sorted memory write port, read port)."""
        phase, half = slot
        read = phase[1]                # second read cycle: issue, words into registers
        compare = phase[2]             # compare cycle: comparisons into registers
        write = phase[3]               # write cycle: write, hand over, next read addresses
        bank_now = half ^ h            # the bank that issues (on a read cycle)
        cur_state = Mux(bank_now, state[1], state[0])
        cur_size = Mux(bank_now, size[1][h], size[0][h])
        cur_popped = Mux(bank_now, popped[1][h], popped[0][h])
        cur_k = Mux(bank_now, q_k[1], q_k[0])

        # Level l >= 1 holds nodes 0 .. n_l - 1 (global positions 2**l - 1 + i).
        def nodes(level):
            return max(0, min(1 << level, K - (1 << level) + 1))
        store = {}
        for level in range(1, D):
            n = nodes(level)
            for b in range(2):
                for side in range(2):
                    store[level, b, side] = _LevelStore(
                        m, f"heap{h}_l{level}_b{b}_{'lr'[side]}", V, (n + 1 - side) // 2,
                        self._config.topk_lutram_words, write)
        root = [Signal(V, name=f"heap{h}_root{b}", reset_less=True) for b in range(2)]
        root_now = Mux(bank_now, root[1], root[0])

        # Stage registers: the operation at level j, loaded at the end of the write cycle
        # of level j - 1 (level 0: of its issue) and held through level j's read, compare
        # and write cycles (level 0 has no first read cycle: its words are registers).
        # `bank` is loaded whether or not the operation is valid, so the stage registers'
        # banks always alternate (the read addresses below rely on it).
        def op_signals(j):
            kw = {"reset_less": True}
            return {
                "valid": Signal(name=f"h{h}_s{j}_valid"),
                "bank": Signal(name=f"h{h}_s{j}_bank", **kw),
                "topdown": Signal(name=f"h{h}_s{j}_topdown", **kw),
                "v": Signal(V, name=f"h{h}_s{j}_v", **kw),
                "idx": Signal(max(j, 1), name=f"h{h}_s{j}_idx", **kw),
                "limit": Signal(range(K + 1), name=f"h{h}_s{j}_limit", **kw),
                "norm": Signal(D, name=f"h{h}_s{j}_norm", **kw),
                "tlevel": Signal(range(max(D, 2)), name=f"h{h}_s{j}_tlevel", **kw),
            }
        ops = [op_signals(j) for j in range(D)]

        # -- issue (second read cycle) --------------------------------------------------------
        pop = Signal(name=f"h{h}_pop")
        topdown = Signal(name=f"h{h}_topdown")
        replace = Signal(name=f"h{h}_replace")
        new_v = Cat(buf_key, 0)
        m.d.comb += [
            pop.eq(read & (cur_state == _POP) & (cur_popped != cur_size)),
            topdown.eq(issuing & (cur_size != cur_k)),
            replace.eq(issuing & (cur_size == cur_k) & beats(m, new_v, root_now, f"h{h}_rep")),
        ]
        # Top-down path to position `cur_size`: (pos + 1) << (D - 1 - level(pos)) puts its
        # leading one at bit D - 1; the bits below it are the left/right turns.
        pos1 = Signal(range(K + 2), name=f"h{h}_pos1")
        norm = Signal(D, name=f"h{h}_norm")
        tlevel = Signal(range(max(D, 2)), name=f"h{h}_tlevel")
        m.d.comb += pos1.eq(cur_size + 1)
        for level in range(D):
            with m.If(pos1[level]):
                m.d.comb += [tlevel.eq(level), norm.eq(pos1 << (D - 1 - level))]
        op0 = ops[0]
        with m.If(read):
            m.d.sync += [
                op0["valid"].eq(pop | topdown | replace),
                op0["bank"].eq(bank_now),
                op0["topdown"].eq(topdown),
                op0["v"].eq(Mux(pop, REMOVED, new_v)),
                op0["idx"].eq(0),
                op0["limit"].eq(cur_size),
                op0["norm"].eq(norm),
                op0["tlevel"].eq(tlevel),
            ]
        for b in range(2):
            with m.If(bank_now == b):
                with m.If(topdown):
                    m.d.sync += size[b][h].eq(size[b][h] + 1)
                with m.If(pop):
                    m.d.sync += popped[b][h].eq(popped[b][h] + 1)

        # Sorted array: best first, both banks (bank b at K*b ..). A bank's words are written
        # in its pop phase and read in its output phase, never on one edge, so no collision
        # logic (no_rw_check): the read data goes straight into the block RAM's output
        # register.
        sorted_mem = Memory(shape=W, depth=2 * K, init=[], attrs={"no_rw_check": 1})
        m.submodules[f"sorted{h}"] = sorted_mem
        s_wr = sorted_mem.write_port()
        s_rd = sorted_mem.read_port()
        rank = Signal(range(K), name=f"h{h}_rank")
        m.d.comb += [
            rank.eq(cur_size - 1 - cur_popped),
            s_wr.en.eq(pop),
            s_wr.addr.eq(Mux(bank_now, K + rank, rank)),
            s_wr.data.eq(root_now[:W]),
        ]

        # -- the pipeline ---------------------------------------------------------------------
        next_word = {}       # (level, "td"/"sd") -> word address issued for that level
        for j in range(D):
            op = ops[j]
            has_children = j + 1 < D
            # Read cycle: into `c_q[0]` the node itself for a top-down step, else its first
            # child, into `c_q[1]` its second child, and whether each child is inside the
            # heap. Level 0's operation issues on this cycle, so its stage registers are not
            # loaded yet: it reads the issuing bank's root and level 1 with the issue's values.
            c_q = [Signal(V, name=f"h{h}_s{j}_c{i}", reset_less=True) for i in range(2)]
            p_q = [Signal(name=f"h{h}_s{j}_p{i}", reset_less=True) for i in range(2)]
            if j == 0:
                bank, limit, first_child, is_topdown = bank_now, cur_size, 1, topdown
                own = root_now
            else:
                bank, limit, is_topdown = op["bank"], op["limit"], op["topdown"]
                first_child = Signal(range(1 << (j + 2)), name=f"h{h}_s{j}_child")
                m.d.comb += first_child.eq((1 << (j + 1)) - 1 + Cat(0, op["idx"][:j]))
                own = Mux(bank,
                          Mux(op["idx"][0], store[j, 1, 1].r_data, store[j, 1, 0].r_data),
                          Mux(op["idx"][0], store[j, 0, 1].r_data, store[j, 0, 0].r_data))
            child = [Mux(bank, store[j + 1, 1, i].r_data, store[j + 1, 0, i].r_data)
                     if has_children else own for i in range(2)]
            with m.If(read):
                m.d.sync += [c_q[0].eq(Mux(is_topdown, own, child[0])), c_q[1].eq(child[1])]
                if has_children:
                    for i in range(2):
                        # a side of level j + 1 without words (positions beyond K) has no
                        # children in it: constant 0, so its comparisons are not built
                        present = (first_child + i < limit) if store[j + 1, 0, i].depth else 0
                        m.d.sync += p_q[i].eq(present)
            # Compare cycle, on registers only, into registers (pick1 and move mean nothing on
            # a top-down step). Three comparisons side by side rather than "pick the smaller
            # child, then compare with it": one carry chain deep instead of two.
            c0, c1 = c_q
            p0, p1 = (p_q[0], p_q[1]) if has_children else (0, 0)
            pick1 = Signal(name=f"h{h}_s{j}_pick1")
            move = Signal(name=f"h{h}_s{j}_move")
            m.d.comb += [
                pick1.eq(p1 & beats(m, c0, c1, f"h{h}_s{j}_c")),
                move.eq(Mux(pick1, beats(m, op["v"], c1, f"h{h}_s{j}_m1"),
                            p0 & beats(m, op["v"], c0, f"h{h}_s{j}_m0"))),
            ]
            at_target = op["tlevel"] == j
            v_below = Signal(name=f"h{h}_s{j}_vbelow")      # v < own node (top-down)
            m.d.comb += v_below.eq(beats(m, c0, op["v"], f"h{h}_s{j}_t"))
            # what the write cycle does, decided: which word the node takes, which key goes
            # on, whether the operation goes on, and the turn of a sift-down
            take_c1 = Signal(name=f"h{h}_s{j}_take1", reset_less=True)
            take_c0 = Signal(name=f"h{h}_s{j}_take0", reset_less=True)
            carry_c0 = Signal(name=f"h{h}_s{j}_carry0", reset_less=True)
            cont = Signal(name=f"h{h}_s{j}_cont", reset_less=True)
            turn = Signal(name=f"h{h}_s{j}_turn", reset_less=True)
            with m.If(compare):
                m.d.sync += [
                    # the node takes its second child, its first child or its own node (both
                    # in c0), or the carried key
                    take_c1.eq(~op["topdown"] & move & pick1),
                    take_c0.eq(Mux(op["topdown"], ~(at_target | v_below), move & ~pick1)),
                    carry_c0.eq(op["topdown"] & v_below),
                    cont.eq(Mux(op["topdown"], ~at_target, move)),
                    turn.eq(pick1),
                ]
            # Write cycle: multiplexers on registers.
            if has_children:
                w_data = Mux(take_c1, c1, Mux(take_c0, c0, op["v"]))
            else:
                # the last level: an insert that gets here is at its target (the deepest
                # position is on it) and a sift-down has no children, so the node always
                # takes the carried key; yosys cannot prove either, so it is said here
                w_data = op["v"]
            carry = Mux(carry_c0, c0, op["v"])
            td_next = op["norm"][D - 2 - j:D - 1] if has_children else 0
            sd_next = Cat(turn, op["idx"][:j])
            nxt = Mux(op["topdown"], td_next, sd_next)
            # Write the node.
            writes = write & op["valid"]
            if j == 0:
                for b in range(2):
                    with m.If(writes & (op["bank"] == b)):
                        m.d.sync += root[b].eq(w_data)
            else:
                for b in range(2):
                    for side in range(2):
                        st = store[j, b, side]
                        m.d.comb += [
                            st.w_en.eq(writes & (op["bank"] == b) & (op["idx"][0] == side)),
                            st.w_addr.eq(op["idx"][1:j]),
                            st.w_data.eq(w_data),
                        ]
            # Hand over to the next level.
            if has_children:
                nop = ops[j + 1]
                with m.If(write):
                    m.d.sync += [
                        nop["valid"].eq(op["valid"] & cont),
                        nop["bank"].eq(op["bank"]),
                        nop["topdown"].eq(op["topdown"]),
                        nop["v"].eq(carry),
                        nop["idx"].eq(nxt),
                        nop["limit"].eq(op["limit"]),
                        nop["norm"].eq(op["norm"]),
                        nop["tlevel"].eq(op["tlevel"]),
                    ]
                next_word[j + 1, "td"] = nxt[1:j + 1]     # its own node at level j + 1
                next_word[j + 2, "sd"] = nxt              # its children at level j + 2
        # Read addresses, set on a write cycle for the read cycle after it: level `lv` of
        # bank b is read for the operation going to stage lv if it belongs to bank b (its
        # node, for a top-down step), else for the one going to stage lv - 1 (its children,
        # for a sift-down step); the two are always of different banks.
        for level in range(1, D):
            for b in range(2):
                for side in range(2):
                    st = store[level, b, side]
                    if level == 1:
                        m.d.comb += st.r_addr.eq(0)
                        continue
                    m.d.comb += st.r_addr.eq(Mux(ops[level - 1]["bank"] == b,
                                                 next_word[level, "td"],
                                                 next_word[level, "sd"]))
        return s_wr, s_rd
