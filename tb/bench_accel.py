"""cocotb bench of the whole accelerator on the HDL memory model (``tb/accel_harness.py``):
the host's side of a real run, with Python out of the per-cycle path.

The job (JSON named by ``RPACCEL_ACCEL_JOB``, written by
:class:`rpaccel.gen.rtl_backend.RTLBackend`) holds the memory model's settings and the
folder where the host leaves its commands, one file each (``cmd<k>.json``), until
``stop``. A ``run`` command names a memory image (a ``$readmemh`` file), the ring registers
the scheduler planned, whether it is a new image and where the dump goes. For a new image
the bench resets the accelerator (memory keeps its contents), copies the image to the
model's load file and pulses ``mem_load``, writes the ring and region registers over
AXI4-Lite (``cocotbext-axi``) and sets ``CTRL.ENABLE`` and ``IRQ_ENABLE``; for the next
round on the same image it only loads the host's updated image. Then it moves
``RING_TAIL`` and only awaits the interrupt: each wake-up reads
``COMMANDS_DONE`` and clears ``IRQ_STATUS``, and a timer wakes it every
``progress_cycles`` to report progress (and to catch a completion whose interrupt it cleared
together with the previous one). A batch that does not finish in ``timeout_cycles`` fails
with the head, the status and the error registers. At the end it reads every performance
counter, checks the harness's region monitor, pulses ``mem_dump`` and answers with the
figures (testbench-measured cycles beside the CSR counters, simulator wall time) in
``done<k>.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.regmap import counter_names
from rpaccel.sim.registers import RegisterAccess

from .common import CLOCK_NS, load_manifest

MEM_FILE, DUMP_FILE = "axi_mem.hex", "axi_mem_dump.hex"

# cocotbext-axi 0.1.26 still calls cocotb 2's deprecated task.kill() and Event.data: noise
# in every run's log, not a problem of this bench
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")


class Host:
    """The registers through ``cocotbext-axi``'s AXI4-Lite master, by name."""

    def __init__(self, dut, config: AccelConfig):
        from cocotbext.axi import AxiLiteBus, AxiLiteMaster
        self.regs = RegisterAccess(config)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        for side in (self.axil.write_if, self.axil.read_if):
            side.log.setLevel(logging.WARNING)      # one line per access otherwise
        logging.getLogger(f"cocotb.{dut._name}.s_axil_").setLevel(logging.WARNING)

    async def write(self, name: str, value: int | None = None, **fields):
        offset, word = self.regs.encode(name, value, **fields)
        await self.axil.write_dword(offset, word)

    async def read(self, name: str) -> dict:
        word = await self.axil.read_dword(self.regs.offset(name))
        return self.regs.decode(name, word)

    async def read64(self, name: str) -> int:
        lo = (await self.read(f"{name}_LO"))["VALUE"]
        hi = (await self.read(f"{name}_HI"))["VALUE"]
        return lo | hi << 32


