"""``rpaccel sim``: real MovieLens-100K test users through a multi-stage cascade on the whole
generated accelerator in RTL simulation, checked against the golden, with every cycle
counted.

The host scheduler (``sim/scheduler.py``) validates the pipeline against the configuration
before anything is built, compiles the models, picks the static-cache rows and lays out
memory images (at most :data:`rpaccel.tb.accel_harness.MEM_BYTES` each, so ``--queries
all`` becomes a few images); the RTL backend (``gen/rtl_backend.py``) runs them one after
another in one simulator process, the testbench only writing registers and awaiting the
interrupt. Every query's final ranking (ids and scores) and every stage's kept list are
compared with :meth:`rpaccel.sim.golden.Golden.run` on the same candidates.

Figures (:func:`run_cosim` returns them; ``--json`` writes them):

* ``mismatches``: queries whose ranking, scores or any kept list differ from the golden, or
  that completed with an error code;
* ``ndcg@10``: mean NDCG@10 of the accelerator's own rankings against the held-out test
  items (``ndcg@10_golden`` the golden's on the same queries: equal when bit-exact);
* ``cycles_per_query``: mean of each query's cycles in its completion (first record fetch of
  stage 1 to its last result), ``stage_cycles`` the mean per stage;
  ``throughput_cycles_per_query``: simulated cycles of whole images (model loads included)
  per query, the figure for back-to-back queries;
* ``utilization``: per stage, the model's MACs (every MLP layer of every candidate the stage
  scores) over the stage's cycles times the MACs of the partitions that run it;
* ``cache_hit_rate``: static and dynamic, from the CSR counters;
* ``engines_overlap``: the fraction of busy cycles (``BUSY_CYCLES``) in which two or more
  partitions' MLP engines ran a layer (``ENGINES_OVERLAP``): how much consecutive queries'
  stages, or one stage's sub-batches dealt over partitions, ran side by side; None with
  one partition;
* ``sim_cycles_per_s``: simulated cycles per second of simulator wall time while images ran
  (build and start-up excluded; ``wall_s`` is the whole run);
* ``counters_agree``: for every image, the CSR ``CYCLES`` difference between two reads
  equals the cycles the testbench counted between them.

Without on-chip top-k (``onchip_topk = false``) every stage is a round: the scheduler reads
the scores back, filters them and submits the next stage (:meth:`Scheduler.advance`) while
the simulator waits with the accelerator idle and its state kept; cycles are the
accelerator's, the host's time between rounds is not simulated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.sim.metrics import ndcg_at_k

__all__ = ["run_cosim", "format_cosim", "plan_images", "register",
           "queries_arg"]


def plan_images(scheduler, queries, mem_bytes: int) -> list:
    """Plans of consecutive slices of ``queries``, each image within ``mem_bytes``. The
    slice size comes from one query's plan: what the image holds besides queries (models,
    static rows) plus, per query, its records, result and kept lists and its ring slots
    at the largest candidate count; a slice that still does not fit is halved."""
    from rpaccel.hw import descriptors as d

    cfg, stages = scheduler.config, scheduler.pipeline.stages
    first = scheduler.plan(queries[:1])
    per = lambda n: (n * d.record_bytes(cfg) + stages[-1].keep_k * d.RESULT_BYTES +
                     len(stages) * cfg.topk_max * d.RESULT_BYTES + 3 * 64 +
                     2 * (d.COMMAND_BYTES + d.COMPLETION_BYTES))   # rings: a power of two
    fixed = first.image.end - per(len(queries[0][1]))
    if first.image.end > mem_bytes:
        raise ValueError(f"one query's image ({first.image.end} bytes) does not fit "
                         f"{mem_bytes} bytes of simulated memory")
    per_image = max(1, (mem_bytes - fixed) // per(max(len(q[1]) for q in queries)))
    plans, start = [], 0
    while start < len(queries):
        take = min(per_image, len(queries) - start)
        plan = first if start == 0 and take == 1 else scheduler.plan(queries[start:start + take])
        if plan.image.end > mem_bytes:
            per_image = max(1, take // 2)
            continue
        plans.append(plan)
        start += take
    return plans


def run_cosim(config: AccelConfig, preset_name: str, sim: str, pipeline: str,
              n_queries: int | None, *, work: Path, waves: bool = False, latency: int = 0,
              stall: int = 0, seed: int = 1, progress=print, setup=None,
              candidates: int | None = None, users: list[int] | None = None,
              stage_partitions: list[int] | None = None,
              stage_gangs: list[bool] | None = None) -> dict:
    """Cosimulate ``n_queries`` test users (``None``: all; or the given ``users``) through
    ``pipeline``, each with all its test candidates (or the first ``candidates`` of them);
    returns the figures of the module docstring (and ``first_mismatches``, what differed).
    ``stage_partitions`` (one partition mask per stage) overrides the scheduler's mapping,
    ``stage_gangs`` (one flag per stage) runs stages ganged on their masks."""
    from rpaccel.sim.golden import load_golden
    from rpaccel.sim.scheduler import Scheduler
    from rpaccel.tb.accel_harness import MEM_BYTES

    from .rtl_backend import RTLBackend

    started = time.perf_counter()
    setup = setup or load_golden()
    # rejects a bad pipeline or mapping first
    scheduler = Scheduler(config, setup, pipeline, stage_partitions=stage_partitions,
                          stage_gangs=stage_gangs)
    stages = scheduler.pipeline.stages
    if users is None:
        users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))]
        if n_queries is not None:
            users = users[:n_queries]
    queries = [(u, setup.split.test_candidates(u)[:candidates]) for u in users]
    plans = plan_images(scheduler, queries, MEM_BYTES)
    progress(f"{len(queries)} queries through {scheduler.pipeline.describe()} in "
             f"{len(plans)} memory image(s) on {sim}")
    results = []
    with RTLBackend(config, sim, work, latency=latency, stall=stall, seed=seed, waves=waves,
                    quiet="build") as backend:
        for n, plan in enumerate(plans):
            while True:     # one round; more only without on-chip top-k (host round trips)
                head = backend.execute(plan.image, plan.ring)
                if head != plan.ring.tail:
                    raise RuntimeError(f"image {n}: the accelerator stopped at ring entry "
                                       f"{head} of {plan.ring.tail}")
                if not scheduler.advance(plan):
                    break
                progress(f"image {n}: host round trip, next stage submitted")
            results += scheduler.results(plan)

    progress("checking every query against the golden cascade")
    mismatches, first, ndcg, ndcg_golden = 0, [], [], []
    for query, res in zip(queries, results):
        ref = setup.golden.run(scheduler.pipeline, *query)
        problems = res.differences(ref)
        if problems:
            mismatches += 1
            if len(first) < 10:
                first.append({"user": query[0], "problems": problems})
        relevant = setup.split.test_items(query[0])
        ndcg.append(ndcg_at_k(res.ranking, relevant, 10) if res.error == 0 else 0.0)
        ndcg_golden.append(ndcg_at_k(ref.ranking, relevant, 10))

    figs = backend.figures
    # counters are cumulative from an image's reset: each image's last round holds its totals
    last_round = [f for n, f in enumerate(figs)
                  if n + 1 == len(figs) or figs[n + 1]["image"] != f["image"]]
    counters = {name: sum(f["counters"][name] for f in last_round)
                for name in figs[0]["counters"]}
    stage_cycles = [float(np.mean([r.stage_cycles[s] for r in results]))
                    for s in range(len(stages))]
    utilization = []
    pmacs = config.rows * config.partition_cols
    for s, stage in enumerate(stages):
        scored = [len(q[1]) if s == 0 else stages[s - 1].keep_k for q in queries]
        macs = np.mean(scored) * setup.golden.quantized[stage.model].spec.mlp_macs
        used = bin(scheduler.stage_masks[s]).count("1")
        utilization.append(float(macs / (stage_cycles[s] * pmacs * used)))
    run_cycles = sum(f["run_cycles"] for f in figs)
    sim_wall = sum(f["wall_s"] for f in figs)

    def rate(hits, accesses):
        return float(counters[hits] / counters[accesses]) if counters[accesses] else 0.0

    report = {
        "preset": preset_name, "config_hash": config.hash, "simulator": sim,
        "pipeline": scheduler.pipeline.name, "stages": scheduler.pipeline.to_dict(),
        "queries": len(queries), "images": len(plans), "mismatches": mismatches,
        "first_mismatches": first,
        "ndcg@10": float(np.mean(ndcg)), "ndcg@10_golden": float(np.mean(ndcg_golden)),
        "cycles_per_query": float(np.mean([r.total_cycles for r in results])),
        "throughput_cycles_per_query": run_cycles / len(queries),
        "stage_cycles": stage_cycles, "utilization": utilization,
        "stage_partitions": [int(m) for m in scheduler.stage_masks],
        "stage_gangs": [bool(g) for g in scheduler.stage_gangs],
        "cache_hit_rate": {"static": rate("STATIC_HITS", "STATIC_ACCESSES"),
                           "dynamic": rate("DYNAMIC_HITS", "DYNAMIC_ACCESSES")},
        "engines_overlap": rate("ENGINES_OVERLAP", "BUSY_CYCLES")
        if "ENGINES_OVERLAP" in counters else None,
        "sim_cycles": run_cycles, "sim_wall_s": sim_wall,
        "sim_cycles_per_s": run_cycles / sim_wall if sim_wall else 0.0,
        "counters_agree": all(f["csr_cycles"] == f["tb_cycles"] for f in figs),
        "outside_region": any(f["violation"] for f in figs),
        "errors": int(sum(f["errors"] for f in last_round)),
        "host_round_trips": len(figs) - len(plans),
        "counters": counters, "clock_mhz": config.clock_mhz,
        "latency_us": float(np.mean([r.total_cycles for r in results])) / config.clock_mhz,
        "wall_s": time.perf_counter() - started,
    }
    if backend.waves_path is not None:
        report["waves"] = str(backend.waves_path)
    return report


def format_cosim(r: dict) -> str:
    from rpaccel.sim.report import format_table

    rows = [
        ["queries (real test users)", f"{r['queries']} in {r['images']} image(s)"],
        ["bit-exact with the golden", "yes" if r["mismatches"] == 0 else
         f"NO: {r['mismatches']} mismatching queries"],
        ["NDCG@10 (accelerator's lists)", f"{r['ndcg@10']:.4f} (golden {r['ndcg@10_golden']:.4f})"],
        ["cycles per query (latency)", f"{r['cycles_per_query']:,.0f} "
         f"({r['latency_us']:,.1f} us at {r['clock_mhz']:g} MHz)"],
        ["cycles per query (back to back)", f"{r['throughput_cycles_per_query']:,.0f}"],
    ]
    for s, (st, cyc, util) in enumerate(zip(r["stages"], r["stage_cycles"], r["utilization"])):
        rows.append([f"stage {s + 1}: {st['model']} keep {st['keep_k']} "
                     f"(partitions {r['stage_partitions'][s]:#x}"
                     f"{', ganged' if r['stage_gangs'][s] else ''})",
                     f"{cyc:,.0f} cycles, MAC utilization {100 * util:.1f} %"])
    rows += [
        ["cache hit rate", f"static {100 * r['cache_hit_rate']['static']:.1f} %, dynamic "
         f"{100 * r['cache_hit_rate']['dynamic']:.1f} %"],
    ]
    if r.get("engines_overlap") is not None:
        rows.append(["two or more engines busy at once",
                     f"{100 * r['engines_overlap']:.1f} % of busy cycles "
                     f"({r['counters']['ENGINES_OVERLAP']:,} cycles)"])
    rows += [
        ["CSR CYCLES = testbench cycles", "yes" if r["counters_agree"] else "NO"],
        ["memory outside the region", "touched" if r["outside_region"] else "never touched"],
        ["simulator speed", f"{r['sim_cycles_per_s']:,.0f} cycles/s "
         f"({r['sim_cycles']:,} cycles in {r['sim_wall_s']:.1f} s; {r['wall_s']:.0f} s in all)"],
    ]
    if "waves" in r:
        rows.append(["waveform", r["waves"]])
    return format_table(["figure", "value"], rows,
                        title=f"rpaccel sim: {r['preset']} ({r['config_hash']}), {r['simulator']}, "
                              f"pipeline {r['pipeline']}")


# -- command line ---------------------------------------------------------------------------
def queries_arg(text: str) -> int | None:
    """argparse type of ``--queries``: a positive number of test users, or ``all``."""
    import argparse
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of queries or 'all', not "
                                         f"{text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


@dataclass(frozen=True)
class StageMapping:
    """``--partitions``: each stage's partition mask and whether it runs ganged on it."""
    masks: list
    gangs: list


