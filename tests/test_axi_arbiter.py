"""AXI4 read arbiter (hw/axi_arbiter.py): lint, round robin in the Amaranth simulator, and
the cocotb bench (three cocotbext-axi masters on one AxiRamRead) on both simulators."""

import pytest

from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.axi_arbiter import AxiReadArbiter
from rpaccel.hw.config import PRESETS
from rpaccel.tb.amaranth_sim import simulate

TINY = PRESETS["tiny"]


def test_lint_clean():
    proc = lint(generate(TINY, "axi_read_arbiter").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_round_robin_and_routing_by_id():
    """Three clients offer at once, always: the grants rotate 0, 1, 2, 0, ...; an R beat
    with RID 1 reaches client 1 only, with client 1's rready."""
    dut = AxiReadArbiter(TINY, 3)
    grants, routed = [], []

    async def bench(ctx):
        for i, c in enumerate(dut.clients):
            ctx.set(c.arvalid, 1)
            ctx.set(c.araddr, 0x100 * (i + 1))
        ctx.set(dut.bus.arready, 1)
        for _ in range(12):
            _, _, valid, arid, addr = await ctx.tick().sample(
                dut.bus.arvalid, dut.bus.arid, dut.bus.araddr)
            if valid:
                grants.append((arid, addr))
        ctx.set(dut.bus.rvalid, 1)
        ctx.set(dut.bus.rid, 0b11)              # client 1, its ID 1
        ctx.set(dut.bus.rdata, 0xBEEF)
        ctx.set(dut.clients[1].rready, 1)
        await ctx.delay(1e-9)
        routed.append([ctx.get(c.rvalid) for c in dut.clients] +
                      [ctx.get(dut.clients[1].rdata), ctx.get(dut.clients[1].rid),
                       ctx.get(dut.bus.rready)])

    simulate(dut, [bench], max_cycles=100, name="axi_arbiter")
    ids = [g[0] >> 1 for g in grants]           # ARID = {client, client's own ID}
    assert ids[:6] == [1, 2, 0, 1, 2, 0] or ids[:6] == [0, 1, 2, 0, 1, 2], ids
    assert all(addr == 0x100 * ((arid >> 1) + 1) for arid, addr in grants)
    assert routed == [[0, 1, 0, 0xBEEF, 1, 1]]


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_axi_read_arbiter(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "axi_read_arbiter"), simulator,
               "rpaccel.tb.test_axi_arbiter")
