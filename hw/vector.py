"""Post-array datapath: bias add, requantization, ReLU and saturation (docs/numerics.md).

:class:`Requantizer` is the pipelined form of ``rpaccel.sim.numerics.requantize`` for one
value; :class:`VectorUnit` runs one per column of a partition behind the bias add, and the
feature-interaction unit (``hw/interaction.py``) reuses it for its per-pair rescale.
"""

from amaranth import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.pe import ecp5_multiplier

__all__ = ["Requantizer", "VectorUnit", "SHIFT_WIDTH", "in_layout", "out_layout"]

#: Width of the requantization shift field (shifts 0..63, docs/numerics.md).
SHIFT_WIDTH = 6

# Widest operand one ECP5 MULT18X18D takes without help from LUT adders: an unsigned
# 17-bit slice fits its signed 18-bit input.
_DSP_SLICE = 17


def in_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`VectorUnit.inp`: one accumulator row and its requantization."""
    aw, cp = config.acc_width, config.partition_cols
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(aw), cp),
        "bias": data.ArrayLayout(signed(aw), cp),
        "mult": unsigned(config.requant_mult_width),
        "shift": unsigned(SHIFT_WIDTH),
        "relu": 1,
        "score": 1,
        "last": 1,
    })


def out_layout(config: AccelConfig) -> data.StructLayout:
    """Payload of :attr:`VectorUnit.out`: one result row."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.acc_width), config.partition_cols),
        "last": 1,
    })


