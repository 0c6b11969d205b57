"""Systolic array (hw/systolic.py): Amaranth-simulator tests against numpy, exact cycle counts
of latency and throughput, lint, and the cocotb bench on both simulators.

The golden of one tile is ``x @ W`` in int64 wrapped to ``acc_width`` bits. The timing tests
compare every acceptance and result cycle with :func:`expected_accept_cycles`, the schedule
that docs/architecture.md states (bank reload ``R - 1`` cycles after a tile's last row,
``R`` beats per load, latency ``R + Cp + 3``), so a change of timing shows up as a failure
here rather than as a silent utilization loss later.
"""

import numpy as np
import pytest
from cocotb_tools.check_results import get_results

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb, unavailable_reason
from rpaccel.hw.systolic import (SystolicArray, act_layout, pipeline_latency, result_fifo_depth,
                                 result_layout, weight_layout)
from rpaccel.sim.numerics import wrap
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate, to_python

CONFIGS = {
    "tiny": PRESETS["tiny"],                                      # 4x4, P=2: 4 x 2 partitions
    "default": PRESETS["default"],                                # 8x8, P=2: 8 x 4 partitions
    "default_p1": PRESETS["default"].replace(partitions=1),       # 8x8 monolithic
}
#: 16x16 build for one cocotb run (Verilator).
BIG = PRESETS["default"].replace(rows=16, cols=16, partitions=2, max_layer_dim=256)


# -- golden and stimulus ---------------------------------------------------------------------

def golden(config, tiles):
    """Expected result rows and last flags of one partition's tiles [(W, X), ...]."""
    rows = [wrap(x.astype(np.int64) @ w.astype(np.int64), config.acc_width) for w, x in tiles]
    lasts = [[0] * (len(x) - 1) + [1] for _, x in tiles]
    return np.concatenate(rows), [flag for tile in lasts for flag in tile]


def random_tiles(config, rng, row_counts, lo=-128, hi=127):
    R, Cp = config.rows, config.partition_cols
    return [(rng.integers(lo, hi + 1, (R, Cp)), rng.integers(lo, hi + 1, (b, R)))
            for b in row_counts]


def weight_beats(tiles):
    return [[int(v) for v in row] for w, _ in tiles for row in w]


def act_beats(tiles):
    return [{"data": [int(v) for v in row], "last": int(i == len(x) - 1)}
            for _, x in tiles for i, row in enumerate(x)]


def check(config, p, tiles, got):
    """Compare one partition's received payloads with the golden; the message shows the first
    mismatching row, actual against expected."""
    expected, lasts = golden(config, tiles)
    assert len(got) == len(expected), f"partition {p}: {len(got)} rows, expected {len(expected)}"
    for i, (row, exp, last) in enumerate(zip(got, expected, lasts)):
        assert row["data"] == exp.tolist() and row["last"] == last, (
            f"partition {p} row {i}: got {row['data']} last={row['last']}, "
            f"expected {exp.tolist()} last={last}")


# -- running the array in the Amaranth simulator ---------------------------------------------
def run_streams(config, jobs, *, p_idle=0.0, p_busy=0.0, seed=0, max_cycles=20000):
    """Send every partition's tiles with random valid gaps (``p_idle``, on both input
    streams) and backpressure (``p_busy`` on results); returns the results and counters."""
    dut = SystolicArray(config)
    got, counters = {}, {}

    def benches(p, tiles):
        async def weights(ctx):
            await send(ctx, dut.weights[p], weight_beats(tiles), Stalls(p_idle, seed * 10 + p))

        async def acts(ctx):
            await send(ctx, dut.acts[p], act_beats(tiles), Stalls(p_idle, seed * 10 + p + 4))

        async def results(ctx):
            count = sum(len(x) for _, x in tiles)
            got[p] = await receive(ctx, dut.results[p], count, Stalls(p_busy, seed * 10 + p + 8))
            counters[p] = {name: ctx.get(getattr(dut, name)[p])
                           for name in ("busy", "weight_stalls", "output_stalls")}
        return [weights, acts, results]

    simulate(dut, [b for p, tiles in enumerate(jobs) for b in benches(p, tiles)],
             max_cycles=max_cycles, name=f"systolic_{config.hash}")
    return got, counters


