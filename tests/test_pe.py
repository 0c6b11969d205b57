"""Processing element (hw/pe.py): Amaranth-simulator unit test, lint, cocotb on both simulators."""

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb, unavailable_reason
from rpaccel.hw.pe import ProcessingElement
from rpaccel.sim.numerics import wrap
from rpaccel.tb.amaranth_sim import simulate



def test_pe_against_model_in_amaranth_simulator():
    """Random inputs every cycle; ``psum_out`` in cycle t+1 must be ``psum_in`` of cycle t
    plus the product registered in cycle t-1 (activation, bank and weights of that cycle)."""
    config = PRESETS["tiny"]
    dut = ProcessingElement(config)
    rng = np.random.default_rng(1)
    checked = []

    async def bench(ctx):
        weights = [0, 0]
        product = 0  # the product register (reset value 0)
        for cycle in range(500):
            act, bank = int(rng.integers(-128, 128)), int(rng.integers(2))
            psum = int(rng.integers(-(1 << 31), 1 << 31))
            shift, wbank, win = int(rng.random() < 0.3), int(rng.integers(2)), int(rng.integers(-128, 128))
            for sig, val in ((dut.act_in, act), (dut.bank_in, bank), (dut.psum_in, psum),
                             (dut.weight_shift, shift), (dut.weight_bank, wbank),
                             (dut.weight_in, win)):
                ctx.set(sig, val)
            assert ctx.get(dut.weight_out) == weights[wbank]
            await ctx.tick()
            assert ctx.get(dut.psum_out) == wrap(psum + product, 32), cycle
            assert ctx.get(dut.act_out) == act and ctx.get(dut.bank_out) == bank
            product = act * weights[bank]
            if shift:
                weights[wbank] = win
            checked.append(cycle)

    simulate(dut, [bench], max_cycles=1000)
    assert len(checked) == 500


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_pe_verilog_lints_clean(preset):
    out = generate(PRESETS[preset], "pe")
    proc = lint(out.verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(unavailable_reason("icarus") is not None,
                    reason=f"icarus unavailable: {unavailable_reason('icarus')}")
def test_pe_verilog_compiles_under_icarus(tmp_path):
    import subprocess
    out = generate(PRESETS["tiny"], "pe")
    proc = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "pe.vvp"), str(out.verilog)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pe_cocotb(simulator):
    run_cocotb(generate(PRESETS["default"], "pe"), simulator, "rpaccel.tb.test_pe")
