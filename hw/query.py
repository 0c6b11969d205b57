"""Query engine of the top level (second version): queries in flight, stages dispatched to
the stage runners of their partitions, kept lists on chip, results and completions out.

``RUN_QUERY`` entries handed on by the command processor go into one of ``slots`` query
slots (:func:`query_slots`: ``max(2, partitions)``), taken in ring order while a slot is
free, so several queries are in flight at once. Each slot runs its query's stages in order;
a stage waits until every runner of its ``partition_mask`` (and, with on-chip top-k, the
top-k unit named by ``topk_unit``) is free and no older waiting query wants any of them,
then claims them for the stage: resources go to stages in query order, and query ``q``'s
stage 2 runs on one partition while query ``q + 1``'s stage 1 runs on another.

A stage's sub-batches (``sub_batch`` candidates, the last one shorter) are **dealt round
robin** over the runners of its mask, in the order of their partition numbers: sub-batch
``j`` goes to the ``(j mod R)``-th of the ``R`` runners. The slot streams each runner the
positions of its sub-batches (``0..n-1`` for the first stage, the previous stage's kept
list after it) and merges the runners' scores into the stage's top-k unit, ``last`` on the
stage's final candidate only: in arrival order (the top-k is exact and breaks ties on the
position, so its results do not depend on the order of its inputs, and no runner waits for
another's scores). Without on-chip top-k the merge is in sub-batch order instead, so the
scores reach memory in candidate order. Either way the values are those of one runner,
and the functional model (``sim/accel_model.py``) is the reference of any mapping.

A **ganged** stage (the stage descriptor's ``gang``: its mask one gang of
``hw/mlp_engine.gangs``, checked by the command processor) claims every runner of its mask
but deals all its sub-batches to the lowest one, with the gang in its job
(``gang_log2``): that runner's layers run on the whole gang's engines, each layer's output
columns split over them (``hw/compute_core.py``), while the other runners stay idle.

Each slot has its own kept list (``topk_max`` entries): the top-k unit's results of stage
``s`` replace the positions stage ``s`` read (they come after its last candidate, whose
position came first) and are stage ``s + 1``'s input; after each stage the slot writes the
kept list to ``kept_addr + s * topk_max * 8`` (if ``kept_addr`` is not 0) and after the
last stage to ``result_addr``, through its own client of a write mux. A finished query's
completion goes out on ``done`` with its ring index (the command processor writes it at
that index: completions may be written out of ring order, their contents are those of the
functional model). Stage cycles count from the stage's dispatch to its last result.

Without on-chip top-k (``onchip_topk`` off) there are no top-k units and no kept lists:
each slot's :class:`ScoreWriter` writes the merged scores to ``result_addr`` (every
candidate's result record, in candidate order), and the completion's ``kept`` is the
stage's candidate count; the command processor has already rejected a query of more than
one stage (``BAD_STAGES``), so the host filters between stages.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from . import descriptors as d
from . import topk
from .axi_write import write_beat_layout, write_job_layout
from .command import ERROR, model_info_layout, query_done_layout, query_layout
from .config import AccelConfig
from .mlp_engine import gang_sizes
from .shared import index_range, times_const
from .stage import stage_job_layout
from .write_mux import WriteJobMux

__all__ = ["QueryEngine", "ScoreWriter", "query_slots"]


def query_slots(config: AccelConfig) -> int:
    """Queries the engine holds in flight: one per partition, and at least two (so a query's
    kept-list writes overlap the next query's first stage even on one partition)."""
    return max(2, config.partitions)


class QueryEngine(wiring.Component):
    """See the module docstring.

    Ports
    -----
    query / done : from and to the command processor (``done`` carries the ring index;
        queries may finish out of order).
    model_info : In, the command processor's model slots.
    jobs[p] / job_done[p], positions[p], scores[p] : partition ``p``'s stage runner (its
        job, its done, its input positions, its scores).
    topk_in[u] / results[u] : top-k unit ``u`` (``topk_units`` of them; absent without
        on-chip top-k).
    wr_jobs, wr_data / wr_done : kept lists and results through a block writer.

    Bad input: the command processor validates every query (``ERROR_CODES``); a stage
    runner's flagged lookup or a top-k error beat makes the completion ``EMBEDDING`` and a
    write answered with an error ``AXI``, the query still completing.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        P, U = config.partitions, config.topk_units
        ports = {
            "query": In(stream.Signature(query_layout(config))),
            "done": Out(stream.Signature(query_done_layout(config))),
            "model_info": In(data.ArrayLayout(model_info_layout(config), config.model_slots)),
            "jobs": Out(stream.Signature(stage_job_layout(config))).array(P),
            "job_done": In(stream.Signature(data.StructLayout({"error": 1}))).array(P),
            "positions": Out(stream.Signature(data.StructLayout(
                {"position": unsigned(config.id_width)}))).array(P),
            "scores": In(stream.Signature(topk.score_layout(config))).array(P),
            "wr_jobs": Out(stream.Signature(write_job_layout(config))),
            "wr_data": Out(stream.Signature(write_beat_layout(config))),
            "wr_done": In(stream.Signature(data.StructLayout({"error": 1}))),
        }
        if config.onchip_topk:
            ports["topk_in"] = Out(stream.Signature(topk.score_layout(config))).array(U)
            ports["results"] = In(stream.Signature(topk.result_layout(config))).array(U)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, U = cfg.partitions, cfg.topk_units
        Q = query_slots(cfg)
        onchip = cfg.onchip_topk
        in_reset = ResetSignal()
        n_max = 1 << cfg.id_width

        m.submodules.writes = wmux = WriteJobMux(cfg, Q)
        wiring.connect(m, wmux.out_jobs, wiring.flipped(self.wr_jobs))
        wiring.connect(m, wmux.out_data, wiring.flipped(self.wr_data))
        wiring.connect(m, wiring.flipped(self.wr_done), wmux.out_done)

        # -- shared resources: who owns each runner and top-k unit ----------------------------
        runner_busy = Signal(P)
        runner_owner = [Signal(range(Q), name=f"runner{p}_owner") for p in range(P)]
        unit_busy = Signal(U)
        unit_owner = [Signal(range(Q), name=f"unit{u}_owner") for u in range(U)]
        alloc = Signal(range(Q))              # the slot the next query goes into
        next_seq = Signal(16)                 # ring order of the queries in flight

        class Slot:
            pass

        slots = []
        for j in range(Q):
            sl = Slot()
            sl.q = Signal(query_layout(cfg), name=f"slot{j}_query")
            sl.seq = Signal(16, name=f"slot{j}_seq")
            sl.s = Signal(range(cfg.max_stages + 1), name=f"slot{j}_stage")
            sl.stage = sl.q.entry.stages[sl.s]
            sl.mask = Signal(P, name=f"slot{j}_mask")        # the runners it claims
            sl.deal = Signal(P, name=f"slot{j}_deal")        # ... and deals sub-batches to
            sl.unit = Signal(index_range(U), name=f"slot{j}_unit")
            m.d.comb += [sl.mask.eq(sl.stage.partition_mask[:P]),
                         sl.unit.eq(sl.stage.topk_unit)]
            # a ganged stage runs on its lowest runner, whose engine leads the gang
            lowest = Cat(sl.mask[p] & ~sl.mask[:p].any() if p else sl.mask[0]
                         for p in range(P))
            m.d.comb += sl.deal.eq(Mux(sl.stage.gang, lowest, sl.mask))
            sl.waiting = Signal(name=f"slot{j}_waiting")
            sl.grant = Signal(name=f"slot{j}_grant")
            sl.release = Signal(name=f"slot{j}_release")
            sl.idle = Signal(name=f"slot{j}_idle")
            sl.job_valid = Signal(P, name=f"slot{j}_job_valid")
            sl.job = Signal(stage_job_layout(cfg), name=f"slot{j}_job")
            sl.share = [Signal(range(n_max + 1), name=f"slot{j}_share{r}") for r in range(P)]
            sl.rank = [Signal(index_range(P), name=f"slot{j}_rank{p}") for p in range(P)]
            sl.pos_valid = Signal(P, name=f"slot{j}_pos_valid")
            sl.pos_data = [Signal(cfg.id_width, name=f"slot{j}_pos{p}") for p in range(P)]
            sl.sc_ready = Signal(P, name=f"slot{j}_sc_ready")
            sl.jd_ready = Signal(P, name=f"slot{j}_jd_ready")
            sl.tk = Signal(topk.score_layout(cfg), name=f"slot{j}_tk")
            sl.tk_valid = Signal(name=f"slot{j}_tk_valid")
            sl.tk_ready = Signal(name=f"slot{j}_tk_ready")
            sl.res_ready = Signal(name=f"slot{j}_res_ready")
            sl.res_valid = Signal(name=f"slot{j}_res_valid")
            sl.res = Signal(topk.result_layout(cfg), name=f"slot{j}_res")
            sl.done_valid = Signal(name=f"slot{j}_done_valid")
            sl.done = Signal(query_done_layout(cfg), name=f"slot{j}_done")
            sl.done_ready = Signal(name=f"slot{j}_done_ready")
            # a runner's rank among the stage's runners (its place in the dealing order)
            for p in range(P):
                m.d.comb += sl.rank[p].eq(sum(sl.deal[i] for i in range(p)) if p else 0)
            slots.append(sl)

        def older(a, b):
            """Slot ``a``'s query came before slot ``b``'s (sequence numbers wrap)."""
            return (a.seq - b.seq)[15]

        # a waiting stage is granted when its runners (and unit) are free and no older
        # waiting stage wants any of them: resources go to stages in query order
        for j, sl in enumerate(slots):
            conflict = Const(0)
            for i, other in enumerate(slots):
                if i == j:
                    continue
                shares = (other.mask & sl.mask) != 0
                if onchip:
                    shares = shares | (other.unit == sl.unit)
                conflict = conflict | (other.waiting & older(other, sl) & shares)
            free = (runner_busy & sl.mask) == 0
            if onchip:
                free = free & ~unit_busy.bit_select(sl.unit, 1)
            m.d.comb += sl.grant.eq(sl.waiting & free & ~conflict)
        for p in range(P):
            for j, sl in enumerate(slots):
                with m.If(sl.release & (runner_owner[p] == j)):
                    m.d.sync += runner_busy[p].eq(0)
            for j, sl in enumerate(slots):
                with m.If(sl.grant & sl.mask[p]):
                    m.d.sync += [runner_busy[p].eq(1), runner_owner[p].eq(j)]
        if onchip:
            for u in range(U):
                for j, sl in enumerate(slots):
                    with m.If(sl.release & (unit_owner[u] == j)):
                        m.d.sync += unit_busy[u].eq(0)
                for j, sl in enumerate(slots):
                    with m.If(sl.grant & (sl.unit == u)):
                        m.d.sync += [unit_busy[u].eq(1), unit_owner[u].eq(j)]

        # -- the runners' and units' ports to their owners ---------------------------------------
        for p in range(P):
            job, jd, pos, sc = self.jobs[p], self.job_done[p], self.positions[p], self.scores[p]
            with m.Switch(runner_owner[p]):
                for j, sl in enumerate(slots):
                    with m.Case(j):
                        m.d.comb += [job.valid.eq(sl.job_valid[p]), job.payload.eq(sl.job),
                                     job.payload.n.eq(Array(sl.share)[sl.rank[p]]),
                                     pos.valid.eq(sl.pos_valid[p]),
                                     pos.payload.position.eq(sl.pos_data[p]),
                                     jd.ready.eq(sl.jd_ready[p]), sc.ready.eq(sl.sc_ready[p])]
        if onchip:
            for u in range(U):
                tin, res = self.topk_in[u], self.results[u]
                with m.Switch(unit_owner[u]):
                    for j, sl in enumerate(slots):
                        with m.Case(j):
                            m.d.comb += [tin.valid.eq(sl.tk_valid & unit_busy[u]),
                                         tin.payload.eq(sl.tk), res.ready.eq(sl.res_ready)]
            for j, sl in enumerate(slots):
                with m.Switch(sl.unit):
                    for u in range(U):
                        with m.Case(u):
                            mine = unit_busy[u] & (unit_owner[u] == j)
                            m.d.comb += [sl.tk_ready.eq(self.topk_in[u].ready & mine),
                                         sl.res_valid.eq(self.results[u].valid & mine),
                                         sl.res.eq(self.results[u].payload)]

        # -- queries in, completions out -------------------------------------------------------------
        with m.Switch(alloc):
            for j, sl in enumerate(slots):
                with m.Case(j):
                    m.d.comb += self.query.ready.eq(sl.idle & ~in_reset)
        with m.If(self.query.valid & self.query.ready):
            m.d.sync += [alloc.eq(Mux(alloc == Q - 1, 0, alloc + 1)), next_seq.eq(next_seq + 1)]
        picked = Const(0)
        for j, sl in enumerate(slots):
            with m.If(sl.done_valid & ~picked):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.eq(sl.done),
                             sl.done_ready.eq(self.done.ready)]
            picked = picked | sl.done_valid

        for j, sl in enumerate(slots):
            self._slot(m, j, sl, slots, alloc, next_seq, runner_busy, wmux)
        return m

    def _slot(self, m, j, sl, slots, alloc, next_seq, runner_busy, wmux):
        """Query slot ``j``: its query's stages one after another (see the module
        docstring)."""
        cfg = self._config
        P, K = cfg.partitions, cfg.topk_max
        SB = cfg.sub_batch
        onchip = cfg.onchip_topk
        B = cfg.mem_bus_width // 8
        per_beat = max(1, B // d.RESULT_BYTES)
        n_max = 1 << cfg.id_width

        def sig(shape, name):
            return Signal(shape, name=f"slot{j}_{name}")

        e = sl.q.entry
        s, stage = sl.s, sl.stage
        prev = sig(range(n_max + 1), "prev")          # candidates into the current stage
        count = sig(range(K + 1), "count")            # results of the current stage
        error, mem_error = sig(1, "error"), sig(1, "mem_error")
        done = sig(query_done_layout(cfg), "acc")     # the completion's per-stage fields
        cycles, total = sig(32, "cycles"), sig(32, "total")
        m.d.sync += [cycles.eq(cycles + 1), total.eq(total + 1)]
        n_runners = sig(range(P + 1), "runners")      # R: runners of the stage
        m.d.comb += n_runners.eq(sum(sl.deal[p] for p in range(P)))

        m.d.comb += [sl.done.kept.eq(done.kept), sl.done.stage_cycles.eq(done.stage_cycles),
                     sl.done.index.eq(sl.q.index), sl.done.tag.eq(e.header.tag),
                     sl.done.n_stages.eq(e.n_stages), sl.done.total_cycles.eq(total),
                     sl.done.error.eq(Mux(mem_error, ERROR["AXI"],
                                          Mux(error, ERROR["EMBEDDING"], 0)))]
        share = Array(sl.share)

        kept = Memory(shape=d.result_layout(cfg), depth=max(2, K), init=[])  # no 0-bit address
        m.submodules[f"kept{j}"] = kept
        kw = kept.write_port()
        kr_pos = [kept.read_port() for _ in range(P)]
        kr_out = kept.read_port()

        info = sig(model_info_layout(cfg), "model")
        with m.Switch(stage.slot):
            for slot in range(cfg.model_slots):
                with m.Case(slot):
                    m.d.comb += info.eq(self.model_info[slot])
        m.d.comb += [sl.job.records_addr.eq(e.records_addr), sl.job.n.eq(0),
                     sl.job.from_kept.eq(1), sl.job.k.eq(stage.k), sl.job.slot.eq(stage.slot),
                     sl.job.n_bottom.eq(info.n_bottom), sl.job.n_top.eq(info.n_top),
                     sl.job.n_tables.eq(info.n_tables), sl.job.emb_dim.eq(info.emb_dim),
                     sl.job.n_dense.eq(info.n_dense), sl.job.n_pairs.eq(info.n_pairs),
                     sl.job.stage.eq(s)]
        # a ganged stage's gang: 2**gang_log2 partitions, its mask's count
        if gang_sizes(cfg):
            gang_log2, members = Const(0), sum(sl.mask[p] for p in range(P))
            for G in gang_sizes(cfg):
                gang_log2 = Mux(members == G, exact_log2(G), gang_log2)
            m.d.comb += sl.job.gang_log2.eq(Mux(stage.gang, gang_log2, 0))

        # dealing plan: each rank's number of candidates
        base = sig(range(n_max + SB + 1), "plan_base")
        rank = sig(index_range(P), "plan_rank")
        # positions to each runner: next input index, place in its sub-batch, still to send
        # (a down-counter loaded at the grant: "any left" is a register's zero test, where
        # "sent < share of its rank" was a rank multiplexer and a carry chain in front of
        # the kept list's read address)
        idx = [sig(range(n_max + P * SB + 1), f"idx{p}") for p in range(P)]
        place = [sig(index_range(SB), f"place{p}") for p in range(P)]
        to_send = [sig(range(n_max + 1), f"to_send{p}") for p in range(P)]
        pending = sig(P, "jobs_pending")
        finished = sig(P, "runners_done")
        got_last = sig(1, "got_last")
        # the merge of the runners' scores in sub-batch order
        cur = sig(index_range(P), "merge_rank")
        in_sub = sig(index_range(SB), "merge_place")
        taken = sig(range(n_max + 1), "merged")
        running = sig(1, "running")
        mine = [sig(1, f"merge_from{p}") for p in range(P)]

        # positions
        for p in range(P):
            fire = sl.pos_valid[p] & self.positions[p].ready & runner_busy[p]
            nxt = Mux(place[p] == SB - 1, idx[p] + (n_runners - 1) * SB + 1, idx[p] + 1)
            m.d.comb += [sl.pos_valid[p].eq(running & sl.deal[p] & (to_send[p] != 0)),
                         kr_pos[p].addr.eq(Mux(fire, nxt, idx[p])),
                         sl.pos_data[p].eq(Mux(s == 0, idx[p], kr_pos[p].data.position))]
            with m.If(fire):
                m.d.sync += [idx[p].eq(nxt), to_send[p].eq(to_send[p] - 1),
                             place[p].eq(Mux(place[p] == SB - 1, 0, place[p] + 1))]

        # The merge of the runners' scores. With on-chip top-k, in arrival order (the
        # lowest partition offering first): a top-k is exact and breaks ties on the
        # position, so the order of its inputs does not matter, and no runner ever waits
        # for another's scores (which could stall its engine while the other waits for the
        # shared embedding subsystem). Without it, in sub-batch order (the scores go to
        # memory in candidate order): from the runner whose rank deals the current
        # sub-batch; the stage runner's scores do not wait on other runners' lookups.
        merged = sig(topk.score_layout(cfg), "merged_beat")
        merged_valid = sig(1, "merged_valid")
        merged_ready = sig(1, "merged_ready")
        if onchip:
            chosen = Const(0)
            for p in range(P):
                offer = running & sl.deal[p] & self.scores[p].valid & runner_busy[p]
                m.d.comb += mine[p].eq(offer & ~chosen)
                chosen = chosen | offer
        else:
            for p in range(P):
                m.d.comb += mine[p].eq(running & sl.deal[p] & (sl.rank[p] == cur))
        for p in range(P):
            with m.If(mine[p]):
                m.d.comb += [merged_valid.eq(self.scores[p].valid & runner_busy[p]),
                             merged.score.eq(self.scores[p].payload.score),
                             merged.id.eq(self.scores[p].payload.id)]
        final = taken + 1 == prev
        m.d.comb += [merged.k.eq(stage.k), merged.last.eq(final),
                     sl.sc_ready.eq(Cat(mine[p] & merged_ready for p in range(P)))]
        with m.If(merged_valid & merged_ready):
            m.d.sync += [taken.eq(taken + 1), in_sub.eq(in_sub + 1)]
            with m.If((in_sub == SB - 1) | final):
                m.d.sync += [in_sub.eq(0), cur.eq(Mux(cur + 1 == n_runners, 0, cur + 1))]
        if onchip:
            m.d.comb += [sl.tk_valid.eq(merged_valid), sl.tk.eq(merged),
                         merged_ready.eq(sl.tk_ready)]
        else:
            m.submodules[f"score_writer{j}"] = sw = ScoreWriter(cfg)
            wiring.connect(m, sw.wr_jobs, wmux.jobs[j])
            wiring.connect(m, sw.wr_data, wmux.data[j])
            wiring.connect(m, wmux.done[j], sw.wr_done)
            m.d.comb += [sw.scores.valid.eq(merged_valid), sw.scores.payload.eq(merged),
                         merged_ready.eq(sw.scores.ready),
                         sw.start.payload.addr.eq(e.result_addr[:cfg.mem_addr_width]),
                         sw.start.payload.n.eq(prev)]

        # results of the stage's top-k unit into the kept list
        if onchip:
            m.d.comb += sl.res_ready.eq(running)
            with m.If(sl.res_valid & sl.res_ready):
                with m.If(sl.res.error):
                    m.d.sync += error.eq(1)
                with m.Else():
                    m.d.comb += [kw.addr.eq(count), kw.en.eq(1),
                                 kw.data.position.eq(sl.res.id), kw.data.score.eq(sl.res.score)]
                    m.d.sync += count.eq(count + 1)
                with m.If(sl.res.last):
                    m.d.sync += [done.stage_cycles[s].eq(cycles), got_last.eq(1)]
        else:
            m.d.comb += sw.done.ready.eq(running)
            with m.If(sw.done.valid & running):
                m.d.sync += [done.stage_cycles[s].eq(cycles), got_last.eq(1),
                             mem_error.eq(mem_error | sw.done.payload.error)]
        # the runners' done
        for p in range(P):
            m.d.comb += sl.jd_ready[p].eq(running & sl.deal[p])
            with m.If(self.job_done[p].valid & sl.jd_ready[p] & runner_busy[p]):
                m.d.sync += [finished[p].eq(1), error.eq(error | self.job_done[p].payload.error)]

        # result words of the write-out: per_beat entries of 8 bytes per bus beat
        beat = sig(8 * B, "beat")
        lane = sig(range(per_beat + 1), "lane")
        i = sig(range(K + 1), "write_index")
        target = sig(cfg.mem_addr_width, "target")
        writing_result = sig(1, "writing_result")
        wj, wd, wdone = wmux.jobs[j], wmux.data[j], wmux.done[j]

        with m.FSM(name=f"slot{j}"):
            with m.State("IDLE"):
                m.d.comb += sl.idle.eq(1)
                with m.If(self.query.valid & self.query.ready & (alloc == j)):
                    m.d.sync += [sl.q.eq(self.query.payload), sl.seq.eq(next_seq), s.eq(0),
                                 error.eq(0), mem_error.eq(0), done.eq(0), total.eq(1),
                                 prev.eq(self.query.payload.entry.n_candidates)]
                    m.next = "PLAN_START"
            with m.State("PLAN_START"):
                m.d.sync += [base.eq(0), rank.eq(0), *[sh.eq(0) for sh in sl.share]]
                m.next = "PLAN"
            with m.State("PLAN"):
                # one sub-batch per cycle: its size to the rank that is dealt it
                left = prev - base
                size = Mux(left > SB, SB, left)
                with m.Switch(rank):
                    for r in range(P):
                        with m.Case(r):
                            m.d.sync += sl.share[r].eq(sl.share[r] + size)
                m.d.sync += [base.eq(base + SB), rank.eq(Mux(rank + 1 == n_runners, 0, rank + 1))]
                with m.If(left <= SB):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += sl.waiting.eq(1)
                with m.If(sl.grant):
                    # runners dealt nothing (more runners than sub-batches) are done already
                    dealt = Cat(sl.deal[p] & (share[sl.rank[p]] != 0) for p in range(P))
                    m.d.sync += [cycles.eq(1), count.eq(0), got_last.eq(0), cur.eq(0),
                                 in_sub.eq(0), taken.eq(0), pending.eq(dealt),
                                 finished.eq(~dealt)]
                    for p in range(P):
                        m.d.sync += [idx[p].eq(times_const(sl.rank[p], SB)), place[p].eq(0),
                                     to_send[p].eq(share[sl.rank[p]])]
                    m.next = "JOB" if onchip else "SCORES_START"
            if not onchip:
                with m.State("SCORES_START"):
                    m.d.comb += sw.start.valid.eq(1)
                    with m.If(sw.start.ready):
                        m.next = "JOB"
            with m.State("JOB"):
                m.d.comb += sl.job_valid.eq(pending)
                accepted = Cat(self.jobs[p].ready & pending[p] for p in range(P))
                m.d.sync += pending.eq(pending & ~accepted)
                with m.If((pending & ~accepted) == 0):
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                # over when every runner is done and the top-k unit (or the score writer)
                # has answered, which comes after the runners' last score
                with m.If((finished == (1 << P) - 1) & got_last):
                    m.d.sync += running.eq(0)
                    m.next = "STAGE_END"
            with m.State("STAGE_END"):
                m.d.comb += sl.release.eq(1)
                m.d.sync += [i.eq(0), lane.eq(0)]
                if not onchip:
                    # every score is in memory: the stage "kept" all its inputs
                    m.d.sync += done.kept[s].eq(prev)
                    m.next = "FINISH"       # one stage only
                else:
                    m.d.sync += done.kept[s].eq(count)
                    with m.If(e.kept_addr != 0):
                        m.d.sync += [target.eq(e.kept_addr[:cfg.mem_addr_width] +
                                               s * (K * d.RESULT_BYTES)), writing_result.eq(0)]
                        m.next = "WRITE_JOB"
                    with m.Else():
                        m.next = "NEXT"
            if onchip:
                with m.State("NEXT"):
                    with m.If(s + 1 == e.n_stages):
                        with m.If(writing_result):
                            m.next = "FINISH"
                        with m.Else():
                            m.d.sync += [target.eq(e.result_addr[:cfg.mem_addr_width]),
                                         writing_result.eq(1), i.eq(0), lane.eq(0)]
                            m.next = "WRITE_JOB"
                    with m.Else():
                        m.d.sync += [s.eq(s + 1), prev.eq(count)]
                        m.next = "PLAN_START"
                # a kept list (or the results) to memory
                with m.State("WRITE_JOB"):
                    m.d.comb += [wj.valid.eq(1), wj.payload.addr.eq(target),
                                 wj.payload.bytes.eq(count * d.RESULT_BYTES)]
                    with m.If(wj.ready):
                        m.next = "WRITE_READ"
                with m.State("WRITE_READ"):
                    m.d.comb += kr_out.addr.eq(i)
                    m.next = "WRITE_FILL"
                with m.State("WRITE_FILL"):
                    m.d.comb += kr_out.addr.eq(i)
                    m.d.sync += [beat.word_select(lane, 64).eq(kr_out.data.as_value()),
                                 i.eq(i + 1), lane.eq(lane + 1)]
                    with m.If((lane == per_beat - 1) | (i + 1 == count)):
                        m.next = "WRITE_BEAT"
                    with m.Else():
                        m.next = "WRITE_READ"
                with m.State("WRITE_BEAT"):
                    m.d.comb += [wd.valid.eq(1), wd.payload.data.eq(beat)]
                    with m.If(wd.ready):
                        m.d.sync += [lane.eq(0), beat.eq(0)]
                        with m.If(i == count):
                            m.next = "WRITE_RESPONSE"
                        with m.Else():
                            m.next = "WRITE_READ"
                with m.State("WRITE_RESPONSE"):
                    m.d.comb += wdone.ready.eq(1)
                    with m.If(wdone.valid):
                        with m.If(wdone.payload.error):
                            m.d.sync += mem_error.eq(1)
                        m.next = "NEXT"
            with m.State("FINISH"):
                m.d.comb += sl.done_valid.eq(1)
                with m.If(sl.done_ready):
                    m.next = "IDLE"
class ScoreWriter(wiring.Component):
    """A stage's scores to memory, for the accelerator without on-chip top-k
    (``onchip_topk`` off): every candidate's result record (position, score; 8 bytes,
    ``hw/descriptors.result_layout``) in arrival order from ``addr`` on.

    Ports
    -----
    start : In(stream({addr, n})) -- one stage: ``n >= 1`` records from the bus-aligned
        ``addr``; taken when idle.
    scores : In(stream(topk.score_layout)) -- exactly ``n`` beats (``k`` and ``last`` are
        not used: the count ends the stage).
    done : Out(stream({error})) -- once every record is written; ``error`` if a write was
        answered SLVERR or DECERR (the remaining records are still consumed and written).
    wr_jobs, wr_data / wr_done : to a block writer (``hw/axi_write.py``).

    The records go in blocks of one sub-batch (``sub_batch`` records); a block's write job
    is offered only once its first score is there, so the writer is held only while a
    sub-batch's scores stream out of the engine, never while the engine computes.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        aw = config.mem_addr_width
        super().__init__({
            "start": In(stream.Signature(data.StructLayout({
                "addr": unsigned(aw), "n": range((1 << config.id_width) + 1)}))),
            "scores": In(stream.Signature(topk.score_layout(config))),
            "done": Out(stream.Signature(data.StructLayout({"error": 1}))),
            "wr_jobs": Out(stream.Signature(write_job_layout(config))),
            "wr_data": Out(stream.Signature(write_beat_layout(config))),
            "wr_done": In(stream.Signature(data.StructLayout({"error": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B = cfg.mem_bus_width // 8
        per_beat = max(1, B // d.RESULT_BYTES)
        # a block is whole bus beats, so every block after the first starts bus-aligned
        block = per_beat * -(-cfg.sub_batch // per_beat)
        in_reset = ResetSignal()
        addr = Signal(cfg.mem_addr_width)
        left = Signal(range((1 << cfg.id_width) + 1))        # records not yet in a block
        in_block = Signal(range(block + 1))                  # records of the current block
        taken = Signal(range(block + 1))                     # of them taken from `scores`
        lane = Signal(range(per_beat + 1))
        beat = Signal(8 * B)
        error = Signal()
        sc = self.scores
        record = Signal(d.result_layout(cfg))
        m.d.comb += [record.position.eq(sc.payload.id), record.score.eq(sc.payload.score)]
        with m.FSM(name="scores"):
            with m.State("IDLE"):
                m.d.comb += self.start.ready.eq(~in_reset)
                with m.If(self.start.valid & ~in_reset):
                    m.d.sync += [addr.eq(self.start.payload.addr), left.eq(self.start.payload.n),
                                 error.eq(0)]
                    m.next = "BLOCK"
            with m.State("BLOCK"):
                m.d.sync += [in_block.eq(Mux(left > block, block, left)), taken.eq(0),
                             lane.eq(0), beat.eq(0)]
                m.next = "JOB"
            with m.State("JOB"):
                m.d.comb += [self.wr_jobs.valid.eq(sc.valid), self.wr_jobs.payload.addr.eq(addr),
                             self.wr_jobs.payload.bytes.eq(in_block * d.RESULT_BYTES)]
                with m.If(sc.valid & self.wr_jobs.ready):
                    m.next = "FILL"
            with m.State("FILL"):
                m.d.comb += sc.ready.eq(1)
                with m.If(sc.valid):
                    m.d.sync += [beat.word_select(lane, 64).eq(record.as_value()), lane.eq(lane + 1),
                                 taken.eq(taken + 1)]
                    with m.If((lane == per_beat - 1) | (taken + 1 == in_block)):
                        m.next = "BEAT"
            with m.State("BEAT"):
                m.d.comb += [self.wr_data.valid.eq(1), self.wr_data.payload.data.eq(beat)]
                with m.If(self.wr_data.ready):
                    m.d.sync += [lane.eq(0), beat.eq(0)]
                    with m.If(taken == in_block):
                        m.next = "RESPONSE"
                    with m.Else():
                        m.next = "FILL"
            with m.State("RESPONSE"):
                m.d.comb += self.wr_done.ready.eq(1)
                with m.If(self.wr_done.valid):
                    m.d.sync += [error.eq(error | self.wr_done.payload.error),
                                 left.eq(left - in_block),
                                 addr.eq(addr + in_block * d.RESULT_BYTES)]
                    with m.If(left == in_block):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "BLOCK"
            with m.State("DONE"):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.error.eq(error)]
                with m.If(self.done.ready):
                    m.next = "IDLE"
        return m
