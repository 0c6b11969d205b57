"""``rpaccel core-bench``: performance of the compute core measured in RTL cycles.

Two cocotb benchmarks run on the chosen simulator, with an optimized model build:

* ``tb/bench_core.py`` on the compute core: whole layers (a ``B=256, 64x64`` layer and the
  real layer shapes of the three MovieLens models) with their output columns split over
  the partitions; cycles from the engines' counters; MAC utilization =
  ``B * in * out / (rows * cols * cycles)``.
* ``tb/bench_topk.py`` on the top-k harness (``tb/topk_harness.py``): ``n`` scores (as many
  as the harness holds, 4096 on ``default``) at full rate into one top-k unit for ``k`` = 1,
  16, 64, 256, 512 (up to ``topk_max``) and ``topk_max / 2``; cycles from the first input to
  the last result, cycles per candidate, and the delays from the last input to the first
  and to the last result.

In both, Python loads memories and starts the work, then the simulator runs freely until
the design reports done; ``sim_cycles_per_s`` is simulated cycles per wall-clock second of
those free runs. Every run checks its results against the golden model before a number is
reported.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from rpaccel.hw.config import AccelConfig
from .generate import generate
from rpaccel.sim.report import format_table
from .options import check_simulator
from .simulators import run_cocotb
from rpaccel.tb.topk_harness import harness_depth

__all__ = ["bench_plan", "run_core_bench"]


def bench_plan(config: AccelConfig) -> dict:
    """Layer shapes and top-k cases measured for ``config``."""
    from rpaccel.sim.models import SPECS

    b = min(256, config.sub_batch)
    layers = [{"name": f"B={b} 64x64", "b": b, "in": 64, "out": 64}]
    seen = {(64, 64)}
    for spec in SPECS.values():
        for part, dims in (("bottom", spec.bottom_dims), ("top", spec.top_dims)):
            for n_in, n_out in zip(dims[:-1], dims[1:]):
                if (n_in, n_out) in seen or max(n_in, n_out) > config.max_layer_dim:
                    continue
                seen.add((n_in, n_out))
                layers.append({"name": f"{spec.name} {part} {n_in}x{n_out}",
                               "b": config.sub_batch, "in": n_in, "out": n_out})
    # The cascade's sizes: 4096 candidates (as many as the harness holds), k = 16 .. 512.
    n = harness_depth(config)
    ks = sorted({1, max(1, config.topk_max // 2), config.topk_max}
                | {k for k in (16, 64, 256, 512) if k <= config.topk_max})
    topk = [{"n": n, "k": k} for k in ks] + [{"n": config.topk_max // 2 or 1,
                                             "k": config.topk_max}]
    return {"layers": layers, "topk": topk}


def _run(config, unit, sim, module, plan, progress) -> dict:
    gen = generate(config, unit)
    fd, out = tempfile.mkstemp(prefix=f"bench-{unit}-", suffix=".json", dir=gen.directory)
    os.close(fd)
    try:
        progress(f"{sim}: {module} on {gen.top} ({config.hash})")
        run_cocotb(gen, sim, module, optimize=True, quiet=True,
                   extra_env={"RPACCEL_BENCH_PLAN": json.dumps(plan),
                              "RPACCEL_BENCH_OUT": out})
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def run_core_bench(config: AccelConfig, name: str, sim: str, progress=print) -> dict:
    check_simulator(sim)  # before any generation
    plan = bench_plan(config)
    started = time.monotonic()
    core = _run(config, "compute_core", sim, "rpaccel.tb.bench_core", plan, progress)
    topk = _run(config, "topk_harness", sim, "rpaccel.tb.bench_topk", plan, progress)
    cycles = core["sim_cycles"] + topk["sim_cycles"]
    seconds = core["sim_seconds"] + topk["sim_seconds"]
    return {
        "preset": name,
        "config_hash": config.hash,
        "simulator": sim,
        "array": {"rows": config.rows, "cols": config.cols, "partitions": config.partitions},
        "clock_mhz": config.clock_mhz,
        "layers": core["layers"],
        "topk": topk["topk"],
        "sim_cycles_per_s": cycles / seconds if seconds else None,
        "sim_cycles_per_s_by_bench": {
            "compute_core": core["sim_cycles"] / core["sim_seconds"],
            "topk_harness": topk["sim_cycles"] / topk["sim_seconds"]},
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def format_report(report: dict) -> str:
    a = report["array"]
    lines = [format_table(
        ["layer", "B", "in", "out", "partitions", "cycles", "utilization"],
        [[l["name"], l["b"], l["in"], l["out"], l["partitions_used"], l["cycles"],
          round(l["utilization"], 4)] for l in report["layers"]],
        title=f"Compute core {a['rows']}x{a['cols']}, {a['partitions']} partitions "
              f"({report['preset']}, {report['config_hash']}) on {report['simulator']}")]
    lines.append("")
    lines.append(format_table(
        ["n", "k", "cycles", "input cycles", "cycles/candidate", "last input -> first result",
         "last input -> last result"],
        [[t["n"], t["k"], t["cycles"], t["input_cycles"], round(t["cycles_per_candidate"], 3),
          t["first_result_after_last_input"], t["last_result_after_last_input"]]
         for t in report["topk"]], title="Top-k filter"))
    lines.append("")
    lines.append(f"simulation speed: {report['sim_cycles_per_s']:.0f} cycles/s "
                 f"(compute core {report['sim_cycles_per_s_by_bench']['compute_core']:.0f}, "
                 f"top-k {report['sim_cycles_per_s_by_bench']['topk_harness']:.0f})")
    return "\n".join(lines)
