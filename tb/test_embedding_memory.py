"""cocotb test of the HDL AXI4 memory model (``tb/axi_mem_model.v``) on its own, driven by
cocotbext-axi's ``AxiMaster``: write bursts with byte strobes read back, a loaded file read
back, several reads outstanding under latency and backpressure, the SLVERR window and
DECERR beyond the model's size."""

from __future__ import annotations

import numpy as np

import cocotb
from cocotb.triggers import FallingEdge

from rpaccel.tb.common import setup
from rpaccel.tb.embedding_harness import MEM_WORDS


async def start(dut, latency=0, stall=0):
    bench = await setup(dut)
    from cocotbext.axi import AxiBus, AxiMaster
    master = AxiMaster(AxiBus.from_prefix(dut, "s_axi_"), dut.clk, dut.rst)
    dut.mem_latency.value = latency
    dut.mem_stall_ar.value = stall
    dut.mem_stall_r.value = stall
    return bench, master


@cocotb.test()
@cocotb.parametrize(latency=[0, 37], stall=[0, 100])
async def writes_then_reads(dut, latency, stall):
    bench, master = await start(dut, latency, stall)
    nbytes = bench.config.mem_bus_width // 8
    rng = bench.rng
    blocks = []
    for _ in range(12):
        addr = int(rng.integers(0, 2000)) * nbytes
        data = bytes(rng.integers(0, 256, int(rng.integers(1, 6)) * nbytes, dtype=np.uint8))
        blocks.append((addr, data))
        await master.write(addr, data)
    # a partial-word write: only its bytes change (byte strobes)
    await master.write(blocks[0][0] + 1, b"\xa5\x5a")
    expect = {}
    for addr, data in blocks:
        for i, b in enumerate(data):
            expect[addr + i] = b
    expect[blocks[0][0] + 1], expect[blocks[0][0] + 2] = 0xA5, 0x5A
    reads = [cocotb.start_soon(master.read(addr, len(data))) for addr, data in blocks]
    for (addr, data), task in zip(blocks, reads):     # several reads outstanding at once
        got = (await task).data
        want = bytes(expect[addr + i] for i in range(len(data)))
        assert got == want, f"read back at {addr:#x}"


@cocotb.test()
async def loaded_file_and_error_responses(dut):
    bench, master = await start(dut, latency=5, stall=60)
    nbytes = bench.config.mem_bus_width // 8
    words = {3: 0x1122334455667788, 4: 0x99AABBCCDDEEFF00}
    with open("axi_mem.hex", "w") as f:
        for index, word in words.items():
            f.write(f"@{index:x}\n{word:0{nbytes * 2}x}\n")
    await FallingEdge(dut.clk)
    dut.mem_load.value = 1
    await FallingEdge(dut.clk)
    dut.mem_load.value = 0
    got = (await master.read(3 * nbytes, 2 * nbytes)).data
    want = b"".join(words[i].to_bytes(nbytes, "little") for i in (3, 4))
    assert got == want
    dut.mem_err_lo.value = 64 * nbytes
    dut.mem_err_hi.value = 65 * nbytes
    assert (await master.read(64 * nbytes, nbytes)).resp == 2      # SLVERR
    assert (await master.read(3 * nbytes, nbytes)).resp == 0
    assert (await master.read(MEM_WORDS * nbytes, nbytes)).resp == 3  # DECERR
