"""The quality report: every pipeline on both numeric paths over all test queries.

For each pipeline of :data:`~rpaccel.sim.golden.PIPELINES` and each precision (``float32``,
``int8``), over every test user (a query = one user, candidates = every item without a
train or validation interaction, relevant = the user's test items):

* NDCG@10, Recall@10, HR@10 (:mod:`rpaccel.sim.metrics`) of the final stage's ranking;
* MACs per query: for each stage, its input candidates times the model's MLP and
  interaction MACs per candidate, summed over stages, averaged over queries;
* embedding rows per query: for each stage, the rows its input candidates read (seven
  single-valued rows plus one per genre of the item), summed, averaged over queries.

It also measures the golden's CPU throughput on the full 3-stage cascade, integer path and
float32 BLAS path, over a fixed set of queries (``time.perf_counter``, one BLAS thread),
and reports the most-popular baseline (training counts) and whether the project's targets
(docs/golden.md) are met. :func:`format_report` renders the table the CLI prints.
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np

from rpaccel.sim.report import format_table

from .blas import blas_threads
from .golden import PIPELINES, PRECISIONS, GoldenSetup, Pipeline
from .metrics import popularity_ranking, ranking_metrics

__all__ = ["evaluate_quality", "measure_throughput", "format_report", "check_targets", "write_report",
           "REPORT_VERSION"]

REPORT_VERSION = 1
K = 10


def _stage_costs(setup: GoldenSetup, result, genre_rows: np.ndarray) -> tuple[int, int]:
    """(MACs, embedding rows) of one query's cascade: summed over stages of the stage's
    input candidates times the per-candidate cost."""
    n_single = setup.features.n_tables - 1
    macs = rows = 0
    for stage in result.stages:
        spec = setup.golden.models[stage.model].spec
        n = stage.candidates.size
        macs += n * spec.macs_per_candidate
        rows += n * n_single + int(genre_rows[stage.candidates].sum())
    return macs, rows


def measure_throughput(setup: GoldenSetup, pipeline: Pipeline, precision: str,
                       users) -> float:
    """Queries per second of the golden running ``pipeline`` on ``users``' test queries
    (candidate lists prepared beforehand; no score cache)."""
    split = setup.split
    queries = [(int(u), split.test_candidates(int(u))) for u in users]
    golden = setup.golden
    golden.run(pipeline, *queries[0], precision)  # warm-up (first-call allocations)
    t0 = time.perf_counter()
    for user, candidates in queries:
        golden.run(pipeline, user, candidates, precision)
    return len(queries) / (time.perf_counter() - t0)


def evaluate_quality(setup: GoldenSetup, *, pipelines: dict | None = None,
                     precisions=PRECISIONS, users=None, throughput_queries: int = 32,
                     progress=None) -> dict:
    """The report dictionary (see the module docstring; JSON-serialisable)."""
    pipelines = dict(pipelines or PIPELINES)
    split, golden = setup.split, setup.golden
    for p in pipelines.values():
        golden.check_pipeline(p)
    if users is None:
        users = [u for u in range(split.n_users) if split.test[u].any()]
    users = [int(u) for u in users]
    relevant = [split.test_items(u) for u in users]
    candidates = [split.test_candidates(u) for u in users]
    genre_rows = setup.features.item_genres.sum(axis=1)
    rows = []
    with blas_threads(1):
        for precision in precisions:
            t0 = time.perf_counter()
            rankings = {name: [] for name in pipelines}
            costs = {name: [] for name in pipelines}
            for user, cands in zip(users, candidates):
                cache = {}
                for name, pipeline in pipelines.items():
                    result = golden.run(pipeline, user, cands, precision, cache=cache)
                    rankings[name].append(result.ranking)
                    costs[name].append(_stage_costs(setup, result, genre_rows))
            for name, pipeline in pipelines.items():
                metrics = ranking_metrics(rankings[name], relevant, K)
                macs, fetched = np.array(costs[name], dtype=np.float64).mean(axis=0)
                rows.append({"name": name, "stages": pipeline.to_dict(), "precision": precision,
                             **metrics, "macs_per_query": float(macs),
                             "rows_per_query": float(fetched)})
            if progress:
                progress(f"evaluated {len(pipelines)} pipelines on {len(users)} queries "
                         f"({precision}) in {time.perf_counter() - t0:.1f} s")

        popularity = split.train.sum(axis=0)
        pop_rank = [popularity_ranking(c, popularity, K) for c in candidates]
        baseline = {"name": "most-popular", **ranking_metrics(pop_rank, relevant, K)}

        timed = "3-stage" if "3-stage" in pipelines else next(reversed(pipelines))
        timed_users = users[:: max(1, len(users) // max(1, throughput_queries))]
        timed_users = timed_users[:throughput_queries]
        qps = {prec: measure_throughput(setup, pipelines[timed], prec, timed_users)
               for prec in precisions}

    report = {
        "report_version": REPORT_VERSION,
        "dataset": "ml-100k",
        "users": len(users),
        "split": {"seed": split.seed, "fractions": [0.8, 0.1, 0.1]},
        "candidates_per_query": float(np.mean([c.size for c in candidates])),
        "models": {name: {"layers": m.spec.describe(),
                          "macs_per_candidate": m.spec.macs_per_candidate,
                          "train_hash": setup.model_meta.get(name, {}).get("train_hash"),
                          "train_seconds": setup.model_meta.get(name, {}).get("train_seconds")}
                   for name, m in golden.models.items()},
        "pipelines": rows,
        "baselines": [baseline],
        "cpu_queries_per_s": {prec: float(q) for prec, q in qps.items()},
        "cpu": {"pipeline": timed, "queries": len(timed_users), "blas_threads": 1,
                "machine": platform.machine(), "python": platform.python_version()},
    }
    report["targets"] = check_targets(report)
    return report


def _row(report: dict, name: str, precision: str) -> dict | None:
    for row in report["pipelines"]:
        if row["name"] == name and row["precision"] == precision:
            return row
    return None


def check_targets(report: dict) -> list[dict]:
    """The project's quality targets, each with the measured value and whether it is met."""
    out = []
    large = _row(report, "1-stage-large", "int8")
    if large:
        out.append({"target": "1-stage-large int8 NDCG@10 >= 0.22",
                    "value": round(large["ndcg@10"], 4), "met": large["ndcg@10"] >= 0.22})
    for precision in ("int8", "float32"):
        ref = _row(report, "1-stage-large", precision)
        for name in ("2-stage", "3-stage"):
            row = _row(report, name, precision)
            if not (ref and row):
                continue
            rel = row["ndcg@10"] / ref["ndcg@10"] - 1.0
            out.append({"target": f"{name} {precision} NDCG@10 within 1% of 1-stage-large",
                        "value": f"{100 * rel:+.2f}%", "met": abs(rel) <= 0.01})
            ratio = row["macs_per_query"] / ref["macs_per_query"]
            out.append({"target": f"{name} {precision} MACs/query <= 1/4 of 1-stage-large",
                        "value": f"{ratio:.3f}", "met": ratio <= 0.25})
    for name in dict.fromkeys(r["name"] for r in report["pipelines"]):
        fl, q = _row(report, name, "float32"), _row(report, name, "int8")
        if fl and q:
            rel = q["ndcg@10"] / fl["ndcg@10"] - 1.0
            out.append({"target": f"{name} int8 vs float32 NDCG@10 within 1%",
                        "value": f"{100 * rel:+.2f}%", "met": abs(rel) <= 0.01})
    return out