def partitions_arg(text: str) -> StageMapping:
    """argparse type of ``--partitions``: one partition mask per stage, comma separated
    (``1,2``, ``0x3,0x3``, ``0b11,3``); a ``g`` after a mask runs that stage ganged on it
    (``3,3g``: stage 2's layers with their columns split over partitions 0 and 1)."""
    import argparse
    masks, gangs = [], []
    for part in text.split(","):
        part = part.strip()
        gang = part.lower().endswith("g")          # (not a digit of any base int() takes)
        try:
            masks.append(int(part[:-1] if gang else part, 0))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be partition masks, one per stage, each optionally followed by g for "
                f"a ganged stage (for example 1,2 or 3,3g), not {text!r}") from None
        gangs.append(gang)
    return StageMapping(masks, gangs)


def cmd_sim(args) -> int:
    from rpaccel.sim.files import build_root
    from rpaccel.sim.scheduler import Scheduler

    from .options import (check_build_root, check_data_root, check_output_file,
                          check_simulator, config_from_args, say)
    from .simulators import fst_unavailable_reason

    from rpaccel.sim.golden import Pipeline

    config, name = config_from_args(args)
    Pipeline.parse(args.pipeline)               # its syntax, before anything is loaded
    check_simulator(args.sim)
    check_build_root()
    check_data_root(models=True)
    check_output_file(args.json, "--json")
    if args.waves:
        reason = fst_unavailable_reason(args.sim)
        if reason:
            from rpaccel.hw.errors import RpaccelError
            raise RpaccelError(f"--waves: {reason}")
    from rpaccel.sim.data import ensure_dataset
    from rpaccel.sim.golden import load_golden
    ensure_dataset(progress=say)
    setup = load_golden(progress=say)
    # a bad pipeline or mapping fails before any build
    masks = args.partitions.masks if args.partitions else None
    gangs = args.partitions.gangs if args.partitions else None
    Scheduler(config, setup, args.pipeline, stage_partitions=masks, stage_gangs=gangs)
    work = build_root() / f"cosim-{config.hash}-{args.sim}"
    report = run_cosim(config, name, args.sim, args.pipeline, args.queries, work=work,
                       waves=args.waves, latency=args.latency, stall=args.stall,
                       seed=args.seed, progress=say, setup=setup, candidates=args.candidates,
                       stage_partitions=masks, stage_gangs=gangs)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(format_cosim(report))
    return 0 if report["mismatches"] == 0 and not report["outside_region"] and \
        report["counters_agree"] else 1


