"""Top-k filter (hw/topk.py): Amaranth-simulator tests against the golden top-k, lint, and the
cocotb bench (tb/test_topk.py) on both RTL simulators."""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.topk import TopKFilter, k_shape, result_layout, score_layout
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate
from rpaccel.tb.cocotb_streams import packets
from rpaccel.tb.test_topk import (bad_k_values, check_results, query_beats, random_query,
                                  score_range)

PRESET_NAMES = ["tiny", "default"]
#: (input idle probability, output backpressure probability)
STALL_PATTERNS = {"full-rate": (0.0, 0.0), "stalls": (0.4, 0.4)}


def run(config, queries, *, idle=0.0, backpressure=0.0, seed=0, k_rng=None):
    """Stream ``queries`` through a TopKFilter in Amaranth's simulator.

    Returns the received payloads, the cycles of every input and output transfer, and the
    error counter at the end (after checking the unit goes quiet)."""
    dut = TopKFilter(config)
    beats = [b for q in queries for b in
             query_beats(q, k_rng=k_rng, k_width=k_shape(config).width)]
    out = {"in": [], "out": []}

    async def producer(ctx):
        await send(ctx, dut.scores, beats, Stalls(idle, seed))

    async def consumer(ctx):
        out["payloads"] = await receive(ctx, dut.topk, stalls=Stalls(backpressure, seed + 1),
                                        until=packets(len(queries)))
        ctx.set(dut.topk.ready, 1)
        for _ in range(4):          # nothing more comes out
            _, _, valid = await ctx.tick().sample(dut.topk.valid)
            assert not valid, "an extra result beat"
        out["errors"] = ctx.get(dut.errors)

    async def monitor(ctx):
        cycle = 0
        async for _, _, iv, ir, ov, o_r in ctx.tick().sample(
                dut.scores.valid, dut.scores.ready, dut.topk.valid, dut.topk.ready):
            if iv and ir:
                out["in"].append(cycle)
            if ov and o_r:
                out["out"].append(cycle)
            cycle += 1

    budget = 100 + int((len(beats) + sum(min(q["k"], len(q["scores"])) + 2 for q in queries))
                       / (1 - max(idle, backpressure)) * 3)
    simulate(dut, [producer, consumer], background=[monitor], max_cycles=budget,
             name=f"topk_{config.topk_max}")
    assert len(out["in"]) == len(beats)
    return out


def test_constructor_takes_a_config():
    with pytest.raises(TypeError, match="config must be an AccelConfig, not 64"):
        TopKFilter(64)
    dut = TopKFilter(PRESETS["tiny"])
    assert dut.config is PRESETS["tiny"]
    with pytest.raises(AttributeError):
        dut.config = PRESETS["default"]
    Fragment.get(dut, None)    # elaborates (and so is not reported as unused)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_layouts_follow_the_config(preset):
    config = PRESETS[preset]
    lo, hi = score_range(config)
    layout = score_layout(config)
    assert k_shape(config).width == (config.topk_max).bit_length()
    for beat in ({"score": lo, "id": (1 << config.id_width) - 1, "k": config.topk_max, "last": 1},
                 {"score": hi, "id": 0, "k": 0, "last": 0}):
        bits = layout.const(beat).as_bits()
        assert bits < 1 << layout.size
        assert {name: layout.from_bits(bits)[name] for name, _ in layout} == beat
    assert result_layout(config).size == config.acc_width + config.id_width + 2


@pytest.mark.parametrize("stalls", list(STALL_PATTERNS))
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_random_queries_against_golden(preset, stalls):
    config = PRESETS[preset]
    rng = np.random.default_rng(10 + PRESET_NAMES.index(preset))
    count = 14 if preset == "tiny" else 6
    queries = [random_query(rng, config) for _ in range(count)]
    queries.append(random_query(rng, config, n=2 * config.topk_max, k=config.topk_max))
    out = run(config, queries, idle=STALL_PATTERNS[stalls][0],
              backpressure=STALL_PATTERNS[stalls][1], seed=3)
    check_results(config, queries, out["payloads"])
    assert out["errors"] == 0


