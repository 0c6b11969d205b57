"""MLP layer engine and compute core (hw/mlp_engine.py, hw/compute_core.py) in the Amaranth
simulator against the golden integer layers (rpaccel.sim.numerics); jobs, bad commands and
the scoreboard are the unit model's (tb/unit_models/mlp_engine.py), shared with the cocotb
bench tb/test_compute_core.py."""

from __future__ import annotations

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS, AccelConfig
from rpaccel.hw.compute_core import ComputeCore
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.sim.mlp_program import (IntLayer, MLPProgram, activation_addresses,
                                     pack_activations, random_layer, unpack_activations)
from rpaccel.sim.numerics import qmax, qmin
from rpaccel.tb.amaranth_sim import NO_STALLS, Stalls, get, put, simulate
from rpaccel.tb.unit_models.mlp_engine import (Job, bad_commands, check_job, good_command,
                                               random_activations)

TINY = PRESETS["tiny"]                       # 4x4, 2 partitions of 4x2
TINY_MONO = TINY.replace(partitions=1)       # 4x4 monolithic
WIDE = PRESETS["small"]                      # 4x8, 2 partitions of 4x4


async def load_and_run(ctx, dut, p, job: Job, geo: EngineGeometry, stalls: Stalls,
                       results: dict, *, extra_commands=()):
    program = MLPProgram(geo, job.layers)
    for addr, row in program.weight_writes():
        await put(ctx, dut.weight_write[p], {"addr": addr, "data": row.tolist()}, stalls)
    for addr, row in program.bias_writes():
        await put(ctx, dut.bias_write[p], {"addr": addr, "data": row.tolist()}, stalls)
    for addr, word in pack_activations(job.x, geo):
        await put(ctx, dut.act_write[p], {"buffer": 0, "addr": addr, "data": word.tolist()}, stalls)
    responses, scores = [], None
    for cmd in [*extra_commands, *program.commands(job.rows)]:
        await put(ctx, dut.cmd[p], cmd.payload(), stalls)
        if cmd.score and cmd not in extra_commands:
            scores = [await get(ctx, dut.scores[p], stalls) for _ in range(job.rows)]
        responses.append(await get(ctx, dut.resp[p], stalls))
    out = None
    last = job.layers[-1]
    if not last.score:
        buf = len(job.layers) % 2
        words = []
        for addr in activation_addresses(job.rows, last.n_out, geo):
            await put(ctx, dut.act_read[p], {"buffer": buf, "addr": addr}, stalls)
            words.append(await get(ctx, dut.act_data[p], stalls))
        out = unpack_activations(words, job.rows, last.n_out, geo)
    results[p] = {"responses": responses, "scores": scores, "out": out}


def run_jobs(config: AccelConfig, jobs: dict, stalls_p: float = 0.0, seed: int = 0,
             extra_commands=None, max_cycles=200_000):
    dut = ComputeCore(config)
    geo = EngineGeometry.of(config)
    results = {}
    benches = []
    for p, job in jobs.items():
        stalls = Stalls(stalls_p, seed + p) if stalls_p else NO_STALLS

        async def bench(ctx, p=p, job=job, stalls=stalls):
            await load_and_run(ctx, dut, p, job, geo, stalls, results,
                               extra_commands=(extra_commands or {}).get(p, ()))
        benches.append(bench)
    simulate(dut, benches, max_cycles=max_cycles, name="compute_core")
    return results


def check(job: Job, result: dict, partition: int = 0):
    check_job(partition, job, result["responses"], result["scores"], result["out"])


@pytest.mark.parametrize("config", [TINY, TINY_MONO, WIDE], ids=["tiny", "tiny-p1", "small"])
@pytest.mark.parametrize("shape", [(1, 3, 5), (5, 4, 2), (7, 9, 6), (16, 13, 3)],
                         ids=lambda s: "B%d-%dx%d" % s)
