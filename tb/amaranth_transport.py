"""The Amaranth-simulator transport of the host layer (``rpaccel.sim.host.CoreTransport``).

:class:`AmaranthTransport` runs the host layer's work on the hardware in Amaranth's own
simulator: MLP jobs on a :class:`~rpaccel.hw.compute_core.ComputeCore` (every model
loaded into every partition with ``allocate_models``, the jobs dealt over the partitions
with ``deal``, the partitions running concurrently) and top-k queries on a
:class:`~rpaccel.hw.topk.TopKFilter`. No Verilog and no C++ build: it is the fast backend
for small configurations and small queries in unit tests; the cocotb transport
(``rpaccel.gen.transport``) runs the same work on the generated RTL.
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.compute_core import ComputeCore
from rpaccel.hw.config import AccelConfig
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.topk import TopKFilter
from rpaccel.sim.host import JobResult, TopKResult, allocate_models, deal
from rpaccel.sim.mlp_program import activation_addresses, pack_activations, unpack_activations

from .amaranth_sim import get, put, receive, send, simulate

__all__ = ["AmaranthTransport"]


class AmaranthTransport:
    """See the module docstring. ``max_cycles`` bounds every simulation (a hang fails)."""

    def __init__(self, config: AccelConfig, *, max_cycles: int = 2_000_000):
        self.config = config
        self.geo = EngineGeometry.of(config)
        self.name = "Amaranth simulator"
        self.max_cycles = max_cycles

    def run_mlp_jobs(self, models, jobs):
        cfg, geo = self.config, self.geo
        dut = ComputeCore(cfg)
        programs = allocate_models(models, geo)
        results: dict[int, JobResult] = {}

        async def partition(ctx, p: int, mine: list[int]):
            for program in programs.values():
                for addr, row in program.weight_writes():
                    await put(ctx, dut.weight_write[p], {"addr": addr, "data": row.tolist()})
                for addr, row in program.bias_writes():
                    await put(ctx, dut.bias_write[p], {"addr": addr, "data": row.tolist()})
            for n in mine:
                job = jobs[n]
                program = programs[job.model]
                rows = job.x.shape[0]
                for addr, word in pack_activations(job.x, geo):
                    await put(ctx, dut.act_write[p], {"buffer": 0, "addr": addr,
                                                      "data": word.tolist()})
                cycles, out = [], None
                for cmd in program.commands(rows):
                    await put(ctx, dut.cmd[p], cmd.payload())
                    if cmd.score:
                        beats = await receive(ctx, dut.scores[p], rows)
                        out = np.array([b["score"] for b in beats], dtype=np.int64)
                    resp = await get(ctx, dut.resp[p])
                    if resp["error"] or resp["tag"] != cmd.tag:
                        raise AssertionError(f"partition {p}: {resp} for {cmd}")
                    cycles.append(resp["cycles"])
                if out is None:
                    last = program.layers[-1]
                    words = []
                    for addr in activation_addresses(rows, last.n_out, geo):
                        await put(ctx, dut.act_read[p], {"buffer": len(program.layers) % 2,
                                                         "addr": addr})
                        words.append(await get(ctx, dut.act_data[p]))
                    out = unpack_activations(words, rows, last.n_out, geo)
                results[n] = JobResult(out, tuple(cycles))

        def bench_of(p: int, mine: list[int]):
            async def bench(ctx):
                await partition(ctx, p, mine)
            return bench

        benches = [bench_of(p, mine) for p, mine in enumerate(deal(len(jobs), cfg.partitions))]
        simulate(dut, benches, max_cycles=self.max_cycles, name="host_compute_core")
        return [results[n] for n in range(len(jobs))]

    def run_topk(self, queries):
        dut = TopKFilter(self.config)
        results = []

        async def bench(ctx):
            for q in queries:
                n = len(q.scores)
                beats = [{"score": int(s), "id": i, "k": q.k, "last": int(i == n - 1)}
                         for i, s in enumerate(q.scores)]
                await send(ctx, dut.scores, beats)
                got = await receive(ctx, dut.topk, until=lambda b: b["last"])
                if any(b["error"] for b in got):
                    raise AssertionError(f"the top-k unit rejected k={q.k}")
                results.append(TopKResult(np.array([b["id"] for b in got], dtype=np.int64),
                                          np.array([b["score"] for b in got], dtype=np.int64)))

        simulate(dut, [bench], max_cycles=self.max_cycles, name="host_topk")
        return results
