"""cocotb drivers and sinks for ``amaranth.lib.stream`` ports, shared by every unit's bench.

An Amaranth stream port ``name`` appears in the generated Verilog as ``name__valid``,
``name__ready`` and ``name__payload`` (one flat vector). :class:`StreamDriver` offers
payloads on such a port with random idle cycles (valid gaps); :class:`StreamSink` takes them
with random backpressure (ready low). Payloads are plain Python values: a ``dict`` (nested
for nested layouts) for a ``data.Layout`` payload, packed with the hardware's own layout
(``layout.const(d).as_bits()``) and unpacked with ``layout.from_bits(...)``, or an ``int``
for a plain shape. No bit position is derived here. A value that does not fit its field
(an int8 lane given 200, an id wider than ``id_width``) raises ``ValueError`` naming the
port, the field and the range instead of being truncated: a bench whose stimulus ignores the
configuration fails loudly rather than testing other numbers than it thinks.

Timing convention (the same for every driver and sink, so they compose): signals are
driven just after the falling clock edge and sampled in the ``ReadOnly`` phase that
follows, when everything has settled; a transfer happens at the next rising edge if
``valid`` and ``ready`` were both high. Every transfer is stamped with the
:class:`CycleCounter` value at that sample, so cycle differences between ports are exact
RTL cycles (not wall-clock time).

Randomness comes from a ``numpy`` generator the bench derives from its seeded rng
(``rpaccel.tb.common.Bench.rng``), so a failing run repeats with the same ``RANDOM_SEED``.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import numpy as np

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from amaranth.hdl import Shape
from amaranth.lib import data

from rpaccel.tb.amaranth_sim import to_python

__all__ = ["CycleCounter", "Transfer", "StreamDriver", "StreamSink", "packets", "child_rng",
           "check_fits"]


def child_rng(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator drawn from ``rng`` (so stalls and stimulus don't interleave)."""
    return np.random.default_rng(int(rng.integers(1 << 63)))


class CycleCounter:
    """Counts rising edges of ``clk`` from the moment it is created: ``cycle`` is the current
    clock cycle's index. Create one per bench and hand it to every driver and sink."""

    def __init__(self, clk):
        self.clk = clk
        self.cycle = 0
        self._task = cocotb.start_soon(self._count())

    async def _count(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1


class Transfer(NamedTuple):
    cycle: int        #: CycleCounter value of the cycle the transfer completed in
    payload: object   #: dict (layout payload) or int


class _Port:
    def __init__(self, dut, prefix: str, layout, counter: CycleCounter,
                 rng: np.random.Generator | None, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"stall probability must be in [0, 1), not {p!r}")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.prefix = prefix
        self.layout = layout
        self.counter = counter
        self.clk = counter.clk
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.p = p

    def _stall(self) -> bool:
        return self.p > 0 and self.rng.random() < self.p

    def pack(self, value) -> int:
        check_fits(self.layout, value, self.prefix)
        if isinstance(self.layout, data.Layout):
            return self.layout.const(value).as_bits()
        return int(value) & ((1 << Shape.cast(self.layout).width) - 1)

    def unpack(self, bits: int):
        if isinstance(self.layout, data.Layout):
            return to_python(self.layout.from_bits(bits))
        shape = Shape.cast(self.layout)
        if shape.signed and bits >> (shape.width - 1):
            return bits - (1 << shape.width)
        return bits


def check_fits(shape, value, where: str) -> None:
    """Raise ``ValueError`` if ``value`` (int, or dict/list for a layout) does not fit
    ``shape`` without truncation; ``where`` names it in the message."""
    if isinstance(shape, data.ArrayLayout):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list of {shape.length}, not {value!r}")
        if len(value) > shape.length:
            raise ValueError(f"{where}: {len(value)} elements for {shape.length} lanes")
        for i, item in enumerate(value):
            check_fits(shape.elem_shape, item, f"{where}[{i}]")
        return
    if isinstance(shape, data.Layout):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a dict of fields, not {value!r}")
        for name, item in value.items():
            try:
                field = shape[name]
            except KeyError:
                raise ValueError(f"{where}: no field {name!r}") from None
            check_fits(field.shape, item, f"{where}.{name}")
        return
    resolved = Shape.cast(shape)
    lo = -(1 << (resolved.width - 1)) if resolved.signed else 0
    hi = (1 << (resolved.width - 1 if resolved.signed else resolved.width)) - 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}: expected an integer, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{where} = {int(value)} does not fit "
                         f"{'signed' if resolved.signed else 'unsigned'}({resolved.width}) "
                         f"({lo}..{hi})")