def test_single_layer_shapes(config, shape):
    """Layer shapes that are not multiples of R or Cp, B = 1 and B = several rows."""
    B, n_in, n_out = shape
    rng = np.random.default_rng(hash(shape) % 2**32)
    job = Job(config, [random_layer(rng, n_in, n_out, relu=bool(rng.integers(2)))],
              random_activations(config, rng, B, n_in))
    check(job, run_jobs(config, {0: job})[0])


def test_full_sub_batch_and_score_layer():
    rng = np.random.default_rng(7)
    B = TINY.sub_batch
    layers = [random_layer(rng, 6, 10), random_layer(rng, 10, 7),
              random_layer(rng, 7, 1, score=True)]
    job = Job(TINY, layers, random_activations(TINY, rng, B, 6))
    check(job, run_jobs(TINY, {0: job})[0])


@pytest.mark.parametrize("stalls_p", [0.0, 0.4])
def test_all_partitions_busy_with_different_shapes(stalls_p):
    """Both partitions run different MLPs at the same time; random valid gaps and
    backpressure on every host stream do not change any result."""
    rng = np.random.default_rng(11)
    jobs = {
        0: Job(TINY, [random_layer(rng, 5, 9), random_layer(rng, 9, 1, score=True)],
               random_activations(TINY, rng, 11, 5)),
        1: Job(TINY, [random_layer(rng, 12, 3), random_layer(rng, 3, 6, relu=False)],
               random_activations(TINY, rng, 4, 12)),
    }
    results = run_jobs(TINY, jobs, stalls_p=stalls_p, seed=3)
    for p, job in jobs.items():
        check(job, results[p])


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_few_rows_under_backpressure_keep_accumulations_exact(rows):
    """With B <= 3 the same accumulator row comes back within the accumulate pipeline's
    depth (and stalled score rows bunch later rows up): the read-after-write interlock must
    hold them. Many input tiles, a score layer, heavy stalls on every stream."""
    rng = np.random.default_rng(rows)
    layers = [random_layer(rng, 23, 9), random_layer(rng, 9, 17),
              random_layer(rng, 17, 1, score=True)]
    job = Job(TINY, layers, random_activations(TINY, rng, rows, 23))
    for config in (TINY, TINY.replace(rows=2, cols=4, partitions=2)):
        check(job, run_jobs(config, {0: job}, stalls_p=0.6, seed=rows)[0])


def test_extreme_values_saturate_and_wrap_exactly():
    """The ends of the operand range (-128 and 127 for int8) in weights and activations."""
    rng = np.random.default_rng(5)
    n_in = 9
    lo, hi = qmin(TINY.operand_width), qmax(TINY.operand_width)
    w = np.full((n_in, 3), -hi)
    w[:, 1] = hi
    layer = IntLayer(w=w, bias=np.array([0, -5, (1 << 20)]), mult=1 << 15, shift=8, relu=False)
    x = np.full((3, n_in), lo)
    x[1] = hi
    x[2] = random_activations(TINY, rng, 1, n_in)[0]
    job = Job(TINY, [layer], x)
    check(job, run_jobs(TINY, {0: job})[0])


@pytest.mark.parametrize("bad", bad_commands(TINY), ids=lambda bad: ",".join(
    f"{k}={v}" for k, v in bad.items()))
def test_bad_command_sets_error_and_next_command_works(bad):
    rng = np.random.default_rng(2)
    job = Job(TINY, [random_layer(rng, 5, 3)], random_activations(TINY, rng, 3, 5))
    results = run_jobs(TINY, {0: job}, extra_commands={0: [good_command(tag=99, **bad)]})
    first, *rest = results[0]["responses"]
    assert first["error"] == 1 and first["tag"] == 99
    check(job, {**results[0], "responses": rest})


