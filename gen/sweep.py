"""``rpaccel sim-sweep``: the feature sweep of issue 9 ("Performance"). The same real
MovieLens-100K test users run through each cascade on the whole accelerator (``rpaccel sim``,
:func:`rpaccel.gen.cosim.run_cosim`) once per *variant* of one configuration: every feature
on (RPAccel), each feature off alone, every feature off but on-chip top-k, and every feature
off (the baseline accelerator the same generator builds, with the same MACs: ``partitions =
1`` keeps ``cols``, so the one array has the columns the partitions had).

The variants are :data:`VARIANTS`; :func:`variant_config` derives each one's configuration
from the base by changing exactly the variant's fields. Every switch is implemented in the
hardware (tests/test_sweep.py checks the top-k-off build has no top-k unit); a pipeline the
scheduler refuses on a variant is *listed* with the scheduler's reason and not run.

Contract of :func:`run_sweep`: for every (variant, pipeline) one entry with ``status``

* ``ok``: run, bit-exact with the golden; ``report`` holds run_cosim's figures;
* ``mismatch``: run, but some query differed from the golden (or completed with an error,
  touched memory outside its region, or the CSR cycle counter disagreed with the
  testbench): a failure, reported loudly and reflected in the exit status;
* ``failed``: the build or the run raised; ``reason`` says what (also a failure);
* ``unavailable``: not run, the scheduler refused the pipeline on this variant; ``reason``
  says why (not a failure);

and ``speedup`` per pipeline (:func:`speedups`): all-off's, and all-off-but-topk's, cycles
per query over all-on's, each pair measured in this same run (``None`` with the reason when
either side is missing).

Each configuration is one Verilator build, in the folder ``rpaccel sim`` uses for it (named
by the configuration hash), so a rerun, or a later ``rpaccel sim`` of one variant, reuses it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rpaccel.hw.config import AccelConfig

__all__ = ["Variant", "VARIANTS", "SPEEDUPS", "variant_config",
           "run_sweep", "speedups", "format_markdown", "plot_sweep", "register"]


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: ``key`` names it in the report and on ``--variants``,
    ``changes`` are the configuration fields it sets on the base (:func:`variant_config`)."""
    key: str
    title: str
    changes: dict = field(default_factory=dict)


# The five switches of issue 9 and the value that turns each off. partitions = 1 is "one
# monolithic array" (cols unchanged, so the MACs stay the same); the caches are off at
# zero size (the hardware then builds no cache: hw/embedding.py, hw/regmap.py FEATURES).
_OFF = {
    "subbatch_overlap": ("no-overlap", "sub-batch overlap off", {"subbatch_overlap": False}),
    "onchip_topk": ("no-onchip-topk", "on-chip top-k off", {"onchip_topk": False}),
    "static_cache": ("no-static-cache", "static cache off", {"static_cache_rows": 0}),
    "dynamic_cache": ("no-dynamic-cache", "dynamic cache off", {"dynamic_cache_sets": 0}),
    "partitions": ("one-partition", "one partition", {"partitions": 1}),
}

#: all on, each feature off alone, all off (the baseline). Order is the report's order.
VARIANTS: tuple[Variant, ...] = (
    Variant("all-on", "all features on (RPAccel)", {}),
    *(Variant(key, title, changes) for key, title, changes in _OFF.values()),
    # Every switch off but on-chip top-k: the baseline's datapath with RPAccel's filtering,
    # so (all-off-but-topk -> all-off) isolates top-k on top of the baseline, and the sweep
    # has a measured ratio even on a build where top-k off is not available yet.
    Variant("all-off-but-topk", "all off but on-chip top-k",
            {k: v for name, (_, _, ch) in _OFF.items() if name != "onchip_topk"
             for k, v in ch.items()}),
    Variant("all-off", "all features off (baseline)",
            {k: v for _, _, ch in _OFF.values() for k, v in ch.items()}),
)


def variant_config(base: AccelConfig, variant: Variant) -> AccelConfig:
    """The base with exactly ``variant.changes`` applied (validated by AccelConfig). With
    ``partitions = 1`` the base's ``topk_units`` stays (valid: at least one per partition),
    so nothing but the variant's own fields differs from the base."""
    return base.replace(**variant.changes)


def _failed_checks(report: dict) -> list[str]:
    """What makes a finished run a failure (empty: a clean run)."""
    problems = []
    if report["mismatches"]:
        problems.append(f"{report['mismatches']} of {report['queries']} queries differ from "
                        f"the golden: {report['first_mismatches']}")
    if report["errors"]:
        problems.append(f"{report['errors']} error completions")
    if report["outside_region"]:
        problems.append("memory outside the query's region was touched")
    if not report["counters_agree"]:
        problems.append("CSR CYCLES differs from the testbench's cycle count")
    return problems


