"""cocotb benchmark of the compute core: RTL cycles and MAC utilization of whole layers.

The plan (layer shapes) comes from ``RPACCEL_BENCH_PLAN`` (JSON) and the measurements go to
``RPACCEL_BENCH_OUT``; ``rpaccel core-bench`` writes one and reads the other. A layer's output
columns are split over the partitions (each runs its slice at the same time); the commands
start in the same cycle and the layer takes as long as the slowest partition, measured by
the engines' own cycle counters. Python only loads memories and starts the layer; while it
runs, the simulator runs freely until the responses. Every result is checked against the
golden integer layer, so a number is never reported from a wrong run.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import Combine

from rpaccel.sim import numerics
from rpaccel.sim.host import split_columns
from rpaccel.sim.mlp_program import IntLayer, MLPProgram
from rpaccel.tb.cocotb_streams import CycleCounter
from rpaccel.tb.common import setup
from rpaccel.tb.core_host import core_hosts


@cocotb.test()
async def layer_throughput(dut):
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    plan = json.loads(os.environ["RPACCEL_BENCH_PLAN"])
    counter = CycleCounter(dut.clk)
    hosts = core_hosts(dut, config, counter, rng)
    R, C, P = config.rows, config.cols, config.partitions
    results = []
    sim_cycles, sim_seconds = 0, 0.0
    for entry in plan["layers"]:
        b, n_in, n_out = entry["b"], entry["in"], entry["out"]
        w = rng.integers(-127, 128, size=(n_in, n_out))
        bias = rng.integers(-(1 << 12), 1 << 12, size=n_out)
        mult, shift = numerics.quantize_multiplier(1.0 / (64 * n_in))
        x = rng.integers(-128, 128, size=(b, n_in))
        # Output columns split as evenly as the partition width allows.
        slices = split_columns(n_out, P)
        active = [(host, lo, hi) for host, (lo, hi) in zip(hosts, slices) if hi > lo]
        commands = []
        for host, lo, hi in active:
            layer = IntLayer(w=w[:, lo:hi], bias=bias[lo:hi], mult=mult, shift=shift, relu=True)
            program = MLPProgram(host.geo, [layer])
            await host.load_program(program)
            await host.load_activations(x, buffer=0)
            commands.append(program.commands(b)[0])
        t0, c0 = time.perf_counter(), counter.cycle
        await Combine(*[cocotb.start_soon(host.start(cmd))
                        for (host, _, _), cmd in zip(active, commands)])
        responses = [await host.wait_response() for host, _, _ in active]
        sim_seconds += time.perf_counter() - t0
        sim_cycles += counter.cycle - c0
        assert all(r["error"] == 0 for r in responses), responses
        expected = numerics.mlp_layer(x, w, bias, mult, shift, relu=True)
        for host, lo, hi in active:
            got = await host.read_activations(1, b, hi - lo)
            assert np.array_equal(got, expected[:, lo:hi]), f"partition {host.p} mismatch"
        cycles = max(r["cycles"] for r in responses)
        results.append({**entry, "cycles": int(cycles), "partitions_used": len(active),
                        "utilization": b * n_in * n_out / (R * C * cycles)})
        dut._log.info("layer B=%d %dx%d: %d cycles, utilization %.3f", b, n_in, n_out, cycles,
                      results[-1]["utilization"])
    with open(os.environ["RPACCEL_BENCH_OUT"], "w") as f:
        json.dump({"layers": results, "sim_cycles": sim_cycles, "sim_seconds": sim_seconds}, f)
