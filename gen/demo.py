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
from rpaccel.hw.errors import RpaccelError
from rpaccel.sim.report import format_table

__all__ = ["run_demo", "rtl_cascade", "RTLMismatch"]


class RTLMismatch(RpaccelError):
    """The RTL computed something other than the golden model."""


def _require(ok: bool, what: str):
    if not ok:
        raise RTLMismatch(what)


def _say(msg: str):
    say(f"[demo] {msg}")


def rtl_cascade(config, setup, user: int, stages, sim: str, work, progress=_say) -> dict:
    """Run one query's cascade with its MLPs on the compute core and its top-k on the
    top-k unit (RTL, cocotb); check every stage against the golden. Returns the figures."""
    from rpaccel.sim.golden import Pipeline, Stage
    from rpaccel.sim.mlp_program import model_mlps, save_mlp_jobs
    from rpaccel.sim.quant import forward_int

    from .generate import generate
    from .simulators import run_cocotb

    golden = setup.golden
    candidates = setup.split.test_candidates(user)
    pipeline = Pipeline("rtl", tuple(Stage(m, k) for m, k in stages))
    reference = golden.run(pipeline, user, candidates, "int8")
    core, harness = generate(config, "compute_core"), generate(config, "topk_harness")
    figures = {"user": user, "candidates": int(candidates.size), "stages": []}
    for n, ((model, keep), ref) in enumerate(zip(stages, reference.stages)):
        # Candidates in ascending id order: the harness breaks ties by position.
        cands = np.sort(candidates)
        qm = golden.quantized[model]
        trace = forward_int(qm, golden.batch(user, cands), trace=True)
        B = config.sub_batch
        jobs = []
        for lo in range(0, cands.size, B):
            hi = min(cands.size, lo + B)
            jobs.append(("bottom", trace.dense[lo:hi], trace.bottom[-1][lo:hi]))
            jobs.append(("top", trace.top_input[lo:hi], trace.scores[lo:hi]))
        job_file, out_file = work / f"stage{n}-jobs.npz", work / f"stage{n}-out.npz"
        save_mlp_jobs(job_file, model_mlps(qm), jobs)
        progress(f"stage {n + 1}: {model} model on {cands.size} candidates "
                 f"({len(jobs)} sub-batch MLP jobs) on the RTL compute core ({sim})")
        run_cocotb(core, sim, "rpaccel.tb.mlp_jobs", optimize=True, quiet=True,
                   extra_env={"RPACCEL_MLP_JOBS": str(job_file), "RPACCEL_MLP_OUT": str(out_file)})
        out = np.load(out_file)
        scores = np.concatenate([out[f"j{j}_out"] for j in range(1, len(jobs), 2)])
        mlp_cycles = int(sum(out[f"j{j}_cycles"].sum() for j in range(len(jobs))))
        order = np.argsort(ref.candidates)
        _require(np.array_equal(cands, ref.candidates[order]),
                 f"stage {n + 1}: candidate lists of the golden and the RTL run differ")
        _require(np.array_equal(scores, ref.scores[order]),
                 f"stage {n + 1}: RTL scores differ from the golden's")

        progress(f"stage {n + 1}: top-{keep} of {cands.size} scores on the RTL top-k unit")
        q_file, k_file = work / f"stage{n}-topk.npz", work / f"stage{n}-topk-out.npz"
        np.savez(q_file, q0_scores=scores, q0_k=np.array(keep))
        run_cocotb(harness, sim, "rpaccel.tb.bench_topk", optimize=True, quiet=True,
                   testcase="topk_queries",
                   extra_env={"RPACCEL_TOPK_QUERIES": str(q_file), "RPACCEL_TOPK_OUT": str(k_file)})
        top = np.load(k_file)
        kept = cands[top["q0_positions"]]
        _require(np.array_equal(kept, ref.kept),
                 f"stage {n + 1}: the RTL top-{keep} differs from the golden's")
        figures["stages"].append({
            "model": model, "keep_k": keep, "candidates": int(cands.size),
            "mlp_engine_cycles": mlp_cycles, "topk_cycles": int(top["q0_cycles"]),
            "kept_match_golden": True})
        candidates = kept
    figures["top10"] = [int(i) for i in candidates]
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
