"""The stream FIFO (hw/stream.py): its throughput rule, which the registered stages between
units depend on (a two-entry FIFO is half rate, three entries and more full rate)."""

import pytest

from rpaccel.hw.stream import StreamFIFO
from rpaccel.tb.amaranth_sim import simulate

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
