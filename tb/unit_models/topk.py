"""Model of the top-k filter (``rpaccel.hw.topk``): random queries, the beats the unit must
answer (``rpaccel.sim.numerics.topk``), and a scoreboard.

Shared by the Amaranth-simulator tests (``tests/test_topk.py``) and the cocotb bench
(``tb/test_topk.py``). Pure Python: numpy, the unit's layouts, the golden numerics.
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.topk import score_layout
from rpaccel.sim.numerics import topk as golden_topk

__all__ = ["STYLES", "score_range", "random_scores", "random_query", "edge_queries",
           "bad_k_values", "query_beats", "expected_results", "split_packets",
           "check_results", "result_count"]

STYLES = ("wide", "ties", "negative", "extreme")


def score_range(config: AccelConfig) -> tuple[int, int]:
    """Most negative and most positive score (``acc_width``-bit signed)."""
    return -(1 << (config.acc_width - 1)), (1 << (config.acc_width - 1)) - 1


def random_scores(rng: np.random.Generator, config: AccelConfig, n: int, style: str) -> list[int]:
    lo, hi = score_range(config)
    if style == "wide":
        values = rng.integers(lo, hi, n, endpoint=True)
    elif style == "ties":        # a handful of distinct values: many equal scores
        values = rng.integers(-2, 3, n)
    elif style == "negative":
        values = rng.integers(lo, -1, n, endpoint=True)
    elif style == "extreme":     # the ends of the range, where a signed/unsigned mix-up shows
        values = rng.choice([lo, lo + 1, -1, 0, 1, hi - 1, hi], n)
    else:
        raise ValueError(f"unknown score style {style!r}")
    return [int(v) for v in values]


def random_query(rng: np.random.Generator, config: AccelConfig, *, n: int | None = None,
                 k: int | None = None, style: str | None = None, max_n: int | None = None) -> dict:
    """A query: ``scores``, unique ``ids`` and ``k``. Unset parameters are drawn at random:
    N from 1 to ``max_n`` (default 2 * topk_max), k among 1, topk_max, >= N and uniform."""
    kmax = config.topk_max
    if n is None:
        max_n = max_n or 2 * kmax
        n = int(rng.choice([1, rng.integers(1, max_n, endpoint=True),
                            rng.integers(max(1, kmax - 2), max_n, endpoint=True)],
                           p=[0.1, 0.45, 0.45]))
    if k is None:
        k = int(rng.choice([1, kmax, min(kmax, n + int(rng.integers(0, 3))),
                            rng.integers(1, kmax, endpoint=True)]))
    style = style or str(rng.choice(STYLES))
    ids = rng.choice(1 << config.id_width, n, replace=False)
    if rng.random() < 0.3:   # also extreme ids (0 and all ones)
        ids[: min(n, 2)] = [0, (1 << config.id_width) - 1][: min(n, 2)]
        if len(set(ids.tolist())) != n:
            ids = rng.choice(1 << config.id_width, n, replace=False)
    return {"scores": random_scores(rng, config, n, style), "ids": [int(i) for i in ids],
            "k": int(k)}


def edge_queries(rng: np.random.Generator, config: AccelConfig) -> list[dict]:
    """N = 1; k = 1, topk_max and k >= N; all scores equal (order by id only); only negative
    scores; the most negative and most positive scores with the extreme ids."""
    kmax = config.topk_max
    lo, hi = score_range(config)
    top_id = (1 << config.id_width) - 1
    queries = [
        random_query(rng, config, n=1, k=1),
        random_query(rng, config, n=1, k=kmax),
        random_query(rng, config, n=kmax + 3, k=kmax, style="ties"),
        {"scores": [7] * (kmax + 2), "ids": list(rng.permutation(kmax + 2) * 3 + 1), "k": kmax},
        random_query(rng, config, n=kmax // 2 + 1, k=kmax, style="negative"),        # k >= N
        random_query(rng, config, n=max(1, kmax // 2), k=max(1, kmax // 2), style="extreme"),
        {"scores": [lo, hi, lo, hi, 0, -1], "ids": [top_id, 0, 1, top_id - 1, 5, 6],
         "k": min(4, kmax)},
        {"scores": [lo, lo, lo], "ids": [top_id, 1, 2], "k": min(3, kmax)},
        random_query(rng, config, n=2 * kmax, k=1, style="extreme"),
    ]
    for q in queries:
        q["ids"] = [int(i) for i in q["ids"]]
    return queries


def bad_k_values(config: AccelConfig) -> list[int]:
    """Out-of-range values of ``k`` the ``k`` field can carry: 0, topk_max+1, the field max."""
    width = score_layout(config)["k"].shape.width
    top = (1 << width) - 1
    return sorted({0, *(v for v in (config.topk_max + 1, top) if config.topk_max < v <= top)})


def query_beats(query: dict, *, k_rng: np.random.Generator | None = None,
                k_width: int | None = None) -> list[dict]:
    """The payloads of one query. The producer holds ``k`` on every beat; with ``k_rng``,
    beats after the first carry random ``k`` instead (the unit must read only the first)."""
    n = len(query["scores"])
    beats = []
    for i, (score, cid) in enumerate(zip(query["scores"], query["ids"])):
        k = query["k"]
        if k_rng is not None and i > 0:
            k = int(k_rng.integers(0, 1 << k_width))
        beats.append({"score": score, "id": cid, "k": k, "last": int(i == n - 1)})
    return beats


def expected_results(config: AccelConfig, query: dict) -> list[dict]:
    """The beats the unit must emit for ``query``: one error beat for a bad ``k``, else the
    golden top-k, best first."""
    k = query["k"]
    if not 1 <= k <= config.topk_max:
        return [{"score": 0, "id": 0, "last": 1, "error": 1}]
    order = golden_topk(np.array(query["scores"], dtype=np.int64),
                        np.array(query["ids"], dtype=np.int64), k)
    return [{"score": query["scores"][p], "id": query["ids"][p], "last": int(j == len(order) - 1),
             "error": 0} for j, p in enumerate(order)]


def result_count(config: AccelConfig, queries: list[dict]) -> int:
    """Beats the unit answers ``queries`` with."""
    return sum(len(expected_results(config, q)) for q in queries)


def split_packets(payloads: list[dict]) -> list[list[dict]]:
    packets, current = [], []
    for payload in payloads:
        current.append(payload)
        if payload["last"]:
            packets.append(current)
            current = []
    if current:
        packets.append(current)
    return packets


def check_results(config: AccelConfig, queries: list[dict], payloads: list[dict]) -> None:
    """Compare received beats with the expected ones, query by query, naming the first
    difference."""
    got = split_packets(payloads)
    assert len(got) == len(queries), f"{len(got)} result packets for {len(queries)} queries"
    for index, (query, packet) in enumerate(zip(queries, got)):
        want = expected_results(config, query)
        if packet != want:
            n = len(query["scores"])
            for j, (g, w) in enumerate(zip(packet, want)):
                if g != w:
                    break
            else:
                j = min(len(packet), len(want))
            raise AssertionError(
                f"query {index} (N={n}, k={query['k']}): beat {j} of {len(packet)} is "
                f"{packet[j] if j < len(packet) else 'missing'}, expected "
                f"{want[j] if j < len(want) else 'nothing'} ({len(want)} expected)")
