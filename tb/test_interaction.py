"""cocotb test of the feature-interaction unit (hw/interaction.py) against
``numerics.interaction``, on Verilator and Icarus.

The pair parameters are written through ``pair_params``, then samples (n = 2, 9, max and
random; D = 1, 4 (packed), lanes, not a multiple of lanes, emb_dim_max; three bad samples
among them)
are driven with random valid gaps while the results are taken with random backpressure,
the pattern being a test parameter. A scoreboard compares every output beat with the golden
in order. A second test measures in RTL the cycles of one sample alone and the period of
back-to-back samples against the documented formulas; a third resets the unit mid-stream.
Samples, expected beats and scoreboard: ``rpaccel.tb.unit_models.interaction``.

Payloads are packed and unpacked with the hardware's own layouts
(``rpaccel.hw.interaction``); the streams are driven and taken with
``rpaccel.tb.cocotb_streams``.
"""

import numpy as np

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from rpaccel.hw.interaction import (issue_cycles, out_layout, param_layout, pipeline_latency,
                                    vector_layout)
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup
from rpaccel.tb.unit_models.interaction import (check, expected_beats, param_writes,
                                                random_params, random_sample)

#: Probability of an idle cycle before each input beat, of ready low on the output.
STALL_PATTERNS = {"full_rate": (0.0, 0.0), "gaps": (0.3, 0.0), "backpressure": (0.0, 0.4),
                  "gaps_and_backpressure": (0.3, 0.3)}


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
        await self.params.send(param_writes(mults, shifts))

    async def send_samples(self, samples) -> list[int]:
        """Each sample's ``dim`` is set before its first vector; returns the cycle of every
        sample's first vector transfer."""
        firsts = []
        for sample in samples:
            self.dut.dim.value = sample.dim
            cycles = await self.vectors.send(sample.beats())
            firsts.append(cycles[0])
        return firsts


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
    check(config, samples, got, mults, shifts)
    assert sum(b["error"] for b in got) == 3
    dut._log.info("checked %d samples, %d beats", len(samples), len(want))


@cocotb.test()
async def cycle_counts_in_rtl(dut):
    """n = 9 (the MovieLens models), D = 4 (packed where the lanes allow) and 16: one sample
    alone takes n + 1 + issue_cycles(n, D) + latency cycles from its first vector to its last
    result; back-to-back samples leave one every max(n, issue_cycles(n, D)) cycles."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    io = Streams(bench, 0.0, 0.0)
    mults, shifts = random_params(config, rng)
    await io.write_params(mults, shifts)
    n = 9
    for dim in (4, 16):
        issue = issue_cycles(config, n, dim)
        for count in (1, 4):
            samples = [random_sample(config, rng, n, dim) for _ in range(count)]
            want = expected_beats(config, samples, mults, shifts)
            sending = cocotb.start_soon(io.send_samples(samples))
            results = await io.out.receive(len(want))
            firsts = await sending
            check(config, samples, [t.payload for t in results], mults, shifts)
            lasts = [t.cycle for t in results if t.payload["last"]]
            if count == 1:
                cycles = lasts[0] - firsts[0] + 1
                assert cycles == n + 1 + issue + pipeline_latency(config), (dim, cycles)
                dut._log.info("one sample (n=%d, D=%d): %d cycles", n, dim, cycles)
            else:
                assert list(np.diff(lasts)) == [max(n, issue)] * (count - 1), (dim, lasts)
                dut._log.info("D=%d back to back: one sample every %d cycles", dim,
                              lasts[1] - lasts[0])


@cocotb.test()
async def reset_takes_nothing_and_the_unit_works_after(dut):
    """A 3-cycle reset while a vector and a parameter write are offered and results are
    offered on ``out``: during reset no ready and no ``out.valid`` is high; after it the cut
    sample is forgotten, the parameters written before stay, and the next samples are exact."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    io = Streams(bench, 0.0, 0.0)
    mults, shifts = random_params(config, rng)
    await io.write_params(mults, shifts)
    vmax = config.max_interaction_vectors
    first = [random_sample(config, rng, vmax, config.emb_dim_max),
             random_sample(config, rng, 5, 3)]
    await io.send_samples(first[:1])
    await io.vectors.send(first[1].beats()[:2])   # the second sample is cut by the reset
    for _ in range(20):                             # results of the first are offered
        await FallingEdge(dut.clk)
    await ReadOnly()
    assert int(dut.out__valid.value) == 1, "no result offered before the reset"
    await FallingEdge(dut.clk)
    dut.vectors__payload.value = vector_layout(config).const(first[1].beats()[2]).as_bits()
    dut.vectors__valid.value = 1
    dut.pair_params__payload.value = param_layout(config).const(
        {"index": 0, "mult": 1, "shift": 0}).as_bits()
    dut.pair_params__valid.value = 1
    dut.rst.value = 1
    for _ in range(3):
        await ReadOnly()
        for port in ("vectors__ready", "pair_params__ready", "out__valid"):
            assert int(getattr(dut, port).value) == 0, f"{port} high during reset"
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.vectors__valid.value = 0
    dut.pair_params__valid.value = 0
    samples = [random_sample(config, rng, 9, 4), random_sample(config, rng, 1, 4),
               random_sample(config, rng, vmax, config.interaction_lanes + 1)]
    want = expected_beats(config, samples, mults, shifts)
    cocotb.start_soon(io.send_samples(samples))
    got = [t.payload for t in await io.out.receive(len(want))]
    check(config, samples, got, mults, shifts)
