"""cocotb: run MLP jobs from a file on the compute core and write the results back.

The host side (tests, ``make demo``) describes work in an ``.npz`` file named by
``RPACCEL_MLP_JOBS``, written with :func:`rpaccel.sim.mlp_program.save_mlp_jobs`: models by
name and jobs ``(model, x, expected)``, ``x`` at most ``sub_batch`` rows, ``expected``
(optional) checked here bit for bit.

Every partition loads every model once (``rpaccel.sim.host.allocate_models``), then the
jobs are dealt out round robin (``rpaccel.sim.host.deal``) and the partitions run
concurrently. The results go to ``RPACCEL_MLP_OUT`` (``.npz``): ``j<n>_out``
(int32 scores of a score model, else the last layer's int8 outputs) and ``j<n>_cycles``
(the engine's cycle counts per layer).
"""

from __future__ import annotations

import os

import numpy as np

import cocotb
from cocotb.triggers import Combine

from rpaccel.sim.host import allocate_models, deal
from rpaccel.sim.mlp_program import load_mlp_jobs
from rpaccel.tb.cocotb_streams import CycleCounter
from rpaccel.tb.common import setup
from rpaccel.tb.core_host import core_hosts


@cocotb.test()
async def run_jobs(dut):
    models, jobs = load_mlp_jobs(os.environ["RPACCEL_MLP_JOBS"])
    bench = await setup(dut)
    hosts = core_hosts(dut, bench.config, CycleCounter(dut.clk), bench.rng)
    assert models, "RPACCEL_MLP_JOBS holds no model"
    programs = {}
    for host in hosts:
        for name, program in allocate_models(models, host.geo).items():
            await host.load_program(program)
            programs[host.p, name] = program
    n_jobs = len(jobs)
    results = {}

    dealt = deal(n_jobs, len(hosts))

    async def worker(host):
        for n in dealt[host.p]:
            model, x, expected = jobs[n]
            out, cycles = await host.run_program(programs[host.p, model], x, expected)
            results[f"j{n}_out"] = out
            results[f"j{n}_cycles"] = np.array(cycles)

    await Combine(*[cocotb.start_soon(worker(host)) for host in hosts])
    dut._log.info("%d jobs on %d partitions checked", n_jobs, len(hosts))
    if "RPACCEL_MLP_OUT" in os.environ:
        np.savez(os.environ["RPACCEL_MLP_OUT"], **results)