def test_back_to_back_tiles_sustain_one_row_per_cycle():
    """Measured in RTL cycles: a B=16, 16x16 layer on a monolithic 4x4 array is 16 tiles of
    16 rows; with tiles back to back it takes 256 cycles plus a fixed fill/drain overhead."""
    rng = np.random.default_rng(9)
    config = TINY_MONO
    job = Job(config, [random_layer(rng, 16, 16)], random_activations(config, rng, 16, 16))
    result = run_jobs(config, {0: job})[0]
    check(job, result)
    cycles = result["responses"][0]["cycles"]
    useful = 16 * 16 * 16 / (config.rows * config.cols)
    assert useful == 256
    # Fill and drain of the array and the memory/vector pipelines: a constant, not per tile.
    assert cycles <= useful + 40, cycles


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_pipelined_layer_check_equals_the_one_cycle_check(preset):
    """``layer_refused_pipelined`` (the command processor's LOAD_MODEL check) gives
    ``layer_refused``'s verdict two cycles after each layer, on random layers around every
    bound (dimensions 0, max_layer_dim and above, weight tiles and bias words at the ends of
    their memories, score layers), one layer per cycle with random gaps; ``busy`` is high
    exactly while a verdict is on its way; ``tiles`` holds ``n_it * n_ot`` of the layer of
    two cycles before (the engine's weight feed is sized from it)."""
    from amaranth import Elaboratable, Module, Signal
    from rpaccel.hw.descriptors import layer_layout
    from rpaccel.hw.mlp_engine import (LAYER_CHECK_CYCLES, layer_refused,
                                       layer_refused_pipelined)
    config = PRESETS[preset]
    geo = EngineGeometry.of(config)

    class Checks(Elaboratable):
        def __init__(self):
            self.valid, self.layer = Signal(), Signal(layer_layout(config))
            self.one_cycle, self.busy, self.refused = Signal(), Signal(), Signal()
            self.tiles = Signal(16)

        def elaborate(self, platform):
            m = Module()
            ly = self.layer
            fields = (ly.in_dim, ly.out_dim, ly.weight_tile, ly.bias_word, ly.score)
            busy, refused, tiles = layer_refused_pipelined(m, config, self.valid, *fields)
            m.d.comb += [self.one_cycle.eq(layer_refused(config, *fields)),
                         self.busy.eq(busy), self.refused.eq(refused), self.tiles.eq(tiles)]
            return m

    rng = np.random.default_rng(5)
    weight_tiles = geo.weight_words // geo.rows

    def near(bound):
        return int(rng.choice([0, 1, bound - 1, bound, bound + 1, rng.integers(0, bound + 2),
                               rng.integers(0, 1 << 16)])) & 0xFFFF

    dut, n, seen = Checks(), 600, []

    async def bench(ctx):
        expected = [None] * (LAYER_CHECK_CYCLES - 1)     # verdicts on their way
        products = [None, None]       # n_it * n_ot of the last two layers (None: too wide)
        for cycle in range(n + LAYER_CHECK_CYCLES):
            valid = cycle < n and bool(rng.random() < 0.7)
            layer = {"in_dim": near(geo.max_layer_dim), "out_dim": near(geo.max_layer_dim),
                     "weight_tile": near(weight_tiles), "bias_word": near(geo.bias_words),
                     "score": int(rng.random() < 0.3)}
            ctx.set(dut.valid, valid)
            for key, value in layer.items():
                ctx.set(getattr(dut.layer, key), value)
            verdict = bool(ctx.get(dut.one_cycle)) if valid else None
            assert ctx.get(dut.refused) == (expected[0] is True)
            assert ctx.get(dut.busy) == any(v is not None for v in expected)
            if products[0] is not None:
                assert ctx.get(dut.tiles) == products[0]
            dims_ok = max(layer["in_dim"], layer["out_dim"]) <= geo.max_layer_dim
            products = products[1:] + [-(-layer["in_dim"] // geo.rows)
                                       * -(-layer["out_dim"] // geo.cols) if dims_ok else None]
            if valid:
                seen.append(verdict)
            expected = expected[1:] + [verdict]
            await ctx.tick()

    simulate(dut, [bench], max_cycles=n + 10, name="layer_check")
    assert len(seen) > n // 2 and 0 < sum(seen) < len(seen)   # both verdicts were checked