def run_sweep(base: AccelConfig, preset_name: str, pipelines: list[str], n_queries: int, *,
              sim: str = "verilator", variants=VARIANTS, candidates: int | None = None,
              latency: int = 0, setup=None, work_root: Path | None = None,
              progress=print) -> dict:
    """Run every available variant on every pipeline on the same first ``n_queries`` test
    users (each with all its candidates, or the first ``candidates``), the memory model
    answering reads after ``latency`` cycles; returns the dict of the module docstring
    (``runs``: one entry per variant and pipeline, in order)."""
    import numpy as np

    from rpaccel.sim.files import build_root
    from rpaccel.sim.golden import load_golden
    from rpaccel.sim.scheduler import Scheduler

    from .cosim import run_cosim

    started = time.perf_counter()
    setup = setup or load_golden()
    # The same users for every run, chosen once: a variant's figures differ only by the
    # hardware, never by the queries.
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:n_queries]]
    root = Path(work_root) if work_root is not None else build_root()
    runs, total = [], len(variants) * len(pipelines)
    n = 0
    for variant in variants:
        config = variant_config(base, variant)
        for pipeline in pipelines:
            n += 1
            entry = {"variant": variant.key, "title": variant.title,
                     "changes": dict(variant.changes), "pipeline": pipeline,
                     "config_hash": config.hash}
            where = f"[{n}/{total}] {variant.key} ({config.hash}), {pipeline}"
            try:
                Scheduler(config, setup, pipeline)       # the pipeline fits this variant?
            except Exception as err:                                  # noqa: BLE001
                entry.update(status="unavailable",
                             reason=f"the scheduler refuses the pipeline: {err}")
                progress(f"{where}: NOT RUN: {entry['reason']}")
                runs.append(entry)
                continue
            progress(f"{where}: {len(users)} queries (the build is reused if it exists) ...")
            t0 = time.perf_counter()
            try:
                report = run_cosim(config, preset_name, sim, pipeline, None, users=users,
                                   candidates=candidates, setup=setup, latency=latency,
                                   work=root / f"cosim-{config.hash}-{sim}",
                                   progress=lambda m, w=where: progress(f"{w}: {m}"))
            except Exception as err:                                  # noqa: BLE001
                # One variant that cannot build or run must not lose the others' figures.
                entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
                progress(f"{where}: FAILED: {entry['reason']}")
                runs.append(entry)
                continue
            problems = _failed_checks(report)
            entry.update(status="mismatch" if problems else "ok", report=report)
            if problems:
                entry["reason"] = "; ".join(problems)
                progress(f"{where}: *** FAILURE: {entry['reason']} ***")
            else:
                progress(f"{where}: bit-exact, {report['cycles_per_query']:,.0f} cycles/query, "
                         f"stages {', '.join(f'{c:,.0f}' for c in report['stage_cycles'])}, "
                         f"{time.perf_counter() - t0:.0f} s")
            runs.append(entry)
    return {"preset": preset_name, "base_config_hash": base.hash, "simulator": sim,
            "queries": len(users), "users": users, "candidates": candidates,
            "memory_latency": latency,
            "pipelines": list(pipelines), "variants": [v.key for v in variants],
            "runs": runs, "speedup": speedups(runs, pipelines),
            "failures": sum(r["status"] in ("mismatch", "failed") for r in runs),
            "wall_s": time.perf_counter() - started}


#: The ratios the report gives: (name, faster variant, slower variant).
SPEEDUPS = (("all-on over all-off", "all-on", "all-off"),
            ("all-on over all-off-but-topk", "all-on", "all-off-but-topk"))


def speedups(runs: list[dict], pipelines: list[str]) -> dict:
    """Per pipeline and ratio of :data:`SPEEDUPS`: the slower variant's cycles over the
    faster one's, for latency (``cycles_per_query``) and back to back
    (``throughput_cycles_per_query``), or None with ``reason`` when a side has no clean run
    in ``runs`` (a ratio is only ever taken between two runs of the same sweep)."""
    out = {}
    for pipeline in pipelines:
        got = {r["variant"]: r for r in runs if r["pipeline"] == pipeline}
        out[pipeline] = {}
        for name, fast, slow in SPEEDUPS:
            missing = [k for k in (fast, slow) if k not in got or got[k]["status"] != "ok"]
            if missing:
                why = "; ".join(f"{k}: {got[k].get('reason', got[k]['status'])}" if k in got
                                else f"{k}: not in the sweep" for k in missing)
                out[pipeline][name] = {"latency": None, "back_to_back": None, "reason": why}
                continue
            a, b = got[fast]["report"], got[slow]["report"]
            out[pipeline][name] = {
                "latency": b["cycles_per_query"] / a["cycles_per_query"],
                "back_to_back": (b["throughput_cycles_per_query"]
                                 / a["throughput_cycles_per_query"]),
            }
    return out


