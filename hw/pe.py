"""Processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.gen.config import AccelConfig

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell: ``psum_out = psum_in + act_in * weight[bank_in]``.

    The cell is *weight-stationary*: it holds its weight while a stream of activations
    passes through it left to right and partial sums pass top to bottom. It holds two
    weights (banks 0 and 1) so that the next tile's weight can be loaded while the
    current tile computes; every activation carries the bank it is to be multiplied with,
    so the switch to the new tile travels through the array together with the data.

    Ports
    -----
    act_in, act_out : signed(operand_width)
        Activation from the left neighbour; passed on to the right, one cycle later.
    bank_in, bank_out : 1
        Weight bank ``act_in`` multiplies with; passed on with the activation.
    psum_in, psum_out : signed(acc_width)
        Partial sum from above; ``psum_in + act_in * weight[bank_in]`` below, one cycle later.
        The sum wraps modulo ``2**acc_width`` (docs/numerics.md shows it cannot overflow
        for layers within the configured limits).
    weight_in, weight_out : signed(operand_width)
        Weight-load chain. While ``weight_shift`` is high, ``weight[weight_bank]`` takes
        ``weight_in`` at the clock edge. ``weight_out`` shows ``weight[weight_bank]``, so a
        column of cells forms a shift register for the bank being loaded.
    weight_shift, weight_bank : 1
        Load enable and the bank being loaded (shared by a column or a whole partition).

    Latency 1 cycle on every path; throughput one MAC per cycle. There is no enable: the
    array around the cell never stalls (flow control is done with credits at its edges).
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        ow, aw = config.operand_width, config.acc_width
        super().__init__({
            "act_in": In(signed(ow)),
            "bank_in": In(1),
            "psum_in": In(signed(aw)),
            "act_out": Out(signed(ow)),
            "bank_out": Out(1),
            "psum_out": Out(signed(aw)),
            "weight_in": In(signed(ow)),
            "weight_shift": In(1),
            "weight_bank": In(1),
            "weight_out": Out(signed(ow)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        ow = self._config.operand_width
        weight = [Signal(signed(ow), name=f"weight{bank}") for bank in range(2)]

        with m.If(self.weight_shift):
            with m.If(self.weight_bank):
                m.d.sync += weight[1].eq(self.weight_in)
            with m.Else():
                m.d.sync += weight[0].eq(self.weight_in)
        m.d.comb += self.weight_out.eq(Mux(self.weight_bank, weight[1], weight[0]))

        product = self.act_in * Mux(self.bank_in, weight[1], weight[0])
        m.d.sync += [
            self.act_out.eq(self.act_in),
            self.bank_out.eq(self.bank_in),
            self.psum_out.eq(self.psum_in + product),
        ]
        return m
