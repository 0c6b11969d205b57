"""Processing element (hw/pe.py): Amaranth-simulator unit test, lint, cocotb on both simulators."""

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_bench, unavailable_reason
from rpaccel.hw.pe import ProcessingElement
from rpaccel.tb.amaranth_sim import simulate
from rpaccel.tb.unit_models.pe import PEModel, random_inputs


def test_pe_against_model_in_amaranth_simulator():
    """Random inputs every cycle (tb/unit_models/pe.py); ``weight_out`` before each edge and
    ``psum_out``, ``act_out``, ``bank_out`` after it must be what the model says: the partial
    sum plus the product registered one cycle earlier, the activation and bank passed on."""
    config = PRESETS["tiny"]
    dut = ProcessingElement(config)
    model = PEModel(config)
    stimulus = list(random_inputs(config, np.random.default_rng(1), 500))
    checked = []

    async def bench(ctx):
        for cycle, inputs in enumerate(stimulus):
            for name, value in inputs._asdict().items():
                ctx.set(getattr(dut, name), value)
            assert ctx.get(dut.weight_out) == model.weight_out(inputs), cycle
            await ctx.tick()
            expected = model.step(inputs)
            model.check(cycle, inputs, expected,
                        {name: ctx.get(getattr(dut, name)) for name in expected})
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


@pytest.mark.parametrize("config", [PRESETS["default"], PRESETS["default"].replace(
    operand_width=6, acc_width=20)], ids=["default", "ow6-aw20"])
def test_pe_cocotb(simulator, config):
    run_bench(generate(config, "pe"), simulator)
