"""cocotb tests of the compute core (hw/compute_core.py) against the golden integer layers.

Each partition gets its own MLP; all partitions run at the same time. Random layer shapes
(dimensions not multiples of R or Cp, B = 1 to sub_batch), random valid gaps and
backpressure on every host stream, bad commands followed by good ones.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import Combine

from rpaccel.sim.mlp_program import LayerCommand, MLPProgram, random_layer, reference_mlp
from rpaccel.tb.cocotb_streams import CycleCounter
from rpaccel.tb.common import setup
from rpaccel.tb.core_host import core_hosts


def random_mlp(rng, config, *, score: bool):
    depth = int(rng.integers(1, 4))
    dims = [int(rng.integers(1, config.max_layer_dim // 2 + 1)) for _ in range(depth + 1)]
    if score:
        dims[-1] = 1
    return [random_layer(rng, dims[n], dims[n + 1], relu=bool(rng.integers(2)),
                         score=score and n == depth - 1) for n in range(depth)]


async def run_mlp(host, layers, x, *, bad_first: LayerCommand | None = None):
    program = MLPProgram(host.geo, layers)
    await host.load_program(program)
    if bad_first is not None:
        resp, scores = await host.run(bad_first)
        assert resp["error"] == 1 and resp["tag"] == bad_first.tag and scores is None, resp
    await host.run_program(program, x, reference_mlp(x, layers))


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
            layers = random_mlp(rng, config, score=bool(host.p % 2))
            rows = int(rng.choice([1, int(rng.integers(1, config.sub_batch + 1)), config.sub_batch]))
            x = rng.integers(-128, 128, size=(rows, layers[0].n_in))
            jobs.append(cocotb.start_soon(run_mlp(host, layers, x)))
        await Combine(*jobs)


@cocotb.test()
async def bad_commands_then_good(dut):
    """Each rejected command gets error=1 and is dropped; the next command works."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    host = core_hosts(dut, config, CycleCounter(dut.clk), rng)[0]
    good = dict(rows=2, in_dim=5, out_dim=3, weight_tile=0, bias_word=0, mult=1, shift=0,
                relu=False, score=False, src=0, dst=1, tag=77)
    for bad in (dict(rows=0), dict(out_dim=0), dict(in_dim=config.max_layer_dim + 1),
                dict(src=0, dst=0), dict(score=True, out_dim=3)):
        layers = [random_layer(rng, 5, 3)]
        x = rng.integers(-128, 128, size=(2, 5))
        await run_mlp(host, layers, x, bad_first=LayerCommand(**{**good, **bad}))

