"""Query engine of the top level (first version): runs a handed-on ``RUN_QUERY`` stage by
stage on the stage runners, keeps each stage's top-k on chip for the next stage, writes the
kept lists and results to memory and reports the query's completion.

Without on-chip top-k (``onchip_topk`` off) there are no top-k units and no kept lists:
``results[p]`` carries partition ``p``'s scores, which the :class:`ScoreWriter` writes to
``result_addr`` (every candidate's result record, in candidate order), and the completion's
``kept`` is the stage's candidate count; the command processor has already rejected a query
of more than one stage (``BAD_STAGES``), so the host filters between stages.

This version runs one query at a time and each stage on the lowest partition of its mask
(the partition's stage runner and top-k unit); the values are those of any mapping, so the
functional model is its reference. Overlapping consecutive queries on different partitions
and dealing one stage's sub-batches over several partitions are the next steps
(docs/architecture.md).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import descriptors as d
from . import topk
from .axi_write import write_beat_layout, write_job_layout
from .command import ERROR, model_info_layout, query_done_layout, query_layout
from .config import AccelConfig
from .stage import stage_job_layout

__all__ = ["QueryEngine"]


class QueryEngine(wiring.Component):
    """See the module docstring.

    Ports
    -----
    query / done : from and to the command processor.
    model_info : In, the command processor's model slots.
    jobs[p] / job_done[p], positions[p] : each partition's stage runner.
    results[p] : In, the top-k unit of partition ``p`` (``topk.result_layout``).
    wr_jobs, wr_data / wr_done : kept lists and results through a block writer.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        P = config.partitions
        super().__init__({
            "query": In(stream.Signature(query_layout(config))),
            "done": Out(stream.Signature(query_done_layout(config))),
            "model_info": In(data.ArrayLayout(model_info_layout(config), config.model_slots)),
            "jobs": Out(stream.Signature(stage_job_layout(config))).array(P),
            "job_done": In(stream.Signature(data.StructLayout({"error": 1}))).array(P),
            "positions": Out(stream.Signature(data.StructLayout(
                {"position": unsigned(config.id_width)}))).array(P),
            # the top-k units' results, or (``onchip_topk`` off) the runners' scores
            "results": In(stream.Signature(topk.result_layout(config) if config.onchip_topk
                                           else topk.score_layout(config))).array(P),
            "wr_jobs": Out(stream.Signature(write_job_layout(config))),
            "wr_data": Out(stream.Signature(write_beat_layout(config))),
            "wr_done": In(stream.Signature(data.StructLayout({"error": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, K = cfg.partitions, cfg.topk_max
        B = cfg.mem_bus_width // 8
        per_beat = max(1, B // d.RESULT_BYTES)
        in_reset = ResetSignal()

        q = Signal(query_layout(cfg))
        e = q.entry
        s = Signal(range(cfg.max_stages + 1))
        stage = e.stages[s]
        part = Signal(range(P))
        count = Signal(range(K + 1))           # results of the current stage
        prev = Signal(range((1 << cfg.id_width) + 1))   # candidates into the current stage
        i = Signal(range(max(K, (1 << cfg.id_width)) + 1))
        error = Signal()                       # a stage runner flagged its stage
        mem_error = Signal()                   # a write was answered with an error
        primed = Signal()
        runner_done = Signal()
        got_last = Signal()
        done = Signal(query_done_layout(cfg))
        cycles, total = Signal(32), Signal(32)
        m.d.sync += [cycles.eq(cycles + 1), total.eq(total + 1)]

        kept = Memory(shape=d.result_layout(cfg), depth=K, init=[])
        m.submodules.kept = kept
        kw, kr = kept.write_port(), kept.read_port()
        onchip = cfg.onchip_topk
        if not onchip:
            # Without top-k units the scores stream to memory; there are no kept lists (a
            # query has one stage, the command processor rejects more), so the score writer
            # owns the write port.
            m.submodules.score_writer = sw = ScoreWriter(cfg)
            wiring.connect(m, sw.wr_jobs, wiring.flipped(self.wr_jobs))
            wiring.connect(m, sw.wr_data, wiring.flipped(self.wr_data))
            wiring.connect(m, wiring.flipped(self.wr_done), sw.wr_done)
            m.d.comb += [sw.start.payload.addr.eq(e.result_addr[:cfg.mem_addr_width]),
                         sw.start.payload.n.eq(prev)]

        # the partition of the stage: the lowest bit of its mask
        lowest = Signal(range(P))
        for p in range(P - 1, -1, -1):
            with m.If(stage.partition_mask[p]):
                m.d.comb += lowest.eq(p)
        info = Signal(model_info_layout(cfg))
        with m.Switch(stage.slot):
            for slot in range(cfg.model_slots):
                with m.Case(slot):
                    m.d.comb += info.eq(self.model_info[slot])

        # result words: per_beat entries of 8 bytes per bus beat
        beat = Signal(8 * B)
        lane = Signal(range(per_beat + 1))
        target = Signal(cfg.mem_addr_width)
        writing_result = Signal()

        for p in range(P):
            m.d.comb += [self.jobs[p].payload.records_addr.eq(e.records_addr),
                         self.jobs[p].payload.n.eq(prev),
                         self.jobs[p].payload.from_kept.eq(s != 0),
                         self.jobs[p].payload.k.eq(stage.k),
                         self.jobs[p].payload.slot.eq(stage.slot),
                         self.jobs[p].payload.n_bottom.eq(info.n_bottom),
                         self.jobs[p].payload.n_top.eq(info.n_top),
                         self.jobs[p].payload.n_tables.eq(info.n_tables),
                         self.jobs[p].payload.emb_dim.eq(info.emb_dim),
                         self.jobs[p].payload.n_dense.eq(info.n_dense),
                         self.jobs[p].payload.n_pairs.eq(info.n_pairs),
                         self.jobs[p].payload.stage.eq(s)]

        with m.FSM(name="query"):
            with m.State("IDLE"):
                m.d.comb += self.query.ready.eq(~in_reset)
                with m.If(self.query.valid & ~in_reset):
                    m.d.sync += [q.eq(self.query.payload), s.eq(0), error.eq(0), mem_error.eq(0),
                                 done.eq(0), total.eq(1),
                                 prev.eq(self.query.payload.entry.n_candidates)]
                    m.next = "STAGE"
            with m.State("STAGE"):
                m.d.sync += [part.eq(lowest), cycles.eq(1), count.eq(0), i.eq(0),
                             primed.eq(0), runner_done.eq(0), got_last.eq(0)]
                m.next = "JOB" if onchip else "SCORES_START"
            if not onchip:
                with m.State("SCORES_START"):
                    m.d.comb += sw.start.valid.eq(1)
                    with m.If(sw.start.ready):
                        m.next = "JOB"
            with m.State("JOB"):
                for p in range(P):
                    with m.If(part == p):
                        m.d.comb += self.jobs[p].valid.eq(1)
                with m.If(Cat(self.jobs[p].ready & (part == p) for p in range(P)).any()):
                    m.next = "RUN"
            with m.State("RUN"):
                # Positions of a later stage stream from the kept list (the read port always
                # holds entry i, one cycle after entering; a transfer reads entry i + 1),
                # then the stage's results replace them. The two never overlap: the top-k
                # unit answers after the last candidate, whose position came first.
                advance = Cat(self.positions[p].valid & self.positions[p].ready
                              for p in range(P)).any()
                m.d.comb += kr.addr.eq(Mux(advance, i + 1, i))
                m.d.sync += primed.eq(1)
                for p in range(P):
                    pos, res, jd = self.positions[p], self.results[p], self.job_done[p]
                    mine = part == p
                    m.d.comb += [pos.payload.position.eq(kr.data.position),
                                 pos.valid.eq(mine & (s != 0) & (i < prev) & primed),
                                 jd.ready.eq(mine)]
                    with m.If(mine & pos.valid & pos.ready):
                        m.d.sync += i.eq(i + 1)
                    if onchip:
                        m.d.comb += res.ready.eq(mine)
                        with m.If(mine & res.valid):
                            with m.If(res.payload.error):
                                m.d.sync += error.eq(1)
                            with m.Else():
                                m.d.comb += [kw.addr.eq(count), kw.en.eq(1),
                                             kw.data.position.eq(res.payload.id),
                                             kw.data.score.eq(res.payload.score)]
                                m.d.sync += count.eq(count + 1)
                            with m.If(res.payload.last):
                                m.d.sync += [done.stage_cycles[s].eq(cycles), got_last.eq(1)]
                    else:
                        with m.If(mine):
                            m.d.comb += [sw.scores.valid.eq(res.valid),
                                         sw.scores.payload.eq(res.payload),
                                         res.ready.eq(sw.scores.ready)]
                    with m.If(mine & jd.valid):
                        m.d.sync += [error.eq(error | jd.payload.error), runner_done.eq(1)]
                if not onchip:
                    # every score is in memory: the stage's "kept" count is all its inputs
                    m.d.comb += sw.done.ready.eq(1)
                    with m.If(sw.done.valid):
                        m.d.sync += [done.stage_cycles[s].eq(cycles), got_last.eq(1),
                                     mem_error.eq(mem_error | sw.done.payload.error)]
                # the stage is over when the runner is done and the top-k unit has answered
                # (its results come after the runner's last score)
                with m.If(runner_done & got_last):
                    m.next = "STAGE_END"
            with m.State("STAGE_END"):
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
            if onchip:     # kept lists and the next stage (one stage without top-k)
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
                        m.next = "STAGE"
            # a kept list (or the results) to memory
            if onchip:
                with m.State("WRITE_JOB"):
                    m.d.comb += [self.wr_jobs.valid.eq(1), self.wr_jobs.payload.addr.eq(target),
                                 self.wr_jobs.payload.bytes.eq(count * d.RESULT_BYTES)]
                    with m.If(self.wr_jobs.ready):
                        m.next = "WRITE_READ"
                with m.State("WRITE_READ"):
                    m.d.comb += kr.addr.eq(i)
                    m.next = "WRITE_FILL"
                with m.State("WRITE_FILL"):
                    m.d.comb += kr.addr.eq(i)
                    m.d.sync += [beat.word_select(lane, 64).eq(kr.data.as_value()),
                                 i.eq(i + 1), lane.eq(lane + 1)]
                    with m.If((lane == per_beat - 1) | (i + 1 == count)):
                        m.next = "WRITE_BEAT"
                    with m.Else():
                        m.next = "WRITE_READ"
                with m.State("WRITE_BEAT"):
                    m.d.comb += [self.wr_data.valid.eq(1), self.wr_data.payload.data.eq(beat)]
                    with m.If(self.wr_data.ready):
                        m.d.sync += [lane.eq(0), beat.eq(0)]
                        with m.If(i == count):
                            m.next = "WRITE_RESPONSE"
                        with m.Else():
                            m.next = "WRITE_READ"
                with m.State("WRITE_RESPONSE"):
                    m.d.comb += self.wr_done.ready.eq(1)
                    with m.If(self.wr_done.valid):
                        with m.If(self.wr_done.payload.error):
                            m.d.sync += mem_error.eq(1)
                        m.next = "NEXT"
            with m.State("FINISH"):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.kept.eq(done.kept),
                             self.done.payload.stage_cycles.eq(done.stage_cycles),
                             self.done.payload.index.eq(q.index),
                             self.done.payload.tag.eq(e.header.tag),
                             self.done.payload.n_stages.eq(e.n_stages),
                             self.done.payload.total_cycles.eq(total),
                             self.done.payload.error.eq(
                                 Mux(mem_error, ERROR["AXI"], Mux(error, ERROR["EMBEDDING"], 0)))]
                with m.If(self.done.ready):
                    m.next = "IDLE"
        return m


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
