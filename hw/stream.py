"""Stream building blocks shared by every unit.

``amaranth.lib.fifo`` in 0.5 is a plain ``Elaboratable`` with ``w_en``/``r_en`` ports; the
thin :class:`StreamFIFO` wrapper (as Glasgow's ``Queue``) gives it ``amaranth.lib.stream``
interfaces, so units connect with ``wiring.connect`` and keep one flow-control convention:
a transfer happens on a cycle where ``valid`` and ``ready`` are both high, and ``valid``
never depends on ``ready``.
"""

from amaranth import Module, Mux, ResetSignal, Shape, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO", "RegisterSlice", "connect_through_slice"]


class StreamFIFO(wiring.Component):
    """A synchronous FIFO of ``depth`` payloads of ``shape`` with stream ports.

    Ports
    -----
    w : In(stream.Signature(shape))
        Write side; ``w.ready`` is high while there is space.
    r : Out(stream.Signature(shape))
        Read side, registered (``SyncFIFOBuffered``): a payload written on cycle t can be read
        from cycle t+2 when the FIFO was empty (one cycle more than an unbuffered FIFO).
    level : Out(range(depth + 1))
        Payloads held.

    Throughput one payload per cycle in and out at the same time from ``depth = 3`` on; a
    two-entry FIFO takes a payload only every other cycle (its inner one-entry FIFO is
    ready only when empty; ``tests/test_stream.py``). Reset empties the FIFO; while it is
    asserted ``w.ready`` and ``r.valid`` are low, so no payload is taken or
    offered.
    """

    def __init__(self, shape, depth: int):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth!r}")
        self._shape = shape
        self._depth = depth
        super().__init__({
            "w": In(stream.Signature(shape)),
            "r": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=width, depth=self._depth)
        in_reset = ResetSignal()
        m.d.comb += [
            q.w_data.eq(self.w.payload),
            q.w_en.eq(self.w.valid & ~in_reset),
            self.w.ready.eq(q.w_rdy & ~in_reset),
            self.r.payload.eq(q.r_data),
            self.r.valid.eq(q.r_rdy & ~in_reset),
            q.r_en.eq(self.r.ready & ~in_reset),
            self.level.eq(q.level),
        ]
        return m


class RegisterSlice(wiring.Component):
    """A full-rate register stage on a stream (a skid buffer, as an AXI register slice):
    between two units it ends every path on both sides in flip-flops, so neither unit's
    handshake logic reaches into the other's.

    Ports
    -----
    w : In(stream.Signature(shape))
        Write side; ``w.ready`` is a flip-flop (high while the skid register is empty),
        never a function of ``w.valid``, ``r.ready`` or a payload.
    r : Out(stream.Signature(shape))
        Read side; ``r.valid`` and ``r.payload`` are flip-flops.

    Latency one cycle: a payload written on cycle t is offered from t + 1. Throughput one
    payload per cycle in and out at the same time, with any pattern of ``r.ready``
    (``tests/test_stream.py``). Holds up to two payloads: the *output* register and, when
    the output is stalled on the cycle a payload comes in, the *skid* register; the output
    refills from the skid first, so order is kept. ``r.ready`` reaches only the two
    registers' clock enables (the output register's 2:1 multiplexer, skid or input, is
    selected by the skid's valid flag). Reset empties both; while it
    is asserted ``w.ready`` and ``r.valid`` are low, as for :class:`StreamFIFO`.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "w": In(stream.Signature(shape)),
            "r": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        out_valid, skid_valid = Signal(), Signal()
        out_data = Signal(width, reset_less=True)
        skid_data = Signal(width, reset_less=True)
        in_reset = ResetSignal()
        m.d.comb += [
            self.w.ready.eq(~skid_valid & ~in_reset),
            self.r.valid.eq(out_valid & ~in_reset),
            self.r.payload.eq(out_data),
        ]
        taken_in = self.w.valid & ~skid_valid          # w.ready without the reset gate
        out_free = ~out_valid | self.r.ready           # the output register may load
        with m.If(out_free):
            m.d.sync += [out_valid.eq(skid_valid | taken_in),
                         out_data.eq(Mux(skid_valid, skid_data, self.w.payload))]
            m.d.sync += skid_valid.eq(0)
        with m.Elif(taken_in):
            m.d.sync += [skid_valid.eq(1), skid_data.eq(self.w.payload)]
        return m


def connect_through_slice(m: Module, name: str, source, sink) -> RegisterSlice:
    """``wiring.connect(m, source, sink)`` with a :class:`RegisterSlice` between them, added
    to ``m`` as submodule ``name``; returns the slice."""
    m.submodules[name] = stage = RegisterSlice(source.payload.shape())
    wiring.connect(m, source, stage.w)
    wiring.connect(m, stage.r, sink)
    return stage
