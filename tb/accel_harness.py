"""Test-only harness for long cosimulations of the whole accelerator: :class:`~rpaccel.hw.
accel.RPAccel` with its ``m_axi`` port on the HDL AXI4 memory model (``tb/axi_mem_model.v``)
inside one simulated design, so the simulator runs memory and accelerator at its own speed
and Python only writes registers and awaits the interrupt.

Ports: ``s_axil`` and ``irq`` are the accelerator's; ``mem_*`` control the memory model
(``mem_load`` reads ``+AXI_MEM_FILE``, ``mem_dump`` writes words ``mem_dump_lo`` to
``mem_dump_hi`` to ``+AXI_MEM_DUMP``; latency, random stalls, seed and the SLVERR window as
in the Verilog file). ``mem_region_lo``/``mem_region_hi`` (byte addresses, the end
exclusive) bound what the accelerator may touch: ``mem_violation`` goes high, and stays high
until reset, on the first read or write burst outside them, so a bench proves that nothing
was read or written outside the allowed region. ``mem_words`` (the model's depth in bus
words) is a parameter of the build: :data:`MEM_BYTES` of memory whatever the bus width.

The clock is generated inside the design (``tb/sim_clock.v``, period
:data:`~rpaccel.tb.common.CLOCK_NS`), not driven by the bench: a clock from cocotb's GPI
costs two simulator callbacks per cycle, about a seventh of a long run's time (147.9k
against 171.4k cycles/s on ``default``). ``clk`` is then a signal of the top module (a
bench awaits its edges as before), ``rst`` an input. Build with ``build_args=``
:data:`SOURCES` (the memory model and the clock generator) plus, on Verilator,
:data:`VERILATOR_ARGS` (``--timing``, for the delay).
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.accel import RPAccel
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.csr import CSRBlock, axi_lite_signature

from .common import CLOCK_NS
from .embedding_harness import AXI_MEM_MODEL, AXI_PORTS, memory_controls, memory_model

__all__ = ["AccelHarness", "AXI_MEM_MODEL", "SIM_CLOCK", "SOURCES", "VERILATOR_ARGS",
           "MEM_BYTES", "mem_words"]

#: The clock generator, and every Verilog file a build of the harness needs beside its own.
SIM_CLOCK = Path(__file__).with_name("sim_clock.v")
SOURCES = (AXI_MEM_MODEL, SIM_CLOCK)
#: Verilator options the harness needs (the clock generator's delay).
VERILATOR_ARGS = ("--timing",)

#: Memory behind the harness, in bytes (the host scheduler plans images at most this large).
MEM_BYTES = 32 << 20


def mem_words(config: AccelConfig) -> int:
    """Depth of the harness's memory model in bus words."""
    return MEM_BYTES // (config.mem_bus_width // 8)


class AccelHarness(wiring.Component):
    def __init__(self, config: AccelConfig):
        self._config = config
        self.accel = RPAccel(config)
        aw = config.mem_addr_width
        super().__init__({
            "rst": In(1),
            "s_axil": In(axi_lite_signature(CSRBlock.address_width(config))),
            "irq": Out(1),
            **memory_controls(config),
            "mem_dump": In(1), "mem_dump_lo": In(32), "mem_dump_hi": In(32),
            "mem_region_lo": In(aw + 1), "mem_region_hi": In(aw + 1),
            "mem_violation": Out(1),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        # Everything but the ports lives one level down, in ``body``, and the accelerator's
        # reset is a register rather than the ``rst`` port. Both keep Verilator from
        # evaluating the whole design on every input change (each clock edge): the ports-only
        # build makes the top module's signals public, so any logic fed by one of them, or
        # by a port (Yosys writes each synchronous reset into the next-state logic), goes
        # into Verilator's input-combinational region, which runs on every evaluation.
        top = Module()
        top.domains.sync = sync = ClockDomain("sync")
        assert CLOCK_NS % 2 == 0, "the clock generator toggles every CLOCK_NS / 2 time units"
        top.submodules.clock = Instance("rpaccel_sim_clock", p_HALF_PERIOD=CLOCK_NS // 2,
                                        o_clk=sync.clk)
        top.d.comb += sync.rst.eq(self.rst)
        top.submodules.body = m = Module()
        cfg = self._config
        m.domains.accel = accel_domain = ClockDomain("accel", local=True)
        rst_q = Signal(init=1, reset_less=True)
        m.d.sync += rst_q.eq(ResetSignal("sync"))
        m.d.comb += [accel_domain.clk.eq(ClockSignal("sync")), accel_domain.rst.eq(rst_q)]
        accel = self.accel
        m.submodules.accel = DomainRenamer("accel")(accel)
        wiring.connect(m, wiring.flipped(self.s_axil), accel.s_axil)
        m.d.comb += self.irq.eq(accel.irq)
        bus = accel.m_axi
        B = cfg.mem_bus_width // 8

        # A burst is outside when its first or last byte is (bursts are INCR, never wrap).
        def outside(addr, length):
            last = addr + (length + 1) * B
            return (addr < self.mem_region_lo) | (last > self.mem_region_hi)

        violation = Signal()
        with m.If((bus.arvalid & bus.arready & outside(bus.araddr, bus.arlen)) |
                  (bus.awvalid & bus.awready & outside(bus.awaddr, bus.awlen))):
            m.d.sync += violation.eq(1)
        m.d.comb += self.mem_violation.eq(violation)

        id_width = len(bus.arid)
        awid = Signal(id_width)
        bid = Signal(id_width)
        m.d.comb += [awid.eq(bus.awid), bus.bid.eq(bid[:len(bus.bid)])]
        m.submodules.memory = memory_model(
            m, cfg, self, words=mem_words(cfg), id_width=id_width,
            dump=(self.mem_dump, self.mem_dump_lo, self.mem_dump_hi),
            **{name: getattr(bus, name) for name, _ in AXI_PORTS
               if name not in ("awid", "bid")},
            awid=awid, bid=bid)
        return top
