"""Query engine of the top level (first version): runs a handed-on ``RUN_QUERY`` stage by
stage on the stage runners, keeps each stage's top-k on chip for the next stage, writes the
kept lists and results to memory and reports the query's completion.

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
            "results": In(stream.Signature(topk.result_layout(config))).array(P),
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
                                 res.ready.eq(mine),
                                 jd.ready.eq(mine)]
                    with m.If(mine & pos.valid & pos.ready):
                        m.d.sync += i.eq(i + 1)
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
                    with m.If(mine & jd.valid):
                        m.d.sync += [error.eq(error | jd.payload.error), runner_done.eq(1)]
                # the stage is over when the runner is done and the top-k unit has answered
                # (its results come after the runner's last score)
                with m.If(runner_done & got_last):
                    m.next = "STAGE_END"
            with m.State("STAGE_END"):
                m.d.sync += [done.kept[s].eq(count), i.eq(0), lane.eq(0)]
                with m.If(e.kept_addr != 0):
                    m.d.sync += [target.eq(e.kept_addr[:cfg.mem_addr_width] +
                                           s * (K * d.RESULT_BYTES)), writing_result.eq(0)]
                    m.next = "WRITE_JOB"
                with m.Else():
                    m.next = "NEXT"
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
