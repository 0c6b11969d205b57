"""cocotb testbench of the top-k filter (hw/topk.py) against ``rpaccel.sim.numerics.topk``.

Queries go in on ``scores`` through :class:`~rpaccel.tb.cocotb_streams.StreamDriver` and
results come out on ``topk`` through :class:`~rpaccel.tb.cocotb_streams.StreamSink`, packed
and unpacked with the unit's own layouts. Stimulus, expected beats and scoreboard come from
the unit's model (``rpaccel.tb.unit_models.topk``), shared with the Amaranth-simulator tests
in ``tests/test_topk.py``.
"""

from __future__ import annotations

import time


import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng, packets
from rpaccel.tb.common import setup
from rpaccel.hw.topk import first_result_delays, input_interval, result_layout, score_layout
from rpaccel.tb.unit_models.topk import (bad_k_values, check_results, edge_queries, query_beats,
                                         random_query)

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
    queries += edge_queries(rng, config)
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
    """A query of max(1024, 8*topk_max) candidates and one of 3*topk_max+8 (each at most
    the 2**id_width distinct ids), both with k = topk_max, no stalls: one candidate per
    ``input_interval`` cycles (the candidate ``topk_heaps`` places later at most
    ``topk_heaps * input_interval`` cycles later; the second query streams in while the
    first one's results are computed and drain), each query's
    first result comes one of ``first_result_delays`` after its last candidate (exactly
    InsertionTopK.LATENCY = 4 for the insertion array) and its results follow back to back."""
    bench, counter, driver, sink = await start(dut)
    config, rng = bench.config, bench.rng
    k = config.topk_max
    ids = 1 << config.id_width                # candidate ids are unique within a query
    sizes = [min(max(1024, 8 * k), ids), min(3 * k + 8, ids)]
    queries = [random_query(rng, config, n=n, k=k, style=style)
               for n, style in zip(sizes, ("wide", "ties"))]
    started = time.monotonic()
    begin = counter.cycle
    in_cycles, received = await run_queries(driver, sink, queries)
    elapsed = time.monotonic() - started
    check_results(config, queries, [t.payload for t in received])

    # each heap takes one candidate per eight cycles: the candidate topk_heaps places later
    # comes at most topk_heaps * input_interval cycles later, and that bound is reached
    heaps = config.topk_heaps
    windows = {b - a for a, b in zip(in_cycles, in_cycles[heaps:])}
    assert max(windows) == heaps * input_interval(config), \
        f"input accepted {sorted(windows)} cycles after the candidate {heaps} before, " \
        f"documented {heaps * input_interval(config)}"
    for q in range(2):
        last_in = in_cycles[sum(sizes[:q + 1]) - 1]
        out = [t.cycle for t in received[q * k:(q + 1) * k]]
        delays = first_result_delays(config, sizes[q], k)
        assert out[0] - last_in in delays, \
            f"query {q}: first result {out[0] - last_in} cycles after the last input, " \
            f"documented {delays}"
        assert out == list(range(out[0], out[0] + k)), f"query {q}: results not back to back"
    cycles = counter.cycle - begin
    dut._log.info("N=%s k=%d: %d inputs in %d cycles, last result %d cycles after the last "
                  "input; %d cycles in %.2f s = %.0f cycles/s", sizes, k, sum(sizes),
                  in_cycles[-1] - in_cycles[0] + 1,
                  received[-1].cycle - in_cycles[-1], cycles, elapsed, cycles / elapsed)


@cocotb.test()
async def reset_takes_nothing_and_the_unit_works_after(dut):
    """A query is cut by a 3-cycle reset while a beat is offered on ``scores`` and results
    are offered on ``topk``: during reset ``scores.ready`` and ``topk.valid`` are low; after
    it the cut query is forgotten and the next queries are answered exactly."""
    bench, counter, driver, sink = await start(dut)
    config, rng = bench.config, bench.rng
    k = config.topk_max
    before = [random_query(rng, config, n=k + 3, k=k), random_query(rng, config, n=k + 2, k=k)]
    beats = [b for q in before for b in query_beats(q)]
    await driver.send(beats[:-2])
    dut.topk__ready.value = 0
    for _ in range(3 * k + 20):                      # results of the first query pile up
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.scores__payload.value = score_layout(config).const(beats[-2]).as_bits()
    dut.scores__valid.value = 1
    dut.topk__ready.value = 1
    await ReadOnly()
    assert int(dut.topk__valid.value) == 1, "no result offered before the reset"
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    for _ in range(3):
        await ReadOnly()
        assert int(dut.scores__ready.value) == 0, "scores.ready high during reset"
        assert int(dut.topk__valid.value) == 0, "topk.valid high during reset"
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.scores__valid.value = 0
    after = [random_query(rng, config), random_query(rng, config, n=1, k=0),
             random_query(rng, config, n=2 * k, k=k)]
    _, received = await run_queries(driver, sink, after)
    check_results(config, after, [t.payload for t in received])
    await sink.expect_idle(4)
    assert int(dut.errors.value) == 1
