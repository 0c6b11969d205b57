"""Model of the processing element (hw/pe.py): random per-cycle inputs and the cell's outputs.

The cell has no streams: every cycle takes one set of inputs (:class:`PEInputs`) and the
model says what the outputs must be. :meth:`PEModel.weight_out` is combinational (before
the clock edge, for the inputs of this cycle); :meth:`PEModel.step` gives the registered
outputs after the edge and advances the model's state: the two weight banks, the operand
registers (the activation and the weight of its bank) and the product register, all 0 after
reset. Used by ``tests/test_pe.py`` (Amaranth simulator)
and ``tb/test_pe.py`` (cocotb).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.sim.numerics import qmax, qmin, wrap

__all__ = ["PEInputs", "PEModel", "random_inputs", "ECP5_MULTIPLIER_MODEL"]

#: Simulation model of the ECP5 DSP cell the ``ecp5`` multiplier instantiates (hw/pe.py):
#: build a design generated with ``multiplier="ecp5"`` with this file among its sources.
ECP5_MULTIPLIER_MODEL = Path(__file__).parents[1] / "ecp5_mult18x18d.v"


class PEInputs(NamedTuple):
    """One cycle's inputs, named as the cell's ports."""
    act_in: int
    bank_in: int
    psum_in: int
    weight_shift: int
    weight_bank: int
    weight_in: int


def random_inputs(config: AccelConfig, rng: np.random.Generator, cycles: int):
    """``cycles`` random input sets: activations and weights over the whole signed
    ``operand_width`` range, random banks, weight loads on about 30 % of the cycles, and
    partial sums half small, half over the whole ``acc_width`` range (so the accumulator's
    wrap-around is exercised)."""
    ow, aw = config.operand_width, config.acc_width
    lo, hi = qmin(ow), qmax(ow)
    small_bits = min(20, aw - 2)
    for _ in range(cycles):
        small = int(rng.integers(-(1 << small_bits), 1 << small_bits))
        wide = int(rng.integers(qmin(aw), qmax(aw), endpoint=True))
        yield PEInputs(act_in=int(rng.integers(lo, hi, endpoint=True)),
                       bank_in=int(rng.integers(2)),
                       psum_in=small if rng.random() < 0.5 else wide,
                       weight_shift=int(rng.random() < 0.3),
                       weight_bank=int(rng.integers(2)),
                       weight_in=int(rng.integers(lo, hi, endpoint=True)))


class PEModel:
    """The cell's definition, cycle by cycle (see :class:`~rpaccel.hw.pe.ProcessingElement`)."""

    def __init__(self, config: AccelConfig):
        self.acc_width = config.acc_width
        self.weights = [0, 0]   # the two banks (reset value 0)
        self.operands = (0, 0)  # the operand registers: act and weight of the previous cycle
        self.product = 0        # the product register: the operands' product a cycle later

    def weight_out(self, inputs: PEInputs) -> int:
        """``weight_out`` in the cycle ``inputs`` are applied (before the clock edge)."""
        return self.weights[inputs.weight_bank]

    def step(self, inputs: PEInputs) -> dict:
        """The registered outputs after the clock edge that samples ``inputs``; advances
        the weight banks, the operand registers and the product register."""
        expected = {"psum_out": int(wrap(inputs.psum_in + self.product, self.acc_width)),
                    "act_out": inputs.act_in, "bank_out": inputs.bank_in}
        self.product = self.operands[0] * self.operands[1]
        self.operands = (inputs.act_in, self.weights[inputs.bank_in])
        if inputs.weight_shift:
            self.weights[inputs.weight_bank] = inputs.weight_in
        return expected

    @staticmethod
    def check(cycle: int, inputs: PEInputs, expected: dict, got: dict) -> None:
        """Scoreboard of one cycle: ``got`` must equal ``expected`` (the message names the
        cycle, the first wrong output and the inputs)."""
        for name, want in expected.items():
            assert got[name] == want, (f"cycle {cycle}: {name} {got[name]} != {want} "
                                       f"(inputs {inputs._asdict()})")
