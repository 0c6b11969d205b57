"""cocotb test of the vector unit (hw/vector.py) against the numpy golden, on Verilator and
Icarus.

Rows (the extreme values and random ones of the unit model, ``tb/unit_models/vector.py``,
shared with ``tests/test_vector.py``) are driven with random valid gaps and the results
taken with random backpressure, the pattern being a test parameter; the model's scoreboard
compares every result row with ``acc + bias`` (wrapped to ``acc_width``) passed through
``numerics.requantize`` (or kept as the score). A second test checks the documented latency
and one row per cycle in RTL.

Payloads are packed and unpacked with the hardware's own layouts (``rpaccel.hw.vector``);
the streams are driven and taken with ``rpaccel.tb.cocotb_streams``.
"""

import cocotb

from rpaccel.hw.vector import VectorUnit, in_layout, out_layout
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import setup
from rpaccel.tb.unit_models.vector import check_results, extreme_rows, random_rows

#: Probability of an idle cycle before each input beat, of ready low on the output.
STALL_PATTERNS = {"full_rate": (0.0, 0.0), "gaps": (0.3, 0.0), "backpressure": (0.0, 0.4),
                  "gaps_and_backpressure": (0.3, 0.3)}



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
    rows = extreme_rows(bench.config) + random_rows(bench.config, bench.rng, 250)
    cocotb.start_soon(driver.send(rows))
    results = await sink.receive(len(rows))
    check_results(bench.config, rows, [t.payload for t in results])
    dut._log.info("checked %d rows", len(rows))


@cocotb.test()
async def latency_and_one_row_per_cycle(dut):
    """Full rate: every row is accepted on consecutive cycles and leaves LATENCY cycles later."""
    bench = await setup(dut)
    driver, sink = streams(bench, 0.0, 0.0)
    rows = random_rows(bench.config, bench.rng, 60)
    sending = cocotb.start_soon(driver.send(rows))
    results = await sink.receive(len(rows))
    accepted = await sending
    check_results(bench.config, rows, [t.payload for t in results])
    emitted = [t.cycle for t in results]
    assert accepted == list(range(accepted[0], accepted[0] + len(rows))), "a bubble in the input"
    assert emitted == [t + VectorUnit.LATENCY for t in accepted], (accepted[:4], emitted[:4])
    dut._log.info("latency %d cycles, %d rows in %d cycles", VectorUnit.LATENCY, len(rows),
                  emitted[-1] - accepted[0] + 1)
