# amaranth: UnusedElaboratable=no
"""Vector unit (hw/vector.py): bias add and requantization against the golden numerics.

Amaranth-simulator tests on extreme and random rows, with and without random valid gaps and
backpressure; latency and throughput in cycles; lint; cocotb on both simulators.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.gen.units import get_unit
from rpaccel.hw.vector import Requantizer, VectorUnit
from rpaccel.sim import numerics
from rpaccel.sim.numerics import wrap
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate

PRESET_NAMES = ["tiny", "default"]



def expected_row(row: dict, config) -> list[int]:
    """The golden result of one input row: ``acc + bias`` modulo 2**aw, then the score as it
    is or ``numerics.requantize``."""
    aw = config.acc_width
    out = []
    for acc, bias in zip(row["acc"], row["bias"]):
        s = wrap(acc + bias, aw)
        if row["score"]:
            out.append(s)
        else:
            out.append(int(numerics.requantize(
                np.array([s]), row["mult"], row["shift"], relu=bool(row["relu"]),
                width=config.operand_width, acc_width=aw,
                mult_width=config.requant_mult_width)[0]))
    return out


def extreme_rows(config) -> list[dict]:
    """Hand-picked rows: int32 limits, multiplier 0 and max, shifts 0/1/31/47/63, halves of
    both signs, ReLU on and off, score mode, saturation at both ends, bias wrap-around."""
    aw, cp = config.acc_width, config.partition_cols
    lo, hi = -(1 << (aw - 1)), (1 << (aw - 1)) - 1
    mmax = (1 << config.requant_mult_width) - 1
    values = [lo, hi, -1, 0, 1, -5, 5, -3, 3, -2, 2, 255, -256, 254, -257, 1 << 20,
              -(1 << 20), lo + 1, hi - 1, 127, 128, -128, -129]
    rows = []

    def row(accs, bias, mult, shift, relu=0, score=0):
        accs = (list(accs) * cp)[:cp]
        bias = (list(bias) * cp)[:cp]
        rows.append({"acc": accs, "bias": bias, "mult": mult, "shift": shift, "relu": relu,
                     "score": score, "last": len(rows) % 3 == 0})

    for shift in (0, 1, 2, 31, 32, 47, 48, 62, 63):
        for mult in (0, 1, 3, mmax):
            for relu in (0, 1):
                for start in range(0, len(values), cp):
                    row(values[start:start + cp], [0], mult, shift, relu)
    # Negative halves round towards +infinity: -2.5 -> -2, -0.5 -> 0, 2.5 -> 3, -1.5 -> -1.
    row([-5, -1, 5, -3], [0], 1, 1)
    row([-10, -2, 10, -6], [0], 1, 2)
    row([-5, -1, 5, 3], [0], 1, 1, relu=1)
    # Scores: the int32 sum, whatever mult/shift/relu say.
    row([lo, hi, -1, 12345], [0], 7, 9, relu=1, score=1)
    row([hi, lo, 100, -100], [1, -1, hi, lo], mmax, 63, score=1)  # wraps modulo 2**aw
    # Bias wrap-around before requantization.
    row([hi, lo], [hi, lo], 1, 0)
    row([hi, lo], [1, -1], 1, 24, relu=1)
    # Just inside and outside the saturation bounds.
    row([127, 128, -128, -129], [0], 1, 0)
    row([254, 255, -256, -257], [0], 1, 1)
    row([253, 255, -255, -258], [0], 1, 1, relu=1)
    row([hi], [0], mmax, 46)
    row([lo], [0], mmax, 46)
    row([lo], [0], mmax, 47)
    row([hi], [0], mmax, 47)
    return rows


def random_rows(config, rng, count: int) -> list[dict]:
    """Random rows; the shift is mostly chosen near the product's magnitude so that results
    spread over the int8 range instead of all saturating."""
    aw, cp, mw = config.acc_width, config.partition_cols, config.requant_mult_width
    rows = []
    for _ in range(count):
        scale = int(rng.integers(1, aw))
        accs = [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)]
        bias = [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)]
        if rng.random() < 0.1:
            accs = [int(v) for v in rng.integers(-(1 << (aw - 1)), 1 << (aw - 1), cp)]
        mult = int(rng.integers(0, 1 << mw))
        shift = int(np.clip(scale + mw - 8 + int(rng.integers(-3, 4)), 0, 63))
        if rng.random() < 0.15:
            shift = int(rng.integers(0, 64))
        rows.append({"acc": accs, "bias": bias, "mult": mult, "shift": shift,
                     "relu": int(rng.integers(0, 2)), "score": int(rng.random() < 0.1),
                     "last": int(rng.random() < 0.2)})
    return rows


def run_rows(config, rows, *, in_stalls: Stalls, out_stalls: Stalls):
    dut = VectorUnit(config)
    got = []

    async def producer(ctx):
        await send(ctx, dut.inp, rows, in_stalls)

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.out, len(rows), out_stalls))

    simulate(dut, [producer, consumer], max_cycles=20 * len(rows) + 100)
    return got


def check(config, rows, got):
    assert len(got) == len(rows)
    for index, (row, out) in enumerate(zip(rows, got)):
        want = expected_row(row, config)
        assert out["data"] == want, (f"row {index}: got {out['data']}, expected {want} for "
                                     f"{row}")
        assert out["last"] == int(row["last"]), f"row {index}: last"


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("stall_p", [0.0, 0.4])
def test_vector_unit_matches_golden(preset, stall_p):
    """Extreme and random rows give exactly the golden results, at full rate and with random
    valid gaps and backpressure (the same inputs, so identical results)."""
    config = PRESETS[preset]
    rng = np.random.default_rng(7)
    rows = extreme_rows(config) + random_rows(config, rng, 150)
    got = run_rows(config, rows, in_stalls=Stalls(stall_p, 11), out_stalls=Stalls(stall_p, 12))
    check(config, rows, got)


def test_extreme_rows_cover_the_corners():
    """The hand-picked rows really reach both saturation ends, ReLU zeros, exact halves and
    large shifts with a nonzero result (guards the test data itself)."""
    config = PRESETS["default"]
    outs = [v for row in extreme_rows(config) if not row["score"]
            for v in expected_row(row, config)]
    assert {-128, 127, 0, -2, 3} <= set(outs)
    rows = extreme_rows(config)
    assert any(r["shift"] == 63 and any(expected_row(r, config)) for r in rows)
    assert any(r["score"] and min(expected_row(r, config)) == -(1 << 31) for r in rows)


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
    assert VectorUnit.LATENCY == 6
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
    check(config, rows[:seen["accepted"]], seen["got"])


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
    run_cocotb(generate(PRESETS[preset], "vector_unit"), simulator, "rpaccel.tb.test_vector")
