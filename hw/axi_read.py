"""AXI4 block reader: contiguous arrays of fixed-size words from memory, as a stream.

Every direct memory access of the top level is "read ``count`` words of ``W`` bytes from
``addr``": ring entries (64 B), layer and table descriptors (16 B, 32 B), interaction
parameters (4 B), engine weight and bias words, static-cache rows, candidate records
(``record_bytes``). :class:`AxiWordReader` does it for one word size ``W`` (a power of two,
so words never straddle a 4 KiB page when the array is ``W``-aligned): it splits the array
into INCR bursts of at most 256 beats that never cross 4 KiB, unpacks ``B / W`` words from
each beat when words are narrower than the bus (``B`` bytes), and assembles ``W / B``
beats into a word when they are wider.
"""

from __future__ import annotations

from amaranth import Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, MAX_BURST, axi4_read_signature, page_burst_limit
from .config import AccelConfig

__all__ = ["AxiWordReader", "read_job_layout", "word_layout"]


def read_job_layout(config: AccelConfig) -> data.StructLayout:
    """``count`` (1..65535) words from the ``W``-aligned byte address ``addr`` (narrow
    words may start anywhere in a beat)."""
    return data.StructLayout({"addr": unsigned(config.mem_addr_width), "count": unsigned(16)})


def word_layout(word_bytes: int) -> data.StructLayout:
    """One word (lowest address in the low bits), ``error`` if any beat it came in was
    answered SLVERR or DECERR, ``last`` on the job's final word."""
    return data.StructLayout({"data": unsigned(8 * word_bytes), "error": 1, "last": 1})


