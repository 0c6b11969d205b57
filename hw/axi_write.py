"""AXI4 write master of the top level: blocks of bus words to memory (results, kept lists,
completions), split into INCR bursts that never cross 4 KiB.

The signature is flat with the AXI4 names (``awaddr``, ``wdata``, ``bresp``, ...), so a port
``m_axi`` binds to ``cocotbext-axi``'s ``AxiWriteBus.from_prefix(dut, "m_axi_")``.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig

from .axi import BURST_INCR, MAX_BURST, page_burst_limit

__all__ = ["axi4_write_signature", "write_job_layout", "write_beat_layout", "AxiBlockWriter",
           "MAX_BURST"]


def axi4_write_signature(addr_width: int, data_width: int, id_width: int = 1) -> wiring.Signature:
    """The AW, W and B channels of an AXI4 manager (``Out`` = driven by the manager)."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awid": Out(id_width), "awlock": Out(1), "awcache": Out(4), "awprot": Out(3),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def write_job_layout(config: AccelConfig) -> data.StructLayout:
    """One block: ``bytes`` (1..65535) from the bus-word-aligned byte address ``addr``."""
    return data.StructLayout({"addr": unsigned(config.mem_addr_width), "bytes": unsigned(16)})


def write_beat_layout(config: AccelConfig) -> data.StructLayout:
    """One bus word of a block's data, lowest address in the low bits."""
    return data.StructLayout({"data": unsigned(config.mem_bus_width)})


class AxiBlockWriter(wiring.Component):
    """Writes blocks of bytes to memory over AXI4.

    Ports
    -----
    jobs : In(stream.Signature(write_job_layout))
        One block per beat; taken when the writer is idle. ``addr`` must be a multiple of
        the bus width in bytes (the low bits are ignored).
    data : In(stream.Signature(write_beat_layout))
        Exactly ``ceil(bytes / bus_bytes)`` beats per job, in address order; the bytes of
        the last beat beyond ``bytes`` are not written (``WSTRB`` low).
    done : Out(stream.Signature({error}))
        One beat per job once every burst's write response is in; ``error`` if any was
        SLVERR or DECERR (nothing hangs on an error: the remaining bursts are still
        written and answered).
    bus : Out(axi4_write_signature(...))
        INCR bursts of at most 256 beats, full-width ``AWSIZE``, ID 0, never crossing a
        4 KiB boundary; the address of a burst is sent before its data.
    bytes_written, bursts : Out(32)
        Counters (wrap), cleared by ``clear``.

    While reset is asserted no ``ready`` or ``valid`` is high.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        super().__init__({
            "jobs": In(stream.Signature(write_job_layout(config))),
            "data": In(stream.Signature(write_beat_layout(config))),
            "done": Out(stream.Signature(data.StructLayout({"error": 1}))),
            "bus": Out(axi4_write_signature(config.mem_addr_width, config.mem_bus_width)),
            "bytes_written": Out(32), "bursts": Out(32), "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        bus = self.bus
        B = cfg.mem_bus_width // 8
        log_b = B.bit_length() - 1
        in_reset = ResetSignal()

        addr = Signal(cfg.mem_addr_width)      # next burst's address
        beats_left = Signal(range((1 << 16) // B + 2))   # beats of the job not yet in a burst
        last_bytes = Signal(range(B + 1))      # valid bytes of the job's final beat
        burst_left = Signal(range(MAX_BURST + 1))        # beats of the current burst to send
        outstanding = Signal(range((1 << 16) // B + 2))  # bursts waiting for their B
        error = Signal()
        beat_bytes = Signal(range(B + 1))      # bytes of the beat sent last cycle (or 0)

        # A burst's length is worked out over two cycles before ADDRESS sends it: state
        # PAGE registers the beats left in the address's 4 KiB page (capped at MAX_BURST),
        # state SIZE the smaller of that and the job's beats left. In one path with AWLEN
        # and the next burst's address adder the compares limited the writer to 102 MHz
        # on ECP5; two cycles per burst are nothing beside its beats and its response.
        page_limit = page_burst_limit(m, addr, B)
        limit = Signal(range(MAX_BURST + 1))
        burst = Signal.like(limit)

        m.d.comb += [bus.awsize.eq(log_b), bus.awburst.eq(BURST_INCR), bus.awid.eq(0),
                     bus.awlock.eq(0), bus.awcache.eq(0b0011), bus.awprot.eq(0),
                     bus.awaddr.eq(addr), bus.awlen.eq(burst - 1)]
        b_fire = bus.bvalid & bus.bready
        m.d.comb += bus.bready.eq(~in_reset)
        with m.If(b_fire & bus.bresp[1]):
            m.d.sync += error.eq(1)

        final_beat = (beats_left == 0) & (burst_left == 1)
        strb_last = Signal(B)
        m.d.comb += strb_last.eq(Mux(last_bytes == B, (1 << B) - 1,
                                     (Const(1, B + 1) << last_bytes) - 1))
        m.d.comb += [bus.wdata.eq(self.data.payload.data),
                     bus.wstrb.eq(Mux(final_beat, strb_last, (1 << B) - 1)),
                     bus.wlast.eq(burst_left == 1)]

        m.d.sync += beat_bytes.eq(0)
        with m.FSM(name="writer"):
            with m.State("IDLE"):
                m.d.comb += self.jobs.ready.eq(~in_reset)
                with m.If(self.jobs.valid & ~in_reset):
                    n = self.jobs.payload.bytes
                    m.d.sync += [addr.eq(self.jobs.payload.addr & ~(B - 1)),
                                 beats_left.eq((n + B - 1) >> log_b),
                                 last_bytes.eq(Mux(n[:log_b] == 0, B, n[:log_b])),
                                 error.eq(0)]
                    with m.If(n == 0):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "PAGE"
            with m.State("PAGE"):
                m.d.sync += limit.eq(page_limit)
                m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += burst.eq(Mux(beats_left < limit, beats_left, limit))
                m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += bus.awvalid.eq(1)
                with m.If(bus.awready):
                    m.d.sync += [burst_left.eq(burst), beats_left.eq(beats_left - burst),
                                 addr.eq(addr + (burst << log_b)),
                                 self.bursts.eq(self.bursts + 1)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [bus.wvalid.eq(self.data.valid), self.data.ready.eq(bus.wready)]
                with m.If(self.data.valid & bus.wready):
                    m.d.sync += [burst_left.eq(burst_left - 1),
                                 beat_bytes.eq(Mux(final_beat, last_bytes, B))]
                    with m.If(burst_left == 1):
                        with m.If(beats_left == 0):
                            m.next = "RESPONSES"
                        with m.Else():
                            m.next = "PAGE"
            with m.State("RESPONSES"):
                with m.If((outstanding == 0) | ((outstanding == 1) & b_fire)):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.error.eq(error)]
                with m.If(self.done.ready):
                    m.next = "IDLE"

        aw_fire = bus.awvalid & bus.awready
        m.d.sync += outstanding.eq(outstanding + aw_fire - b_fire)
        # bytes_written adds each beat's bytes the cycle after the beat (beat_bytes, zero
        # when no beat went), so the final-beat test does not run on into the 32-bit adder;
        # the job's count is complete before its done beat (RESPONSES comes first).
        m.d.sync += self.bytes_written.eq(self.bytes_written + beat_bytes)
        with m.If(self.clear):
            m.d.sync += [self.bytes_written.eq(0), self.bursts.eq(0), beat_bytes.eq(0)]
        return m
