"""Test-only harness: the embedding subsystem wired to the HDL AXI4 memory model
(``tb/axi_mem_model.v``, module ``rpaccel_axi_mem``) inside one simulated design, so long
cosimulations run at the simulator's speed instead of a Python AXI model's.

Every port of :class:`~rpaccel.hw.embedding.EmbeddingSubsystem` but ``m_axi`` is a port of
the harness, under the same name; the memory model's controls are ``mem_*`` inputs (see the
Verilog file), and ``ar_*`` outputs mirror the AR channel so a bench can watch every address.
Build it with ``build_args=[str(AXI_MEM_MODEL)]`` so the simulator compiles the model too.
"""

from pathlib import Path

from amaranth import ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.embedding import EmbeddingSubsystem

__all__ = ["EmbeddingHarness", "AxiMemoryHarness", "axi4_full_signature", "AXI_MEM_MODEL", "MEM_WORDS"]

AXI_MEM_MODEL = Path(__file__).with_name("axi_mem_model.v")
#: Depth of the harness's memory model, in bus words.
MEM_WORDS = 1 << 16


class EmbeddingHarness(wiring.Component):
    def __init__(self, config: AccelConfig):
        self._config = config
        self._inner = EmbeddingSubsystem(config)
        members = {name: member for name, member in self._inner.signature.members.items()
                   if name != "m_axi"}
        aw = config.mem_addr_width
        members.update({
            "mem_load": In(1), "mem_latency": In(16), "mem_stall_ar": In(8),
            "mem_stall_r": In(8), "mem_seed": In(32), "mem_err_lo": In(aw), "mem_err_hi": In(aw),
            "ar_addr": Out(aw), "ar_len": Out(8), "ar_fire": Out(1),
        })
        super().__init__(members)

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.embedding = emb = self._inner
        for name, member in emb.signature.members.items():
            if name == "m_axi":
                continue
            if member.is_signature:
                wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(emb, name))
            elif member.flow == In:
                m.d.comb += getattr(emb, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(emb, name))
        bus = emb.m_axi
        m.d.comb += [self.ar_addr.eq(bus.araddr), self.ar_len.eq(bus.arlen),
                     self.ar_fire.eq(bus.arvalid & bus.arready)]
        unused = {n: Signal(w, name=f"mem_{n}") for n, w in
                  (("awready", 1), ("wready", 1), ("bid", 1), ("bresp", 2), ("bvalid", 1))}
        m.submodules.memory = Instance(
            "rpaccel_axi_mem",
            p_ADDR_WIDTH=cfg.mem_addr_width, p_DATA_WIDTH=cfg.mem_bus_width, p_ID_WIDTH=1,
            p_WORDS=MEM_WORDS, p_OUTSTANDING=16,
            i_clk=ClockSignal(), i_rst=ResetSignal(), i_load=self.mem_load, i_dump=Const(0, 1),
            i_dump_lo=Const(0, 32), i_dump_hi=Const(0, 32),
            i_latency=self.mem_latency, i_stall_ar=self.mem_stall_ar,
            i_stall_r=self.mem_stall_r, i_seed=self.mem_seed, i_err_lo=self.mem_err_lo,
            i_err_hi=self.mem_err_hi,
            i_arid=bus.arid, i_araddr=bus.araddr, i_arlen=bus.arlen, i_arsize=bus.arsize,
            i_arburst=bus.arburst, i_arvalid=bus.arvalid, o_arready=bus.arready,
            o_rid=bus.rid, o_rdata=bus.rdata, o_rresp=bus.rresp, o_rlast=bus.rlast,
            o_rvalid=bus.rvalid, i_rready=bus.rready,
            i_awid=Const(0, 1), i_awaddr=Const(0, cfg.mem_addr_width), i_awlen=Const(0, 8),
            i_awsize=Const(0, 3), i_awburst=Const(0, 2), i_awvalid=Const(0, 1),
            o_awready=unused["awready"], i_wdata=Const(0, cfg.mem_bus_width),
            i_wstrb=Const(0, cfg.mem_bus_width // 8), i_wlast=Const(0, 1),
            i_wvalid=Const(0, 1), o_wready=unused["wready"], o_bid=unused["bid"],
            o_bresp=unused["bresp"], o_bvalid=unused["bvalid"], i_bready=Const(0, 1))
        return m


def axi4_full_signature(addr_width: int, data_width: int) -> wiring.Signature:
    """Both AXI4 channel sets, manager's view (``Out`` = driven by the manager), ID 1 bit."""
    from rpaccel.hw.axi import axi4_read_signature
    members = dict(axi4_read_signature(addr_width, data_width).members)
    members.update({
        "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awid": Out(1), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(1), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })
    return wiring.Signature(members)


class AxiMemoryHarness(wiring.Component):
    """Test only: the HDL memory model alone, both AXI4 channel sets on ``s_axi`` (so
    cocotbext-axi's ``AxiMaster`` drives it), controls as ``mem_*`` inputs."""

    def __init__(self, config: AccelConfig):
        self._config = config
        aw = config.mem_addr_width
        super().__init__({
            "s_axi": In(axi4_full_signature(aw, config.mem_bus_width)),
            "mem_load": In(1), "mem_latency": In(16), "mem_stall_ar": In(8),
            "mem_stall_r": In(8), "mem_seed": In(32), "mem_err_lo": In(aw), "mem_err_hi": In(aw),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, bus = self._config, self.s_axi
        ports = {f"i_{n}" if flow == "in" else f"o_{n}": getattr(bus, n)
                 for n, flow in (
                     ("arid", "in"), ("araddr", "in"), ("arlen", "in"), ("arsize", "in"),
                     ("arburst", "in"), ("arvalid", "in"), ("arready", "out"), ("rid", "out"),
                     ("rdata", "out"), ("rresp", "out"), ("rlast", "out"), ("rvalid", "out"),
                     ("rready", "in"), ("awid", "in"), ("awaddr", "in"), ("awlen", "in"),
                     ("awsize", "in"), ("awburst", "in"), ("awvalid", "in"),
                     ("awready", "out"), ("wdata", "in"), ("wstrb", "in"), ("wlast", "in"),
                     ("wvalid", "in"), ("wready", "out"), ("bid", "out"), ("bresp", "out"),
                     ("bvalid", "out"), ("bready", "in"))}
        m.submodules.memory = Instance(
            "rpaccel_axi_mem",
            p_ADDR_WIDTH=cfg.mem_addr_width, p_DATA_WIDTH=cfg.mem_bus_width, p_ID_WIDTH=1,
            p_WORDS=MEM_WORDS, p_OUTSTANDING=16,
            i_clk=ClockSignal(), i_rst=ResetSignal(), i_load=self.mem_load, i_dump=Const(0, 1),
            i_dump_lo=Const(0, 32), i_dump_hi=Const(0, 32),
            i_latency=self.mem_latency, i_stall_ar=self.mem_stall_ar,
            i_stall_r=self.mem_stall_r, i_seed=self.mem_seed, i_err_lo=self.mem_err_lo,
            i_err_hi=self.mem_err_hi, **ports)
        return m