class AxiWordReader(wiring.Component):
    """Reads arrays of ``word_bytes``-byte words.

    Ports
    -----
    jobs : In(stream.Signature(read_job_layout))
        Taken when the reader is idle; a job with ``count`` 0 gives no words.
    words : Out(stream.Signature(word_layout(word_bytes)))
        The job's words in address order, ``last`` on the final one. ``R`` beats are taken
        only as fast as words are taken (``rready`` follows ``words.ready``), so the
        consumer's backpressure reaches the memory and nothing is dropped.
    bus : Out(axi4_read_signature(addr, data, 1))
        ARID 0; at most one burst outstanding (a client of ``hw/axi_arbiter.py``; many
        readers run at once through it).

    While reset is asserted no ``ready`` or ``valid`` is high.
    """

    def __init__(self, config: AccelConfig, word_bytes: int):
        if word_bytes < 1 or word_bytes & (word_bytes - 1) or word_bytes > 4096:
            raise ValueError(f"word_bytes must be a power of two up to 4096, not "
                             f"{word_bytes!r}")
        self._config = config
        self._word = word_bytes
        super().__init__({
            "jobs": In(stream.Signature(read_job_layout(config))),
            "words": Out(stream.Signature(word_layout(word_bytes))),
            "bus": Out(axi4_read_signature(config.mem_addr_width, config.mem_bus_width)),
        })

    @property
    def word_bytes(self) -> int:
        return self._word

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        bus = self.bus
        B, W = cfg.mem_bus_width // 8, self._word
        log_b = B.bit_length() - 1
        in_reset = ResetSignal()
        per_beat = max(1, B // W)          # words in one beat
        per_word = max(1, W // B)          # beats in one word

        addr = Signal(cfg.mem_addr_width)
        beats_left = Signal(range((1 << 16) * per_word + 1))    # beats not yet requested
        words_left = Signal(range((1 << 16) + 1))               # words not yet delivered
        limit = Signal(range(MAX_BURST + 1))
        # The burst's length is registered in state SIZE, the cycle before ADDRESS sends it:
        # the page and length compares then end in a register instead of running on into
        # ARLEN and the next burst's address adder (the command processor's path once the
        # read arbiter's inputs were registered: 84.8 MHz on tiny).
        burst = Signal(range(MAX_BURST + 1))
        m.d.comb += limit.eq(page_burst_limit(m, addr, B))
        m.d.comb += [bus.araddr.eq(addr), bus.arlen.eq(burst - 1), bus.arsize.eq(log_b),
                     bus.arburst.eq(BURST_INCR), bus.arid.eq(0), bus.arlock.eq(0),
                     bus.arcache.eq(0b0011), bus.arprot.eq(0)]

        # Words out of the current beat (narrow words) or out of assembled beats (wide).
        beat = Signal(8 * B)
        beat_error = Signal()
        lane = Signal(range(max(per_beat, 2)))         # next word within the held beat
        held = Signal()                                # a beat is held (narrow words)
        assembled = Signal(8 * W)
        part = Signal(range(max(per_word, 2)))
        word_error = Signal()
        r_fire = bus.rvalid & bus.rready

        # Narrow words may start inside a beat: the burst starts at the beat's address and
        # the words before the array's first one are skipped.
        first_lane = Signal(range(max(per_beat, 2)))
        first_beat = Signal()
        with m.FSM(name="reader"):
            with m.State("IDLE"):
                m.d.comb += self.jobs.ready.eq(~in_reset)
                with m.If(self.jobs.valid & ~in_reset):
                    count = self.jobs.payload.count
                    start = self.jobs.payload.addr
                    m.d.sync += [addr.eq(start & ~(B - 1)), words_left.eq(count),
                                 first_beat.eq(1)]
                    if per_beat > 1:
                        skip = start[log_b - (per_beat.bit_length() - 1):log_b]
                        m.d.sync += [first_lane.eq(skip),
                                     beats_left.eq((count + skip + per_beat - 1)
                                                   >> (per_beat.bit_length() - 1))]
                    else:
                        m.d.sync += beats_left.eq(count * per_word)
                    with m.If(count != 0):
                        m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += burst.eq(Mux(beats_left < limit, beats_left, limit))
                m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += bus.arvalid.eq(1)
                with m.If(bus.arready):
                    m.d.sync += [beats_left.eq(beats_left - burst),
                                 addr.eq(addr + (burst << log_b))]
                    m.next = "DATA"
            with m.State("DATA"):
                # The burst's beats; the next burst is requested after its last beat.
                with m.If(r_fire & bus.rlast):
                    with m.If(beats_left != 0):
                        m.next = "SIZE"
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(words_left == 0):
                    m.next = "IDLE"

        out = self.words
        take = out.valid & out.ready
        if per_beat > 1:
            # Narrow words: hold each beat, hand out its words one per cycle.
            m.d.comb += [
                bus.rready.eq(~held & ~in_reset),
                out.valid.eq(held & (words_left != 0)),
                out.payload.data.eq(beat.word_select(lane, 8 * W)),
                out.payload.error.eq(beat_error),
                out.payload.last.eq(words_left == 1),
            ]
            with m.If(r_fire):
                m.d.sync += [beat.eq(bus.rdata), beat_error.eq(bus.rresp[1]), held.eq(1),
                             lane.eq(Mux(first_beat, first_lane, 0)), first_beat.eq(0)]
            with m.If(take):
                m.d.sync += [words_left.eq(words_left - 1), lane.eq(lane + 1)]
                with m.If((lane == per_beat - 1) | (words_left == 1)):
                    m.d.sync += held.eq(0)
            # A beat past the job's last word (count not a multiple of B / W) is taken
            # and dropped by the `words_left == 1` release above.
        else:
            # Word-wide or wider: assemble per_word beats, then offer the word.
            full = Signal()
            m.d.comb += [
                bus.rready.eq(~full & ~in_reset),
                out.valid.eq(full),
                out.payload.data.eq(assembled),
                out.payload.error.eq(word_error),
                out.payload.last.eq(words_left == 1),
            ]
            with m.If(r_fire):
                m.d.sync += word_error.eq(word_error | bus.rresp[1])
                if per_word == 1:
                    m.d.sync += [assembled.eq(bus.rdata), full.eq(1)]
                else:
                    m.d.sync += assembled.word_select(part, 8 * B).eq(bus.rdata)
                    with m.If(part == per_word - 1):
                        m.d.sync += [part.eq(0), full.eq(1)]
                    with m.Else():
                        m.d.sync += part.eq(part + 1)
            with m.If(take):
                m.d.sync += [full.eq(0), word_error.eq(0), words_left.eq(words_left - 1)]
        return m
