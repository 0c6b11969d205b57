"""cocotb test of the vector unit (hw/vector.py) against the numpy golden, on Verilator and
Icarus.

Rows (extreme values and random ones) are driven with random valid gaps and the results
taken with random backpressure, the pattern being a test parameter; a scoreboard compares
every result row with ``acc + bias`` (wrapped to ``acc_width``) passed through
``numerics.requantize`` (or kept as the score). A second test checks the documented latency
and one row per cycle in RTL.

Payloads are packed and unpacked with the hardware's own layouts (``rpaccel.hw.vector``);
the streams are driven and taken with ``rpaccel.tb.cocotb_streams``.
"""

import numpy as np

import cocotb

from rpaccel.hw.vector import VectorUnit, in_layout, out_layout
from rpaccel.sim import numerics
from rpaccel.sim.numerics import wrap
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup

#: Probability of an idle cycle before each input beat, of ready low on the output.
STALL_PATTERNS = {"full_rate": (0.0, 0.0), "gaps": (0.3, 0.0), "backpressure": (0.0, 0.4),
                  "gaps_and_backpressure": (0.3, 0.3)}



def golden(config, row) -> list[int]:
    s = wrap(np.add(row["acc"], row["bias"], dtype=np.int64), config.acc_width)
    if row["score"]:
        return s.tolist()
    return numerics.requantize(s, row["mult"], row["shift"], relu=bool(row["relu"]),
                               width=config.operand_width, acc_width=config.acc_width,
                               mult_width=config.requant_mult_width).tolist()


def make_rows(config, rng, count):
    """Random rows (shift mostly near the product's magnitude so results spread) and the
    extremes: int32 limits, multiplier 0/max, shifts 0/1/31/47/63, halves, scores."""
    aw, cp, mw = config.acc_width, config.partition_cols, config.requant_mult_width
    lo, hi, mmax = -(1 << (aw - 1)), (1 << (aw - 1)) - 1, (1 << mw) - 1
    rows = []
    specials = [lo, hi, -5, 5, -3, 3, 0, -1, 255, -257]
    for shift in (0, 1, 31, 47, 63):
        for mult in (0, 1, mmax):
            accs = [int(v) for v in rng.choice(specials, cp)]
            rows.append({"acc": accs, "bias": [0] * cp, "mult": mult, "shift": shift,
                         "relu": int(rng.integers(2)), "score": 0, "last": 0})
    for _ in range(count):
        scale = int(rng.integers(1, aw))
        row = {"acc": [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)],
               "bias": [int(v) for v in rng.integers(-(1 << scale), 1 << scale, cp)],
               "mult": int(rng.integers(0, 1 << mw)),
               "shift": int(np.clip(scale + mw - 8 + rng.integers(-3, 4), 0, 63)),
               "relu": int(rng.integers(2)), "score": int(rng.random() < 0.1),
               "last": int(rng.random() < 0.2)}
        if rng.random() < 0.1:
            row["acc"] = [int(v) for v in rng.choice([lo, hi], cp)]
            row["bias"] = [int(v) for v in rng.choice([lo, hi, 0], cp)]
        rows.append(row)
    rows[-1]["last"] = 1
    return rows


def scoreboard(config, rows, results):
    assert len(results) == len(rows)
    for i, (row, res) in enumerate(zip(rows, results)):
        want = golden(config, row)
        assert res["data"] == want and res["last"] == row["last"], (
            f"row {i}: got {res['data']} last={res['last']}, expected {want} "
            f"last={row['last']} for {row}")


def streams(bench, p_idle, p_busy):
    counter = CycleCounter(bench.dut.clk)
    driver = StreamDriver(bench.dut, "inp", in_layout(bench.config), counter=counter,
                          rng=child_rng(bench.rng), idle=p_idle)
    sink = StreamSink(bench.dut, "out", out_layout(bench.config), counter=counter,
                      rng=child_rng(bench.rng), backpressure=p_busy)
    return driver, sink


@cocotb.test()
@cocotb.parametrize(stalls=list(STALL_PATTERNS))
async def random_rows_vs_numpy(dut, stalls):
    """Extreme and random rows; every result compared with the golden in order."""
    bench = await setup(dut)
    driver, sink = streams(bench, *STALL_PATTERNS[stalls])
    rows = make_rows(bench.config, bench.rng, 250)
    cocotb.start_soon(driver.send(rows))
    results = await sink.receive(len(rows))
    scoreboard(bench.config, rows, [t.payload for t in results])
    dut._log.info("checked %d rows", len(rows))


@cocotb.test()
async def latency_and_one_row_per_cycle(dut):
    """Full rate: every row is accepted on consecutive cycles and leaves LATENCY cycles later."""
    bench = await setup(dut)
    driver, sink = streams(bench, 0.0, 0.0)
    rows = make_rows(bench.config, bench.rng, 60)
    sending = cocotb.start_soon(driver.send(rows))
    results = await sink.receive(len(rows))
    accepted = await sending
    scoreboard(bench.config, rows, [t.payload for t in results])
    emitted = [t.cycle for t in results]
    assert accepted == list(range(accepted[0], accepted[0] + len(rows))), "a bubble in the input"
    assert emitted == [t + VectorUnit.LATENCY for t in accepted], (accepted[:4], emitted[:4])
    dut._log.info("latency %d cycles, %d rows in %d cycles", VectorUnit.LATENCY, len(rows),
                  emitted[-1] - accepted[0] + 1)
