# amaranth: UnusedElaboratable=no
"""Feature-interaction unit (hw/interaction.py) against ``numerics.interaction``.

Amaranth-simulator tests: random and extreme samples (n = 2 .. max_interaction_vectors,
D = 1, lanes, not a multiple of lanes, emb_dim_max), with and without random valid gaps and
backpressure; bad samples and recovery; cycle counts; lint; cocotb on both simulators.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from rpaccel.hw.config import DEFAULT, PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.tb.unit_models.pe import ECP5_MULTIPLIER_MODEL
from rpaccel.gen.units import get_unit
from rpaccel.hw.interaction import InteractionUnit, issue_cycles, pack_factor
from rpaccel.tb.amaranth_sim import NO_STALLS, Stalls, WithReset, receive, send, simulate
from rpaccel.tb.unit_models.interaction import (check, error_beat, expected, mixed_samples,
                                                param_writes, random_params, random_sample)

PRESET_NAMES = ["tiny", "default"]


def run_samples(config, samples, mults, shifts, *, in_stalls=NO_STALLS, out_stalls=NO_STALLS,
                dim_noise_rng=None, max_cycles=None):
    """Write the pair parameters, then stream the samples (``dim`` set before each sample's
    first vector and, with ``dim_noise_rng``, scrambled after it: it must be sampled only on
    the first beat). Returns every output beat, in order."""
    dut = InteractionUnit(config)
    got = []
    loaded = []

    async def params(ctx):
        await send(ctx, dut.pair_params, param_writes(mults, shifts), in_stalls)
        loaded.append(True)

    async def producer(ctx):
        while not loaded:
            await ctx.tick()
        for sample in samples:
            beats = sample.beats()
            ctx.set(dut.dim, sample.dim)
            await send(ctx, dut.vectors, beats[:1], in_stalls)
            if dim_noise_rng is not None:
                ctx.set(dut.dim, int(dim_noise_rng.integers(0, 1 << len(dut.dim))))
            await send(ctx, dut.vectors, beats[1:], in_stalls)

    async def consumer(ctx):
        for _ in samples:
            got.extend(await receive(ctx, dut.out, stalls=out_stalls, until=lambda b: b["last"]))

    budget = max_cycles or 200 + sum(4 * (s.n + s.n * s.n * 2) for s in samples) + 4 * len(mults)
    simulate(dut, [params, producer, consumer], max_cycles=budget)
    return got


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("stall_p", [0.0, 0.4])
def test_interaction_matches_golden(preset, stall_p):
    """n = 2, 9 and max; D = 1, lanes, not a multiple of lanes, emb_dim_max and random; at full
    rate and with random gaps/backpressure on every stream (identical results); ``dim``
    scrambled after each sample's first vector; garbage beyond D ignored."""
    config = PRESETS[preset]
    rng = np.random.default_rng(21)
    mults, shifts = random_params(config, rng)
    samples = mixed_samples(config, rng)
    got = run_samples(config, samples, mults, shifts, in_stalls=Stalls(stall_p, 1),
                      out_stalls=Stalls(stall_p, 2), dim_noise_rng=np.random.default_rng(3))
    check(config, samples, got, mults, shifts)


def test_golden_samples_reach_the_corners():
    """Guard on the test data: results saturate at both ends and include zeros."""
    config = PRESETS["default"]
    rng = np.random.default_rng(21)
    mults, shifts = random_params(config, rng)
    values = [v for s in mixed_samples(config, rng)
              for b in expected(config, s, mults, shifts) for v in b["data"][:b["count"]]]
    assert {-128, 127, 0} <= set(values)
    assert len(set(values)) > 100


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_samples_are_dropped_with_one_error_beat(preset):
    """Too few vectors (1), too many (max + 1, max + 5), dim 0 and dim > emb_dim_max: each bad
    sample is consumed, answered by one error beat, and the good samples around it are
    right."""
    config = PRESETS[preset]
    rng = np.random.default_rng(5)
    mults, shifts = random_params(config, rng)
    vmax, emb = config.max_interaction_vectors, config.emb_dim_max
    dim_limit = (1 << (emb.bit_length())) - 1  # the largest value the dim port holds
    good = lambda: random_sample(config, rng, int(rng.integers(2, 6)),  # noqa: E731
                                 int(rng.integers(1, emb + 1)))
    samples = [good(),
               random_sample(config, rng, 1, 8), good(),
               random_sample(config, rng, vmax + 1, 8), good(),
               random_sample(config, rng, vmax + 5, emb), good(),
               random_sample(config, rng, 3, 0),
               random_sample(config, rng, 4, emb + 1), good(),
               random_sample(config, rng, 2, dim_limit),
               random_sample(config, rng, 1, 0), good()]
    for p in (0.0, 0.3):
        got = run_samples(config, samples, mults, shifts, in_stalls=Stalls(p, 8),
                          out_stalls=Stalls(p, 9))
        check(config, samples, got, mults, shifts)
    assert sum(expected(config, s, mults, shifts) == [error_beat(config)] for s in samples) == 7


