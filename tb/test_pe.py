"""cocotb test of the processing element (hw/pe.py) against a numpy model, cycle by cycle."""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from rpaccel.sim.numerics import wrap
from rpaccel.tb.common import setup



@cocotb.test()
async def random_mac_and_weight_loads(dut):
    """Random activations, banks, partial sums and weight loads for 2000 cycles; every output
    is checked against the cell's definition: ``psum_out`` one cycle after ``psum_in`` plus
    the product of the activation and weight one cycle before that."""
    bench = await setup(dut)
    ow, aw = bench.config.operand_width, bench.config.acc_width
    rng = bench.rng
    lo, hi = -(1 << (ow - 1)), 1 << (ow - 1)
    weights = [0, 0]  # the model's two banks (reset value 0)
    product = 0       # the cell's product register: act * weight of the previous cycle
    cycles = 2000
    for cycle in range(cycles):
        act = int(rng.integers(lo, hi))
        bank = int(rng.integers(0, 2))
        # Extreme partial sums included, so wrap-around is exercised too.
        psum = int(rng.choice([rng.integers(-(1 << 20), 1 << 20),
                               rng.integers(-(1 << (aw - 1)), 1 << (aw - 1))]))
        shift = int(rng.random() < 0.3)
        load_bank = int(rng.integers(0, 2))
        weight_in = int(rng.integers(lo, hi))
        await FallingEdge(dut.clk)  # drive between edges; sample after the next rising edge
        dut.act_in.value = act
        dut.bank_in.value = bank
        dut.psum_in.value = psum
        dut.weight_in.value = weight_in
        dut.weight_shift.value = shift
        dut.weight_bank.value = load_bank
        await ReadOnly()
        assert dut.weight_out.value.to_signed() == weights[load_bank], f"cycle {cycle}: weight_out"
        expected = wrap(psum + product, aw)
        await RisingEdge(dut.clk)
        await ReadOnly()
        got = dut.psum_out.value.to_signed()
        assert got == expected, (f"cycle {cycle}: psum_out {got} != {expected} "
                                 f"(psum_in {psum} + registered product {product})")
        assert dut.act_out.value.to_signed() == act, f"cycle {cycle}: act_out"
        assert int(dut.bank_out.value) == bank, f"cycle {cycle}: bank_out"
        product = act * weights[bank]
        if shift:
            weights[load_bank] = weight_in
    dut._log.info("checked %d cycles", cycles)