def _cycle() -> int:
    # rising edges at CLOCK_NS / 2 + k * CLOCK_NS (the harness's generator starts low):
    # floor, not round, which would take half of them to the even neighbour
    return int(get_sim_time("ns") // CLOCK_NS)


async def _reset(dut):
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def _pulse(dut, signal):
    signal.value = 1
    await RisingEdge(dut.clk)
    signal.value = 0
    await RisingEdge(dut.clk)


async def run_command(dut, host: Host, config: AccelConfig, job: dict, cmd: dict,
                      number: int) -> dict:
    """One ``run`` command: a new image (reset, load, ring registers) or the next round on
    the same one (load the host's updated image, move the tail); then await completion."""
    ring, B = cmd["ring"], config.mem_bus_width // 8
    if cmd["reset"]:
        await _reset(dut)
    shutil.copyfile(cmd["hex"], MEM_FILE)
    await _pulse(dut, dut.mem_load)
    if cmd["reset"]:
        dut.mem_region_lo.value = ring["region_base"]
        dut.mem_region_hi.value = ring["region_base"] + ring["region_size"]
        for name, fields in host.regs.ring_start(**ring):
            await host.write(name, **fields)
    overrun = None
    if cmd.get("overrun"):
        # the host writes a tail past the ring's end first: refused with QUEUE_OVERRUN,
        # nothing fetched; then the right tail, and the ring runs as if nothing happened
        head = (await host.read("RING_HEAD"))["INDEX"]
        await host.write("RING_TAIL", INDEX=(head + (1 << ring["ring_log2"]) + 1) & 0xFFFF)
        await ClockCycles(dut.clk, 200)
        overrun = {"error": await host.read("ERROR"),
                   "error_count": (await host.read("ERROR_COUNT"))["VALUE"],
                   "head": (await host.read("RING_HEAD"))["INDEX"],
                   "irq": int(dut.irq.value)}
        await host.write("IRQ_STATUS", DONE=1, ERROR=1)
    csr_start, tb_start = await host.read64("CYCLES"), _cycle()
    wall = time.perf_counter()
    await host.write("RING_TAIL", INDEX=ring["tail"] & 0xFFFF)
    tail = ring["tail"]
    deadline = _cycle() + job["timeout_cycles"]
    chunk = job["progress_cycles"]
    while True:
        if not dut.irq.value:
            await First(RisingEdge(dut.irq), Timer(chunk * CLOCK_NS, "ns"))
        done = (await host.read("COMMANDS_DONE_LO"))["VALUE"]
        if dut.irq.value:
            await host.write("IRQ_STATUS", DONE=1, ERROR=1)
            done = (await host.read("COMMANDS_DONE_LO"))["VALUE"]
        if done >= tail:
            break
        elapsed = time.perf_counter() - wall
        cocotb.log.info("command %d: %d of %d ring entries done, %d cycles, %.0f cycles/s",
                        number, done, tail, _cycle() - tb_start,
                        (_cycle() - tb_start) / max(elapsed, 1e-9))
        if _cycle() >= deadline:
            status = await host.read("STATUS")
            error = await host.read("ERROR")
            head = (await host.read("RING_HEAD"))["INDEX"]
            raise AssertionError(
                f"command {number}: {done} of {tail} ring entries done after "
                f"{_cycle() - tb_start} cycles (timeout {job['timeout_cycles']}); head {head}, "
                f"status {status}, last error {error}")
    tb_end, wall = _cycle(), time.perf_counter() - wall
    csr_end = await host.read64("CYCLES")
    tb_read = _cycle()
    figures = {
        "head": (await host.read("RING_HEAD"))["INDEX"],
        "errors": (await host.read("ERROR_COUNT"))["VALUE"],
        "status": await host.read("STATUS"),
        # CYCLES read at two points, against the simulator's clock at the same two reads
        # (each read takes the same bus cycles, so the differences must be equal)
        "csr_cycles": csr_end - csr_start, "tb_cycles": tb_read - tb_start,
        "run_cycles": tb_end - tb_start, "wall_s": wall,
        # cumulative since the image's reset
        "counters": {name: await host.read64(name) for name, _ in counter_names(config)},
        "violation": int(dut.mem_violation.value),
        "error": await host.read("ERROR"),
        "overrun": overrun,
    }
    lo = ring["region_base"] // B
    dut.mem_dump_lo.value = lo
    dut.mem_dump_hi.value = lo + -(-ring["region_size"] // B) - 1
    await _pulse(dut, dut.mem_dump)
    shutil.move(DUMP_FILE, cmd["dump"])
    return figures


def _next_command(folder: Path, k: int, timeout_s: float) -> dict:
    """The host's command ``k`` (``cmd<k>.json``, written atomically by the RTL backend).
    The simulation is idle while the host thinks (between rounds it filters scores), so
    waiting here in wall time costs no simulated cycles."""
    path, started = folder / f"cmd{k}.json", time.monotonic()
    host = os.getppid()
    while not path.exists():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"no command {k} from the host in {timeout_s:.0f} s")
        if os.getppid() != host:
            # the host process is gone (this simulator was handed to init): nobody will
            # ever write a command, so end instead of polling forever
            raise AssertionError(f"the host process {host} ended before command {k}")
        time.sleep(0.01)
    return json.loads(path.read_text())


@cocotb.test()
async def run_job(dut):
    """The host's commands, in order, until ``stop`` (see the module docstring)."""
    manifest = load_manifest()
    config = AccelConfig.from_dict(manifest["config"])
    with open(os.environ["RPACCEL_ACCEL_JOB"]) as f:
        job = json.load(f)
    for port in manifest["ports"]:
        if port["direction"] == "input" and port["name"] != "rst":
            getattr(dut, port["name"]).value = 0
    dut.mem_latency.value = job.get("latency", 0)
    dut.mem_stall_ar.value = job.get("stall", 0)
    dut.mem_stall_r.value = job.get("stall", 0)
    dut.mem_seed.value = job.get("seed", 1)
    # the clock runs inside the design (the harness's generator): no callback per cycle
    # In reset for a few cycles before the AXI-Lite master samples the bus: on Icarus the
    # registers' initial values are not there yet at the first edge (ready reads X)
    await _reset(dut)
    host = Host(dut, config)
    folder = Path(job["commands"])
    for k in itertools.count():
        cmd = _next_command(folder, k, job["answer_timeout_s"])
        if cmd["op"] == "stop":
            break
        figures = await run_command(dut, host, config, job, cmd, k)
        cocotb.log.info("command %d: %d cycles, %.1f s", k, figures["run_cycles"],
                        figures["wall_s"])
        tmp = folder / f"done{k}.json.tmp"
        tmp.write_text(json.dumps(figures, indent=1))
        tmp.rename(folder / f"done{k}.json")
