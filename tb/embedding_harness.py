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

__all__ = ["EmbeddingHarness", "AxiMemoryHarness", "axi4_full_signature", "AXI_MEM_MODEL",
           "MEM_WORDS", "AXI_PORTS", "memory_controls", "memory_model"]

AXI_MEM_MODEL = Path(__file__).with_name("axi_mem_model.v")
#: Depth of the harness's memory model, in bus words.
MEM_WORDS = 1 << 16

#: The memory model's read/write channel ports and their direction seen from the model.
AXI_PORTS = (
    ("arid", "in"), ("araddr", "in"), ("arlen", "in"), ("arsize", "in"), ("arburst", "in"),
    ("arvalid", "in"), ("arready", "out"), ("rid", "out"), ("rdata", "out"), ("rresp", "out"),
    ("rlast", "out"), ("rvalid", "out"), ("rready", "in"), ("awid", "in"), ("awaddr", "in"),
    ("awlen", "in"), ("awsize", "in"), ("awburst", "in"), ("awvalid", "in"),
    ("awready", "out"), ("wdata", "in"), ("wstrb", "in"), ("wlast", "in"), ("wvalid", "in"),
    ("wready", "out"), ("bid", "out"), ("bresp", "out"), ("bvalid", "out"), ("bready", "in"))


def memory_controls(config: AccelConfig) -> dict:
    """The signature members of the memory model's controls (``mem_*`` inputs of a
    harness: load, read latency, random stalls and their seed, the SLVERR window)."""
    aw = config.mem_addr_width
    return {"mem_load": In(1), "mem_latency": In(16), "mem_stall_ar": In(8),
            "mem_stall_r": In(8), "mem_seed": In(32), "mem_err_lo": In(aw), "mem_err_hi": In(aw)}


#: The controls that reach the model's combinational outputs (ready, resp), registered.
_REGISTERED_CONTROLS = ("mem_latency", "mem_stall_ar", "mem_stall_r", "mem_seed", "mem_err_lo",
                        "mem_err_hi")


def memory_model(m: Module, config: AccelConfig, harness, *, words: int, id_width: int = 1,
                 dump=None, **bus) -> Instance:
    """The HDL memory model (``rpaccel_axi_mem``) driven by ``harness``'s
    :func:`memory_controls`. ``bus`` maps channel port names (``araddr``, ``rdata``, ...)
    to signals; a port not given is tied off (inputs 0, outputs to an unused signal), so a
    read-only client names only the read channels. ``dump`` is ``(pulse, lo, hi)`` or None
    (no dumps).

    Latency, stalls, seed and the error window reach the model through a register in ``m``
    (a change takes effect one cycle later): the model's ready and response outputs depend
    on them combinationally, and Verilator evaluates all logic fed by a top-level input on
    every input change, clock edges included, which for the whole accelerator was a third
    of its run time."""
    unknown = set(bus) - {name for name, _ in AXI_PORTS}
    if unknown:
        raise ValueError(f"the memory model has no port {', '.join(sorted(unknown))}")
    dump_pulse, dump_lo, dump_hi = dump or (Const(0, 1), Const(0, 32), Const(0, 32))
    widths = {"arid": id_width, "awid": id_width, "rid": id_width, "bid": id_width,
              "araddr": config.mem_addr_width, "awaddr": config.mem_addr_width,
              "rdata": config.mem_bus_width, "wdata": config.mem_bus_width,
              "wstrb": config.mem_bus_width // 8, "arlen": 8, "awlen": 8, "arsize": 3,
              "awsize": 3, "arburst": 2, "awburst": 2, "rresp": 2, "bresp": 2}
    controls = {}
    for name in _REGISTERED_CONTROLS:
        port = getattr(harness, name)
        controls[name] = Signal.like(port, name=f"{name}_q", reset_less=True)
        m.d.sync += controls[name].eq(port)
    ports = {}
    for name, flow in AXI_PORTS:
        width = widths.get(name, 1)
        signal = bus.get(name)
        if signal is None:
            signal = Const(0, width) if flow == "in" else Signal(width, name=f"mem_{name}")
        ports[f"i_{name}" if flow == "in" else f"o_{name}"] = signal
    return Instance(
        "rpaccel_axi_mem",
        p_ADDR_WIDTH=config.mem_addr_width, p_DATA_WIDTH=config.mem_bus_width,
        p_ID_WIDTH=id_width, p_WORDS=words, p_OUTSTANDING=16,
        i_clk=ClockSignal(), i_rst=ResetSignal(), i_load=harness.mem_load, i_dump=dump_pulse,
        i_dump_lo=dump_lo, i_dump_hi=dump_hi, i_latency=controls["mem_latency"],
        i_stall_ar=controls["mem_stall_ar"], i_stall_r=controls["mem_stall_r"],
        i_seed=controls["mem_seed"], i_err_lo=controls["mem_err_lo"],
        i_err_hi=controls["mem_err_hi"],
        **ports)


class EmbeddingHarness(wiring.Component):
    def __init__(self, config: AccelConfig):
        self._config = config
        self._inner = EmbeddingSubsystem(config)
        members = {name: member for name, member in self._inner.signature.members.items()
                   if name != "m_axi"}
        aw = config.mem_addr_width
        members.update(memory_controls(config))
        members.update({"ar_addr": Out(aw), "ar_len": Out(8), "ar_fire": Out(1)})
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
        m.submodules.memory = memory_model(           # read channels only: writes tied off
            m, cfg, self, words=MEM_WORDS,
            **{name: getattr(bus, name) for name, _ in AXI_PORTS
               if name in bus.signature.members})
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
            **memory_controls(config),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, bus = self._config, self.s_axi
        m.submodules.memory = memory_model(
            m, cfg, self, words=MEM_WORDS, **{name: getattr(bus, name) for name, _ in AXI_PORTS})
        return m
