"""cocotb testbench of the AXI4 read arbiter (hw/axi_arbiter.py): every client reads its
own random bursts at the same time through cocotbext-axi masters, the memory is an
``AxiRamRead`` with random pauses; every read returns the right bytes and every client's
bursts are served (none starves)."""

from __future__ import annotations

import itertools

import cocotb
from cocotb.triggers import Combine, RisingEdge
from cocotbext.axi import AxiMasterRead, AxiRamRead, AxiReadBus

from rpaccel.hw.axi_arbiter import AxiReadArbiter
from rpaccel.tb.cocotb_streams import child_rng
from rpaccel.tb.common import setup

MEMORY = 1 << 16


async def run(dut, pause: float):
    bench = await setup(dut)
    rng = bench.rng
    n = AxiReadArbiter.DEFAULT_CLIENTS
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "bus_"), dut.clk, dut.rst, size=MEMORY)
    content = bytes(int(v) for v in rng.integers(0, 256, MEMORY))
    ram.write(0, content)
    if pause:
        for ch in (ram.ar_channel, ram.r_channel):
            ch.set_pause_generator(itertools.cycle(
                [bool(v) for v in child_rng(rng).random(53) < pause]))
    masters = [AxiMasterRead(AxiReadBus.from_prefix(dut, f"clients__{i}_"), dut.clk, dut.rst)
               for i in range(n)]
    ids = []

    async def watch():
        while True:
            await RisingEdge(dut.clk)
            if int(dut.bus__arvalid.value) and int(dut.bus__arready.value):
                ids.append(int(dut.bus__arid.value) >> 1)
    cocotb.start_soon(watch())

    async def client(i):
        crng = child_rng(rng)
        for _ in range(12):
            length = int(crng.integers(1, 300))
            addr = int(crng.integers(0, MEMORY - length))
            resp = await masters[i].read(addr, length)
            assert resp.data == content[addr:addr + length], f"client {i} {addr:#x}+{length}"

    await Combine(*[cocotb.start_soon(client(i)) for i in range(n)])
    assert sorted(set(ids)) == list(range(n)), ids


@cocotb.test()
async def clients_full_rate(dut):
    await run(dut, 0.0)


@cocotb.test()
async def clients_with_pauses(dut):
    await run(dut, 0.4)
