"""Processing element (hw/pe.py): Amaranth-simulator unit test, lint, cocotb on both simulators."""

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_bench, run_icarus, unavailable_reason
from rpaccel.hw.pe import ProcessingElement
from rpaccel.tb.amaranth_sim import simulate
from rpaccel.tb.unit_models.pe import ECP5_MULTIPLIER_MODEL, PEModel, random_inputs


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


def test_pe_with_the_ecp5_dsp_cell_passes_the_same_bench(simulator):
    """The ECP5 form of the multiplier (MULT18X18D with its input and output registers, as
    ``rpaccel synth`` builds it for that target) is the same cell as the portable one: the
    same bench, against the same model, cycle by cycle, on the cell's simulation model."""
    config = PRESETS["default"]
    generated = generate(config, "pe", multiplier="ecp5")
    assert "MULT18X18D" in generated.verilog.read_text()
    assert generate(config, "pe").verilog != generated.verilog      # its own folder
    run_bench(generated, simulator, build_args=[str(ECP5_MULTIPLIER_MODEL)])


@pytest.mark.skipif(unavailable_reason("icarus") is not None,
                    reason=f"icarus unavailable: {unavailable_reason('icarus')}")
def test_the_ecp5_cell_model_refuses_a_mode_it_does_not_model(tmp_path):
    """The DSP model stops at time zero on a register mode it does not implement, rather
    than simulating it as something else."""
    (tmp_path / "top.v").write_text(
        'module top; MULT18X18D #(.REG_PIPELINE_CLK("CLK0")) dsp(); endmodule\n')
    run = run_icarus(["top.v", ECP5_MULTIPLIER_MODEL], tmp_path)
    assert "only CLK0/CE0/RST0 A/B/output registers" in run.stdout + run.stderr
    assert run.returncode != 0


def test_an_unknown_multiplier_is_refused():
    with pytest.raises(ValueError, match="multiplier must be one of portable, ecp5, not 'dsp'"):
        ProcessingElement(PRESETS["tiny"], multiplier="dsp")
    with pytest.raises(ValueError, match="not 'dsp'"):
        generate(PRESETS["tiny"], "pe", multiplier="dsp")
