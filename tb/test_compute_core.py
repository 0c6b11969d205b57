"""cocotb tests of the compute core (hw/compute_core.py) against the golden integer layers.

Each partition gets its own MLP; all partitions run at the same time. Random layer shapes
(dimensions not multiples of R or Cp, B = 1 to sub_batch), random valid gaps and
backpressure on every host stream, bad commands followed by good ones. Jobs, bad commands
and the expected results are the unit model's (``tb/unit_models/mlp_engine.py``), shared
with ``tests/test_mlp_engine.py``.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import Combine

from rpaccel.sim.mlp_program import LayerCommand, MLPProgram
from rpaccel.tb.cocotb_streams import CycleCounter
from rpaccel.tb.common import setup
from rpaccel.tb.core_host import core_hosts
from rpaccel.tb.unit_models.mlp_engine import (Job, bad_commands, check_outputs, good_command,
                                               good_job, random_activations, random_mlp)


async def run_mlp(host, job: Job, *, bad_first: LayerCommand | None = None):
    program = MLPProgram(host.geo, job.layers)
    await host.load_program(program)
    if bad_first is not None:
        resp, scores = await host.run(bad_first)
        assert resp["error"] == 1 and resp["tag"] == bad_first.tag and scores is None, resp
    out, _ = await host.run_program(program, job.x)
    check_outputs(host.p, out, job.expected)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def random_mlps_on_all_partitions(dut, stall):
    """Every partition runs its own random MLP concurrently (scores on odd partitions)."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    hosts = core_hosts(dut, config, CycleCounter(dut.clk), rng, stall)
    for _ in range(2):
        jobs = []
        for host in hosts:
            layers = random_mlp(config, rng, score=bool(host.p % 2))
            rows = int(rng.choice([1, int(rng.integers(1, config.sub_batch + 1)), config.sub_batch]))
            job = Job(config, layers, random_activations(config, rng, rows, layers[0].n_in))
            jobs.append(cocotb.start_soon(run_mlp(host, job)))
        await Combine(*jobs)


@cocotb.test()
async def bad_commands_then_good(dut):
    """Each rejected command gets error=1 and is dropped; the next command works."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    host = core_hosts(dut, config, CycleCounter(dut.clk), rng)[0]
    for bad in bad_commands(config):
        await run_mlp(host, good_job(config, rng), bad_first=good_command(tag=77, **bad))

