"""cocotb testbench of the AXI4 word reader (hw/axi_read.py) through the harness
(tb/axi_read_harness.py): for every word size, random arrays (crossing 4 KiB pages and the
256-beat burst limit) from an ``AxiRamRead`` with random pauses, with random backpressure on
the words; every word must equal memory, ``last`` on the final one, no burst may cross
4 KiB or exceed 256 beats."""

from __future__ import annotations

import itertools

import cocotb
from cocotb.triggers import Combine, RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from rpaccel.hw.axi_read import read_job_layout, word_layout
from rpaccel.tb.axi_read_harness import harness_word_sizes
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup

MEMORY = 1 << 16


async def run(dut, pause: float):
    bench = await setup(dut)
    cfg, rng = bench.config, bench.rng
    B = cfg.mem_bus_width // 8
    content = bytes(int(v) for v in rng.integers(0, 256, MEMORY))
    counter = CycleCounter(dut.clk)
    bursts = []

    async def reader(i: int, W: int):
        ram = AxiRamRead(AxiReadBus.from_prefix(dut, f"r{i}_bus_"), dut.clk, dut.rst,
                         size=MEMORY)
        ram.write(0, content)
        if pause:
            for ch in (ram.ar_channel, ram.r_channel):
                ch.set_pause_generator(itertools.cycle(
                    [bool(v) for v in child_rng(rng).random(47) < pause]))
        jobs = StreamDriver(dut, f"r{i}_jobs", read_job_layout(cfg), counter=counter)
        words = StreamSink(dut, f"r{i}_words", word_layout(W), counter=counter,
                           rng=child_rng(rng), backpressure=pause)
        crng = child_rng(rng)
        cases = [(4096 - W if W < 4096 else 0, 2), (0, (300 * B) // W + 1), (W, 1)]
        cases += [(int(crng.integers(0, (MEMORY // 2) // W)) * W, int(crng.integers(1, 200)))
                  for _ in range(4)]
        for addr, count in cases:
            count = min(count, (MEMORY - addr) // W)
            await jobs.send([{"addr": addr, "count": count}])
            got = await words.receive(count)
            for n, t in enumerate(got):
                expect = int.from_bytes(content[addr + n * W:addr + (n + 1) * W], "little")
                assert t.payload["data"] == expect, f"W={W} job {addr:#x}x{count} word {n}"
                assert t.payload["error"] == 0 and t.payload["last"] == (n == count - 1)

    async def watch(i: int):
        while True:
            await RisingEdge(dut.clk)
            if int(getattr(dut, f"r{i}_bus__arvalid").value) and \
                    int(getattr(dut, f"r{i}_bus__arready").value):
                bursts.append((int(getattr(dut, f"r{i}_bus__araddr").value),
                               int(getattr(dut, f"r{i}_bus__arlen").value) + 1))

    sizes = harness_word_sizes(cfg)
    for i in range(len(sizes)):
        cocotb.start_soon(watch(i))
    await Combine(*[cocotb.start_soon(reader(i, W)) for i, W in enumerate(sizes)])
    assert bursts
    for addr, beats in bursts:
        assert beats <= 256 and addr // 4096 == (addr + beats * B - 1) // 4096, (addr, beats)


@cocotb.test()
async def words_full_rate(dut):
    await run(dut, 0.0)


@cocotb.test()
async def words_with_pauses_and_backpressure(dut):
    await run(dut, 0.35)