# -- output -----------------------------------------------------------------------------------
def format_markdown(result: dict) -> str:
    """The sweep as Markdown: one row per variant and pipeline (cycles per query, latency
    and back to back; per stage cycles and MAC utilization; cache hit rates; simulator
    speed), a row that was not run says why, then the speed-ups. Formats the given numbers
    only."""
    n_stages = max([len(r["report"]["stage_cycles"]) for r in result["runs"] if "report" in r]
                   or [0])
    head = ["variant", "pipeline", "status", "cycles/query", "back-to-back cycles/query"]
    head += [f"stage {s + 1} cycles (MAC util.)" for s in range(n_stages)]
    head += ["static hit", "dynamic hit", "sim cycles/s"]
    lines = [
        f"# Feature sweep: `{result['preset']}` ({result['base_config_hash']}), "
        f"{result['simulator']}",
        "",
        f"{result['queries']} real MovieLens-100K test users (ids {result['users']}), "
        + ("all their test candidates" if result["candidates"] is None
           else f"the first {result['candidates']} test candidates of each")
        + f", the same users for every run; memory read latency "
          f"{result.get('memory_latency', 0)} cycles. Cycles per query: mean completion "
          "latency; back to back: simulated cycles of whole images (model loads included) "
          "per query.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in result["runs"]:
        row = [r["title"], r["pipeline"]]
        if "report" not in r:
            row += [f"{r['status']}: {r['reason']}"] + [""] * (len(head) - 3)
        else:
            rep = r["report"]
            row += ["bit-exact" if r["status"] == "ok" else f"**FAILURE: {r['reason']}**",
                    f"{rep['cycles_per_query']:,.0f}",
                    f"{rep['throughput_cycles_per_query']:,.0f}"]
            for s in range(n_stages):
                if s < len(rep["stage_cycles"]):
                    row.append(f"{rep['stage_cycles'][s]:,.0f} "
                               f"({100 * rep['utilization'][s]:.1f} %)")
                else:
                    row.append("")
            row += [f"{100 * rep['cache_hit_rate']['static']:.1f} %",
                    f"{100 * rep['cache_hit_rate']['dynamic']:.1f} %",
                    f"{rep['sim_cycles_per_s']:,.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Speed-ups (the slower variant's cycles / the faster one's, both measured "
                  "in this run):", ""]
    for pipeline, ratios in result["speedup"].items():
        for name, s in ratios.items():
            if s["latency"] is None:
                lines.append(f"* {pipeline}, {name}: not measured ({s['reason']})")
            else:
                lines.append(f"* {pipeline}, {name}: {s['latency']:.2f}x per query (latency), "
                             f"{s['back_to_back']:.2f}x back to back")
    if result["failures"]:
        lines += ["", f"**{result['failures']} run(s) FAILED** (see the status column)."]
    return "\n".join(lines) + "\n"


def plot_sweep(result: dict, path: Path) -> None:
    """A bar chart: one panel per pipeline, one bar per variant that ran, its stages' mean
    cycles stacked (so the bar's height is the sum of the stage cycles); variants not run
    are labelled on the axis ("not run")."""
    import matplotlib
    matplotlib.use("Agg")               # files only: no display on a build machine
    import matplotlib.pyplot as plt

    pipelines = result["pipelines"]
    fig, axes = plt.subplots(1, len(pipelines), figsize=(6 * len(pipelines), 5),
                             squeeze=False)
    for ax, pipeline in zip(axes[0], pipelines):
        runs = [r for r in result["runs"] if r["pipeline"] == pipeline]
        labels, bottoms = [], [0.0] * len(runs)
        n_stages = max([len(r["report"]["stage_cycles"]) for r in runs if "report" in r]
                       or [0])
        for s in range(n_stages):
            heights = [r["report"]["stage_cycles"][s] if "report" in r and
                       s < len(r["report"]["stage_cycles"]) else 0.0 for r in runs]
            ax.bar(range(len(runs)), heights, bottom=bottoms, label=f"stage {s + 1}")
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        for i, r in enumerate(runs):
            labels.append(r["variant"] + ("" if r["status"] == "ok" else
                                          "\n(not run)" if "report" not in r else "\n(FAILED)"))
        ax.set_xticks(range(len(runs)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("cycles per query (stage means, stacked)")
        ax.set_title(f"{pipeline}")
        if n_stages:
            # Head room above the tallest bar, so the legend never hides one.
            ax.set_ylim(0, 1.2 * max(bottoms + [1.0]))
            ax.legend(loc="upper right", ncols=n_stages, fontsize=8)
    fig.suptitle(f"rpaccel sim-sweep: {result['preset']} ({result['base_config_hash']}), "
                 f"{result['queries']} queries")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------------
def cmd_sim_sweep(args) -> int:
    from rpaccel.hw.errors import RpaccelError
    from rpaccel.sim.golden import Pipeline

    from .options import (check_build_root, check_data_root, check_output_file,
                          check_simulator, config_from_args, say)

    config, name = config_from_args(args)
    # Names are comma-separated; a spec that itself has commas (small:256,large:10) needs
    # ";" between pipelines instead.
    sep = ";" if ";" in args.pipelines else ","
    pipelines = [p.strip() for p in args.pipelines.split(sep) if p.strip()]
    if not pipelines:
        raise RpaccelError("--pipelines: name at least one pipeline")
    for p in pipelines:
        Pipeline.parse(p)                       # syntax first, before minutes of work
    known = {v.key: v for v in VARIANTS}
    if args.variants is None:
        variants = VARIANTS
    else:
        keys = [k.strip() for k in args.variants.split(",") if k.strip()]
        bad = [k for k in keys if k not in known]
        if bad or not keys:
            raise RpaccelError(f"--variants: unknown variant {bad[0] if bad else '(none)'!r}; "
                               f"known: {', '.join(known)}")
        variants = tuple(v for v in VARIANTS if v.key in keys)
    check_simulator(args.sim)
    check_build_root()
    check_data_root(models=True)
    for path, what in ((args.json, "--json"), (args.markdown, "--markdown"),
                       (args.plot, "--plot")):
        check_output_file(path, what)
    from rpaccel.sim.data import ensure_dataset
    from rpaccel.sim.golden import load_golden
    ensure_dataset(progress=say)
    setup = load_golden(progress=say)
    result = run_sweep(config, name, pipelines, args.queries, sim=args.sim,
                       variants=variants, candidates=args.candidates, latency=args.latency,
                       setup=setup, progress=say)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    text = format_markdown(result)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.plot is not None:
        plot_sweep(result, args.plot)
    print(text)
    if result["failures"]:
        say(f"*** {result['failures']} run(s) FAILED: see the table ***")
    return 1 if result["failures"] else 0


def register(sub) -> None:
    """Add ``rpaccel sim-sweep`` to the command parser."""
    from .options import add_config_options, cycles_int, positive_int
    from .simulators import SIMULATORS

    p = sub.add_parser("sim-sweep", help="feature sweep: cosimulate the same real queries "
                                         "with each feature on/off; cycles and MAC "
                                         "utilization per stage")
    add_config_options(p)
    p.add_argument("--sim", default="verilator", choices=SIMULATORS,
                   help=f"RTL simulator: {', '.join(SIMULATORS)} (default: verilator)")
    p.add_argument("--queries", type=positive_int, default=4, metavar="N",
                   help="test users per run, the same for every run (default: 4)")
    p.add_argument("--pipelines", default="2-stage,3-stage", metavar="P,P",
                   help="cascades separated by commas (names such as 2-stage), or by "
                        "semicolons when a spec has commas (MODEL:K,MODEL:K;...) "
                        "(default: 2-stage,3-stage)")
    p.add_argument("--candidates", type=positive_int, default=None, metavar="N",
                   help="rank only each user's first N test candidates (default: all)")
    p.add_argument("--variants", default=None, metavar="V,V",
                   help="run only these variants (default: all: "
                        + ", ".join(v.key for v in VARIANTS) + ")")
    p.add_argument("--latency", type=cycles_int, default=0, metavar="CYCLES",
                   help="memory model read latency in cycles (default 0, as rpaccel sim)")
    p.add_argument("--json", type=Path, help="write every run's figures as JSON here")
    p.add_argument("--markdown", type=Path, help="write the Markdown table here")
    p.add_argument("--plot", type=Path, help="write the stacked bar chart (PNG) here")
    p.set_defaults(func=cmd_sim_sweep)
