"""``make demo``: the main job end to end on the embedded default configuration.

1. **Data and models**: MovieLens-100K from the recbole wheel (checksummed), the three
   ranking models trained in numpy on first use (reused afterwards).
2. **Quality**: the golden's quality report on the held-out test split (every pipeline on
   the int8 path the hardware computes and on float32).
3. **The accelerator**: the whole ``RPAccel`` of the configuration is generated.
4. **Real queries on the RTL**: :data:`DEMO_QUERIES` test users, each with all its ~1,600
   candidates, go through the ``2-stage`` cascade (small model keep 256, large model keep
   10) on the whole accelerator in cocotb on Verilator (``rpaccel sim``, gen/cosim.py): the
   host scheduler lays out memory, the testbench writes the registers and awaits the
   interrupt, and records, embeddings, caches, interaction, MLPs and top-k all run in RTL.
   Every query's ranking, scores and kept lists are checked against the golden bit for bit;
   the table gives NDCG@10 of those queries from the accelerator's own lists, cycles per
   query and per stage, MAC utilization, cache hit rates and the simulator's speed.
5. **Area and Fmax**: the systolic array through yosys and nextpnr (``rpaccel synth``
   does any unit; the larger ones take several minutes each).

It ends with one summary table; the numbers are also written to
``build/demo/demo-report.json`` (and the quality report to ``build/demo/quality.json``).
"""

from __future__ import annotations

import json
import time

import numpy as np

from .options import (check_build_root, check_data_root, check_simulator, config_from_args,
                      say)
from rpaccel.sim.report import format_table

__all__ = ["run_demo", "DEMO_QUERIES"]

#: Real test users the demo ranks end to end on the accelerator.
DEMO_QUERIES = 4


def _say(msg: str):
    say(f"[demo] {msg}")


def run_demo(args) -> int:
    from rpaccel.sim.data import ensure_dataset
    from rpaccel.sim.evaluate import evaluate_quality, format_report, write_report
    from rpaccel.sim.golden import load_golden

    from .cosim import format_cosim, run_cosim
    from .generate import build_root, generate
    from .synth import check_synth, synthesize
    from .simulators import lint

    # Everything the demo will need is checked before it starts (minutes of work).
    config, name = config_from_args(args)
    sim = args.sim or "verilator"
    check_simulator(sim)
    if not args.skip_synth:
        check_synth("ecp5-85k")
    check_build_root()
    check_data_root(models=True)
    work = build_root() / "demo"
    work.mkdir(parents=True, exist_ok=True)
    rows, report = [], {"preset": name, "config_hash": config.hash, "simulator": sim}

    def step(what, fn):
        _say(f"{what} ...")
        t0 = time.monotonic()
        result = fn()
        return result, round(time.monotonic() - t0, 1)

    folder, secs = step("MovieLens-100K (recbole 1.2.1 wheel, sha256 checked)", ensure_dataset)
    rows.append(["dataset", f"ml-100k in {folder}", secs])

    setup, secs = step("models small, medium, large (trained on first use)",
                       lambda: load_golden(progress=_say))
    trained = ", ".join(f"{m} {meta.get('train_seconds', 0):.0f} s"
                        for m, meta in setup.model_meta.items())
    rows.append(["models", f"ready (training took {trained})", secs])

    quality, secs = step("quality report on the test split (int8 and float32)",
                         lambda: evaluate_quality(setup, progress=_say))
    write_report(quality, work / "quality.json")
    print(format_report(quality))
    by_name = {(r["name"], r["precision"]): r for r in quality["pipelines"]}
    for n, pname in enumerate(("1-stage-large", "2-stage", "3-stage")):
        r = by_name[pname, "int8"]
        rows.append([f"quality {pname} (int8)", f"NDCG@10 {r['ndcg@10']:.4f}, "
                     f"{r['macs_per_query'] / 1e6:.1f} M MACs/query", secs if n == 0 else None])
    report["quality"] = {"ndcg@10": {f"{n} {p}": r["ndcg@10"] for (n, p), r in by_name.items()}}

    gen, secs = step(f"Verilog for the accelerator ({name})", lambda: generate(config, "accel"))
    rows.append(["generate the accelerator", f"{gen.verilog.name}: "
                 f"{gen.verilog.stat().st_size / 1e6:.1f} MB, "
                 f"{len(gen.read_manifest()['ports'])} ports", secs])

    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:DEMO_QUERIES]]
    cosim, secs = step(f"{len(users)} real queries through the 2-stage cascade on the whole "
                       f"accelerator ({sim})",
                       lambda: run_cosim(config, name, sim, "2-stage", None, users=users,
                                         work=work / f"cosim-{sim}", setup=setup,
                                         progress=_say))
    report["cosim"] = cosim
    print(format_cosim(cosim))
    rows.append([f"RTL: {cosim['queries']} real queries, 2-stage",
                 "bit-exact with the golden" if cosim["mismatches"] == 0 else
                 f"FAILED: {cosim['mismatches']} queries differ from the golden", secs])
    rows.append(["RTL: NDCG@10 of those queries", f"{cosim['ndcg@10']:.4f} (the "
                 f"accelerator's own lists)", None])
    rows.append(["RTL: cycles per query", f"{cosim['cycles_per_query']:,.0f} "
                 f"({cosim['latency_us']:,.0f} us at {config.clock_mhz:g} MHz)", None])
    for n, (st, cyc, util) in enumerate(zip(cosim["stages"], cosim["stage_cycles"],
                                            cosim["utilization"])):
        rows.append([f"RTL stage {n + 1}: {st['model']} keep {st['keep_k']}",
                     f"{cyc:,.0f} cycles, MAC utilization {100 * util:.1f} %", None])
    rows.append(["RTL: cache hit rates", f"static {100 * cosim['cache_hit_rate']['static']:.1f} "
                 f"%, dynamic {100 * cosim['cache_hit_rate']['dynamic']:.1f} %", None])
    rows.append(["RTL: simulator speed", f"{cosim['sim_cycles_per_s']:,.0f} cycles/s", None])
    rows.append(["RTL: CSR counters", "CYCLES = testbench count" if cosim["counters_agree"]
                 else "FAILED: CYCLES differs from the testbench count", None])

    for unit in ("compute_core", "topk_harness"):
        gen, secs = step(f"Verilog for {unit} ({name})", lambda: generate(config, unit))
        proc = lint(gen.verilog)
        rows.append([f"generate + lint {unit}",
                     "lint clean" if proc.returncode == 0 else "lint FAILED", secs])

    if not args.skip_synth:
        report["synthesis"] = []
        for unit in ("systolic_array",):
            res, secs = step(f"yosys + nextpnr-ecp5: {unit}", lambda: synthesize(
                config, unit, "ecp5-85k", preset_name=name, progress=_say))
            report["synthesis"].append(json.loads(res.to_json()))
            rows.append([f"synthesize {unit} (ecp5-85k)", res.summary().split(": ", 1)[1], secs])

    (work / "demo-report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print()
    print(format_table(["step", "result", "seconds"], rows,
                       title=f"RPAccel demo: configuration {name} ({config.hash}), {sim}"))
    print(f"\nreports: {work / 'demo-report.json'}, {work / 'quality.json'}")
    return 0 if all("FAILED" not in str(r[1]) for r in rows) else 1
