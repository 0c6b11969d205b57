"""Ranking metrics on hand-made examples (exact values)."""

import math

import pytest

from rpaccel.sim.metrics import (MetricError, hit_at_k, ndcg_at_k, popularity_ranking,
                                 ranking_metrics, recall_at_k)


def test_one_hit_at_rank_two_of_two_relevant():
    ranked, relevant = [3, 1, 2, 7], [1, 5]
    dcg = 1 / math.log2(3)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(dcg / idcg, abs=1e-15)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(0.38685280723454163, abs=1e-15)
    assert recall_at_k(ranked, relevant, 10) == 0.5
    assert hit_at_k(ranked, relevant, 10) == 1.0


def test_cutoff_ignores_hits_below_k():
    ranked = [9, 8, 7, 1]
    assert ndcg_at_k(ranked, [1], 3) == 0.0
    assert recall_at_k(ranked, [1], 3) == 0.0
    assert hit_at_k(ranked, [1], 3) == 0.0
    assert ndcg_at_k(ranked, [1], 4) == pytest.approx(1 / math.log2(5))


def test_perfect_ranking_and_more_relevant_items_than_k():
    assert ndcg_at_k([4, 2, 6], [2, 4, 6], 3) == 1.0
    # 12 relevant items, k = 10: the ideal DCG covers 10 positions, recall divides by 12.
    relevant = list(range(12))
    ranked = list(range(10))
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(1.0)
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(10 / 12)
    # Hits at ranks 1 and 3 only, two relevant items.
    ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k([5, 0, 6, 1], [5, 6], 10) == pytest.approx(ndcg)


def test_mean_over_queries():
    out = ranking_metrics([[1, 2], [3, 4]], [[1], [9]], k=10)
    assert out == {"ndcg@10": 0.5, "recall@10": 0.5, "hr@10": 0.5}


@pytest.mark.parametrize("call, message", [
    (lambda: ndcg_at_k([1], [], 10), "no relevant item"),
    (lambda: recall_at_k([1], [2], 0), "k must be at least 1, not 0"),
    (lambda: ranking_metrics([], [], 10), "at least one query"),
    (lambda: ranking_metrics([[1]], [[1], [2]], 10), "one relevant set per ranking"),
])
def test_metric_errors(call, message):
    with pytest.raises(MetricError, match=message):
        call()


def test_popularity_ranking_breaks_ties_by_lower_id():
    popularity = [5, 9, 9, 1, 9]
    assert popularity_ranking([4, 0, 2, 1, 3], popularity, 4).tolist() == [1, 2, 4, 0]
