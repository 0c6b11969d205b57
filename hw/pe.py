"""Processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig

__all__ = ["ProcessingElement", "PRODUCT_LATENCY"]

#: Cycles from an activation entering a cell to its product entering the partial-sum adder.
PRODUCT_LATENCY = 1


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell: ``psum_out = psum_in + product``, where ``product`` is
    ``act_in * weight[bank_in]`` registered one cycle earlier.

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
        Partial sum from above. ``psum_out`` in cycle ``t + 1`` is ``psum_in`` of cycle ``t``
        plus the product of the activation and weight of cycle ``t - 1``: the multiplier
        has its own pipeline register (:data:`PRODUCT_LATENCY`), so the path through the
        DSP block and the one through the adder are separate register-to-register paths
        (on an ECP5-85k the 8x8 array closes at about 94 MHz instead of 62 MHz). In an
        array every cell has the same extra cycle, so the skew between activations and
        partial sums is unchanged and the array's latency grows by one.
        The sum wraps modulo ``2**acc_width`` (docs/numerics.md shows it cannot overflow
        for layers within the configured limits).
    weight_in, weight_out : signed(operand_width)
        Weight-load chain. While ``weight_shift`` is high, ``weight[weight_bank]`` takes
        ``weight_in`` at the clock edge. ``weight_out`` shows ``weight[weight_bank]``, so a
        column of cells forms a shift register for the bank being loaded.
    weight_shift, weight_bank : 1
        Load enable and the bank being loaded (shared by a column or a whole partition).

    Latency: 1 cycle from ``act_in``/``bank_in`` to ``act_out``/``bank_out`` and from
    ``psum_in`` to ``psum_out``; 2 cycles from ``act_in`` to its contribution in
    ``psum_out``. The weight used is the one held when the activation arrives. Throughput
    one MAC per cycle. There is no enable: the array around the cell never stalls (flow
    control is done with credits at its edges).

    Reset: while ``rst`` is asserted both weights, the product register and every output
    are held at zero and ``weight_shift`` has no effect (the cell has no stream ports; the
    array around it refuses beats under reset).
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

        product = Signal(signed(2 * ow))
        m.d.sync += [
            product.eq(self.act_in * Mux(self.bank_in, weight[1], weight[0])),
            self.act_out.eq(self.act_in),
            self.bank_out.eq(self.bank_in),
            self.psum_out.eq(self.psum_in + product),
        ]
        return m
