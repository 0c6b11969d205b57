"""The stream helpers (hw/stream.py): the FIFO's throughput rule (a two-entry FIFO is half
rate, three entries and more full rate) and the register slice the registered stages between
units are built from (full rate, one cycle, nothing lost or reordered under any stalls)."""

import pytest

from rpaccel.hw.stream import RegisterSlice, StreamFIFO
from rpaccel.tb.amaranth_sim import Stalls, WithReset, receive, send, simulate

CYCLES = 100


@pytest.mark.parametrize("depth, rate", [(2, 0.5), (3, 1.0), (16, 1.0)])
def test_stream_fifo_throughput_with_input_always_valid_and_output_always_ready(depth, rate):
    """Payloads 0, 1, 2, ... offered on every cycle, the output always ready: the count of
    writes and reads over CYCLES cycles, and every payload out in order."""
    dut = StreamFIFO(8, depth)
    seen = {"written": 0, "read": []}

    async def bench(ctx):
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.r.ready, 1)
        for _ in range(CYCLES):
            ctx.set(dut.w.payload, seen["written"] & 0xFF)
            if ctx.get(dut.r.valid):
                seen["read"].append(ctx.get(dut.r.payload))
            written = ctx.get(dut.w.ready)
            await ctx.tick()
            seen["written"] += written

    simulate(dut, [bench], max_cycles=CYCLES + 10, name=f"stream_fifo_{depth}")
    assert seen["written"] == pytest.approx(rate * CYCLES, abs=2)
    assert seen["read"] == list(range(len(seen["read"])))
    assert len(seen["read"]) >= seen["written"] - 3


def test_register_slice_is_full_rate_with_one_cycle_latency():
    """Input always valid, output always ready: a payload every cycle, each one cycle
    after it went in."""
    dut = RegisterSlice(8)
    log = {"in": [], "out": []}

    async def bench(ctx):
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.r.ready, 1)
        for cycle in range(CYCLES):
            ctx.set(dut.w.payload, cycle & 0xFF)
            if ctx.get(dut.r.valid):
                log["out"].append((cycle, ctx.get(dut.r.payload)))
            if ctx.get(dut.w.ready):
                log["in"].append(cycle)
            await ctx.tick()

    simulate(dut, [bench], max_cycles=CYCLES + 10, name="register_slice_rate")
    assert log["in"] == list(range(CYCLES))
    assert log["out"] == [(c, (c - 1) & 0xFF) for c in range(1, CYCLES)]


@pytest.mark.parametrize("p_in, p_out, seed", [(0.0, 0.5, 1), (0.5, 0.0, 2), (0.3, 0.3, 3),
                                               (0.7, 0.7, 4)])
def test_register_slice_keeps_every_payload_in_order_under_random_stalls(p_in, p_out, seed):
    """Random valid gaps and random backpressure: every payload comes out once, in order;
    ``w.ready`` never waits for ``w.valid`` (it is high on an idle cycle whenever the skid
    register is empty)."""
    dut = RegisterSlice(16)
    payloads = list(range(300))
    got = {}

    async def source(ctx):
        await send(ctx, dut.w, payloads, Stalls(p_in, seed))

    async def sink(ctx):
        got["out"] = await receive(ctx, dut.r, len(payloads), Stalls(p_out, seed + 100))

    simulate(dut, [source, sink], max_cycles=20_000, name=f"register_slice_{seed}")
    assert got["out"] == payloads


def test_register_slice_full_holds_two_and_reset_empties_it():
    """Output stalled: two payloads are taken (output and skid register), then ``w.ready``
    is low; a reset drops both and keeps ``w.ready`` and ``r.valid`` low while it lasts;
    afterwards the slice passes payloads again."""
    top = WithReset(RegisterSlice(8))
    dut = top.dut
    seen = {}

    async def bench(ctx):
        ctx.set(dut.r.ready, 0)
        ctx.set(dut.w.valid, 1)
        taken = 0
        for value in (5, 6, 7, 8):
            ctx.set(dut.w.payload, value)
            taken += ctx.get(dut.w.ready)
            await ctx.tick()
        seen["taken"] = taken
        seen["valid_full"] = ctx.get(dut.r.valid)
        ctx.set(top.domain.rst, 1)
        seen["during_reset"] = (ctx.get(dut.w.ready), ctx.get(dut.r.valid))
        await ctx.tick()
        seen["still_in_reset"] = (ctx.get(dut.w.ready), ctx.get(dut.r.valid))
        ctx.set(top.domain.rst, 0)
        ctx.set(dut.w.valid, 0)
        await ctx.tick()
        seen["after_reset_valid"] = ctx.get(dut.r.valid)
        ctx.set(dut.r.ready, 1)
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.w.payload, 9)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        seen["after"] = (ctx.get(dut.r.valid), ctx.get(dut.r.payload))

    simulate(top, [bench], max_cycles=50, name="register_slice_reset")
    assert seen["taken"] == 2
    assert seen["valid_full"] == 1
    assert seen["during_reset"] == (0, 0)
    assert seen["still_in_reset"] == (0, 0)
    assert seen["after_reset_valid"] == 0
    assert seen["after"] == (1, 9)
