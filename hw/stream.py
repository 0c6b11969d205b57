"""Stream building blocks shared by every unit.

``amaranth.lib.fifo`` in 0.5 is a plain ``Elaboratable`` with ``w_en``/``r_en`` ports; the
thin :class:`StreamFIFO` wrapper (as Glasgow's ``Queue``) gives it ``amaranth.lib.stream``
interfaces, so units connect with ``wiring.connect`` and keep one flow-control convention:
a transfer happens on a cycle where ``valid`` and ``ready`` are both high, and ``valid``
never depends on ``ready``.
"""

from amaranth import Module, ResetSignal, Shape
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO"]


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