def register(sub) -> None:
    """Add ``rpaccel sim`` to the command parser."""
    from .options import add_config_options, cycles_int, positive_int, stall_int
    from .simulators import SIMULATORS

    p = sub.add_parser("sim", help="cosimulate real queries end to end on the whole "
                                   "accelerator; compare with the golden; cycles, NDCG")
    add_config_options(p)
    p.add_argument("--sim", default="verilator", choices=SIMULATORS,
                   help=f"RTL simulator: {', '.join(SIMULATORS)} (default: verilator)")
    p.add_argument("--queries", type=queries_arg, default=20, metavar="N|all",
                   help="test users to rank (default: 20; all = the 943 with held-out items)")
    p.add_argument("--pipeline", default="2-stage", metavar="SPEC",
                   help="cascade: a name (1-stage-small ... 3-stage) or MODEL:K,MODEL:K,... "
                        "(default: 2-stage = small:256,large:10)")
    p.add_argument("--candidates", type=positive_int, default=None, metavar="N",
                   help="rank only each user's first N test candidates (default: all, "
                        "about 1,600)")
    p.add_argument("--partitions", type=partitions_arg, default=None, metavar="MASKS",
                   help="partition mask of each stage, comma separated: a mask of several "
                        "partitions deals the stage's sub-batches over them, or with a g "
                        "after it gangs them on every layer, its output columns split "
                        "(default: every stage dealt on all partitions, but a later stage "
                        "of fewer sub-batches than partitions ganged on them; 1,2 = stage 1 "
                        "on partition 0, stage 2 on partition 1; 3,3g = stage 2 ganged)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--waves", action="store_true", help="write an FST waveform")
    p.add_argument("--latency", type=cycles_int, default=0, metavar="CYCLES",
                   help="memory model read latency (default 0)")
    p.add_argument("--stall", type=stall_int, default=0, metavar="P",
                   help="memory model stall probability per cycle, out of 256 (default 0)")
    p.add_argument("--seed", type=positive_int, default=1,
                   help="memory model stall seed (default 1)")
    p.set_defaults(func=cmd_sim)