class Requantizer(wiring.Component):
    """``requantize(value, mult, shift, relu)`` of ``docs/numerics.md``, pipelined.

    ``y = sat(relu?((value * mult + 2**(shift-1)) >> shift))``, arithmetic shift (round half
    up), no rounding term for ``shift = 0``, saturated to signed ``operand_width`` bits and
    sign-extended into ``result_width`` bits. It is computed as

    * ``u = (2 * value * mult) >> shift`` (exact, ``value_width + mult_width + 1`` bits; a
      shift beyond the width fills with the sign),
    * ``y = (u + 1) >> 1``, which equals the rounded formula for every shift including 0
      (``floor((floor(p / 2**(S-1)) + 1) / 2) = floor((p + 2**(S-1)) / 2**S)``), so no
      shift-dependent rounding constant has to be built,
    * ``(u + 1) >> 1`` is monotonic in ``u``, so saturation and ReLU are decided by
      comparing ``u`` with constants (``u >= 2**ow - 1`` saturates high,
      ``u <= -2**ow - 2`` low, ``u <= -2`` is negative) and only the low ``ow + 1`` bits of
      ``u`` are rounded.

    With ``bypass`` high, ``result`` is ``(value * mult) >> shift`` truncated to
    ``result_width`` (no rounding, ReLU or saturation): with ``mult = 1`` and ``shift = 0``
    that is ``value`` itself, the vector unit's pass-through for the int32 score of a final
    layer. (The caller supplies that 1 and 0 from a register: a multiplexer in front of the
    DSPs would sit on the critical path.)

    Ports
    -----
    en : In(1)
        Pipeline enable: every register advances on a cycle where ``en`` is high.
    value : In(signed(value_width)); mult : In(unsigned(mult_width));
    shift : In(unsigned(6)); relu : In(1); bypass : In(1)
        Operands, sampled on a cycle where ``en`` is high.
    result : Out(signed(result_width))
        Registered; holds the result of the operands sampled :attr:`LATENCY` enabled cycles
        earlier.

    Pipeline (one register each): operands into the DSPs, partial products out of them,
    their sum, the barrel shift by whole bytes, the shift by the remaining bits, the
    comparisons deciding rounding/ReLU/saturation, the final select.
    """

    #: Enabled cycles from sampling the operands to ``result``.
    LATENCY = 7

    def __init__(self, *, value_width: int, mult_width: int, operand_width: int,
                 result_width: int):
        if value_width < 2:
            raise ValueError(f"value_width must be at least 2, not {value_width!r}")
        if result_width < operand_width:
            raise ValueError(f"result_width must be at least operand_width={operand_width}, "
                             f"not {result_width!r}")
        self._value_width = value_width
        self._mult_width = mult_width
        self._operand_width = operand_width
        self._result_width = result_width
        super().__init__({
            "en": In(1),
            "value": In(signed(value_width)),
            "mult": In(unsigned(mult_width)),
            "shift": In(unsigned(SHIFT_WIDTH)),
            "relu": In(1),
            "bypass": In(1),
            "result": Out(signed(result_width)),
        })

    def elaborate(self, platform):
        m = Module()
        vw, mw, ow = self._value_width, self._mult_width, self._operand_width
        pw = vw + mw  # |value * mult| < 2**(vw - 1) * 2**mw: signed(vw + mw) is exact

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # Stages 0 and 1: operand registers, then the partial products. A wide value is
        # split into an unsigned low slice and a signed high slice, each a DSP product, so
        # no LUT adder sits behind the DSPs here. The operand and product registers are the
        # DSP block's own input and output registers on ECP5 (``ecp5_multiplier`` with the
        # pipeline enable as its clock enable; the conversion's ``multiplier`` choice, as
        # for the PEs): a product through the block between fabric registers held the
        # vector unit to 130 MHz.
        mult = self.mult
        split = vw > _DSP_SLICE + 1
        if split:
            pp_lo = Signal(unsigned(_DSP_SLICE + mw), name="pp_lo")
            pp_hi = Signal(signed(vw - _DSP_SLICE + mw), name="pp_hi")
            operands = [(self.value[:_DSP_SLICE], pp_lo),
                        (self.value[_DSP_SLICE:].as_signed(), pp_hi)]
        else:
            pp = Signal(signed(pw), name="pp")
            operands = [(self.value, pp)]
        kind = getattr(platform, "multiplier", "portable")
        products = []
        for k, (a, product) in enumerate(operands):
            if kind == "ecp5":
                m.submodules[f"mult{k}"] = ecp5_multiplier(a, mult, product, ce=self.en)
            else:
                a_q, b_q = reg(a.shape(), f"op_a{k}"), reg(mult.shape(), f"op_b{k}")
                products += [a_q.eq(a), b_q.eq(mult), product.eq(a_q * b_q)]
        shift0, relu0, bypass0 = reg(SHIFT_WIDTH, "shift0"), reg(1, "relu0"), reg(1, "bypass0")
        shift1, relu1, bypass1 = reg(SHIFT_WIDTH, "shift1"), reg(1, "relu1"), reg(1, "bypass1")

        # Stage 2: the full product.
        prod = reg(signed(pw), "prod")
        shift2, relu2, bypass2 = reg(SHIFT_WIDTH, "shift2"), reg(1, "relu2"), reg(1, "bypass2")
        full = ((pp_hi << _DSP_SLICE) + pp_lo) if split else pp

        # Stages 3 and 4: u = (2 * prod) >> shift, arithmetic (sign fill for large shifts),
        # as a shift by whole bytes (shift[3:]) and then by the rest (shift[:3]): one 64-way
        # barrel shift in a cycle, fed by a shift register that fans out to every bit of
        # every lane, limited the vector unit to 119 MHz on ECP5.
        coarse = reg(signed(pw + 1), "coarse")
        fine = reg(3, "fine_shift")
        relu_c, bypass_c = reg(1, "relu_c"), reg(1, "bypass_c")
        u = reg(signed(pw + 1), "scaled")
        relu3, bypass3 = reg(1, "relu3"), reg(1, "bypass3")

        # Stage 5: round, ReLU and saturation decided. y = (u + 1) >> 1 is monotonic in u, so
        # every decision is a comparison of u with a constant (in parallel, no carry chain
        # behind another); only the in-range result needs the low bits of u + 1.
        rw = self._result_width
        above = reg(1, "above")        # u >= 2**ow - 1:  y >= 2**(ow-1)
        below = reg(1, "below")        # u <= -2**ow - 2: y <= -2**(ow-1) - 1
        zero = reg(1, "zero")          # ReLU of u <= -2: y < 0
        rounded = reg(signed(ow), "rounded")
        passed = reg(signed(rw), "passed")  # u / 2: value * mult when shift = 0
        bypass4 = reg(1, "bypass4")

        # Stage 6: select.
        o_hi, o_lo = (1 << (ow - 1)) - 1, -(1 << (ow - 1))
        sat = Mux(zero, 0, Mux(above, o_hi, Mux(below, o_lo, rounded)))

        with m.If(self.en):
            m.d.sync += products
            m.d.sync += [shift0.eq(self.shift), relu0.eq(self.relu), bypass0.eq(self.bypass)]
            m.d.sync += [shift1.eq(shift0), relu1.eq(relu0), bypass1.eq(bypass0)]
            m.d.sync += [prod.eq(full), shift2.eq(shift1), relu2.eq(relu1), bypass2.eq(bypass1)]
            m.d.sync += [coarse.eq((Cat(Const(0, 1), prod).as_signed())
                                   >> Cat(Const(0, 3), shift2[3:])),
                         fine.eq(shift2[:3]), relu_c.eq(relu2), bypass_c.eq(bypass2)]
            m.d.sync += [u.eq(coarse >> fine), relu3.eq(relu_c), bypass3.eq(bypass_c)]
            # The comparisons as reductions over u's bits (LUT trees) and one short compare
            # of the low ow + 1 bits, not carry chains across all pw + 1 bits (the unit's
            # critical path at 148.9 MHz on `default`):
            #   u >= 2**ow - 1        iff u >= 0 and (u[ow:] != 0 or u[:ow] all ones)
            #   u <= -2**ow - 2       iff u < 0 and (u[ow+1:] not all ones
            #                                        or u[:ow+1] <= 2**ow - 2)
            #   u <= -2               iff u < 0 and u is not all ones (-1)
            sign = u[-1]
            m.d.sync += [above.eq(~sign & (u[ow:-1].any() | u[:ow].all())),
                         below.eq(sign & (~u[ow + 1:].all() | (u[:ow + 1] <= (1 << ow) - 2))),
                         zero.eq(relu3 & sign & ~u.all()),
                         rounded.eq((u[:ow + 1] + 1)[1:ow + 1]),
                         passed.eq(u[1:]), bypass4.eq(bypass3)]
            m.d.sync += self.result.eq(Mux(bypass4, passed, sat))
        return m


