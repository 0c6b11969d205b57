"""The CSR block: the registers of :func:`rpaccel.hw.regmap.register_map` behind an AXI4-Lite
slave port.

The AXI4-Lite signature is flat, with the signal names of the AXI specification, so that
the generated Verilog names (``s_axil__awaddr``, ``s_axil__arvalid``, ...) bind directly to
``cocotbext-axi``'s ``AxiLiteBus.from_prefix(dut, "s_axil_")`` and to an SoC interconnect.
"""

from __future__ import annotations

from amaranth import Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .regmap import RegisterMap, register_map

__all__ = ["axi_lite_signature", "CSRBlock", "OKAY", "SLVERR", "field_port_name"]

OKAY, SLVERR = 0b00, 0b10


def axi_lite_signature(addr_width: int) -> wiring.Signature:
    """An AXI4-Lite port as seen by the **master** (``Out`` = driven by the master); a slave
    uses ``In(axi_lite_signature(...))``. Data is 32 bits, ``wstrb`` 4 bits."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def field_port_name(register: str, field: str) -> str:
    """The member of :attr:`CSRBlock.regs` carrying one field: ``<register>__<field>``."""
    return f"{register}__{field}"


class CSRBlock(wiring.Component):
    """The registers of ``register_map(config)`` on an AXI4-Lite slave.

    Ports
    -----
    s_axil : In(axi_lite_signature(addr_width))
        The host's port. One write and one read may be in progress at a time (AW and W may
        arrive in either order); a write takes effect and is answered (B) two cycles
        after both are held; a read answers one cycle after its address is taken. An
        offset with no register answers SLVERR and changes nothing; ``wstrb`` selects the
        bytes a write changes.
    regs : the fields, one member ``<REGISTER>__<FIELD>`` each, by access type:
        ``rw`` Out(width), the value (its reset value after reset); ``ro`` In(width), read
        as driven (a constant ``ro`` field, e.g. ``ID``, has no port); ``w1c`` Out(width)
        the sticky value and ``..._set`` In(width), bits to set (set wins over a clear in
        the same cycle); ``w1p`` Out(1), high for the cycle after a write of 1.
        ``<REGISTER>__written`` Out(1) pulses after any accepted write to a register with
        ``rw`` fields (e.g. so the hardware sees a new ring tail).

    ``_LO`` / ``_HI`` pairs of ``ro`` registers: reading ``_LO`` snapshots the ``_HI`` input,
    and a read of ``_HI`` returns that snapshot, so the two halves belong to one value.

    While reset is asserted no ``ready`` or ``valid`` of the port is high.
    """

    def __init__(self, config: AccelConfig):
        regmap = register_map(config)
        self._config = config
        self._map = regmap
        self._addr_width = max(2, (regmap.size - 1).bit_length())
        members = {}
        self._const = {}
        for r in regmap:
            has_rw = False
            for f in r.fields:
                name = field_port_name(r.name, f.name)
                if f.access == "ro":
                    if r.name in ("ID", "VERSION", "CONFIG_HASH_LO", "CONFIG_HASH_HI", "CAPS"):
                        self._const[name] = f.reset
                    else:
                        members[name] = In(f.width)
                elif f.access == "rw":
                    members[name] = Out(f.width, init=f.reset)
                    has_rw = True
                elif f.access == "w1c":
                    members[name] = Out(f.width)
                    members[name + "_set"] = In(f.width)
                else:  # w1p
                    members[name] = Out(1)
            if has_rw:
                members[f"{r.name}__written"] = Out(1)
        self._members = members
        super().__init__({
            "s_axil": In(axi_lite_signature(self._addr_width)),
            "regs": Out(wiring.Signature(members)),
        })

    @staticmethod
    def address_width(config: AccelConfig) -> int:
        """Width of ``s_axil``'s addresses for ``config``."""
        return max(2, (register_map(config).size - 1).bit_length())

    @property
    def regmap(self) -> RegisterMap:
        return self._map

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def elaborate(self, platform):
        m = Module()
        bus, regs = self.s_axil, self.regs
        in_reset = ResetSignal()

        # Paired counters: the _HI snapshot taken when _LO is read.
        names = {r.name for r in self._map}
        snapshots = {}
        for r in self._map:
            if r.name.endswith("_LO") and r.name[:-3] + "_HI" in names:
                hi = self._map[r.name[:-3] + "_HI"]
                if all(f.access == "ro" and field_port_name(x.name, f.name) in self._members
                       for x in (r, hi) for f in x.fields):
                    snapshots[hi.name] = (r.name, Signal(32, name=f"{hi.name}_snapshot"))

        def field_value(r, f):
            name = field_port_name(r.name, f.name)
            if name in self._const:
                return self._const[name]
            return getattr(regs, name)

        def read_value(r):
            if r.name in snapshots:
                return snapshots[r.name][1]
            value = 0
            for f in r.fields:
                if f.access != "w1p":
                    value = value | (field_value(r, f) << f.lsb)
            return value

        # -- write channel: AW and W held until both are there, then one B -------------------
        aw_held, w_held = Signal(), Signal()
        aw_addr = Signal(self._addr_width)
        w_data, w_strb = Signal(32), Signal(4)
        b_valid, b_resp = Signal(), Signal(2)
        m.d.comb += [
            bus.awready.eq(~aw_held & ~b_valid & ~in_reset),
            bus.wready.eq(~w_held & ~b_valid & ~in_reset),
            bus.bvalid.eq(b_valid), bus.bresp.eq(b_resp),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(b_valid & bus.bready):
            m.d.sync += b_valid.eq(0)

        byte_mask = Signal(32)
        m.d.comb += byte_mask.eq(sum(((w_strb[i] * 0xFF) << (8 * i)) for i in range(4)))
        # A write takes two cycles once AW and W are both held: DECODE registers which
        # register the address hits (one flip-flop per register), APPLY writes it and
        # answers. The address compare then ends in a register instead of driving the
        # enables of every register's flip-flops (136 MHz on ECP5 with it in one path).
        decoded = Signal()
        do_decode = aw_held & w_held & ~decoded
        m.d.sync += decoded.eq(do_decode)
        do_write = decoded
        hit_write = Signal()
        word = aw_addr[2:]
        pulses = {}
        for r in self._map:
            hit = Signal(name=f"{r.name}_hit")
            with m.If(do_decode):
                m.d.sync += hit.eq(word == r.offset // 4)
            with m.Elif(do_write):
                m.d.sync += hit.eq(0)
            with m.If(hit):
                m.d.comb += hit_write.eq(1)
            if f"{r.name}__written" in self._members:
                written = getattr(regs, f"{r.name}__written")
                m.d.sync += written.eq(hit)
            for f in r.fields:
                name = field_port_name(r.name, f.name)
                bits = w_data[f.lsb:f.msb + 1]
                keep = byte_mask[f.lsb:f.msb + 1]
                if f.access == "rw":
                    port = getattr(regs, name)
                    with m.If(hit):
                        m.d.sync += port.eq((bits & keep) | (port & ~keep))
                elif f.access == "w1c":
                    port, setter = getattr(regs, name), getattr(regs, name + "_set")
                    clear = Signal(f.width, name=f"{name}_clear")
                    m.d.comb += clear.eq(bits & keep & hit.replicate(f.width))
                    m.d.sync += port.eq((port & ~clear) | setter)
                elif f.access == "w1p":
                    pulses[name] = getattr(regs, name)
                    m.d.sync += pulses[name].eq(hit & bits[0] & keep[0])
        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), b_valid.eq(1),
                         b_resp.eq(Mux(hit_write, OKAY, SLVERR))]

        # -- read channel: the address taken, the data one cycle later -----------------------
        r_valid, r_data, r_resp = Signal(), Signal(32), Signal(2)
        m.d.comb += [bus.arready.eq(~r_valid & ~in_reset), bus.rvalid.eq(r_valid),
                     bus.rdata.eq(r_data), bus.rresp.eq(r_resp)]
        with m.If(r_valid & bus.rready):
            m.d.sync += r_valid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_valid.eq(1), r_resp.eq(SLVERR), r_data.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for r in self._map:
                    with m.Case(r.offset // 4):
                        m.d.sync += [r_data.eq(read_value(r)), r_resp.eq(OKAY)]
                        for hi_name, (lo_name, snap) in snapshots.items():
                            if lo_name == r.name:
                                hi = self._map[hi_name]
                                m.d.sync += snap.eq(getattr(
                                    regs, field_port_name(hi.name, hi.fields[0].name)))
        return m
