"""Stream helpers and a runner for unit tests in Amaranth's own simulator.

Every Amaranth-simulator test of a unit goes through this module, so handshakes are written
once: :func:`put` / :func:`get` move one payload over an ``amaranth.lib.stream`` interface,
:func:`send` / :func:`receive` move many with random idle cycles (valid gaps) and random
backpressure (ready low) drawn from a seeded ``numpy`` generator, and :func:`simulate` runs
testbenches with a watchdog, so a hang fails the test with a message instead of blocking.

Payloads are given and returned as plain Python values: an ``int``, or a ``dict`` for a
``data.StructLayout`` payload (nested dicts/lists for nested layouts), so tests and golden
models stay free of Amaranth types.

Waveforms: set ``RPACCEL_WAVES=1`` and every :func:`simulate` call writes
``build/waves/<name>.vcd``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import numpy as np
from amaranth.lib import data
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

__all__ = ["Stalls", "NO_STALLS", "put", "get", "send", "receive", "simulate", "to_python",
           "from_python", "CLOCK_PERIOD", "WithReset"]

CLOCK_PERIOD = 1e-8  # 100 MHz; only cycle counts matter


class Stalls:
    """Random idle/backpressure pattern: each cycle the source is idle (or the sink not
    ready) with probability ``p``. ``p = 0`` is a full-rate stream."""

    def __init__(self, p: float = 0.0, seed: int | np.random.Generator = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"stall probability must be in [0, 1), not {p!r}")
        self.p = p
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def stall(self) -> bool:
        return self.p > 0 and self.rng.random() < self.p


NO_STALLS = Stalls(0.0)


def _layout(value):
    shape = value.shape() if hasattr(value, "shape") else None
    return shape if isinstance(shape, data.Layout) else None


def from_python(signal, value):
    """A Python int/dict/list as a value ``ctx.set`` accepts for ``signal``."""
    layout = _layout(signal)
    if layout is not None and isinstance(value, (dict, list, tuple)):
        return layout.const(value)
    return value


def to_python(value):
    """A value read with ``ctx.get`` as plain Python (int, dict, list)."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.StructLayout):
            return {name: to_python(value[name]) for name, _ in layout}
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[i]) for i in range(layout.length)]
        return value.as_value().value
    return value


async def put(ctx, stream, payload, stalls: Stalls = NO_STALLS):
    """Offer one payload on ``stream`` (after random idle cycles) until it is accepted."""
    while stalls.stall():
        await ctx.tick()
    ctx.set(stream.payload, from_python(stream.payload, payload))
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def get(ctx, stream, stalls: Stalls = NO_STALLS):
    """Accept one payload from ``stream`` (holding ready low on random cycles)."""
    while True:
        ready = not stalls.stall()
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            ctx.set(stream.ready, 0)
            return to_python(payload)


async def send(ctx, stream, payloads: Iterable, stalls: Stalls = NO_STALLS):
    """Send every payload in order, with random valid gaps."""
    for payload in payloads:
        await put(ctx, stream, payload, stalls)


async def receive(ctx, stream, count: int | None = None, stalls: Stalls = NO_STALLS, *,
                  until: Callable[[object], bool] | None = None) -> list:
    """Receive ``count`` payloads, or until ``until(payload)`` is true (that one included)."""
    items = []
    while count is None or len(items) < count:
        items.append(await get(ctx, stream, stalls))
        if until is not None and until(items[-1]):
            break
    return items


def simulate(dut, testbenches: Iterable[Callable[..., Awaitable]], *, max_cycles: int,
             name: str | None = None, background: Iterable[Callable[..., Awaitable]] = ()):
    """Run ``testbenches`` (async functions of ``ctx``) on ``dut`` to completion.

    Raises ``TimeoutError`` naming ``max_cycles`` if they have not all returned by then
    (the design hung or a testbench waits for something that never comes).
    """
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for bench in testbenches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)

    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise TimeoutError(f"simulation of {type(dut).__name__} did not finish within "
                           f"{max_cycles} cycles")

    sim.add_testbench(watchdog, background=True)
    if os.environ.get("RPACCEL_WAVES", "") not in ("", "0"):
        out = Path(os.environ.get("RPACCEL_BUILD", "build")) / "waves"
        out.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(out / f"{name or type(dut).__name__}.vcd")):
            sim.run()
    else:
        sim.run()


class WithReset(Elaboratable):
    """``dut`` inside an explicit ``sync`` domain, so a testbench can drive its reset:
    ``ctx.set(top.domain.rst, 1)``. Simulate the wrapper, drive and sample ``top.dut``."""

    def __init__(self, dut):
        self.dut, self.domain = dut, ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        m.submodules.dut = self.dut
        return m
