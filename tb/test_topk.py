"""cocotb testbench of the top-k filter (hw/topk.py) against ``rpaccel.sim.numerics.topk``.

Queries go in on ``scores`` through :class:`~rpaccel.tb.cocotb_streams.StreamDriver` and
results come out on ``topk`` through :class:`~rpaccel.tb.cocotb_streams.StreamSink`, packed
and unpacked with the unit's own layouts. The stimulus helpers below (random queries, the
expected beats) are shared with the Amaranth-simulator tests in ``tests/test_topk.py``.
"""

from __future__ import annotations

import time

import numpy as np

import cocotb

from rpaccel.hw.config import AccelConfig
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng, packets
from rpaccel.tb.common import setup
from rpaccel.hw.topk import TopKFilter, result_layout, score_layout
from rpaccel.sim.numerics import topk as golden_topk

STYLES = ("wide", "ties", "negative", "extreme")


# -- stimulus and expected results (shared with tests/test_topk.py) -------------------------

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


# -- cocotb tests ------------------------------------------------------------------------------

STALLS = {"none": (0.0, 0.0), "gaps": (0.4, 0.0), "backpress": (0.0, 0.4),
          "both": (0.3, 0.5)}


async def start(dut, idle: float = 0.0, backpressure: float = 0.0):
    bench = await setup(dut)
    counter = CycleCounter(dut.clk)
    driver = StreamDriver(dut, "scores", score_layout(bench.config), counter=counter,
                          rng=child_rng(bench.rng), idle=idle)
    sink = StreamSink(dut, "topk", result_layout(bench.config), counter=counter,
                      rng=child_rng(bench.rng), backpressure=backpressure)
    return bench, counter, driver, sink


async def run_queries(driver, sink, queries: list[dict], **beat_options):
    beats = [b for q in queries for b in query_beats(q, **beat_options)]
    sending = cocotb.start_soon(driver.send(beats))
    received = await sink.receive(until=packets(len(queries)))
    in_cycles = await sending
    return in_cycles, received


@cocotb.test()
@cocotb.parametrize(stalls=list(STALLS))
async def random_queries_vs_golden(dut, stalls):
    """Random queries (k = 1, topk_max, >= N, random; N = 1 .. 2*topk_max; wide, tied,
    negative and extreme scores) back to back, under each stall pattern."""
    bench, counter, driver, sink = await start(dut, *STALLS[stalls])
    config, rng = bench.config, bench.rng
    # Fewer queries for large topk_max (each has up to 2 * topk_max candidates); the
    # Amaranth-simulator tests cover more combinations.
    queries = [random_query(rng, config) for _ in range(max(8, 384 // config.topk_max))]
    queries += [random_query(rng, config, n=1, k=1), random_query(rng, config, n=1, k=config.topk_max),
                random_query(rng, config, n=3 * config.topk_max, k=config.topk_max, style="ties")]
    started = time.monotonic()
    _, received = await run_queries(driver, sink, queries)
    check_results(config, queries, [t.payload for t in received])
    await sink.expect_idle(4)
    assert int(dut.errors.value) == 0
    dut._log.info("%d queries, %d cycles, %.0f cycles/s", len(queries), counter.cycle,
                  counter.cycle / (time.monotonic() - started))


@cocotb.test()
@cocotb.parametrize(stalls=["none", "both"])
async def bad_k_is_rejected_and_the_next_query_works(dut, stalls):
    """k = 0 and k > topk_max: the packet is consumed, one error beat comes out, the error
    counter counts it, and the valid queries around it are answered correctly."""
    bench, counter, driver, sink = await start(dut, *STALLS[stalls])
    config, rng = bench.config, bench.rng
    queries = []
    for bad in bad_k_values(config):
        for n in (1, int(rng.integers(2, 2 * config.topk_max))):
            queries.append(random_query(rng, config, n=n, k=bad))
            queries.append(random_query(rng, config))
    _, received = await run_queries(driver, sink, queries)
    check_results(config, queries, [t.payload for t in received])
    await sink.expect_idle(4)
    n_bad = sum(not 1 <= q["k"] <= config.topk_max for q in queries)
    assert int(dut.errors.value) == n_bad, f"errors counter {int(dut.errors.value)} != {n_bad}"


@cocotb.test()
async def full_rate_throughput_and_latency(dut):
    """A query of max(1024, 8*topk_max) candidates and one of 2*topk_max+1, both with
    k = topk_max, no stalls: every candidate is accepted on consecutive cycles (the second
    query streams in while the first one's results drain), and each query's result j comes
    exactly TopKFilter.LATENCY + j cycles after its last candidate."""
    bench, counter, driver, sink = await start(dut)
    config, rng = bench.config, bench.rng
    k = config.topk_max
    sizes = [max(1024, 8 * k), 2 * k + 1]
    queries = [random_query(rng, config, n=n, k=k, style=style)
               for n, style in zip(sizes, ("wide", "ties"))]
    started = time.monotonic()
    begin = counter.cycle
    in_cycles, received = await run_queries(driver, sink, queries)
    elapsed = time.monotonic() - started
    check_results(config, queries, [t.payload for t in received])

    assert in_cycles == list(range(in_cycles[0], in_cycles[0] + sum(sizes))), \
        "input was not accepted one candidate per cycle"
    for q in range(2):
        last_in = in_cycles[sum(sizes[:q + 1]) - 1]
        out = [t.cycle for t in received[q * k:(q + 1) * k]]
        assert out[0] - last_in == TopKFilter.LATENCY, \
            f"query {q}: first result {out[0] - last_in} cycles after the last input, " \
            f"documented {TopKFilter.LATENCY}"
        assert out == list(range(out[0], out[0] + k)), f"query {q}: results not back to back"
        assert out[-1] - last_in <= k + TopKFilter.LATENCY
    cycles = counter.cycle - begin
    dut._log.info("N=%s k=%d: %d inputs in %d cycles, last result %d cycles after the last "
                  "input; %d cycles in %.2f s = %.0f cycles/s", sizes, k, sum(sizes),
                  in_cycles[-1] - in_cycles[0] + 1,
                  received[-1].cycle - in_cycles[-1], cycles, elapsed, cycles / elapsed)
