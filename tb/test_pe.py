"""cocotb test of the processing element (hw/pe.py) against its model, cycle by cycle.

Stimulus, expected outputs and the scoreboard are those of ``tb/unit_models/pe.py``, the
same the Amaranth-simulator test in ``tests/test_pe.py`` uses; widths come from the
configuration in the manifest.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from rpaccel.tb.common import setup
from rpaccel.tb.unit_models.pe import PEModel, random_inputs


@cocotb.test()
async def random_mac_and_weight_loads(dut):
    """Random activations, banks, partial sums and weight loads for 2000 cycles; every output
    is checked against the cell's definition: ``psum_out`` one cycle after ``psum_in`` plus
    the product of the activation and weight one cycle before that."""
    bench = await setup(dut)
    model = PEModel(bench.config)
    cycles = 2000
    for cycle, inputs in enumerate(random_inputs(bench.config, bench.rng, cycles)):
        await FallingEdge(dut.clk)  # drive between edges; sample after the next rising edge
        for name, value in inputs._asdict().items():
            getattr(dut, name).value = value
        await ReadOnly()
        assert dut.weight_out.value.to_signed() == model.weight_out(inputs), \
            f"cycle {cycle}: weight_out"
        await RisingEdge(dut.clk)
        await ReadOnly()
        expected = model.step(inputs)
        model.check(cycle, inputs, expected, {
            "psum_out": dut.psum_out.value.to_signed(),
            "act_out": dut.act_out.value.to_signed(),
            "bank_out": int(dut.bank_out.value)})
    dut._log.info("checked %d cycles", cycles)