class VectorUnit(wiring.Component):
    """Bias add and requantization of one partition's accumulator rows.

    Per lane (``Cp = cols / partitions`` lanes): ``s = acc + bias`` modulo ``2**acc_width``;
    with ``score`` the row is passed out as ``s`` (the int32 score of a final layer), else
    ``requantize(s, mult, shift, relu)`` exactly as ``docs/numerics.md`` (round half up,
    optional ReLU, saturation to signed ``operand_width``), sign-extended into the lane.
    ``mult``, ``shift``, ``relu`` and ``score`` apply to the whole row (one pair per layer).

    Ports
    -----
    inp : In(stream.Signature({acc, bias: ArrayLayout(signed(acc_width), Cp),
                               mult: unsigned(requant_mult_width), shift: unsigned(6),
                               relu, score, last}))
    out : Out(stream.Signature({data: ArrayLayout(signed(acc_width), Cp), last}))
        ``last`` is passed through with its row.

    Timing: stateless and fully pipelined; one row per cycle; a row transferred on ``inp``
    on cycle ``t`` is offered on ``out`` on cycle ``t +`` :attr:`LATENCY` (8) when ``out``
    does not stall. Flow control is one global advance, ``~out.valid | out.ready``: the
    whole pipeline holds while a result waits, nothing is lost, ``out.valid`` comes from a
    register and ``inp.ready`` is the advance (it follows ``out.ready`` combinationally,
    as ready may). Every input is defined, so there is no bad input.

    Reset: while ``rst`` is asserted ``inp.ready`` and ``out.valid`` are low (no row is taken
    or offered) and the rows in the pipeline are dropped.
    """

    #: Cycles from a row's transfer on ``inp`` to its offer on ``out``.
    LATENCY = 1 + Requantizer.LATENCY

    def __init__(self, config: AccelConfig):
        self._config = config
        self._in_layout = in_layout(config)
        self._out_layout = out_layout(config)
        super().__init__({
            "inp": In(stream.Signature(self._in_layout)),
            "out": Out(stream.Signature(self._out_layout)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def in_layout(self) -> data.StructLayout:
        return self._in_layout

    @property
    def out_layout(self) -> data.StructLayout:
        return self._out_layout

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        aw, cp = cfg.acc_width, cfg.partition_cols
        advance = Signal()
        in_reset = ResetSignal()
        m.d.comb += [advance.eq(~self.out.valid | self.out.ready),
                     self.inp.ready.eq(advance & ~in_reset)]

        # Stage 0: the bias add (and the row's controls), registered.
        s = [Signal(signed(aw), name=f"sum{lane}", reset_less=True) for lane in range(cp)]
        mult = Signal(cfg.requant_mult_width, reset_less=True)
        shift = Signal(SHIFT_WIDTH, reset_less=True)
        relu, score = Signal(reset_less=True), Signal(reset_less=True)
        p = self.inp.payload
        with m.If(advance):
            m.d.sync += [s[lane].eq(p.acc[lane] + p.bias[lane]) for lane in range(cp)]
            # A score passes through the requantizer as s * 1 >> 0 (see Requantizer.bypass).
            m.d.sync += [mult.eq(Mux(p.score, 1, p.mult)), shift.eq(Mux(p.score, 0, p.shift)),
                         relu.eq(p.relu), score.eq(p.score)]

        for lane in range(cp):
            rq = Requantizer(value_width=aw, mult_width=cfg.requant_mult_width,
                             operand_width=cfg.operand_width, result_width=aw)
            m.submodules[f"requant{lane}"] = rq
            m.d.comb += [rq.en.eq(advance), rq.value.eq(s[lane]), rq.mult.eq(mult),
                         rq.shift.eq(shift), rq.relu.eq(relu), rq.bypass.eq(score),
                         self.out.payload.data[lane].eq(rq.result)]

        # valid and last travel beside the data through all LATENCY registers.
        valid = [Signal(name=f"valid{k}") for k in range(self.LATENCY)]
        last = [Signal(name=f"last{k}", reset_less=True) for k in range(self.LATENCY)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.inp.valid), last[0].eq(p.last)]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, self.LATENCY)]
            m.d.sync += [last[k].eq(last[k - 1]) for k in range(1, self.LATENCY)]
        m.d.comb += [self.out.valid.eq(valid[-1] & ~in_reset),
                     self.out.payload.last.eq(last[-1])]
        return m