def test_pair_params_can_be_rewritten_and_out_of_range_index_is_ignored():
    """New parameters take effect for the next sample; an index past the memory is dropped."""
    config = PRESETS["tiny"]
    rng = np.random.default_rng(9)
    unit = InteractionUnit(config)
    m1, s1 = random_params(config, rng)
    m2, s2 = random_params(config, rng)
    sample = random_sample(config, rng, config.max_interaction_vectors, 20)
    dut = unit
    got = []

    async def bench(ctx):
        for mults, shifts in ((m1, s1), (m2, s2)):
            await send(ctx, dut.pair_params, param_writes(mults, shifts))
            if unit.pairs_max < 1 << len(dut.pair_params.payload.index):
                await send(ctx, dut.pair_params, [{"index": unit.pairs_max, "mult": 0,
                                                   "shift": 0}])
            ctx.set(dut.dim, sample.dim)
            await send(ctx, dut.vectors, sample.beats())
            got.append(await receive(ctx, dut.out, until=lambda b: b["last"]))

    simulate(dut, [bench], max_cycles=5000)
    assert got[0] == expected(config, sample, m1, s1)
    assert got[1] == expected(config, sample, m2, s2)
    assert got[0] != got[1]


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_reset_takes_nothing_offers_nothing_and_the_unit_works_after(preset):
    """A 3-cycle reset while a vector and a parameter write are offered and results are
    offered: during reset ``vectors.ready``, ``pair_params.ready`` and ``out.valid`` are low;
    after it the cut sample is forgotten, the parameters written before it stay, and the
    next samples (one of them bad) are exact."""
    config = PRESETS[preset]
    rng = np.random.default_rng(12)
    mults, shifts = random_params(config, rng)
    vmax, emb = config.max_interaction_vectors, config.emb_dim_max
    first = [random_sample(config, rng, vmax, emb), random_sample(config, rng, 5, 3)]
    after = [random_sample(config, rng, 9, 4), random_sample(config, rng, 1, 4),
             random_sample(config, rng, vmax, config.interaction_lanes + 1)]
    unit = InteractionUnit(config)
    top = WithReset(unit)
    log = {"during": []}

    async def bench(ctx):
        await send(ctx, unit.pair_params, param_writes(mults, shifts))
        ctx.set(unit.dim, first[0].dim)
        await send(ctx, unit.vectors, first[0].beats())
        ctx.set(unit.dim, first[1].dim)
        await send(ctx, unit.vectors, first[1].beats()[:2])
        for _ in range(20):
            await ctx.tick()
        assert ctx.get(unit.out.valid), "no result offered before the reset"
        ctx.set(unit.vectors.payload, unit.vector_layout.const(first[1].beats()[2]))
        ctx.set(unit.vectors.valid, 1)
        ctx.set(unit.pair_params.payload,
                unit.param_layout.const({"index": 0, "mult": 1, "shift": 0}))
        ctx.set(unit.pair_params.valid, 1)
        ctx.set(top.domain.rst, 1)
        for _ in range(3):
            log["during"].append((ctx.get(unit.vectors.ready), ctx.get(unit.pair_params.ready),
                                  ctx.get(unit.out.valid)))
            await ctx.tick()
        ctx.set(top.domain.rst, 0)
        ctx.set(unit.vectors.valid, 0)
        ctx.set(unit.pair_params.valid, 0)
        log["reset_done"] = True
        for sample in after:
            ctx.set(unit.dim, sample.dim)
            await send(ctx, unit.vectors, sample.beats(), Stalls(0.3, 4))

    async def consumer(ctx):
        while not log.get("reset_done"):
            await ctx.tick()
        log["got"] = []
        for _ in after:
            log["got"] += await receive(ctx, unit.out, stalls=Stalls(0.3, 5),
                                        until=lambda b: b["last"])

    simulate(top, [bench, consumer], max_cycles=5000)
    assert log["during"] == [(0, 0, 0)] * 3, log["during"]
    check(config, after, log["got"], mults, shifts)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_interaction_cycle_counts(preset):
    """Measured in cycles, no stalls, the first vector transferred on cycle 1:

    * one sample (n = 9, the MovieLens models) alone: its last result is transferred on cycle
      n + 1 + issue_cycles(n, D) + latency, for D = 4, 16, 32, where issue_cycles is
      pairs * ceil(D / lanes) unpacked and sum(ceil(i / P)) packed P pairs per cycle;
    * back-to-back samples: one every max(n, issue_cycles(n, D)) cycles (double
      buffering hides the load), including short samples (n = 2) where the load dominates.
    """
    config = PRESETS[preset]
    rng = np.random.default_rng(4)
    unit = InteractionUnit(config)
    mults, shifts = random_params(config, rng)
    measured = {}

    def arrivals(samples):
        """Cycle (1 = the first vector's transfer) on which each sample's last result is
        transferred. Both benches count clock edges from time 0."""
        dut = InteractionUnit(config)
        first_vector, times = [], []

        async def producer(ctx):
            edge = 0
            for write in param_writes(mults, shifts):  # always ready: one edge each
                ctx.set(dut.pair_params.payload, unit.param_layout.const(write))
                ctx.set(dut.pair_params.valid, 1)
                await ctx.tick()
                edge += 1
            ctx.set(dut.pair_params.valid, 0)
            for sample in samples:
                ctx.set(dut.dim, sample.dim)
                for beat in sample.beats():
                    ctx.set(dut.vectors.payload, unit.vector_layout.const(beat))
                    ctx.set(dut.vectors.valid, 1)
                    while True:
                        _, _, ready = await ctx.tick().sample(dut.vectors.ready)
                        edge += 1
                        if ready:
                            break
                    if not first_vector:
                        first_vector.append(edge)
            ctx.set(dut.vectors.valid, 0)

        async def consumer(ctx):
            edge = 0
            ctx.set(dut.out.ready, 1)
            while len(times) < len(samples):
                _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                edge += 1
                if valid and payload.last:
                    times.append(edge)

        simulate(dut, [producer, consumer], max_cycles=20000)
        return [t - first_vector[0] + 1 for t in times]

    for dim in (4, 16, 32):
        n = 9
        cycles = issue_cycles(config, n, dim)
        [alone] = arrivals([random_sample(config, rng, n, dim)])
        measured[("alone", dim)] = alone
        assert alone == n + 1 + cycles + unit.latency, (dim, alone)
        times = arrivals([random_sample(config, rng, n, dim) for _ in range(4)])
        periods = np.diff(times)
        measured[("period", dim)] = int(periods[0])
        assert list(periods) == [max(n, cycles)] * 3, (dim, times)
    # The documented table (docs/architecture.md): 9 vectors, D = 4 packs 4 pairs per cycle
    # on default (16 lanes) and 2 on tiny (8 lanes).
    assert {d: issue_cycles(config, 9, d) for d in (4, 16, 32)} == \
        {"tiny": {4: 20, 16: 72, 32: 144}, "default": {4: 12, 16: 36, 32: 72}}[preset]
    times = arrivals([random_sample(config, rng, 2, 1) for _ in range(5)])
    assert list(np.diff(times)) == [2] * 4, times
    assert unit.latency == 14 + unit.tree_stages
    print(preset, measured)


