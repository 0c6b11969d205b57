"""The cocotb transport of the host layer: MLP jobs and top-k queries on the RTL.

:class:`CocotbTransport` implements :class:`rpaccel.sim.host.CoreTransport` by running the
job benches in RTL simulation: ``tb/mlp_jobs.py`` on the generated compute core (every
model loaded into every partition, jobs dealt over the partitions, each output checked
against its ``expected``) and ``tb/bench_topk.py::topk_queries`` on the top-k harness. Work
goes in and out through ``.npz`` files in ``work``; each call is one simulator run of an
optimized build (built once per configuration and simulator).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.sim.host import JobResult, MLPJob, TopKQuery, TopKResult
from rpaccel.sim.mlp_program import save_mlp_jobs

from .generate import generate
from .simulators import run_cocotb

__all__ = ["CocotbTransport"]


class CocotbTransport:
    """RTL backend for the host layer (see the module docstring)."""

    def __init__(self, config: AccelConfig, sim: str, work: Path):
        self.config, self.sim, self.work = config, sim, Path(work)
        self.name = f"RTL ({sim})"
        self._calls = 0

    def _files(self, what: str) -> tuple[Path, Path]:
        self._calls += 1
        self.work.mkdir(parents=True, exist_ok=True)
        return (self.work / f"{what}{self._calls}-in.npz",
                self.work / f"{what}{self._calls}-out.npz")

    def run_mlp_jobs(self, models, jobs: list[MLPJob]) -> list[JobResult]:
        job_file, out_file = self._files("mlp")
        save_mlp_jobs(job_file, models, [(j.model, j.x) if j.expected is None
                                         else (j.model, j.x, j.expected) for j in jobs])
        run_cocotb(generate(self.config, "compute_core"), self.sim, "rpaccel.tb.mlp_jobs",
                   optimize=True, quiet=True,
                   extra_env={"RPACCEL_MLP_JOBS": str(job_file),
                              "RPACCEL_MLP_OUT": str(out_file)})
        out = np.load(out_file)
        return [JobResult(out[f"j{n}_out"], tuple(int(c) for c in out[f"j{n}_cycles"]))
                for n in range(len(jobs))]

    def run_topk(self, queries: list[TopKQuery]) -> list[TopKResult]:
        q_file, out_file = self._files("topk")
        arrays = {}
        for n, q in enumerate(queries):
            arrays[f"q{n}_scores"] = np.asarray(q.scores, dtype=np.int64)
            arrays[f"q{n}_k"] = np.array(q.k)
        np.savez(q_file, **arrays)
        run_cocotb(generate(self.config, "topk_harness"), self.sim, "rpaccel.tb.bench_topk",
                   optimize=True, quiet=True, testcase="topk_queries",
                   extra_env={"RPACCEL_TOPK_QUERIES": str(q_file),
                              "RPACCEL_TOPK_OUT": str(out_file)})
        out = np.load(out_file)
        return [TopKResult(out[f"q{n}_positions"], out[f"q{n}_scores"], int(out[f"q{n}_cycles"]))
                for n in range(len(queries))]
