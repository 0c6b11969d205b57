"""cocotb tests of the compute core (hw/compute_core.py) against the golden integer layers.

Each partition gets its own MLP; all partitions run at the same time; then gangs of
partitions run one MLP with each layer's output columns split. Random layer shapes
(dimensions not multiples of R or Cp, B = 1 to sub_batch), random valid gaps and
backpressure on every host stream, bad commands followed by good ones. Jobs, bad commands
and the expected results are the unit model's (``tb/unit_models/mlp_engine.py``), shared
with ``tests/test_mlp_engine.py``.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import Combine

from amaranth.utils import exact_log2

from rpaccel.hw.mlp_engine import gang_sizes
from rpaccel.sim.mlp_program import LayerCommand, MLPProgram, gang_slice
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



@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def ganged_mlps(dut, stall):
    """Every gang the configuration can form (``gang_sizes``) runs a random MLP with its
    layers' output columns split over its engines (each holds its ``gang_slice``); the
    leader's buffer or score stream must hold the golden's result of the whole MLP, every
    response error-free; then every partition runs an MLP of its own again."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    sizes = gang_sizes(config)
    if not sizes:
        dut._log.info("no gangs in this configuration (gang_sizes is empty)")
        return
    hosts = core_hosts(dut, config, CycleCounter(dut.clk), rng, stall)
    geo = hosts[0].geo
    for G in sizes:
        for leader in range(0, config.partitions, G):
            for score in (False, True):
                layers = random_mlp(config, rng, score=score)
                rows = int(rng.integers(1, config.sub_batch + 1))
                job = Job(config, layers, random_activations(config, rng, rows,
                                                             layers[0].n_in))
                programs = [MLPProgram(geo, [gang_slice(layer, G, e, geo) for layer in layers])
                            for e in range(G)]
                await Combine(*[cocotb.start_soon(hosts[leader + e].load_program(prog))
                                for e, prog in enumerate(programs)])
                out, _ = await hosts[leader].run_program(
                    programs[0], job.x, gang_log2=exact_log2(G), out_dim=layers[-1].n_out)
                check_outputs(leader, out, job.expected)
    jobs = []
    for host in hosts:
        job = good_job(config, rng)
        jobs.append(cocotb.start_soon(run_mlp(host, job)))
    await Combine(*jobs)
