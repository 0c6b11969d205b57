"""AXI4 block writer (hw/axi_write.py): lint, an error response in the Amaranth simulator,
and the cocotb bench against cocotbext-axi's AxiRam on both RTL simulators."""

import pytest

from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.axi_write import AxiBlockWriter
from rpaccel.hw.config import PRESETS
from rpaccel.tb.amaranth_sim import get, put, simulate

TINY = PRESETS["tiny"]


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_lint_clean(preset):
    proc = lint(generate(PRESETS[preset], "axi_writer").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_error_response_is_reported_and_nothing_hangs():
    """A slave that answers SLVERR to the second burst of a block over three pages (4
    bursts: 256 beats of 8 bytes fill half a page): every burst is still written, the job
    reports the error, the next job is clean."""
    dut = AxiBlockWriter(TINY)
    B = TINY.mem_bus_width // 8
    bus = dut.bus
    seen = {"aw": [], "w": 0}

    async def slave(ctx):
        ctx.set(bus.awready, 1)
        ctx.set(bus.wready, 1)
        pending = []
        async for _, _, awv, awa, awl, wv, wl, bv, br in ctx.tick().sample(
                bus.awvalid, bus.awaddr, bus.awlen, bus.wvalid, bus.wlast, bus.bvalid,
                bus.bready):
            if awv:
                seen["aw"].append((awa, awl + 1))
            if wv:
                seen["w"] += 1
                if wl:
                    pending.append(2 if len(seen["aw"]) == 2 else 0)
            if bv and br:                      # the response offered was taken
                pending.pop(0)
            ctx.set(bus.bvalid, bool(pending))
            ctx.set(bus.bresp, pending[0] if pending else 0)

    results = []

    async def host(ctx):
        for addr, n in ((4096 - 2 * B, 4096 + 4 * B), (0, 3 * B)):
            await put(ctx, dut.jobs, {"addr": addr, "bytes": n})
            for _ in range(-(-n // B)):
                await put(ctx, dut.data, {"data": 0x1234})
            results.append(await get(ctx, dut.done))

    simulate(dut, [host], background=[slave], max_cycles=20_000, name="axi_writer_error")
    assert results == [{"error": 1}, {"error": 0}]
    assert seen["aw"] == [(4096 - 2 * B, 2), (4096, 256), (4096 + 256 * B, 256),
                          (8192, 2), (0, 3)]
    assert seen["w"] == (4096 + 4 * B) // B + 3


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_axi_writer(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "axi_writer"), simulator, "rpaccel.tb.test_axi_write")
