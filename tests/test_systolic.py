"""Systolic array (hw/systolic.py): Amaranth-simulator tests against numpy, exact cycle counts
of latency and throughput, lint, and the cocotb bench on both simulators.

Stimulus, golden (``x @ W`` wrapped to ``acc_width`` bits), scoreboard and the documented
schedule come from the unit's model, ``tb/unit_models/systolic.py``, which the cocotb bench
uses too. The timing tests compare every acceptance and result cycle with
:func:`~rpaccel.tb.unit_models.systolic.expected_accept_cycles`, the schedule
that docs/architecture.md states (bank reload ``R - 1`` cycles after a tile's last row,
``R`` beats per load, latency ``R + Cp + 4``), so a change of timing shows up as a failure
here rather than as a silent utilization loss later.
"""

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, results_summary, run_bench, unavailable_reason
from rpaccel.hw.systolic import (SystolicArray, act_layout, pipeline_latency, result_fifo_depth,
                                 result_layout, weight_layout)
from rpaccel.sim.numerics import wrap
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate, to_python
from rpaccel.tb.unit_models.systolic import (act_beats, check_results, expected_accept_cycles,
                                             extreme_tiles, mixed_row_counts, operand_range,
                                             random_tiles, weight_beats)

CONFIGS = {
    "tiny": PRESETS["tiny"],                                      # 4x4, P=2: 4 x 2 partitions
    "default": PRESETS["default"],                                # 8x8, P=2: 8 x 4 partitions
    "default_p1": PRESETS["default"].replace(partitions=1),       # 8x8 monolithic
    # Narrow operands and accumulators: stimulus and golden follow the configuration.
    "ow6": PRESETS["tiny"].replace(operand_width=6, acc_width=18),
}
#: 16x16 build for one cocotb run (Verilator).
BIG = PRESETS["default"].replace(rows=16, cols=16, partitions=2, max_layer_dim=256)


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


# -- construction ----------------------------------------------------------------------------
def test_ports_layouts_and_properties():
    config = CONFIGS["default"]
    dut = SystolicArray(config)
    assert dut.config is config and dut.partitions == 2
    assert dut.latency == pipeline_latency(config) == 8 + 4 + 4
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
@pytest.mark.parametrize("name", ["tiny", "default", "default_p1", "ow6"])
def test_random_tiles_match_numpy(name, stalls):
    """Random tiles of 1, < R, R and > R rows; every partition busy at once with its own
    number of tiles and rows; identical (golden) results under every stall pattern."""
    config = CONFIGS[name]
    rng = np.random.default_rng(7)   # same stimulus for every stall pattern
    jobs = [random_tiles(config, rng, mixed_row_counts(config, rng, p))
            for p in range(config.partitions)]
    p_idle, p_busy = STALLS[stalls]
    got, counters = run_streams(config, jobs, p_idle=p_idle, p_busy=p_busy,
                                seed=list(STALLS).index(stalls))
    for p, tiles in enumerate(jobs):
        check_results(config, p, tiles, got[p])
        assert counters[p]["busy"] == sum(len(x) for _, x in tiles)


@pytest.mark.parametrize("name", ["tiny", "default", "ow6"])
def test_extreme_values(name):
    """The ends of the operand range (-128 and 127 for int8) everywhere: the largest
    magnitudes of every sign combination."""
    config = CONFIGS[name]
    tiles = extreme_tiles(config)
    jobs = [tiles, list(reversed(tiles))][:config.partitions]
    got, _ = run_streams(config, jobs, p_idle=0.2, p_busy=0.2, seed=3)
    for p, tiles in enumerate(jobs):
        check_results(config, p, tiles, got[p])
    lo, _ = operand_range(config)
    assert max(abs(v) for row in got[0] for v in row["data"]) == lo * lo * config.rows


def test_wrap_golden_matches_hardware_width():
    """The golden's wrap is the two's complement of acc_width bits (used by every test)."""
    assert wrap([2**31, -2**31 - 1, 5, -5], 32).tolist() == [-2**31, 2**31 - 1, 5, -5]


# -- timing: latency, throughput, credits ------------------------------------------------------
@pytest.mark.parametrize("name,latency", [("tiny", 10), ("default", 16), ("default_p1", 20)])
def test_latency(name, latency):
    """One row alone: its result is valid exactly `R + Cp + 4` cycles after its acceptance,
    and the first row can go in cycle R (after the R weight beats of cycles 0..R-1)."""
    config = CONFIGS[name]
    assert pipeline_latency(config) == latency
    rng = np.random.default_rng(1)
    jobs = [random_tiles(config, rng, [1]) for _ in range(config.partitions)]
    accepted, emitted, got, _ = run_timed(config, jobs)
    for p in range(config.partitions):
        assert accepted[p] == [config.rows]
        assert emitted[p] == [config.rows + latency]
        check_results(config, p, jobs[p], got[p])


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
        check_results(config, p, jobs[p], got[p])


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
        check_results(config, p, jobs[p], got[p])
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
        check_results(config, p, jobs[p], got[p])


# -- Verilog: lint and cocotb ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "default", "default_p1"])
def test_systolic_verilog_lints_clean(name):
    out = generate(CONFIGS[name], "systolic_array")
    proc = lint(out.verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["tiny", "default", pytest.param("ow6", marks=pytest.mark.slow)])
def test_systolic_cocotb(simulator, name):
    """Every test of the bench (the registry's count: 4 stall patterns + latency and
    throughput); ``ow6`` has 6-bit operands and 18-bit accumulators (in `make test-all`,
    36 s: the fast suite runs the bench on random operand widths,
    tests/test_random_configs.py, and ``ow6`` in the Amaranth simulator above)."""
    run_bench(generate(CONFIGS[name], "systolic_array"), simulator)


@pytest.mark.cocotb
@pytest.mark.skipif(unavailable_reason("verilator") is not None,
                    reason=f"verilator unavailable: {unavailable_reason('verilator')}")
def test_systolic_with_ecp5_dsp_cells_passes_the_whole_bench_verilator():
    """The array as ``rpaccel synth`` builds it for the ECP5 (every PE's multiplier the
    MULT18X18D with its own registers) passes every test of the bench, the documented
    latency included, on the cell's simulation model: the same array."""
    from rpaccel.tb.unit_models.pe import ECP5_MULTIPLIER_MODEL
    generated = generate(CONFIGS["tiny"], "systolic_array", multiplier="ecp5")
    assert generated.verilog.read_text().count("MULT18X18D ") >= 1
    run_bench(generated, "verilator", build_args=[str(ECP5_MULTIPLIER_MODEL)])


@pytest.mark.cocotb
@pytest.mark.skipif(unavailable_reason("verilator") is not None,
                    reason=f"verilator unavailable: {unavailable_reason('verilator')}")
@pytest.mark.slow
def test_systolic_cocotb_16x16_verilator():
    # 50 s, in `make test-all`: the fast suite runs the whole bench on 4x4, 8x8 and 6-bit
    # arrays on both simulators and random array shapes (tests/test_random_configs.py)
    testcases = ["random_tiles_vs_numpy/stalls=both", "latency_and_back_to_back_throughput"]
    results = run_bench(generate(BIG, "systolic_array"), "verilator",
                        testcase=",".join(testcases))
    ran = results_summary(results)
    assert (ran["tests"], ran["failed"], ran["skipped"]) == (2, 0, 0), ran