def format_report(report: dict) -> str:
    rows = []
    for r in report["pipelines"]:
        stages = " -> ".join(f"{s['model']}:{s['keep_k']}" for s in r["stages"])
        rows.append([r["name"], stages, r["precision"], round(r["ndcg@10"], 4),
                     round(r["recall@10"], 4), round(r["hr@10"], 4),
                     int(round(r["macs_per_query"])), int(round(r["rows_per_query"]))])
    for b in report["baselines"]:
        rows.append([b["name"], "train counts", "-", round(b["ndcg@10"], 4),
                     round(b["recall@10"], 4), round(b["hr@10"], 4), None, None])
    table = format_table(
        ["pipeline", "stages", "precision", "NDCG@10", "Recall@10", "HR@10", "MACs/query",
         "rows/query"], rows,
        title=f"ML-100K test split: {report['users']} queries, "
              f"{report['candidates_per_query']:.0f} candidates per query on average")
    cpu = report["cpu"]
    qps = report["cpu_queries_per_s"]
    lines = [table, "",
             f"golden CPU throughput ({cpu['pipeline']}, {cpu['queries']} queries, "
             f"{cpu['blas_threads']} BLAS thread): "
             + ", ".join(f"{prec} {q:.1f} queries/s" for prec, q in qps.items()), "",
             "targets:"]
    for t in report["targets"]:
        lines.append(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}")
    return "\n".join(lines)


def write_report(report: dict, path) -> None:
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
