"""AXI4 memory port: the read-channel signature and a read master that fetches whole rows.

The signature members are flat and named as in the AXI4 specification (``araddr``,
``arvalid``, ``rdata``, ...), so a port named ``m_axi`` appears in the generated Verilog as
``m_axi__araddr``, ``m_axi__arvalid``, ... and ``cocotbext-axi`` binds it with
``AxiReadBus.from_prefix(dut, "m_axi_")`` (cocotb-bus joins the prefix and the name with
``_``). Directions are those of a manager (master): ``Out`` is driven by the accelerator.
"""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig

__all__ = ["axi4_read_signature", "read_request_layout", "read_row_layout", "AxiRowReader",
           "BURST_INCR", "RESP_OKAY", "RESP_SLVERR", "RESP_DECERR", "bus_bytes",
           "row_bits", "PAGE_BYTES", "MAX_BURST", "page_burst_limit"]

BURST_INCR = 0b01
RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
#: An AXI4 burst never crosses a 4 KiB boundary.
PAGE_BYTES = 4096
#: Longest INCR burst, in beats (AXI4).
MAX_BURST = 256


def page_burst_limit(m: Module, addr, bus_bytes: int):
    """The longest burst that may start at byte address ``addr`` (bus-word aligned) on a bus
    of ``bus_bytes``: the beats left in its 4 KiB page (``page_beats``, driven in ``m``), at
    most :data:`MAX_BURST`. The block writer and the word reader register it before a
    burst's length is decided."""
    log_b = bus_bytes.bit_length() - 1
    page_beats = Signal(range(PAGE_BYTES // bus_bytes + 1), name="page_beats")
    m.d.comb += page_beats.eq((PAGE_BYTES - addr[:12]) >> log_b)
    return Mux(page_beats < MAX_BURST, page_beats, MAX_BURST)


def bus_bytes(config: AccelConfig) -> int:
    """Bytes of one data beat."""
    return config.mem_bus_width // 8


def row_bits(config: AccelConfig) -> int:
    """Bits of one embedding row as stored on chip: ``emb_dim_max * operand_width``."""
    return config.emb_dim_max * config.operand_width


def axi4_read_signature(addr_width: int, data_width: int, id_width: int = 1) -> wiring.Signature:
    """The AR and R channels of an AXI4 manager (``Out`` = driven by the manager)."""
    return wiring.Signature({
        "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arid": Out(id_width), "arlock": Out(1), "arcache": Out(4), "arprot": Out(3),
        "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rid": In(id_width),
        "rvalid": In(1), "rready": Out(1),
    })


def read_request_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`AxiRowReader.requests`: one INCR burst of ``beats`` (1..256)
    full-width beats from the beat-aligned byte address ``addr``; ``beats`` is stored
    minus one (the AXI ``ARLEN`` encoding)."""
    return data.StructLayout({"addr": unsigned(config.mem_addr_width), "len": unsigned(8)})


def read_row_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`AxiRowReader.rows`: one burst's data as a row (beat ``i`` in bits
    ``[i*mem_bus_width, (i+1)*mem_bus_width)``, truncated to :func:`row_bits`) and whether
    any of its beats had an error response (SLVERR or DECERR)."""
    return data.StructLayout({"data": unsigned(row_bits(config)), "error": 1})


class AxiRowReader(wiring.Component):
    """AXI4 read master: one INCR burst per request, its beats assembled into one row.

    Ports
    -----
    requests : In(stream.Signature(read_request_layout))
        Passed straight to the AR channel (``arvalid = requests.valid``,
        ``requests.ready = arready``): no buffering, so put a FIFO in front. ``ARSIZE`` is
        the full bus width, ``ARBURST`` INCR, ``ARID`` 0, so responses return in request
        order; any number of bursts may be outstanding (the requester bounds them). The
        requester guarantees the burst does not cross 4 KiB (``hw/embedding.py`` does it by
        construction: a row is aligned to its power-of-two stride of at most 4 KiB).
    rows : Out(stream.Signature(read_row_layout))
        One row per burst, in request order, offered on the cycle its last beat is on R
        (``rows.valid = rvalid & rlast``; ``rready = rows.ready`` on that beat, 1 on the
        others): zero added latency, one beat per cycle.
    bursts, beats, errors, latency : Out(32)
        Counters (wrap at 2**32, cleared by ``clear``): AR handshakes, R handshakes, bursts
        whose response had SLVERR/DECERR on any beat, and the sum over bursts of the cycles
        from the AR handshake to the last R handshake (each cycle adds the bursts then
        outstanding); an event is counted one cycle after its handshake.
    clear : In(1)
        Clears the counters.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        super().__init__({
            "requests": In(stream.Signature(read_request_layout(config))),
            "rows": Out(stream.Signature(read_row_layout(config))),
            "bus": Out(axi4_read_signature(config.mem_addr_width, config.mem_bus_width)),
            "bursts": Out(32), "beats": Out(32), "errors": Out(32), "latency": Out(32),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        bus, width, rbits = self.bus, cfg.mem_bus_width, row_bits(cfg)
        n_slots = max(1, -(-rbits // width))          # beats that land in the row register
        m.d.comb += [
            bus.araddr.eq(self.requests.payload.addr), bus.arlen.eq(self.requests.payload.len),
            bus.arsize.eq((width // 8).bit_length() - 1), bus.arburst.eq(BURST_INCR),
            bus.arid.eq(0), bus.arlock.eq(0), bus.arcache.eq(0b0011), bus.arprot.eq(0),
            bus.arvalid.eq(self.requests.valid), self.requests.ready.eq(bus.arready),
        ]
        # Row assembly: beat i of a burst goes to slot i; later beats (a burst longer than a
        # row) are dropped, so a long response cannot corrupt anything.
        assembled = Signal(n_slots * width)
        slot = Signal(range(n_slots + 1))
        error = Signal()
        # Built slot by slot with Mux (no default-then-override of one signal): Icarus
        # re-runs a combinational block that overrides part of its own output forever.
        current = Signal(n_slots * width)
        m.d.comb += current.eq(Cat(*(Mux(slot == i, bus.rdata, assembled.word_select(i, width))
                                     for i in range(n_slots))))
        beat_error = bus.rresp[1]                      # SLVERR (10) and DECERR (11)
        m.d.comb += [
            self.rows.valid.eq(bus.rvalid & bus.rlast),
            self.rows.payload.data.eq(current[:rbits]),
            self.rows.payload.error.eq(error | beat_error),
            bus.rready.eq(~bus.rlast | self.rows.ready),
        ]
        r_fire = bus.rvalid & bus.rready
        with m.If(r_fire):
            with m.If(bus.rlast):
                m.d.sync += [slot.eq(0), error.eq(0), assembled.eq(0)]
            with m.Else():
                m.d.sync += [assembled.eq(current), error.eq(error | beat_error)]
                with m.If(slot != n_slots):
                    m.d.sync += slot.eq(slot + 1)

        # The counters count registered events (one cycle after the handshake): the
        # handshakes come from the row consumer's ready, and the 32-bit carry chains after
        # them were the embedding subsystem's longest path (91.7 MHz on `default`).
        # An event on the cycle of a clear is not counted (``counted``), but the bursts
        # outstanding are state, not a count: they follow every handshake.
        ar_q, r_q, last_q, error_q = Signal(), Signal(), Signal(), Signal()
        counted = Signal()
        m.d.sync += [ar_q.eq(bus.arvalid & bus.arready), r_q.eq(r_fire),
                     last_q.eq(r_fire & bus.rlast),
                     error_q.eq(r_fire & bus.rlast & (error | beat_error)),
                     counted.eq(~self.clear)]
        outstanding = Signal(32)
        m.d.sync += outstanding.eq(outstanding + ar_q - last_q)
        with m.If(self.clear):
            m.d.sync += [self.bursts.eq(0), self.beats.eq(0), self.errors.eq(0),
                         self.latency.eq(0)]
        with m.Else():
            m.d.sync += [
                self.bursts.eq(self.bursts + (ar_q & counted)),
                self.beats.eq(self.beats + (r_q & counted)),
                self.errors.eq(self.errors + (error_q & counted)),
                self.latency.eq(self.latency + outstanding),
            ]
        return m
