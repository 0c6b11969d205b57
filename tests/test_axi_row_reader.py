"""The embedding subsystem's AXI row reader (hw/axi.py): its counters around a clear."""

from rpaccel.hw.axi import AxiRowReader
from rpaccel.hw.config import PRESETS
from rpaccel.tb.amaranth_sim import simulate

LATENCY = 6          # cycles from each AR handshake to its (single) R beat


def test_a_burst_issued_on_the_cycle_of_a_clear_is_not_counted_but_still_completes():
    """Burst 1's AR handshake comes on the cycle of a clear: it is not counted, and its R
    beat must still take it off the bursts outstanding, so burst 2 (issued alone later)
    adds exactly its own LATENCY cycles to ``latency``; the counters show every event one
    cycle after it."""
    dut = AxiRowReader(PRESETS["tiny"])
    got = {}

    async def burst(ctx, clear_with_ar):
        ctx.set(dut.requests.valid, 1)
        ctx.set(dut.requests.payload.len, 0)
        ctx.set(dut.clear, clear_with_ar)
        await ctx.tick()                       # the AR handshake (arready is 1)
        ctx.set(dut.requests.valid, 0)
        ctx.set(dut.clear, 0)
        for _ in range(LATENCY - 1):
            await ctx.tick()
        ctx.set(dut.bus.rvalid, 1)
        ctx.set(dut.bus.rlast, 1)
        await ctx.tick()                       # the R handshake (rows.ready is 1)
        ctx.set(dut.bus.rvalid, 0)
        for _ in range(3):
            await ctx.tick()

    async def bench(ctx):
        ctx.set(dut.bus.arready, 1)
        ctx.set(dut.rows.ready, 1)
        await ctx.tick().repeat(2)
        await burst(ctx, clear_with_ar=1)
        got["after_first"] = (ctx.get(dut.bursts), ctx.get(dut.beats), ctx.get(dut.latency))
        await burst(ctx, clear_with_ar=0)
        got["after_second"] = (ctx.get(dut.bursts), ctx.get(dut.beats), ctx.get(dut.latency))

    simulate(dut, [bench], max_cycles=100, name="axi_row_reader_clear")
    # burst 1: its handshake not counted, its beat and its cycles after the clear counted
    assert got["after_first"] == (0, 1, LATENCY)
    assert got["after_second"] == (1, 2, 2 * LATENCY)