@pytest.mark.parametrize("stalls", list(STALL_PATTERNS))
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_edge_cases(preset, stalls):
    """N = 1; k = 1, topk_max and k >= N; all scores equal (order by id only); only negative
    scores; the most negative and most positive scores with the extreme ids."""
    config = PRESETS[preset]
    kmax = config.topk_max
    rng = np.random.default_rng(20)
    lo, hi = score_range(config)
    top_id = (1 << config.id_width) - 1
    queries = [
        random_query(rng, config, n=1, k=1),
        random_query(rng, config, n=1, k=kmax),
        random_query(rng, config, n=kmax + 3, k=kmax, style="ties"),
        {"scores": [7] * (kmax + 2), "ids": list(rng.permutation(kmax + 2) * 3 + 1), "k": kmax},
        random_query(rng, config, n=kmax // 2 + 1, k=kmax, style="negative"),        # k >= N
        random_query(rng, config, n=kmax // 2, k=kmax // 2, style="extreme"),        # k == N
        {"scores": [lo, hi, lo, hi, 0, -1], "ids": [top_id, 0, 1, top_id - 1, 5, 6], "k": 4},
        {"scores": [lo, lo, lo], "ids": [top_id, 1, 2], "k": 3},
        random_query(rng, config, n=2 * kmax, k=1, style="extreme"),
    ]
    for q in queries:
        q["ids"] = [int(i) for i in q["ids"]]
    out = run(config, queries, idle=STALL_PATTERNS[stalls][0],
              backpressure=STALL_PATTERNS[stalls][1], seed=5)
    check_results(config, queries, out["payloads"])


@pytest.mark.parametrize("stalls", list(STALL_PATTERNS))
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_k_consumes_the_packet_and_answers_one_error_beat(preset, stalls):
    config = PRESETS[preset]
    rng = np.random.default_rng(30)
    bad = bad_k_values(config)
    assert 0 in bad and config.topk_max + 1 in bad
    queries = [random_query(rng, config, n=1, k=0)]          # the very first query is bad
    for k in bad:
        queries += [random_query(rng, config, n=int(rng.integers(2, 2 * config.topk_max)), k=k),
                    random_query(rng, config)]
    queries += [random_query(rng, config, n=1, k=bad[-1]), random_query(rng, config, n=1, k=1)]
    out = run(config, queries, idle=STALL_PATTERNS[stalls][0],
              backpressure=STALL_PATTERNS[stalls][1], seed=7)
    check_results(config, queries, out["payloads"])
    assert out["errors"] == sum(not 1 <= q["k"] <= config.topk_max for q in queries)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_k_is_read_on_the_first_beat_only(preset):
    config = PRESETS[preset]
    rng = np.random.default_rng(40)
    queries = [random_query(rng, config, k=k) for k in (1, config.topk_max, 3, 0)]
    out = run(config, queries, k_rng=np.random.default_rng(41), idle=0.3, backpressure=0.3)
    check_results(config, queries, out["payloads"])


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_latency_constant_and_full_rate(preset):
    """Full-rate input, output always ready: every candidate is accepted on consecutive
    cycles (each query longer than the previous one's result count), and result j of a query
    is transferred exactly LATENCY + j cycles after the query's last candidate."""
    config = PRESETS[preset]
    kmax = config.topk_max
    rng = np.random.default_rng(50)
    queries = [random_query(rng, config, n=n, k=k) for n, k in
               ((kmax + 5, kmax), (kmax + 1, 3), (5, 1), (kmax // 2, kmax), (2 * kmax, 1))]
    out = run(config, queries)
    check_results(config, queries, out["payloads"])
    first_in = out["in"][0]
    assert out["in"] == list(range(first_in, first_in + len(out["in"])))
    ends = np.cumsum([len(q["scores"]) for q in queries]) - 1
    counts = [min(q["k"], len(q["scores"])) for q in queries]
    starts = np.cumsum([0] + counts)
    for q, (end, count, start) in enumerate(zip(ends, counts, starts)):
        last_in = out["in"][end]
        got = [c - last_in for c in out["out"][start:start + count]]
        assert got == [TopKFilter.LATENCY + j for j in range(count)], f"query {q}: {got}"
    assert TopKFilter.LATENCY == 4   # the constant the docstring and docs/architecture.md state


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_short_query_waits_for_the_previous_results(preset):
    """A query with fewer candidates than the previous query's results: the input stalls
    (the documented exception to full rate) but nothing is lost or reordered."""
    config = PRESETS[preset]
    kmax = config.topk_max
    rng = np.random.default_rng(60)
    queries = [random_query(rng, config, n=kmax, k=kmax), random_query(rng, config, n=2, k=2),
               random_query(rng, config, n=1, k=1), random_query(rng, config, n=kmax, k=kmax)]
    out = run(config, queries)
    check_results(config, queries, out["payloads"])
    # Queries 1 and 2 (3 candidates) finish long before query 0's kmax results are out.
    # Query 1 waits in the insertion bank, query 2's beat in stage I, query 3's first beat in
    # stage P; then the input stalls and resumes on the cycle after query 0's last result
    # leaves the output bank.
    gaps = [j for j in range(kmax, len(out["in"])) if out["in"][j] - out["in"][j - 1] > 1]
    assert gaps and gaps[0] == kmax + 4, gaps
    assert out["in"][gaps[0]] == out["out"][kmax - 1] + 1


@pytest.mark.parametrize("n, k", [(1, 1), (2, 2), (5, 3), (4, 8), (6, 5), (9, 2)])
def test_steady_state_rate_of_equal_queries(n, k):
    """The documented rate: a stream of equal queries takes max(N, min(k, N) + 1) cycles
    per query (output always ready)."""
    config = PRESETS["tiny"]
    rng = np.random.default_rng(70)
    queries = [random_query(rng, config, n=n, k=k) for _ in range(10)]
    out = run(config, queries)
    check_results(config, queries, out["payloads"])
    starts = [out["in"][q * n] for q in range(len(queries))]
    assert set(np.diff(starts[3:]).tolist()) == {max(n, min(k, n) + 1)}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_verilog_lints_clean(preset):
    proc = lint(generate(PRESETS[preset], "topk").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_topk_cocotb(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "topk"), simulator, "rpaccel.tb.test_topk")
