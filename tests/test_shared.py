"""Helpers of hw/shared.py the units build with: ``times_const`` (a constant multiply as
shifts and adds, so yosys takes no DSP for it) equals ``*`` on every value."""

import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from rpaccel.hw.shared import times_const


@settings(max_examples=40, deadline=None)
@given(factor=st.integers(0, 5000), signed_input=st.booleans(),
       values=st.lists(st.integers(0, 1023), min_size=1, max_size=16))
def test_times_const_equals_the_product(factor, signed_input, values):
    shape = signed(10) if signed_input else 10
    x = Signal(shape)
    y = Signal(signed(32))
    m = Module()
    m.d.comb += y.eq(times_const(x, factor))
    sim = Simulator(m)

    async def bench(ctx):
        for raw in values:
            value = raw - 512 if signed_input else raw
            ctx.set(x, value)
            assert ctx.get(y) == value * factor

    sim.add_testbench(bench)
    sim.run()


def test_times_const_refuses_a_negative_factor():
    with pytest.raises(ValueError, match="factor must be at least 0, not -3"):
        times_const(Signal(4), -3)
