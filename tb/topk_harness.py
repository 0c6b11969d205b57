"""Benchmark harness for the top-k filter: stimulus memory in, result memory out.

Measuring a streaming unit at full rate from cocotb would mean driving every clock edge
from Python, so the simulator speed, not the design, would set the pace of the run. The
harness keeps stimulus and results inside the simulated design: the bench loads the
scores once, starts a query with ``n`` and ``k``, and awaits ``done``, which reports cycle
counts measured in the RTL. It is test infrastructure (unit ``topk_harness``), not part of
the accelerator.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.topk import TopKFilter, k_shape

__all__ = ["TopKHarness", "harness_depth", "harness_layouts"]


def harness_depth(config: AccelConfig) -> int:
    """Scores one query of the harness can hold."""
    return min(4096, 1 << config.id_width)


def harness_layouts(config: AccelConfig) -> dict[str, data.StructLayout]:
    """Payload layout of each port of :class:`TopKHarness`, by port name."""
    depth, aw = harness_depth(config), config.acc_width
    return {
        "load": data.StructLayout({"addr": range(depth), "score": signed(aw)}),
        "start": data.StructLayout({"n": range(depth + 1), "k": k_shape(config)}),
        "done": data.StructLayout({"count": range(depth + 1), "error": 1, "in_cycles": 32,
                                   "first_out": 32, "total": 32}),
        "read": data.StructLayout({"addr": range(config.topk_max)}),
        "result": data.StructLayout({"score": signed(aw), "id": config.id_width}),
    }


class TopKHarness(wiring.Component):
    """Stimulus RAM -> :class:`~rpaccel.hw.topk.TopKFilter` -> result RAM.

    Ports
    -----
    load : ``{addr, score}`` writes the stimulus memory (candidate ``addr`` has id ``addr``).
    start : ``{n, k}`` streams scores ``0..n-1`` into the filter at full rate (one per cycle
        whenever it is ready), ``k`` on every beat, ``last`` on the ``n``-th.
    done : one beat per query: ``count`` results, ``error``; ``in_cycles`` from the first to
        the last input beat accepted (``n`` at full rate); ``first_out`` cycles from the last
        input beat to the first result; ``total`` cycles from the first input beat to the
        last result, both ends included.
    read / result : read back result ``addr`` (``{score, id}``), best first.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        lay = harness_layouts(config)
        super().__init__({
            "load": In(stream.Signature(lay["load"])),
            "start": In(stream.Signature(lay["start"])),
            "done": Out(stream.Signature(lay["done"])),
            "read": In(stream.Signature(lay["read"])),
            "result": Out(stream.Signature(lay["result"])),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        depth = harness_depth(cfg)
        aw = cfg.acc_width
        m.submodules.topk = topk = TopKFilter(cfg)
        stim = Memory(shape=signed(aw), depth=depth, init=[])
        res = Memory(shape=harness_layouts(cfg)["result"], depth=cfg.topk_max, init=[])
        m.submodules.stimulus = stim
        m.submodules.results = res
        s_wr, s_rd = stim.write_port(), stim.read_port()
        r_wr, r_rd = res.write_port(), res.read_port()

        n = Signal.like(self.start.payload.n)
        k = Signal.like(self.start.payload.k)
        next_idx = Signal(range(depth + 1))    # index of the next memory read
        beat_idx = Signal(range(depth + 1))    # index of the beat being offered
        offering = Signal()
        clock = Signal(32)
        t_first_in, t_last_in, t_first_out = Signal(32), Signal(32), Signal(32)
        count = Signal.like(self.done.payload.count)
        error = Signal()
        got_first = Signal()
        m.d.sync += clock.eq(clock + 1)

        m.d.comb += [s_wr.addr.eq(self.load.payload.addr), s_wr.data.eq(self.load.payload.score)]
        feed = topk.scores
        advance = ~feed.valid | feed.ready
        with m.FSM(name="harness"):
            with m.State("IDLE"):
                m.d.comb += [self.load.ready.eq(1), s_wr.en.eq(self.load.valid),
                             self.start.ready.eq(1)]
                with m.If(self.start.valid):
                    m.d.sync += [n.eq(self.start.payload.n), k.eq(self.start.payload.k),
                                 next_idx.eq(0), count.eq(0), error.eq(0), got_first.eq(0),
                                 offering.eq(0)]
                    m.next = "FEED"
            with m.State("FEED"):
                # One memory read per accepted beat: the read for beat i+1 is issued in the
                # cycle beat i is accepted, so beats flow back to back. While the filter
                # stalls the read port is disabled, so the offered score holds (a read
                # port's enable is 1 unless driven: left undriven on a stall it read address 0,
                # which two heaps at full rate never showed and one heap did).
                m.d.comb += [s_rd.addr.eq(next_idx), s_rd.en.eq(advance & (next_idx < n))]
                with m.If(advance):
                    m.d.sync += [offering.eq(next_idx < n), beat_idx.eq(next_idx)]
                    with m.If(next_idx < n):
                        m.d.sync += next_idx.eq(next_idx + 1)
                m.d.comb += [feed.valid.eq(offering), feed.payload.score.eq(s_rd.data),
                             feed.payload.id.eq(beat_idx), feed.payload.k.eq(k),
                             feed.payload.last.eq(beat_idx == n - 1)]
                with m.If(feed.valid & feed.ready):
                    with m.If(beat_idx == 0):
                        m.d.sync += t_first_in.eq(clock)
                    with m.If(beat_idx == n - 1):
                        m.d.sync += t_last_in.eq(clock)
                with m.If(topk.topk.valid & topk.topk.payload.last):
                    m.next = "REPORT"
            with m.State("REPORT"):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.count.eq(count),
                             self.done.payload.error.eq(error),
                             self.done.payload.in_cycles.eq(t_last_in - t_first_in + 1),
                             self.done.payload.first_out.eq(t_first_out - t_last_in),
                             self.done.payload.total.eq(clock - 1 - t_first_in + 1)]
                with m.If(self.done.ready):
                    m.next = "IDLE"

        # Results are always taken; the last one moves the FSM to REPORT.
        out = topk.topk
        m.d.comb += [out.ready.eq(1), r_wr.addr.eq(count), r_wr.data.score.eq(out.payload.score),
                     r_wr.data.id.eq(out.payload.id),
                     r_wr.en.eq(out.valid & ~out.payload.error)]
        with m.If(out.valid):
            m.d.sync += count.eq(count + ~out.payload.error)
            with m.If(out.payload.error):
                m.d.sync += error.eq(1)
            with m.If(~got_first):
                m.d.sync += [got_first.eq(1), t_first_out.eq(clock)]

        # Read-back of results (one-cycle memory latency, held until taken).
        pending = Signal()
        m.d.comb += [self.read.ready.eq(~pending | self.result.ready),
                     r_rd.addr.eq(self.read.payload.addr),
                     r_rd.en.eq(self.read.valid & self.read.ready),
                     self.result.valid.eq(pending),
                     self.result.payload.score.eq(r_rd.data.score),
                     self.result.payload.id.eq(r_rd.data.id)]
        with m.If(self.read.valid & self.read.ready):
            m.d.sync += pending.eq(1)
        with m.Elif(self.result.ready):
            m.d.sync += pending.eq(0)
        return m
