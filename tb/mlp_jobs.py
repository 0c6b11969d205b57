"""cocotb: run MLP jobs from a file on the compute core and write the results back.

The host side (tests, ``make demo``) describes work in an ``.npz`` file named by
``RPACCEL_MLP_JOBS``:

* models: ``m_<name>_layers`` (count) and, per layer ``i``, ``m_<name>_l<i>_w``,
  ``..._bias`` and ``..._params`` (``mult, shift, relu, score``);
* jobs ``0 .. jobs-1``: ``j<n>_model`` (the model name as a 0-d string array),
  ``j<n>_x`` (the int8 input rows, at most ``sub_batch``) and optionally
  ``j<n>_expected`` (checked here, bit for bit).

Every partition loads every model once, then the jobs are dealt out round robin and the
partitions run concurrently. The results go to ``RPACCEL_MLP_OUT`` (``.npz``): ``j<n>_out``
(int32 scores of a score model, else the last layer's int8 outputs) and ``j<n>_cycles``
(the engine's cycle counts per layer).
"""

from __future__ import annotations

import os

import numpy as np

import cocotb
from cocotb.triggers import Combine

from rpaccel.sim.mlp_program import IntLayer, MLPProgram
from rpaccel.tb.cocotb_streams import CycleCounter
from rpaccel.tb.common import setup
from rpaccel.tb.core_host import PartitionHost, core_hosts

__all__ = ["load_models", "run_job"]


def load_models(jobs) -> dict[str, list[IntLayer]]:
    models = {}
    for key in jobs.files:
        if key.startswith("m_") and key.endswith("_layers"):
            name = key[2:-len("_layers")]
            layers = []
            for i in range(int(jobs[key])):
                mult, shift, relu, score = (int(v) for v in jobs[f"m_{name}_l{i}_params"])
                layers.append(IntLayer(w=jobs[f"m_{name}_l{i}_w"], bias=jobs[f"m_{name}_l{i}_bias"],
                                       mult=mult, shift=shift, relu=bool(relu), score=bool(score)))
            models[name] = layers
    return models


async def run_job(host: PartitionHost, program: MLPProgram, x: np.ndarray):
    """Run ``program`` on rows ``x``; returns (outputs, cycles per layer)."""
    await host.load_activations(x, buffer=0)
    cycles, out = [], None
    for cmd in program.commands(x.shape[0]):
        resp, scores = await host.run(cmd)
        assert resp["error"] == 0, f"partition {host.p}: command rejected: {cmd}"
        cycles.append(resp["cycles"])
        if scores is not None:
            assert [s["row"] for s in scores] == list(range(cmd.rows))
            out = np.array([s["score"] for s in scores], dtype=np.int64)
    if out is None:
        last = program.layers[-1]
        out = await host.read_activations(len(program.layers) % 2, x.shape[0], last.n_out)
    return out, cycles


@cocotb.test()
async def run_jobs(dut):
    jobs = np.load(os.environ["RPACCEL_MLP_JOBS"], allow_pickle=False)
    bench = await setup(dut)
    hosts = core_hosts(dut, bench.config, CycleCounter(dut.clk), bench.rng)
    models = load_models(jobs)
    assert models, "RPACCEL_MLP_JOBS holds no model"
    programs = {}
    for host in hosts:
        tile = bias = 0
        for name, layers in models.items():
            program = MLPProgram(host.geo, layers, weight_base=tile, bias_base=bias)
            await host.load_program(program)
            programs[host.p, name] = program
            tile += len(program.weight_words) // host.geo.rows
            bias += len(program.bias_words)
    n_jobs = sum(1 for key in jobs.files if key.startswith("j") and key.endswith("_x"))
    results = {}

    async def worker(host):
        for n in range(host.p, n_jobs, len(hosts)):
            model = str(jobs[f"j{n}_model"])
            out, cycles = await run_job(host, programs[host.p, model], jobs[f"j{n}_x"])
            if f"j{n}_expected" in jobs:
                expected = jobs[f"j{n}_expected"]
                bad = np.argwhere(np.atleast_1d(out != expected))
                assert bad.size == 0, (f"job {n} ({model}) on partition {host.p}: "
                                       f"{bad.shape[0]} mismatches, first at {bad[0].tolist()}: "
                                       f"got {out[tuple(bad[0])]}, expected "
                                       f"{expected[tuple(bad[0])]}")
            results[f"j{n}_out"] = out
            results[f"j{n}_cycles"] = np.array(cycles)

    await Combine(*[cocotb.start_soon(worker(host)) for host in hosts])
    dut._log.info("%d jobs on %d partitions checked", n_jobs, len(hosts))
    if "RPACCEL_MLP_OUT" in os.environ:
        np.savez(os.environ["RPACCEL_MLP_OUT"], **results)
