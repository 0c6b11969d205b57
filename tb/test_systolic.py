"""cocotb test of the systolic array (hw/systolic.py) against numpy, on Verilator and Icarus.

Every partition gets its own random tiles (1 row, fewer than R, R and more rows) at the same
time. Weights and activations go in through :class:`~rpaccel.tb.cocotb_streams.StreamDriver`
with random valid gaps, results come out through :class:`~rpaccel.tb.cocotb_streams.StreamSink`
with random backpressure; the stall pattern is a test parameter. A scoreboard per partition
compares each result row, in order, with ``x @ W`` (int64, wrapped to ``acc_width``).
A second test checks in RTL the documented latency and one row per cycle across tile
boundaries, from the transfer cycles the drivers stamp.

Payloads are packed and unpacked with the hardware's own layouts (``rpaccel.hw.systolic``).
"""

import numpy as np

import cocotb

from rpaccel.hw.systolic import act_layout, pipeline_latency, result_layout, weight_layout
from rpaccel.sim.numerics import wrap
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup

#: Probability of an idle cycle before each input beat, of ready low on results. (Names of
#: at most 10 characters: cocotb names the tests after them, e.g. ``.../stalls=both``.)
STALL_PATTERNS = {"none": (0.0, 0.0), "gaps": (0.3, 0.0), "backpress": (0.0, 0.4),
                  "both": (0.3, 0.3)}



def random_job(config, rng, counts):
    """Tiles [(W (R x Cp), X (B x R)), ...] of full-range ``operand_width`` values, B from
    ``counts``."""
    R, Cp, lo = config.rows, config.partition_cols, -(1 << (config.operand_width - 1))
    return [(rng.integers(lo, -lo, (R, Cp)), rng.integers(lo, -lo, (b, R))) for b in counts]


def beats(tiles):
    """The weights and activation payloads of ``tiles``, as the streams carry them."""
    weights = [[int(v) for v in row] for w, _ in tiles for row in w]
    acts = [{"data": [int(v) for v in row], "last": int(i == len(x) - 1)}
            for _, x in tiles for i, row in enumerate(x)]
    return weights, acts


def scoreboard(config, p, tiles, transfers):
    expected = np.concatenate([wrap(x.astype(np.int64) @ w.astype(np.int64), config.acc_width)
                               for w, x in tiles])
    lasts = [int(i == len(x) - 1) for _, x in tiles for i in range(len(x))]
    assert len(transfers) == len(expected), \
        f"partition {p}: {len(transfers)} results, expected {len(expected)}"
    for i, (item, exp, last) in enumerate(zip(transfers, expected, lasts)):
        row = item.payload
        assert row["data"] == exp.tolist() and row["last"] == last, (
            f"partition {p} row {i}: got {row['data']} last={row['last']}, "
            f"expected {exp.tolist()} last={last}")


def start_partition(bench, counter, p, tiles, idle, backpressure):
    """Start the weight and activation drivers and the result sink of partition ``p``;
    returns the tasks (weights, acts, results), each resolving to its transfer cycles /
    transfers."""
    dut, config, rng = bench.dut, bench.config, bench.rng
    weights, acts = beats(tiles)
    w_drv = StreamDriver(dut, f"weights__{p}", weight_layout(config), counter=counter,
                         rng=child_rng(rng), idle=idle)
    a_drv = StreamDriver(dut, f"acts__{p}", act_layout(config), counter=counter,
                         rng=child_rng(rng), idle=idle)
    sink = StreamSink(dut, f"results__{p}", result_layout(config), counter=counter,
                      rng=child_rng(rng), backpressure=backpressure)
    return (cocotb.start_soon(w_drv.send(weights)), cocotb.start_soon(a_drv.send(acts)),
            cocotb.start_soon(sink.receive(len(acts))))


@cocotb.test()
@cocotb.parametrize(stalls=list(STALL_PATTERNS))
async def random_tiles_vs_numpy(dut, stalls):
    """All partitions at once, each with its own tile count and row counts."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    R = config.rows
    idle, backpressure = STALL_PATTERNS[stalls]
    counter = CycleCounter(dut.clk)
    jobs, tasks = [], []
    for p in range(config.partitions):
        counts = [1, R - 1, R, 2 * R + 1] + [int(b) for b in rng.integers(1, 2 * R, 4 + p)]
        rng.shuffle(counts)
        jobs.append(random_job(config, rng, counts))
        tasks.append(start_partition(bench, counter, p, jobs[p], idle, backpressure))
    for p, (w_task, a_task, r_task) in enumerate(tasks):
        scoreboard(config, p, jobs[p], await r_task)
        rows = sum(len(x) for _, x in jobs[p])
        assert int(getattr(dut, f"busy__{p}").value) == rows
    dut._log.info("stalls %s: checked %s rows in %d cycles", stalls,
                  [sum(len(x) for _, x in tiles) for tiles in jobs], counter.cycle)


@cocotb.test()
async def latency_and_back_to_back_throughput(dut):
    """Full rate, tiles of 2R rows: the first row goes as soon as its R weight beats are in,
    then one row per cycle through every tile boundary; each result exactly
    ``pipeline_latency`` cycles after its row."""
    bench = await setup(dut)
    config, rng = bench.config, bench.rng
    R, L = config.rows, pipeline_latency(config)
    tiles_per_partition = 4
    rows = tiles_per_partition * 2 * R
    counter = CycleCounter(dut.clk)
    jobs = [random_job(config, rng, [2 * R] * tiles_per_partition)
            for _ in range(config.partitions)]
    tasks = [start_partition(bench, counter, p, jobs[p], 0.0, 0.0)
             for p in range(config.partitions)]
    for p, (w_task, a_task, r_task) in enumerate(tasks):
        results = await r_task
        scoreboard(config, p, jobs[p], results)
        weight_cycles, accepted = await w_task, await a_task
        first = weight_cycles[0] + R
        assert accepted == list(range(first, first + rows)), \
            f"partition {p}: rows accepted in cycles {accepted}, expected {first}..{first + rows - 1}"
        emitted = [item.cycle for item in results]
        assert emitted == [t + L for t in accepted], f"partition {p}: latency is not {L}"
        assert int(getattr(dut, f"output_stalls__{p}").value) == 0
    dut._log.info("latency %d cycles; %d rows per partition in %d consecutive cycles",
                  L, rows, rows)
