"""cocotb test of the feature-interaction unit (hw/interaction.py) against
``numerics.interaction``, on Verilator and Icarus.

The pair parameters are written through ``pair_params``, then samples (n = 2, 9, max and
random; D = 1, lanes, not a multiple of lanes, emb_dim_max; three bad samples among them)
are driven with random valid gaps while the results are taken with random backpressure,
the pattern being a test parameter. A scoreboard compares every output beat with the golden
in order. A second test measures in RTL the cycles of one sample alone and the period of
back-to-back samples against the documented formulas.

Payloads are packed and unpacked with the hardware's own layouts
(``rpaccel.hw.interaction``); the streams are driven and taken with
``rpaccel.tb.cocotb_streams``.
"""

import numpy as np

import cocotb

from rpaccel.hw.interaction import (beats_per_pair, out_layout, pairs_max, param_layout,
                                    pipeline_latency, vector_layout)
from rpaccel.sim import numerics
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup

ERROR_BEAT = {"data": 0, "last": 1, "error": 1}

#: Probability of an idle cycle before each input beat, of ready low on the output.
STALL_PATTERNS = {"full_rate": (0.0, 0.0), "gaps": (0.3, 0.0), "backpressure": (0.0, 0.4),
                  "gaps_and_backpressure": (0.3, 0.3)}


def random_params(config, rng):
    count, mw = pairs_max(config), config.requant_mult_width
    mults = rng.integers(1 << (mw - 1), 1 << mw, count)
    shifts = np.clip(rng.integers(14, 20, count) + mw - 7, 0, 63)
    # Every third pair rescales a little: small dot products then round at exact halves.
    small = len(mults[::3])
    mults[::3], shifts[::3] = rng.integers(1, 8, small), rng.integers(1, 5, small)
    for k, (mult, shift) in enumerate([(0, 3), ((1 << mw) - 1, 63), (1, 0), (1, 1),
                                       ((1 << mw) - 1, 47), ((1 << mw) - 1, 31)]):
        mults[3 * k + 1], shifts[3 * k + 1] = mult, shift
    return mults.astype(np.int64), shifts.astype(np.int64)


def random_sample(config, rng, n, dim, *, small=False):
    """``n`` vectors of ``emb_dim_max`` int8 elements; garbage beyond ``dim`` (ignored).
    Some are extremes (-128/127, the largest dot products); ``small`` ones (-2..2) give dot
    products small enough that the pairs with small shifts hit exact halves and zeros."""
    vectors = rng.integers(-128, 128, (n, config.emb_dim_max))
    kind = rng.random()
    if small or kind < 0.15:
        vectors = rng.integers(-2, 3, (n, config.emb_dim_max))
    elif kind < 0.3:
        vectors = rng.choice([-128, 127], (n, config.emb_dim_max))
    return vectors.astype(np.int64), dim


def golden(config, sample, mults, shifts):
    vectors, dim = sample
    n = len(vectors)
    if not (2 <= n <= config.max_interaction_vectors and 1 <= dim <= config.emb_dim_max):
        return [ERROR_BEAT]
    pairs = n * (n - 1) // 2
    values = numerics.interaction(vectors[None, :, :dim], mults[:pairs], shifts[:pairs],
                                  width=config.operand_width, acc_width=config.acc_width,
                                  mult_width=config.requant_mult_width)[0]
    return [{"data": int(v), "last": int(p == pairs - 1), "error": 0}
            for p, v in enumerate(values)]


class Streams:
    """The unit's three streams, sharing one cycle counter."""

    def __init__(self, bench, p_idle, p_busy):
        dut, config, rng = bench.dut, bench.config, bench.rng
        self.dut = dut
        counter = CycleCounter(dut.clk)
        self.params = StreamDriver(dut, "pair_params", param_layout(config), counter=counter,
                                   rng=child_rng(rng), idle=p_idle)
        self.vectors = StreamDriver(dut, "vectors", vector_layout(config), counter=counter,
                                    rng=child_rng(rng), idle=p_idle)
        self.out = StreamSink(dut, "out", out_layout(config), counter=counter,
                              rng=child_rng(rng), backpressure=p_busy)

    async def write_params(self, mults, shifts):
        await self.params.send([{"index": k, "mult": int(m), "shift": int(s)}
                                for k, (m, s) in enumerate(zip(mults, shifts))])

    async def send_samples(self, samples) -> list[int]:
        """Each sample's ``dim`` is set before its first vector; returns the cycle of every
        sample's first vector transfer."""
        firsts = []
        for vectors, dim in samples:
            self.dut.dim.value = dim
            cycles = await self.vectors.send(
                [{"data": [int(x) for x in v], "last": int(k == len(vectors) - 1)}
                 for k, v in enumerate(vectors)])
            firsts.append(cycles[0])
        return firsts


def expected_beats(config, samples, mults, shifts):
    return [b for s in samples for b in golden(config, s, mults, shifts)]


@cocotb.test()
@cocotb.parametrize(stalls=list(STALL_PATTERNS))
async def random_samples_vs_numpy(dut, stalls):
    """Good and bad samples in one stream; every output beat compared in order."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    io = Streams(bench, *STALL_PATTERNS[stalls])
    vmax, emb, lanes = config.max_interaction_vectors, config.emb_dim_max, config.interaction_lanes
    mults, shifts = random_params(config, rng)
    samples = [random_sample(config, rng, n, d) for n, d in
               [(2, 1), (9, lanes), (vmax, emb), (9, lanes + 1), (1, 4), (3, emb - 1),
                (vmax + 1, 4), (int(rng.integers(2, vmax + 1)), int(rng.integers(1, emb + 1))),
                (2, emb), (4, 0), (9, 4)]]
    samples.append(random_sample(config, rng, vmax, lanes + 1, small=True))
    await io.write_params(mults, shifts)
    want = expected_beats(config, samples, mults, shifts)
    cocotb.start_soon(io.send_samples(samples))
    got = [t.payload for t in await io.out.receive(len(want))]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"beat {i}: got {g}, expected {w}"
    assert sum(b["error"] for b in got) == 3
    dut._log.info("checked %d samples, %d beats", len(samples), len(want))


@cocotb.test()
async def cycle_counts_in_rtl(dut):
    """n = 9 (the MovieLens models), D = 16: one sample alone takes
    n + pairs * ceil(D / lanes) + latency cycles from its first vector to its last result;
    back-to-back samples leave one every max(n, pairs * ceil(D / lanes)) cycles."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    io = Streams(bench, 0.0, 0.0)
    mults, shifts = random_params(config, rng)
    await io.write_params(mults, shifts)
    n, dim = 9, 16
    pairs, beats = n * (n - 1) // 2, beats_per_pair(config, dim)
    for count in (1, 4):
        samples = [random_sample(config, rng, n, dim) for _ in range(count)]
        sending = cocotb.start_soon(io.send_samples(samples))
        results = await io.out.receive(pairs * count)
        firsts = await sending
        assert [t.payload for t in results] == expected_beats(config, samples, mults, shifts)
        lasts = [t.cycle for t in results if t.payload["last"]]
        if count == 1:
            cycles = lasts[0] - firsts[0] + 1
            assert cycles == n + pairs * beats + pipeline_latency(config), cycles
            dut._log.info("one sample (n=%d, D=%d): %d cycles", n, dim, cycles)
        else:
            assert list(np.diff(lasts)) == [max(n, pairs * beats)] * (count - 1), lasts
            dut._log.info("back to back: one sample every %d cycles", lasts[1] - lasts[0])