class StreamDriver(_Port):
    """Offers payloads on the stream port ``prefix`` of ``dut``.

    Before each payload the port stays idle for a random number of cycles (each cycle with
    probability ``idle``); a payload is held until it is accepted. ``valid`` never depends on
    ``ready``.
    """

    def __init__(self, dut, prefix: str, layout, *, counter: CycleCounter,
                 rng: np.random.Generator | None = None, idle: float = 0.0):
        super().__init__(dut, prefix, layout, counter, rng, idle)
        self.valid.value = 0

    async def send(self, payloads: Iterable) -> list[int]:
        """Send every payload in order; returns the cycle each one was accepted on.

        The port is idle again after the last one (so payloads that must go back to back
        are passed in one call)."""
        cycles = []
        for payload in payloads:
            bits = self.pack(payload)
            while self._stall():
                await FallingEdge(self.clk)
                self.valid.value = 0
            await FallingEdge(self.clk)
            self.payload.value = bits
            self.valid.value = 1
            while True:
                await ReadOnly()
                if int(self.ready.value):
                    cycles.append(self.counter.cycle)
                    break
                await FallingEdge(self.clk)
        await FallingEdge(self.clk)
        self.valid.value = 0
        return cycles


class StreamSink(_Port):
    """Takes payloads from the stream port ``prefix`` of ``dut``, holding ``ready`` low on
    random cycles (each with probability ``backpressure``) while receiving, and low when not
    receiving."""

    def __init__(self, dut, prefix: str, layout, *, counter: CycleCounter,
                 rng: np.random.Generator | None = None, backpressure: float = 0.0):
        super().__init__(dut, prefix, layout, counter, rng, backpressure)
        self.ready.value = 0

    async def receive(self, count: int | None = None, *,
                      until: Callable[[object], bool] | None = None) -> list[Transfer]:
        """Receive ``count`` transfers, or until ``until(payload)`` is true (that one
        included); ``ready`` is low again afterwards."""
        items: list[Transfer] = []
        while count is None or len(items) < count:
            await FallingEdge(self.clk)
            ready = not self._stall()
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and int(self.valid.value):
                item = Transfer(self.counter.cycle, self.unpack(int(self.payload.value)))
                items.append(item)
                if until is not None and until(item.payload):
                    break
        await FallingEdge(self.clk)
        self.ready.value = 0
        return items

    async def expect_idle(self, cycles: int) -> None:
        """Hold ``ready`` high for ``cycles`` cycles and fail if anything is offered."""
        for _ in range(cycles):
            await FallingEdge(self.clk)
            self.ready.value = 1
            await ReadOnly()
            assert not int(self.valid.value), \
                f"{self.prefix}: unexpected beat {self.unpack(int(self.payload.value))}"
        await FallingEdge(self.clk)
        self.ready.value = 0


def packets(n: int, field: str = "last") -> Callable[[dict], bool]:
    """An ``until`` predicate for :meth:`StreamSink.receive`: true on the ``n``-th payload
    whose ``field`` is set (the end of the ``n``-th packet)."""
    if n < 1:
        raise ValueError(f"packet count must be at least 1, not {n!r}")
    seen = 0

    def until(payload) -> bool:
        nonlocal seen
        seen += bool(payload[field])
        return seen >= n

    return until
