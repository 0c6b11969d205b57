"""Shared cocotb testbench setup: the manifest, the clock and reset, seeded randomness.

Every cocotb test module starts with :func:`setup`, which reads the generation manifest
named by ``RPACCEL_MANIFEST`` (written beside the Verilog by ``rpaccel gen``), starts a
10 ns clock and holds reset for a few cycles. Configuration reaches the testbench only
through that manifest: nothing is re-derived.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from rpaccel.hw.config import AccelConfig

__all__ = ["Bench", "setup", "CLOCK_NS"]

CLOCK_NS = 10


@dataclass
class Bench:
    dut: object
    config: AccelConfig
    manifest: dict
    rng: np.random.Generator


def load_manifest() -> dict:
    path = os.environ.get("RPACCEL_MANIFEST")
    if not path:
        raise RuntimeError("RPACCEL_MANIFEST is not set: run this test through "
                           "rpaccel.gen.simulators.run_cocotb")
    with open(path) as f:
        return json.load(f)


async def setup(dut, *, reset_cycles: int = 3) -> Bench:
    """Read the manifest, start the clock, pulse reset; returns the :class:`Bench`."""
    manifest = load_manifest()
    config = AccelConfig.from_dict(manifest["config"])
    # Every input starts at 0, not undriven: a floating `valid` would read as X/Z in the
    # four-state simulator (Icarus) and poison state machines before the bench drives it.
    for port in manifest["ports"]:
        if port["direction"] == "input" and port["name"] not in ("clk", "rst"):
            getattr(dut, port["name"]).value = 0
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    rng = np.random.default_rng(cocotb.RANDOM_SEED)
    return Bench(dut, config, manifest, rng)
