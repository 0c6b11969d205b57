"""cocotb benchmark of the top-k filter through tb/topk_harness.py.

``topk_throughput``: for each (n, k) of ``RPACCEL_BENCH_PLAN`` random scores (with many
ties) are loaded into the harness memory, the query starts, and the simulator runs freely
until ``done``; the cycle counts are the harness's own RTL counters.

``topk_queries``: the queries of ``RPACCEL_TOPK_QUERIES`` (``.npz``: ``q<n>_scores``,
``q<n>_k``; candidate ids are positions) go through the same path and their results are
written to ``RPACCEL_TOPK_OUT`` (``q<n>_positions``, ``q<n>_scores``, ``q<n>_cycles``).

Every result is read back and checked against ``rpaccel.sim.numerics.topk``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import RisingEdge

from rpaccel.sim import numerics
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink
from rpaccel.tb.common import setup
from rpaccel.tb.topk_harness import harness_layouts


class Harness:
    def __init__(self, dut, config):
        counter = CycleCounter(dut.clk)
        lay = harness_layouts(config)
        self.dut, self.counter = dut, counter
        self.load = StreamDriver(dut, "load", lay["load"], counter=counter)
        self.start = StreamDriver(dut, "start", lay["start"], counter=counter)
        self.read = StreamDriver(dut, "read", lay["read"], counter=counter)
        self.done = StreamSink(dut, "done", lay["done"], counter=counter)
        self.result = StreamSink(dut, "result", lay["result"], counter=counter)
        self.sim_cycles, self.sim_seconds = 0, 0.0

    async def query(self, scores: np.ndarray, k: int) -> tuple[dict, list]:
        """Run one query; returns the harness report and the (score, id) results, after
        checking them against the golden top-k."""
        n = len(scores)
        await self.load.send({"addr": i, "score": int(s)} for i, s in enumerate(scores))
        t0, c0 = time.perf_counter(), self.counter.cycle
        await self.start.send([{"n": n, "k": k}])
        while not int(self.dut.done__valid.value):
            await RisingEdge(self.dut.done__valid)
        report = (await self.done.receive(1))[0].payload
        self.sim_seconds += time.perf_counter() - t0
        self.sim_cycles += self.counter.cycle - c0
        assert report["error"] == 0 and report["count"] == min(k, n), report
        reader = cocotb.start_soon(self.result.receive(report["count"]))
        await self.read.send({"addr": i} for i in range(report["count"]))
        got = [(t.payload["score"], t.payload["id"]) for t in await reader]
        order = numerics.topk(scores, np.arange(n), k)
        assert got == [(int(scores[i]), int(i)) for i in order], "top-k mismatch"
        return report, got


@cocotb.test(skip="RPACCEL_TOPK_QUERIES" not in os.environ)
async def topk_queries(dut):
    bench = await setup(dut)
    queries = np.load(os.environ["RPACCEL_TOPK_QUERIES"], allow_pickle=False)
    harness = Harness(dut, bench.config)
    out = {}
    n_queries = sum(1 for key in queries.files if key.endswith("_scores"))
    for q in range(n_queries):
        report, got = await harness.query(queries[f"q{q}_scores"], int(queries[f"q{q}_k"]))
        out[f"q{q}_positions"] = np.array([i for _, i in got])
        out[f"q{q}_scores"] = np.array([s for s, _ in got])
        out[f"q{q}_cycles"] = np.array(report["total"])
    np.savez(os.environ["RPACCEL_TOPK_OUT"], **out)


@cocotb.test(skip="RPACCEL_BENCH_PLAN" not in os.environ)
async def topk_throughput(dut):
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    plan = json.loads(os.environ["RPACCEL_BENCH_PLAN"])
    harness = Harness(dut, config)
    results = []
    for entry in plan["topk"]:
        n, k = entry["n"], entry["k"]
        # Few distinct values, so ties are common and the id tie-break is exercised.
        scores = rng.integers(-1000, 1000, size=n) * int(rng.integers(1, 1 << 16))
        report, _ = await harness.query(scores, k)
        results.append({"n": n, "k": k, "cycles": int(report["total"]),
                        "input_cycles": int(report["in_cycles"]),
                        "cycles_per_candidate": int(report["in_cycles"]) / n,
                        "first_result_after_last_input": int(report["first_out"]),
                        "last_result_after_last_input":
                            int(report["total"]) - int(report["in_cycles"])})
        dut._log.info("top-k n=%d k=%d: %s", n, k, results[-1])
    with open(os.environ["RPACCEL_BENCH_OUT"], "w") as f:
        json.dump({"topk": results, "sim_cycles": harness.sim_cycles,
                   "sim_seconds": harness.sim_seconds}, f)