def test_odd_configurations_elaborate_and_compute():
    """One lane group covering the whole vector (lanes = emb_dim_max, one beat per pair), a
    single pair (max_interaction_vectors = 2) and one lane."""
    rng = np.random.default_rng(2)
    for config in (DEFAULT.replace(max_tables=1, max_interaction_vectors=2, interaction_lanes=32),
                   DEFAULT.replace(emb_dim_max=4, interaction_lanes=1, max_tables=2,
                                   max_interaction_vectors=3)):
        mults, shifts = random_params(config, rng)
        vmax = config.max_interaction_vectors
        samples = [random_sample(config, rng, n, d) for n in range(1, vmax + 2)
                   for d in (1, config.emb_dim_max)]
        got = run_samples(config, samples, mults, shifts, in_stalls=Stalls(0.3, 1),
                          out_stalls=Stalls(0.3, 2))
        check(config, samples, got, mults, shifts)


def test_interaction_is_registered_with_documented_ports():
    config = PRESETS["default"]
    unit = get_unit("interaction").build(config)
    assert isinstance(unit, InteractionUnit)
    Fragment.get(unit, None)  # elaborates (and marks it used)
    assert unit.pairs_max == 16 * 15 // 2
    assert unit.vector_layout.size == 32 * 8 + 1
    assert unit.out_layout.size == 4 * 8 + 3 + 2       # 4 results, count 0..4, last, error
    assert [pack_factor(config, d) for d in (1, 4, 5, 8, 9, 16, 32)] == [4, 4, 2, 2, 1, 1, 1]
    assert unit.dot_width == 21
    assert (unit.beats(1), unit.beats(16), unit.beats(17), unit.beats(32)) == (1, 1, 2, 2)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_interaction_verilog_lints_clean(preset):
    proc = lint(generate(PRESETS[preset], "interaction").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_interaction_cocotb(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "interaction"), simulator, "rpaccel.tb.test_interaction")


def test_interaction_with_the_ecp5_dsp_cells_passes_the_same_bench(simulator):
    """The ECP5 form (each lane's multiply and each requantizer's partial products a
    MULT18X18D whose input and output registers are the pipeline's operand and product
    registers, enabled by its advance, as ``rpaccel synth`` builds it for that target)
    passes the same bench, the cycle counts included, on the cell's simulation model."""
    generated = generate(PRESETS["default"], "interaction", multiplier="ecp5")
    assert generated.verilog.read_text().count("MULT18X18D ") >= 2
    run_cocotb(generated, simulator, "rpaccel.tb.test_interaction",
               build_args=[str(ECP5_MULTIPLIER_MODEL)])
