"""Block-write jobs of several clients onto one ``AxiBlockWriter`` (hw/axi_write.py).

A client's job, its data beats and its ``done`` stay together: the mux grants the writer to
one client at a time (round robin among those offering a job) from the job to its
``done``, so data never mixes and every client gets its own answer.

The choice is registered before the job is offered on: the cycle after a client offers a
job (or after the previous job's ``done``), the round-robin winner is latched and its job
alone is shown on ``out_jobs`` until taken. A combinational choice would change
``out_jobs.payload`` under a high ``valid`` when a higher-priority client started offering
while the writer was not ready, against the stream rule that an offered payload stays put
until taken. Cost: one cycle per job.
"""

from __future__ import annotations

from amaranth import Cat, Module, ResetSignal, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi_write import write_beat_layout, write_job_layout
from .config import AccelConfig

__all__ = ["WriteJobMux"]


class WriteJobMux(wiring.Component):
    """``clients`` (jobs, data, done) triples onto one (``out_jobs``, ``out_data``,
    ``out_done``)."""

    def __init__(self, config: AccelConfig, clients: int):
        if clients < 1:
            raise ValueError(f"a mux needs at least one client, not {clients!r}")
        self._n = clients
        done = data.StructLayout({"error": 1})
        super().__init__({
            "jobs": In(stream.Signature(write_job_layout(config))).array(clients),
            "data": In(stream.Signature(write_beat_layout(config))).array(clients),
            "done": Out(stream.Signature(done)).array(clients),
            "out_jobs": Out(stream.Signature(write_job_layout(config))),
            "out_data": Out(stream.Signature(write_beat_layout(config))),
            "out_done": In(stream.Signature(done)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n
        in_reset = ResetSignal()
        held = Signal()                 # the winner is latched, its job offered on
        busy = Signal()                 # its job was taken: data and done go to it
        owner = Signal(range(n))
        last = Signal(range(n))
        grant = Signal(range(n))
        offering = Cat(j.valid for j in self.jobs)
        for step in range(n, 0, -1):
            for origin in range(n):
                client = (origin + step) % n
                with m.If((last == origin) & offering[client]):
                    m.d.comb += grant.eq(client)
        for i in range(n):
            mine = owner == i
            with m.If(mine):
                m.d.comb += [self.out_jobs.payload.eq(self.jobs[i].payload),
                             self.out_data.payload.eq(self.data[i].payload)]
            m.d.comb += [
                self.jobs[i].ready.eq(held & mine & self.out_jobs.ready & ~in_reset),
                self.data[i].ready.eq(busy & mine & self.out_data.ready),
                self.done[i].valid.eq(busy & mine & self.out_done.valid),
                self.done[i].payload.eq(self.out_done.payload),
            ]
        m.d.comb += [
            self.out_jobs.valid.eq(held & ~in_reset),
            self.out_data.valid.eq(busy & Cat(d.valid & (owner == i)
                                              for i, d in enumerate(self.data)).any()),
            self.out_done.ready.eq(busy & Cat(d.ready & (owner == i)
                                              for i, d in enumerate(self.done)).any()),
        ]
        with m.If(~held & ~busy & offering.any() & ~in_reset):
            m.d.sync += [held.eq(1), owner.eq(grant)]
        with m.If(self.out_jobs.valid & self.out_jobs.ready):
            m.d.sync += [held.eq(0), busy.eq(1), last.eq(owner)]
        with m.If(self.out_done.valid & self.out_done.ready):
            m.d.sync += busy.eq(0)
        return m
