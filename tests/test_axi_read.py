"""AXI4 word reader (hw/axi_read.py): validation, lint, and the cocotb bench of every word
size (narrower than, as wide as and wider than a bus beat) on both simulators."""

import pytest

from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.axi_read import AxiWordReader
from rpaccel.hw.config import PRESETS


def test_word_size_is_validated():
    with pytest.raises(ValueError, match="word_bytes must be a power of two up to 4096, not 12"):
        AxiWordReader(PRESETS["tiny"], 12)


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_lint_clean(preset):
    proc = lint(generate(PRESETS[preset], "axi_read_harness").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_axi_word_reader(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "axi_read_harness"), simulator,
               "rpaccel.tb.test_axi_read")
