# amaranth: UnusedElaboratable=no
"""Vector unit (hw/vector.py): bias add and requantization against the golden numerics.

Amaranth-simulator tests on extreme and random rows (the unit model,
``tb/unit_models/vector.py``, shared with the cocotb bench), with and without random valid
gaps and backpressure; latency and throughput in cycles; lint; cocotb on both simulators.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_bench
from rpaccel.gen.units import get_unit
from rpaccel.hw.vector import Requantizer, VectorUnit
from rpaccel.tb.unit_models.pe import ECP5_MULTIPLIER_MODEL
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate
from rpaccel.tb.unit_models.vector import (check_results, expected_row, extreme_rows,
                                           random_rows)

PRESET_NAMES = ["tiny", "default"]
#: Narrow operands and accumulators: stimulus, corner cases and golden follow the configuration.
NARROW = PRESETS["tiny"].replace(operand_width=6, acc_width=20)


def run_rows(config, rows, *, in_stalls: Stalls, out_stalls: Stalls):
    dut = VectorUnit(config)
    got = []

    async def producer(ctx):
        await send(ctx, dut.inp, rows, in_stalls)

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.out, len(rows), out_stalls))

    simulate(dut, [producer, consumer], max_cycles=20 * len(rows) + 100)
    return got


@pytest.mark.parametrize("preset", [*PRESET_NAMES, "narrow"])
@pytest.mark.parametrize("stall_p", [0.0, 0.4])
def test_vector_unit_matches_golden(preset, stall_p):
    """Extreme and random rows give exactly the golden results, at full rate and with random
    valid gaps and backpressure (the same inputs, so identical results)."""
    config = NARROW if preset == "narrow" else PRESETS[preset]
    rng = np.random.default_rng(7)
    rows = extreme_rows(config) + random_rows(config, rng, 150)
    got = run_rows(config, rows, in_stalls=Stalls(stall_p, 11), out_stalls=Stalls(stall_p, 12))
    check_results(config, rows, got)


def test_extreme_rows_cover_the_corners():
    """The hand-picked rows really reach both saturation ends, ReLU zeros, exact halves and
    large shifts with a nonzero result (guards the test data itself)."""
    config = PRESETS["default"]
    outs = [v for row in extreme_rows(config) if not row["score"]
            for v in expected_row(config, row)]
    assert {-128, 127, 0, -2, 3} <= set(outs)
    rows = extreme_rows(config)
    assert any(r["shift"] == 63 and any(expected_row(config, r)) for r in rows)
    assert any(r["score"] and min(expected_row(config, r)) == -(1 << 31) for r in rows)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_vector_unit_latency_and_throughput(preset):
    """A row transferred on cycle t is offered on cycle t + LATENCY; N back-to-back rows leave
    on N consecutive cycles (one row per cycle), so N rows take N + LATENCY cycles."""
    config = PRESETS[preset]
    rows = random_rows(config, np.random.default_rng(3), 40)
    dut = VectorUnit(config)
    arrivals = []

    async def producer(ctx):
        await send(ctx, dut.inp, rows)

    async def consumer(ctx):
        cycle = 0
        ctx.set(dut.out.ready, 1)
        while len(arrivals) < len(rows):
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            cycle += 1
            if valid:
                arrivals.append(cycle)

    simulate(dut, [producer, consumer], max_cycles=500)
    # The first row is transferred at the first clock edge (cycle 1).
    assert VectorUnit.LATENCY == 8
    assert arrivals[0] == 1 + VectorUnit.LATENCY
    assert arrivals == list(range(arrivals[0], arrivals[0] + len(rows)))


def test_stalled_output_holds_its_row_and_inputs_wait():
    """With out.ready low the offered row stays put and valid stays high (no loss), and the
    unit stops accepting rows: valid never depends on ready."""
    config = PRESETS["tiny"]
    rows = random_rows(config, np.random.default_rng(5), 8)
    dut = VectorUnit(config)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.out.ready, 0)
        accepted = 0
        for _ in range(12):
            if accepted < len(rows):
                ctx.set(dut.inp.payload, dut.in_layout.const(rows[accepted]))
                ctx.set(dut.inp.valid, 1)
            _, _, ready = await ctx.tick().sample(dut.inp.ready)
            accepted += int(ready)
        ctx.set(dut.inp.valid, 0)
        seen["accepted"] = accepted
        held = ctx.get(dut.out.payload)
        for _ in range(5):
            assert ctx.get(dut.out.valid) == 1
            assert ctx.get(dut.out.payload).as_value().value == held.as_value().value
            await ctx.tick()
        got = await receive(ctx, dut.out, accepted)
        seen["got"] = got

    simulate(dut, [bench], max_cycles=200)
    # The pipeline fills (LATENCY rows) and then holds: nothing more is taken.
    assert seen["accepted"] == VectorUnit.LATENCY
    check_results(config, rows[:seen["accepted"]], seen["got"])


def test_requantizer_rejects_bad_widths():
    with pytest.raises(ValueError, match="value_width must be at least 2, not 1"):
        Requantizer(value_width=1, mult_width=16, operand_width=8, result_width=8)
    with pytest.raises(ValueError, match="result_width must be at least operand_width=8, not 4"):
        Requantizer(value_width=32, mult_width=16, operand_width=8, result_width=4)


def test_vector_unit_is_registered_with_documented_ports():
    config = PRESETS["default"]
    unit = get_unit("vector_unit").build(config)
    assert isinstance(unit, VectorUnit)
    Fragment.get(unit, None)  # elaborates (and marks it used)
    assert unit.in_layout.size == 2 * 4 * 32 + 16 + 6 + 3
    assert unit.out_layout.size == 4 * 32 + 1


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_vector_unit_verilog_lints_clean(preset):
    proc = lint(generate(PRESETS[preset], "vector_unit").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_vector_unit_cocotb(simulator, preset):
    run_bench(generate(PRESETS[preset], "vector_unit"), simulator)


def test_vector_unit_with_the_ecp5_dsp_cells_passes_the_same_bench(simulator):
    """The ECP5 form (every partial product a MULT18X18D whose input and output registers
    are the requantizer's operand and product registers, clock-enabled by the pipeline's
    advance, as ``rpaccel synth`` builds it for that target) passes the same bench, the
    latency and the stalled output included, on the cell's simulation model."""
    config = PRESETS["default"]
    generated = generate(config, "vector_unit", multiplier="ecp5")
    assert generated.verilog.read_text().count("MULT18X18D ") >= 2
    run_bench(generated, simulator, build_args=[str(ECP5_MULTIPLIER_MODEL)])
