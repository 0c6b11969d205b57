"""cocotb testbench of the CSR block (hw/csr.py) through cocotbext-axi's AXI4-Lite master.

The bench drives the register map exactly as a host would, through the accessors of
``rpaccel.sim.registers`` (offsets and fields from the one register map), with random
pauses on every AXI4-Lite channel, and checks identity, read/write fields with byte
strobes, write-1-to-clear, pulses, ``ro`` inputs, the LO/HI counter snapshot and SLVERR on
unmapped offsets.
"""

from __future__ import annotations

import itertools

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from rpaccel.hw.csr import field_port_name
from rpaccel.sim.registers import RegisterAccess
from rpaccel.tb.common import setup


def pauses(rng, p: float):
    """An endless pause pattern for a cocotbext-axi channel (True = pause this cycle)."""
    return itertools.cycle([bool(rng.random() < p) for _ in range(97)])


class CSRHost:
    """Named register reads and writes over the AXI4-Lite master (the async twin of
    ``rpaccel.sim.registers.SyncRegisters``)."""

    def __init__(self, dut, bench, pause: float):
        self.access = RegisterAccess(bench.config)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        if pause:
            self.axil.write_if.aw_channel.set_pause_generator(pauses(bench.rng, pause))
            self.axil.write_if.w_channel.set_pause_generator(pauses(bench.rng, pause))
            self.axil.write_if.b_channel.set_pause_generator(pauses(bench.rng, pause))
            self.axil.read_if.ar_channel.set_pause_generator(pauses(bench.rng, pause))
            self.axil.read_if.r_channel.set_pause_generator(pauses(bench.rng, pause))

    async def read_word(self, offset: int) -> tuple[int, AxiResp]:
        resp = await self.axil.read(offset, 4)
        return int.from_bytes(resp.data, "little"), resp.resp

    async def read(self, name: str) -> dict:
        word, resp = await self.read_word(self.access.offset(name))
        assert resp == AxiResp.OKAY, (name, resp)
        return self.access.decode(name, word)

    async def write(self, name: str, value=None, *, strobe_bytes=None, **fields):
        offset, word = self.access.encode(name, value, **fields)
        data = word.to_bytes(4, "little")
        if strobe_bytes is None:
            resp = await self.axil.write(offset, data)
        else:  # a narrow write: only these bytes
            lo, n = strobe_bytes
            resp = await self.axil.write(offset + lo, data[lo:lo + n])
        assert resp.resp == AxiResp.OKAY, (name, resp.resp)


async def run(dut, pause: float):
    bench = await setup(dut)
    host = CSRHost(dut, bench, pause)
    regs = host.access.map
    port = lambda reg, field: getattr(dut, "regs__" + field_port_name(reg, field))  # noqa

    # identity
    ident = [await host.read(n) for n in ("ID", "CONFIG_HASH_LO", "CONFIG_HASH_HI")]
    host.access.check_identity(ident[0]["MAGIC"], ident[1]["VALUE"], ident[2]["VALUE"])
    caps = await host.read("CAPS")
    assert caps["PARTITIONS"] == bench.config.partitions, caps

    # rw fields: reset values, full and byte-strobed writes, seen by the hardware
    assert (await host.read("DYNAMIC_WAYS0"))["MASK"] == regs["DYNAMIC_WAYS0"].reset
    assert (await host.read("CTRL"))["ENABLE"] == 0
    for value in (0x12345678, 0xFFFFFFFF, 0, int(bench.rng.integers(1 << 32))):
        await host.write("RING_BASE_LO", value)
        assert (await host.read("RING_BASE_LO"))["VALUE"] == value
        assert int(port("RING_BASE_LO", "VALUE").value) == value
    await host.write("RING_BASE_LO", 0x11223344)
    await host.write("RING_BASE_LO", 0xAABBCCDD, strobe_bytes=(1, 2))
    assert (await host.read("RING_BASE_LO"))["VALUE"] == 0x11BBCC44
    await host.write("CTRL", ENABLE=1, IRQ_ENABLE=1)
    assert int(port("CTRL", "ENABLE").value) == 1 and int(port("CTRL", "IRQ_ENABLE").value) == 1

    # the written pulse of RING_TAIL comes once per write
    seen = 0

    async def count_pulses():
        nonlocal seen
        while True:
            await RisingEdge(dut.clk)
            seen += int(port("RING_TAIL", "written").value)
    counter = cocotb.start_soon(count_pulses())
    await host.write("RING_TAIL", INDEX=5)
    await host.write("RING_TAIL", INDEX=6)
    await ClockCycles(dut.clk, 3)
    counter.cancel()
    assert seen == 2, seen
    assert (await host.read("RING_TAIL"))["INDEX"] == 6

    # ro inputs are read as driven; writes to them change nothing
    port("RING_HEAD", "INDEX").value = 0x1234
    assert (await host.read("RING_HEAD"))["INDEX"] == 0x1234
    await host.write("RING_HEAD", INDEX=7)
    assert (await host.read("RING_HEAD"))["INDEX"] == 0x1234

    # w1c: set by the hardware, cleared by writing 1, set wins over a clear
    setter = port("IRQ_STATUS", "DONE_set")
    await RisingEdge(dut.clk)
    setter.value = 1
    await RisingEdge(dut.clk)
    setter.value = 0
    assert (await host.read("IRQ_STATUS")) == {"DONE": 1, "ERROR": 0}
    await host.write("IRQ_STATUS", ERROR=1)          # clearing another bit leaves DONE
    assert (await host.read("IRQ_STATUS"))["DONE"] == 1
    await host.write("IRQ_STATUS", DONE=1)
    assert (await host.read("IRQ_STATUS"))["DONE"] == 0

    # 64-bit counters: reading _LO snapshots _HI
    lo, hi = port("CYCLES_LO", "VALUE"), port("CYCLES_HI", "VALUE")
    lo.value, hi.value = 0xDEADBEEF, 0x11
    low = (await host.read("CYCLES_LO"))["VALUE"]
    hi.value = 0x22                                    # the counter moved on
    high = (await host.read("CYCLES_HI"))["VALUE"]
    assert (high, low) == (0x11, 0xDEADBEEF), (hex(high), hex(low))

    # unmapped offsets: SLVERR on reads and writes, nothing changes
    used = {r.offset for r in regs}
    hole = next(o for o in range(0, regs.size, 4) if o not in used)
    word, resp = await host.read_word(hole)
    assert resp == AxiResp.SLVERR and word == 0, (hex(hole), resp)
    wresp = await host.axil.write(hole, b"\xff\xff\xff\xff")
    assert wresp.resp == AxiResp.SLVERR
    assert (await host.read("RING_TAIL"))["INDEX"] == 6


@cocotb.test()
async def registers_full_rate(dut):
    await run(dut, 0.0)


@cocotb.test()
async def registers_with_pauses(dut):
    await run(dut, 0.4)
