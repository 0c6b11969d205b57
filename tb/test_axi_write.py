"""cocotb testbench of the AXI4 block writer (hw/axi_write.py) against cocotbext-axi's
``AxiRamWrite`` with random pauses on its AW, W and B channels: every byte of every block lands,
no byte outside a block changes, and no burst is longer than 256 beats or crosses 4 KiB."""

from __future__ import annotations

import itertools

import cocotb
from amaranth.lib import data
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiRamWrite, AxiWriteBus

from rpaccel.hw.axi_write import write_beat_layout, write_job_layout
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup

MEMORY = 1 << 16
FILL = 0xA5


async def run(dut, pause: float, idle: float):
    bench = await setup(dut)
    cfg, rng = bench.config, bench.rng
    B = cfg.mem_bus_width // 8
    ram = AxiRamWrite(AxiWriteBus.from_prefix(dut, "bus_"), dut.clk, dut.rst, size=MEMORY)
    ram.write(0, bytes([FILL]) * MEMORY)
    if pause:
        for ch in (ram.aw_channel, ram.w_channel, ram.b_channel):
            ch.set_pause_generator(itertools.cycle(
                [bool(v) for v in child_rng(rng).random(61) < pause]))
    bursts = []

    async def watch_aw():
        while True:
            await RisingEdge(dut.clk)
            if int(dut.bus__awvalid.value) and int(dut.bus__awready.value):
                bursts.append((int(dut.bus__awaddr.value), int(dut.bus__awlen.value) + 1))
    cocotb.start_soon(watch_aw())
    counter = CycleCounter(dut.clk)
    jobs = StreamDriver(dut, "jobs", write_job_layout(cfg), counter=counter)
    beats = StreamDriver(dut, "data", write_beat_layout(cfg), counter=counter,
                         rng=child_rng(rng), idle=idle)
    done = StreamSink(dut, "done", data.StructLayout({"error": 1}), counter=counter)
    expected = bytearray([FILL]) * MEMORY
    cases = [(0, 1), (4096 - B, 2 * B), (8192 - 3 * B, 4096 + 5 * B), (B, 256 * B + 3)]
    for _ in range(8):
        n = int(rng.integers(1, 3000))
        addr = int(rng.integers(0, (MEMORY - n - B) // B)) * B
        cases.append((addr, n))
    for addr, n in cases:
        payload = bytes(int(v) for v in rng.integers(0, 256, n))
        padded = payload + bytes(-n % B)
        words = [{"data": int.from_bytes(padded[i:i + B], "little")}
                 for i in range(0, len(padded), B)]
        await jobs.send([{"addr": addr, "bytes": n}])
        feeder = cocotb.start_soon(beats.send(words))
        result = (await done.receive(1))[0].payload
        await feeder
        assert result["error"] == 0
        expected[addr:addr + n] = payload
        got = ram.read(0, MEMORY)
        assert got == bytes(expected), f"block {addr:#x}+{n}: memory differs"
    for addr, beats_n in bursts:
        assert 1 <= beats_n <= 256, (addr, beats_n)
        assert addr // 4096 == (addr + beats_n * B - 1) // 4096, f"burst {addr:#x}x{beats_n}"
    assert int(dut.bytes_written.value) == sum(n for _, n in cases)
    assert int(dut.bursts.value) == len(bursts)


@cocotb.test()
async def blocks_full_rate(dut):
    await run(dut, 0.0, 0.0)


@cocotb.test()
async def blocks_with_pauses(dut):
    await run(dut, 0.3, 0.3)
