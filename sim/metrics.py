"""Ranking metrics with binary relevance (the relevant items of a query are its test items).

For a ranked list ``r_1, r_2, ...`` (best first) and the relevant set ``R``:

* ``NDCG@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{p<=k, r_p in R} 1 / log2(p + 1)`` and
  ``IDCG@k = sum_{p <= min(|R|, k)} 1 / log2(p + 1)``;
* ``Recall@k = |top-k ∩ R| / |R|``;
* ``HR@k = 1`` if the top-k holds any relevant item, else 0.

A query with no relevant item is an error (it has no defined NDCG). Averages are plain
means over queries.
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.errors import RpaccelError

__all__ = ["MetricError", "ndcg_at_k", "recall_at_k", "hit_at_k", "ranking_metrics",
           "popularity_ranking"]


class MetricError(RpaccelError, ValueError):
    """A metric asked of an invalid ranking (empty relevant set, k < 1)."""


def _prepare(ranked, relevant, k: int):
    if int(k) < 1:
        raise MetricError(f"k must be at least 1, not {k}")
    relevant = set(int(r) for r in np.asarray(relevant).ravel())
    if not relevant:
        raise MetricError("a query with no relevant item has no defined metric")
    top = [int(r) for r in np.asarray(ranked).ravel()[: int(k)]]
    return top, relevant


def ndcg_at_k(ranked, relevant, k: int = 10) -> float:
    top, rel = _prepare(ranked, relevant, k)
    dcg = sum(1.0 / np.log2(p + 2) for p, item in enumerate(top) if item in rel)
    idcg = sum(1.0 / np.log2(p + 2) for p in range(min(len(rel), int(k))))
    return float(dcg / idcg)


def recall_at_k(ranked, relevant, k: int = 10) -> float:
    top, rel = _prepare(ranked, relevant, k)
    return len(rel.intersection(top)) / len(rel)


def hit_at_k(ranked, relevant, k: int = 10) -> float:
    top, rel = _prepare(ranked, relevant, k)
    return 1.0 if rel.intersection(top) else 0.0


def ranking_metrics(rankings, relevants, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k, Recall@k and HR@k over queries (parallel lists of rankings and
    relevant sets)."""
    rankings, relevants = list(rankings), list(relevants)
    if not rankings or len(rankings) != len(relevants):
        raise MetricError(f"need one relevant set per ranking and at least one query, got "
                          f"{len(rankings)} rankings and {len(relevants)} relevant sets")
    out = {f"ndcg@{k}": [], f"recall@{k}": [], f"hr@{k}": []}
    for ranked, rel in zip(rankings, relevants):
        out[f"ndcg@{k}"].append(ndcg_at_k(ranked, rel, k))
        out[f"recall@{k}"].append(recall_at_k(ranked, rel, k))
        out[f"hr@{k}"].append(hit_at_k(ranked, rel, k))
    return {name: float(np.mean(values)) for name, values in out.items()}


def popularity_ranking(candidates, popularity, k: int) -> np.ndarray:
    """The most-popular baseline: candidates by descending popularity, ties by lower id."""
    candidates = np.asarray(candidates, dtype=np.int64)
    order = np.lexsort((candidates, -np.asarray(popularity)[candidates]))
    return candidates[order[: int(k)]]