def run_timed(config, jobs, *, result_ready=lambda cycle: True, max_cycles=5000):
    """Weights at full rate, each activation row offered as soon as the previous one went,
    results taken when ``result_ready(cycle)``. Returns per partition the cycles in which
    rows were accepted, the cycles in which results were taken, the results, the counters.

    Cycle 0 is the first cycle of the simulation; every bench below ticks once per loop, so
    their cycle numbers agree.
    """
    dut = SystolicArray(config)
    accepted, emitted, got, counters = {}, {}, {}, {}

    def benches(p, tiles):
        async def weights(ctx):
            await send(ctx, dut.weights[p], weight_beats(tiles))

        async def acts(ctx):
            stream, cycle, accepted[p] = dut.acts[p], 0, []
            layout = act_layout(config)
            for beat in act_beats(tiles):
                ctx.set(stream.payload, layout.const(beat))
                ctx.set(stream.valid, 1)
                while True:
                    _, _, ready = await ctx.tick().sample(stream.ready)
                    cycle += 1
                    if ready:
                        accepted[p].append(cycle - 1)
                        break
            ctx.set(stream.valid, 0)

        async def results(ctx):
            stream, cycle, emitted[p], got[p] = dut.results[p], 0, [], []
            count = sum(len(x) for _, x in tiles)
            while len(got[p]) < count:
                ready = result_ready(cycle)
                ctx.set(stream.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
                if valid and ready:
                    emitted[p].append(cycle)
                    got[p].append(to_python(payload))
                cycle += 1
            ctx.set(stream.ready, 0)
            counters[p] = {name: ctx.get(getattr(dut, name)[p])
                           for name in ("busy", "weight_stalls", "output_stalls")}
        return [weights, acts, results]

    simulate(dut, [b for p, tiles in enumerate(jobs) for b in benches(p, tiles)],
             max_cycles=max_cycles, name=f"systolic_timed_{config.hash}")
    return accepted, emitted, got, counters


def expected_accept_cycles(config, row_counts):
    """The documented schedule, with weights offered from cycle 0 at full rate, every row
    offered as soon as the one before went, and the results taken at once.

    Tile n loads into bank n % 2 once the weights stream has finished tile n - 1 and bank
    n % 2 is free: ``R - 1`` cycles after the last row of tile n - 2 was accepted. A load of
    ``R`` beats starting in cycle s lets the tile's first row go in cycle s + R.
    """
    R = config.rows
    cycles, last_row, loader_free, previous = [], [], 0, -1
    for n, rows in enumerate(row_counts):
        start = loader_free if n < 2 else max(loader_free, last_row[n - 2] + R - 1)
        loader_free = start + R
        first = max(previous + 1, start + R)
        cycles += range(first, first + rows)
        previous = first + rows - 1
        last_row.append(previous)
    return cycles


# -- construction ----------------------------------------------------------------------------
def test_ports_layouts_and_properties():
    config = CONFIGS["default"]
    dut = SystolicArray(config)
    assert dut.config is config and dut.partitions == 2
    assert dut.latency == pipeline_latency(config) == 8 + 4 + 3
    assert dut.result_fifo_depth == result_fifo_depth(config) == dut.latency + 1
    assert weight_layout(config).size == 4 * 8
    assert act_layout(config).size == 8 * 8 + 1
    assert result_layout(config).size == 4 * 32 + 1
    assert len(dut.weights) == len(dut.acts) == len(dut.results) == len(dut.busy) == 2
    assert len(SystolicArray(CONFIGS["default_p1"]).results) == 1
    with pytest.raises(TypeError, match="config must be an AccelConfig"):
        SystolicArray({"rows": 8})
    with pytest.raises(AttributeError):
        dut.config = config


# -- numerics ---------------------------------------------------------------------------------
STALLS = {"full_rate": (0.0, 0.0), "gaps": (0.4, 0.0), "backpressure": (0.0, 0.5),
          "both": (0.3, 0.3)}


@pytest.mark.parametrize("stalls", STALLS)
@pytest.mark.parametrize("name", ["tiny", "default", "default_p1"])
def test_random_tiles_match_numpy(name, stalls):
    """Random tiles of 1, < R, R and > R rows; every partition busy at once with its own
    number of tiles and rows; identical (golden) results under every stall pattern."""
    config = CONFIGS[name]
    R = config.rows
    rng = np.random.default_rng(7)   # same stimulus for every stall pattern
    jobs = []
    for p in range(config.partitions):
        counts = [1, R - 1, R, 2 * R + 3] + [int(b) for b in rng.integers(1, 2 * R, 2 + 2 * p)]
        rng.shuffle(counts)
        jobs.append(random_tiles(config, rng, counts))
    p_idle, p_busy = STALLS[stalls]
    got, counters = run_streams(config, jobs, p_idle=p_idle, p_busy=p_busy,
                                seed=list(STALLS).index(stalls))
    for p, tiles in enumerate(jobs):
        check(config, p, tiles, got[p])
        assert counters[p]["busy"] == sum(len(x) for _, x in tiles)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_extreme_values(name):
    """-128 and 127 everywhere: the largest magnitudes of every sign combination."""
    config = CONFIGS[name]
    R, Cp = config.rows, config.partition_cols
    tiles = []
    for a in (-128, 127):
        for w in (-128, 127):
            tiles.append((np.full((R, Cp), w), np.full((2, R), a)))
    mixed = np.where(np.indices((R, Cp)).sum(axis=0) % 2, 127, -128)
    tiles.append((mixed, np.array([[-128] * R, [127] * R, [(-128, 127)[r % 2] for r in range(R)]])))
    jobs = [tiles, list(reversed(tiles))][:config.partitions]
    got, _ = run_streams(config, jobs, p_idle=0.2, p_busy=0.2, seed=3)
    for p, tiles in enumerate(jobs):
        check(config, p, tiles, got[p])
    assert max(abs(v) for row in got[0] for v in row["data"]) == 128 * 128 * R


def test_wrap_golden_matches_hardware_width():
    """The golden's wrap is the two's complement of acc_width bits (used by every test)."""
    assert wrap([2**31, -2**31 - 1, 5, -5], 32).tolist() == [-2**31, 2**31 - 1, 5, -5]


# -- timing: latency, throughput, credits ------------------------------------------------------
@pytest.mark.parametrize("name,latency", [("tiny", 9), ("default", 15), ("default_p1", 19)])
def test_latency(name, latency):
    """One row alone: its result is valid exactly `R + Cp + 3` cycles after its acceptance,
    and the first row can go in cycle R (after the R weight beats of cycles 0..R-1)."""
    config = CONFIGS[name]
    assert pipeline_latency(config) == latency
    rng = np.random.default_rng(1)
    jobs = [random_tiles(config, rng, [1]) for _ in range(config.partitions)]
    accepted, emitted, got, _ = run_timed(config, jobs)
    for p in range(config.partitions):
        assert accepted[p] == [config.rows]
        assert emitted[p] == [config.rows + latency]
        check(config, p, jobs[p], got[p])


@pytest.mark.parametrize("name", ["tiny", "default", "default_p1"])
def test_back_to_back_tiles_sustain_one_row_per_cycle(name):
    """Tiles of 2R rows (>= 2R - 2) with the weights streamed at full rate: after the first
    load, every cycle accepts a row across all tile boundaries, and every cycle emits one."""
    config = CONFIGS[name]
    R, L = config.rows, pipeline_latency(config)
    rng = np.random.default_rng(2)
    tiles_per_partition = 6
    jobs = [random_tiles(config, rng, [2 * R] * tiles_per_partition)
            for _ in range(config.partitions)]
    accepted, emitted, got, counters = run_timed(config, jobs)
    rows = tiles_per_partition * 2 * R
    for p in range(config.partitions):
        assert accepted[p] == list(range(R, R + rows)), "a bubble in the accepted rows"
        assert emitted[p] == list(range(R + L, R + L + rows)), "a bubble in the results"
        assert counters[p] == {"busy": rows, "weight_stalls": R, "output_stalls": 0}
        check(config, p, jobs[p], got[p])


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_short_and_mixed_tiles_follow_documented_schedule(name):
    """Tiles of 1 row (weight-load bound: one tile every R cycles), of R..2R-3 rows (bound by
    reloading a bank R - 1 cycles after its last row) and longer, mixed; partitions run
    different sequences at once and each follows its own schedule exactly."""
    config = CONFIGS[name]
    R, L = config.rows, pipeline_latency(config)
    rng = np.random.default_rng(3)
    sequences = [[1] * 8 + [R, R + 1, 2 * R - 3, 2 * R - 2, 1, 3 * R, 1, 2],
                 [2, R - 1, 1, 1, 2 * R, R, 1, 5]]
    jobs = [random_tiles(config, rng, sequences[p]) for p in range(config.partitions)]
    accepted, emitted, got, counters = run_timed(config, jobs)
    for p in range(config.partitions):
        expected = expected_accept_cycles(config, sequences[p])
        assert accepted[p] == expected
        assert emitted[p] == [t + L for t in expected]
        offered = expected[-1] + 1        # cycles 0..last acceptance, a row offered in each
        assert counters[p] == {"busy": len(expected), "weight_stalls": offered - len(expected),
                               "output_stalls": 0}
        check(config, p, jobs[p], got[p])
    # One-row tiles are limited by the weight load alone: one every R cycles.
    assert accepted[0][:8] == [R * (n + 1) for n in range(8)]


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_output_credit_stops_input_when_results_are_not_taken(name):
    """With `results` not ready, exactly `result_fifo_depth` rows are accepted, then the
    offered rows count as output stalls; released, every result comes out right."""
    config = CONFIGS[name]
    R, depth = config.rows, result_fifo_depth(config)
    hold = 120
    rng = np.random.default_rng(4)
    jobs = [random_tiles(config, rng, [3 * depth]) for _ in range(config.partitions)]
    accepted, emitted, got, counters = run_timed(config, jobs, result_ready=lambda c: c >= hold)
    for p in range(config.partitions):
        assert accepted[p][:depth] == list(range(R, R + depth))
        assert accepted[p][depth] == hold + 1   # the credit of the first result taken
        assert emitted[p][0] == hold
        assert counters[p]["output_stalls"] == accepted[p][depth] - (R + depth)
        check(config, p, jobs[p], got[p])


# -- Verilog: lint and cocotb ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "default", "default_p1"])
def test_systolic_verilog_lints_clean(name):
    out = generate(CONFIGS[name], "systolic_array")
    proc = lint(out.verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def assert_ran(results, expected_tests):
    """Check exactly the expected tests ran (a filter that matches fewer still passes)."""
    total, failed = get_results(results)
    assert (total, failed) == (expected_tests, 0)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_systolic_cocotb(simulator, name):
    results = run_cocotb(generate(CONFIGS[name], "systolic_array"), simulator,
                         "rpaccel.tb.test_systolic")
    assert_ran(results, 5)   # 4 stall patterns + latency/throughput


@pytest.mark.cocotb
@pytest.mark.skipif(unavailable_reason("verilator") is not None,
                    reason=f"verilator unavailable: {unavailable_reason('verilator')}")
def test_systolic_cocotb_16x16_verilator():
    results = run_cocotb(generate(BIG, "systolic_array"), "verilator", "rpaccel.tb.test_systolic",
                         testcase="random_tiles_vs_numpy/stalls=both,"
                                  "latency_and_back_to_back_throughput")
    assert_ran(results, 2)
