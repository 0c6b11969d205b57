"""Processing element of the weight-stationary systolic array."""

from amaranth import ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig

__all__ = ["ProcessingElement", "PRODUCT_LATENCY", "MULTIPLIERS", "check_multiplier",
           "ecp5_multiplier"]

#: How the cell's multiplier is written: ``portable`` RTL (registers and ``*``, any tool),
#: or ``ecp5``, an instance of the ECP5's MULT18X18D with its input and output registers
#: switched on (Yosys infers the DSP block from the portable form but leaves the registers
#: in the fabric, so the multiply is one long register-to-register path through it).
MULTIPLIERS = ("portable", "ecp5")


def check_multiplier(multiplier: str) -> str:
    """``multiplier`` if it is one of :data:`MULTIPLIERS`, else ValueError naming it."""
    if multiplier not in MULTIPLIERS:
        raise ValueError(f"multiplier must be one of {', '.join(MULTIPLIERS)}, "
                         f"not {multiplier!r}")
    return multiplier

#: Cycles from an activation entering a cell to its product entering the partial-sum adder:
#: the operand registers (the activation and the weight of its bank) and the product
#: register, the input and output registers of an ECP5 MULT18X18D.
PRODUCT_LATENCY = 2


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell: ``psum_out = psum_in + product``, where ``product`` is
    ``act_in * weight[bank_in]`` of two cycles earlier (operand and product registers).

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
        plus the product of the activation and weight of cycle ``t - 2``: the multiplier
        has registered operands and a registered product (:data:`PRODUCT_LATENCY` = 2), so
        the weight-bank mux, the DSP block and the adder are three separate
        register-to-register paths (one register: the 8x8 array closed at about 94 MHz
        instead of 62 MHz on an ECP5-85k; the operand registers take the bank mux and the
        routing into the DSP off that path). In an array every cell has the same extra
        cycles, so the skew between activations and partial sums is unchanged and the
        array's latency grows by the same amount.
        The sum wraps modulo ``2**acc_width`` (docs/numerics.md shows it cannot overflow
        for layers within the configured limits).
    weight_in, weight_out : signed(operand_width)
        Weight-load chain. While ``weight_shift`` is high, ``weight[weight_bank]`` takes
        ``weight_in`` at the clock edge. ``weight_out`` shows ``weight[weight_bank]``, so a
        column of cells forms a shift register for the bank being loaded.
    weight_shift, weight_bank : 1
        Load enable and the bank being loaded (shared by a column or a whole partition).

    Latency: 1 cycle from ``act_in``/``bank_in`` to ``act_out``/``bank_out`` and from
    ``psum_in`` to ``psum_out``; ``PRODUCT_LATENCY + 1`` = 3 cycles from ``act_in`` to its
    contribution in ``psum_out``. The weight used is the one held when the activation arrives. Throughput
    one MAC per cycle. There is no enable: the array around the cell never stalls (flow
    control is done with credits at its edges).

    Multiplier: ``multiplier`` (:data:`MULTIPLIERS`) picks portable RTL or the ECP5's
    MULT18X18D with its own registers (:func:`ecp5_multiplier`); the two are the same
    function with the same timing (``tests/test_pe.py`` runs the same bench on both).

    Reset: while ``rst`` is asserted both weights, the operand and product registers and
    every output are held at zero and ``weight_shift`` has no effect (the cell has no stream
    ports; the array around it refuses beats under reset).
    """

    def __init__(self, config: AccelConfig, multiplier: str | None = None):
        self._config = config
        # None: the conversion's choice (``hw/shared.py``), portable outside a conversion
        self._multiplier = None if multiplier is None else check_multiplier(multiplier)
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

        # Operand registers, then the product register: the DSP block's own input and
        # output registers on ECP5. The multiplier is the constructor's choice, else the
        # conversion's (``hw/shared.py``: ``convert(..., multiplier=)``), else portable.
        product = Signal(signed(2 * ow))
        weight_now = Mux(self.bank_in, weight[1], weight[0])
        kind = self._multiplier or getattr(platform, "multiplier", "portable")
        if kind == "ecp5":
            m.submodules.mult = ecp5_multiplier(self.act_in, weight_now, product)
        else:
            act = Signal(signed(ow))
            weight_used = Signal(signed(ow))
            m.d.sync += [act.eq(self.act_in), weight_used.eq(weight_now),
                         product.eq(act * weight_used)]
        m.d.sync += [
            self.act_out.eq(self.act_in),
            self.bank_out.eq(self.bank_in),
            self.psum_out.eq(self.psum_in + product),
        ]
        return m


def ecp5_multiplier(a, b, product, ce=None) -> Module:
    """An ECP5 MULT18X18D computing ``product`` = ``a * b`` of two cycles earlier: operands
    sign-extended to 18 bits into the block's input registers, the product from its output
    register (both clocked by the ``sync`` domain, synchronous reset to zero like the
    portable registers, no pipeline register); ``ce``, if given, is the registers' clock
    enable (reset does not wait for it). ``tb/ecp5_mult18x18d.v`` is a simulation
    model of exactly this mode (Yosys ships only a black box of the cell)."""
    assert len(a) <= 18 and len(b) <= 18 and len(product) <= 36
    a18, b18, p36 = Signal(signed(18)), Signal(signed(18)), Signal(36)
    # Connected as Yosys's own DSP mapping does (share/lattice/dsp_map_18x18.v) plus the
    # one clock, enable and reset; the unused clocks, enables, resets and shift inputs stay
    # unconnected (nextpnr cannot route a constant to all of them: "Failed to find a route
    # for arc ... of net $PACKER_GND_NET").
    ports = {"i_CLK0": ClockSignal(), "i_CE0": Const(1) if ce is None else ce,
             "i_RST0": ResetSignal(),
             "i_SIGNEDA": Const(1), "i_SIGNEDB": Const(1),
             "i_SOURCEA": Const(0), "i_SOURCEB": Const(0)}
    for bit in range(18):
        ports.update({f"i_A{bit}": a18[bit], f"i_B{bit}": b18[bit], f"i_C{bit}": Const(0)})
    for bit in range(36):
        ports[f"o_P{bit}"] = p36[bit]
    instance = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
        p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
        p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
        p_RESETMODE="SYNC", **ports)
    m = Module()
    m.submodules.dsp = instance
    m.d.comb += [a18.eq(a), b18.eq(b), product.eq(p36[:len(product)])]
    return m
