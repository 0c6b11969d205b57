"""cocotb benchmark of the top-k filter through tb/topk_harness.py.

For each (n, k) of ``RPACCEL_BENCH_PLAN`` the scores are loaded into the harness memory,
the query starts, and the simulator runs freely until ``done``; the cycle counts are the
harness's own RTL counters. Results are read back and checked against
``rpaccel.sim.numerics.topk``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import RisingEdge
from amaranth.lib import data

from rpaccel.sim import numerics
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink
from rpaccel.tb.common import setup
from rpaccel.tb.topk_harness import TopKHarness


def layouts(config):
    harness = TopKHarness(config)
    return {name: getattr(harness.signature.members[name].signature, "_payload_shape")
            for name in ("load", "start", "done", "read", "result")}


@cocotb.test()
async def topk_throughput(dut):
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    plan = json.loads(os.environ["RPACCEL_BENCH_PLAN"])
    counter = CycleCounter(dut.clk)
    lay = layouts(config)
    load = StreamDriver(dut, "load", lay["load"], counter=counter)
    start = StreamDriver(dut, "start", lay["start"], counter=counter)
    read = StreamDriver(dut, "read", lay["read"], counter=counter)
    done = StreamSink(dut, "done", lay["done"], counter=counter)
    result = StreamSink(dut, "result", lay["result"], counter=counter)
    results, sim_cycles, sim_seconds = [], 0, 0.0
    for entry in plan["topk"]:
        n, k = entry["n"], entry["k"]
        # Few distinct values, so ties are common and the id tie-break is exercised.
        scores = rng.integers(-1000, 1000, size=n) * int(rng.integers(1, 1 << 16))
        await load.send({"addr": i, "score": int(s)} for i, s in enumerate(scores))
        t0, c0 = time.perf_counter(), counter.cycle
        await start.send([{"n": n, "k": k}])
        while not int(dut.done__valid.value):
            await RisingEdge(dut.done__valid)
        report = (await done.receive(1))[0].payload
        sim_seconds += time.perf_counter() - t0
        sim_cycles += counter.cycle - c0
        assert report["error"] == 0 and report["count"] == min(k, n), report
        reader = cocotb.start_soon(result.receive(report["count"]))
        await read.send({"addr": i} for i in range(report["count"]))
        got = [(t.payload["score"], t.payload["id"]) for t in await reader]
        order = numerics.topk(scores, np.arange(n), k)
        assert got == [(int(scores[i]), int(i)) for i in order], "top-k mismatch"
        results.append({"n": n, "k": k, "cycles": int(report["total"]),
                        "input_cycles": int(report["in_cycles"]),
                        "first_result_after_last_input": int(report["first_out"])})
        dut._log.info("top-k n=%d k=%d: %s", n, k, results[-1])
    with open(os.environ["RPACCEL_BENCH_OUT"], "w") as f:
        json.dump({"topk": results, "sim_cycles": sim_cycles, "sim_seconds": sim_seconds}, f)
