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

Build it with ``build_args=[str(AXI_MEM_MODEL)]`` so the simulator compiles the model too.
"""

from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.accel import RPAccel
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.csr import CSRBlock, axi_lite_signature

from .embedding_harness import AXI_MEM_MODEL

__all__ = ["AccelHarness", "AXI_MEM_MODEL", "MEM_BYTES", "mem_words"]

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
            "s_axil": In(axi_lite_signature(CSRBlock.address_width(config))),
            "irq": Out(1),
            "mem_load": In(1), "mem_dump": In(1), "mem_dump_lo": In(32), "mem_dump_hi": In(32),
            "mem_latency": In(16), "mem_stall_ar": In(8), "mem_stall_r": In(8),
            "mem_seed": In(32), "mem_err_lo": In(aw), "mem_err_hi": In(aw),
            "mem_region_lo": In(aw + 1), "mem_region_hi": In(aw + 1),
            "mem_violation": Out(1),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.accel = accel = self.accel
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
        m.submodules.memory = _memory(
            cfg, id_width,
            i_clk=ClockSignal(), i_rst=ResetSignal(), i_load=self.mem_load,
            i_dump=self.mem_dump, i_dump_lo=self.mem_dump_lo, i_dump_hi=self.mem_dump_hi,
            i_latency=self.mem_latency, i_stall_ar=self.mem_stall_ar,
            i_stall_r=self.mem_stall_r, i_seed=self.mem_seed, i_err_lo=self.mem_err_lo,
            i_err_hi=self.mem_err_hi,
            i_arid=bus.arid, i_araddr=bus.araddr, i_arlen=bus.arlen, i_arsize=bus.arsize,
            i_arburst=bus.arburst, i_arvalid=bus.arvalid, o_arready=bus.arready,
            o_rid=bus.rid, o_rdata=bus.rdata, o_rresp=bus.rresp, o_rlast=bus.rlast,
            o_rvalid=bus.rvalid, i_rready=bus.rready,
            i_awid=awid, i_awaddr=bus.awaddr, i_awlen=bus.awlen, i_awsize=bus.awsize,
            i_awburst=bus.awburst, i_awvalid=bus.awvalid, o_awready=bus.awready,
            i_wdata=bus.wdata, i_wstrb=bus.wstrb, i_wlast=bus.wlast, i_wvalid=bus.wvalid,
            o_wready=bus.wready, o_bid=bid, o_bresp=bus.bresp, o_bvalid=bus.bvalid,
            i_bready=bus.bready)
        return m


def _memory(config: AccelConfig, id_width: int, **ports):
    return Instance("rpaccel_axi_mem", p_ADDR_WIDTH=config.mem_addr_width,
                    p_DATA_WIDTH=config.mem_bus_width, p_ID_WIDTH=id_width,
                    p_WORDS=mem_words(config), p_OUTSTANDING=16, **ports)
