"""``make demo``: the main job end to end on the embedded default configuration.

1. **Data and models**: MovieLens-100K from the recbole wheel (checksummed), the three
   ranking models trained in numpy on first use (reused afterwards).
2. **Quality**: the golden's quality report on the held-out test split (every pipeline on
   the int8 path the hardware computes and on float32).
3. **A real query on the RTL**: one test user's ~1,600 candidates go through a two-stage
   cascade (small model, keep ``topk_max``; large model, keep 10). Every MLP (bottom and top)
   runs on the compute core and every top-k on the top-k unit, in cocotb on Verilator; the
   embedding rows and the feature interaction still come from the golden (the embedding
   subsystem and the sub-batch controller are the next steps). Each stage's scores and
   kept list are checked against the golden bit for bit.
4. **Area and Fmax**: the systolic array through yosys and nextpnr (``rpaccel synth``
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

__all__ = ["run_demo", "rtl_cascade"]


def _say(msg: str):
    say(f"[demo] {msg}")


def rtl_cascade(config, setup, user: int, stages, sim: str, work, progress=_say) -> dict:
    """One query's cascade on the RTL through the host layer (:func:`rpaccel.sim.host.
    run_cascade` over :class:`~rpaccel.gen.transport.CocotbTransport`): every MLP on the
    compute core, every top-k on the top-k unit, each stage checked against the golden."""
    from rpaccel.sim.host import run_cascade

    from .transport import CocotbTransport

    candidates = setup.split.test_candidates(user)
    figures = run_cascade(setup.golden, stages, user, candidates,
                          CocotbTransport(config, sim, work), sub_batch=config.sub_batch,
                          progress=progress).to_dict()
    figures["top10"] = figures.pop("top")
    relevant = set(setup.split.test_items(user).tolist())
    figures["relevant_in_top10"] = sum(i in relevant for i in figures["top10"])
    return figures


def run_demo(args) -> int:
    from rpaccel.sim.data import ensure_dataset
    from rpaccel.sim.evaluate import evaluate_quality, format_report, write_report
    from rpaccel.sim.golden import load_golden

    from .generate import build_root, generate
    from .simulators import lint
    from .synth import check_synth, synthesize

    # Everything the demo will need is checked before it starts (minutes of work).
    config, name = config_from_args(args)
    sim = args.sim or "verilator"
    check_simulator(sim)
    check_simulator("verilator")     # lint
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

    for unit in ("compute_core", "topk_harness"):
        gen, secs = step(f"Verilog for {unit} ({name})", lambda: generate(config, unit))
        proc = lint(gen.verilog)
        rows.append([f"generate + lint {unit}",
                     "lint clean" if proc.returncode == 0 else "lint FAILED", secs])

    user = int(np.flatnonzero(setup.split.test.any(axis=1))[0])
    stages = [("small", config.topk_max), ("large", 10)]
    cascade, secs = step(f"user {user}: cascade small:{config.topk_max} -> large:10 on the RTL",
                         lambda: rtl_cascade(config, setup, user, stages, sim, work))
    report["rtl_cascade"] = cascade
    for n, st in enumerate(cascade["stages"]):
        rows.append([f"RTL stage {n + 1}: {st['model']} keep {st['keep_k']}",
                     f"{st['candidates']} candidates, scores and kept list = golden; "
                     f"{st['mlp_engine_cycles']} engine cycles, top-k {st['topk_cycles']} cycles",
                     secs if n == 0 else None])
    rows.append(["RTL query result", f"top-10 = golden; {cascade['relevant_in_top10']} of the "
                 f"user's held-out items in it", None])

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
