"""MLP layer engine: runs whole layers of a sub-batch on one partition of the systolic array."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rpaccel.hw.config import AccelConfig
from rpaccel.hw import systolic
from rpaccel.hw.stream import StreamFIFO
from rpaccel.hw.vector import VectorUnit
from rpaccel.hw.geometry import EngineGeometry

__all__ = ["MLPLayerEngine", "layer_refused", "layer_refused_pipelined", "LAYER_CHECK_CYCLES",
           "gang_sizes", "gangs", "gang_masks", "gang_write_layout", "command_layout",
           "response_layout", "score_layout",
           "weight_write_layout", "bias_write_layout", "act_write_layout", "act_read_layout",
           "act_word_layout"]

#: Depth of the FIFOs between the engine's memories and the array. A read is issued only
#: while the FIFO level leaves room for the reads already in flight (``FEED_IN_FLIGHT``: the
#: block RAM's read cycle and the registers after it; each feeder has two), so the decision
#: is a comparison of the level with a constant (no adder on the path) and rows keep
#: flowing one per cycle.
FEED_FIFO_DEPTH = 16
FEED_IN_FLIGHT = 3

#: Depth of the FIFO in front of ``scores``. The vector unit's output never waits: in a
#: score layer a row is taken from the array only while the FIFO has room for every row
#: already past that point (``SCORES_IN_FLIGHT``: the three accumulate stages, the vector
#: unit's pipeline, the registered room flag), so no backpressure reaches the accumulator
#: and bias memories' read enables (the compute core's critical path at 79.8 MHz went from
#: the vector unit's output valid through the accumulate stages' stalls to those enables).
SCORE_FIFO_DEPTH = 16
SCORES_IN_FLIGHT = 3 + VectorUnit.LATENCY + 1


def gang_sizes(config: AccelConfig) -> list[int]:
    """Sizes ``G >= 2`` of the gangs this configuration's engines can form on one layer:
    powers of two up to ``partitions`` whose ``G * Cp`` output lanes fit one activation word
    (``G * partition_cols <= max(rows, partition_cols)``), so the ``G`` engines' results of
    one row and output-tile step land in one buffer word (see :class:`MLPLayerEngine`,
    "Ganged layers"). Empty when no gang fits (``partitions = 1``, or ``cols > rows``)."""
    geo = EngineGeometry.of(config)
    sizes, g = [], 2
    while g <= config.partitions and g * geo.cols <= geo.act_lanes:
        sizes.append(g)
        g *= 2
    return sizes


def gangs(config: AccelConfig) -> list[tuple[int, int]]:
    """Every gang ``(G, L)`` the configuration can form: ``G`` in :func:`gang_sizes`,
    partitions ``L .. L+G-1`` with ``L`` a multiple of ``G``."""
    return [(G, L) for G in gang_sizes(config) for L in range(0, config.partitions, G)]


def gang_masks(config: AccelConfig) -> list[int]:
    """The partition masks of :func:`gangs`, in the same order."""
    return [((1 << G) - 1) << L for G, L in gangs(config)]


def gang_write_layout(config: AccelConfig) -> data.StructLayout:
    """One registered activation write of a ganged follower engine, for its leader's
    destination buffer: ``valid``, the word address, the word (its results replicated over
    the word's lane groups, as the engine's own writes) and the lanes it sets."""
    geo = EngineGeometry.of(config)
    return data.StructLayout({"valid": 1, "addr": range(geo.act_words),
                              "word": unsigned(config.operand_width * geo.act_lanes),
                              "lanes": geo.act_lanes})


def command_layout(config: AccelConfig) -> data.StructLayout:
    """One layer command (see :class:`rpaccel.sim.mlp_program.LayerCommand`). Where the
    configuration forms gangs (:func:`gang_sizes`), ``gang_log2`` runs the layer on a gang of
    ``2**gang_log2`` engines, each on its column slice (0: alone)."""
    geo = EngineGeometry.of(config)
    P = config.partitions
    gang = {"gang_log2": range(max(exact_log2(P) + 1, 2))} if gang_sizes(config) else {}
    return data.StructLayout({
        "rows": range(config.sub_batch + 1),
        "in_dim": range(config.max_layer_dim + 1),
        "out_dim": range(config.max_layer_dim + 1),
        "weight_tile": range(geo.weight_words // geo.rows),
        "bias_word": range(max(geo.bias_words, 2)),     # (one bit even for one word)
        "mult": unsigned(config.requant_mult_width),
        "shift": unsigned(6),
        "relu": 1,
        "score": 1,
        "src": range(geo.act_buffers),
        "dst": range(geo.act_buffers),
        "tag": 8,
        **gang,
    })


def response_layout(config: AccelConfig) -> data.StructLayout:
    """One response per command: its tag, whether it was rejected, and the cycles it took
    from acceptance to the response."""
    return data.StructLayout({"tag": 8, "error": 1, "cycles": 32})


def score_layout(config: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"score": signed(config.acc_width),
                              "row": _row_range(config.sub_batch), "last": 1})


def weight_write_layout(config: AccelConfig) -> data.StructLayout:
    geo = EngineGeometry.of(config)
    return data.StructLayout({"addr": range(geo.weight_words),
                              "data": data.ArrayLayout(signed(config.operand_width), geo.cols)})


def bias_write_layout(config: AccelConfig) -> data.StructLayout:
    geo = EngineGeometry.of(config)
    return data.StructLayout({"addr": range(max(geo.bias_words, 2)),
                              "data": data.ArrayLayout(signed(config.acc_width), geo.cols)})


def act_word_layout(config: AccelConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(config.operand_width), EngineGeometry.of(config).act_lanes)


def act_write_layout(config: AccelConfig) -> data.StructLayout:
    geo = EngineGeometry.of(config)
    return data.StructLayout({"buffer": range(geo.act_buffers), "addr": range(geo.act_words),
                              "data": act_word_layout(config),
                              "skip": geo.act_lanes})


def act_read_layout(config: AccelConfig) -> data.StructLayout:
    geo = EngineGeometry.of(config)
    return data.StructLayout({"buffer": range(geo.act_buffers), "addr": range(geo.act_words)})


def _beyond(index, count: int):
    """``index >= count`` for a field of ``range(count)``; no comparison (a constant 0) when
    ``count`` is a power of two and the field cannot hold a larger value."""
    return Const(0, 1) if count & (count - 1) == 0 else (index >= count)


def _row_range(sub_batch: int) -> range:
    """Row indices of a sub-batch, ``range(sub_batch)``, but at least one bit wide: with
    ``sub_batch = 1`` a zero-width index would be a ``[-1:0]`` wire in Verilog."""
    return range(max(sub_batch, 2))


def _above(value, limit: int):
    """``value > limit``, or a constant 0 when ``value``'s width cannot exceed ``limit`` (a
    field of ``range(limit + 1)`` with ``limit = 2**n - 1``: the comparison would be
    constant, which lint rejects)."""
    return value > limit if (1 << len(value)) - 1 > limit else Const(0, 1)


def _tiles(dim, lanes: int):
    """Tiles of ``lanes`` (a power of two) that ``dim`` elements take: ``ceil(dim / lanes)``."""
    return (dim + (lanes - 1)) >> exact_log2(lanes)


def _shape_refused(geo: EngineGeometry, in_dim, out_dim, score):
    """The part of :func:`layer_refused` that needs no tile counts: a dimension 0 or above
    ``max_layer_dim``, or a score layer with more than one output."""
    return ((in_dim == 0) | _above(in_dim, geo.max_layer_dim) |
            (out_dim == 0) | _above(out_dim, geo.max_layer_dim) |
            (score & (out_dim != 1)))


def _memories_refused(geo: EngineGeometry, weight_tile, bias_word, tiles, n_ot):
    """The part of :func:`layer_refused` on the memories: the layer's ``tiles`` weight tiles
    from ``weight_tile`` on, or its ``n_ot`` bias words from ``bias_word`` on, beyond them."""
    return (((weight_tile + tiles) > geo.weight_words // geo.rows) |
            ((bias_word + n_ot) > geo.bias_words))


def layer_refused(config: AccelConfig, in_dim, out_dim, weight_tile, bias_word, score):
    """A layer the engine refuses whatever its rows and buffers: a dimension 0 or above
    ``max_layer_dim``, weight tiles or bias words beyond the engine's memories, or a score
    layer with more than one output. The engine checks it on every command; the command
    processor checks it on every layer of a ``LOAD_MODEL`` (``BAD_LAYER``), so a loaded
    model never makes the engine refuse a layer in the middle of a query."""
    geo = EngineGeometry.of(config)
    n_it, n_ot = _tiles(in_dim, geo.rows), _tiles(out_dim, geo.cols)
    return (_shape_refused(geo, in_dim, out_dim, score) |
            _memories_refused(geo, weight_tile, bias_word, n_it * n_ot, n_ot))


#: Cycles from a layer given to :func:`layer_refused_pipelined` to its verdict in the
#: caller's register.
LAYER_CHECK_CYCLES = 3


def layer_refused_pipelined(m: Module, config: AccelConfig, valid, in_dim, out_dim,
                            weight_tile, bias_word, score):
    """:func:`layer_refused` in clocked stages, for the command processor's ``LOAD_MODEL``
    and the engine's own command check, where the one-cycle form was the longest path of
    each: the tile counts, then their product (a multiplier from registers to a register),
    then the sums and comparisons.

    Arguments are sampled on a cycle ``valid`` is high (one layer per cycle at most).
    Returns ``(busy, refused, tiles)``: ``refused`` (combinational) is high for one cycle,
    two cycles after a ``valid`` whose layer :func:`layer_refused` refuses, for the caller
    to register (so the verdict is in that register :data:`LAYER_CHECK_CYCLES` cycles after
    ``valid``); ``busy`` (combinational) is high while a layer is in the stages, its verdict
    not out yet; ``tiles`` is the register holding the layer's weight tiles
    (``n_it * n_ot``) of the arguments of two cycles earlier, for a caller that needs them
    (the engine sizes its weight feed from it)."""
    geo = EngineGeometry.of(config)
    s1, s2 = Signal(name="lchk_s1"), Signal(name="lchk_s2")
    n_it = Signal(range(_tiles_of(geo.max_layer_dim, geo.rows) + 1), name="lchk_n_it")
    n_ot1 = Signal(range(_tiles_of(geo.max_layer_dim, geo.cols) + 1), name="lchk_n_ot1")
    n_ot2 = Signal.like(n_ot1, name="lchk_n_ot2")
    shape_bad1, shape_bad2 = Signal(name="lchk_shape_bad1"), Signal(name="lchk_shape_bad2")
    wt1 = Signal(len(weight_tile), name="lchk_wt1")
    wt2 = Signal(len(weight_tile), name="lchk_wt2")
    bw1 = Signal(len(bias_word), name="lchk_bw1")
    bw2 = Signal(len(bias_word), name="lchk_bw2")
    tiles = Signal(len(n_it) + len(n_ot1), name="lchk_tiles")
    m.d.sync += [
        s1.eq(valid), s2.eq(s1),
        # stage 1: the tile counts (dimensions above max_layer_dim are refused by the shape
        # check, so their counts may wrap) and the checks that need no product
        n_it.eq(_tiles(in_dim, geo.rows)), n_ot1.eq(_tiles(out_dim, geo.cols)),
        shape_bad1.eq(_shape_refused(geo, in_dim, out_dim, score)),
        wt1.eq(weight_tile), bw1.eq(bias_word),
        # stage 2: the product
        tiles.eq(n_it * n_ot1), n_ot2.eq(n_ot1), shape_bad2.eq(shape_bad1),
        wt2.eq(wt1), bw2.eq(bw1),
    ]
    # then the memories' bounds
    refused = s2 & (shape_bad2 | _memories_refused(geo, wt2, bw2, tiles, n_ot2))
    return s1 | s2, refused, tiles


def _tiles_of(dim: int, lanes: int) -> int:
    """``ceil(dim / lanes)`` of a Python int (the widest tile count a register holds)."""
    return -(-dim // lanes)


class MLPLayerEngine(wiring.Component):
    """Runs one MLP layer per command over a sub-batch, on one partition of the array.

    A command (:func:`command_layout`) names the layer shape (``in_dim x out_dim``), the
    number of rows ``B`` (1..``sub_batch``), where the layer's weight tiles and bias words
    are in the engine's memories, the requantization (``mult``, ``shift``, ``relu``), and
    the source and destination activation buffers. The engine tiles the layer for the
    ``R x Cp`` partition: for every output tile ``j`` and input tile ``i`` it streams the
    tile's weights (double-buffered inside the array, so loading overlaps the previous tile)
    and the ``B`` rows of activation lanes ``i*R .. i*R+R-1``; the array's result rows are
    accumulated in an int32 accumulator memory; after the last input tile each row goes
    through the :class:`~rpaccel.hw.vector.VectorUnit` (bias, requantization, ReLU,
    saturation) into the destination buffer. With ``score`` set (the final layer, one
    output) the int32 ``acc + bias`` of every row leaves on ``scores`` instead.

    Padding is invisible: the host stores zero weights and biases beyond the layer
    (:mod:`rpaccel.sim.mlp_program`), so padded lanes contribute nothing and padded output
    lanes are exactly zero.

    Ganged layers: ``G = 2**gang_log2`` engines (partitions ``L .. L+G-1``, ``L`` a multiple
    of ``G``, ``G`` in :func:`gang_sizes`) run one layer together, its output columns split:
    engine ``e = gang_index`` holds the layer's column slice (output tiles ``e, e+G,
    e+2G, ...`` of the whole layer, :func:`rpaccel.sim.mlp_program.gang_slice`) and its
    command's ``out_dim`` is that slice's. The compute core gives every engine of the gang
    the same command in the same cycle and feeds the leader's (``e = 0``) activation rows
    to every engine's sub-array (a follower's own feeder stays off), so the engines run in
    lockstep: their output tile ``j`` is the layer's tile ``j*G + e``, and the ``G`` tiles of
    one step are ``G * Cp <= W`` lanes of one buffer word. A follower does not write its
    own buffers; it hands each registered write to the leader on ``gang_out``, and the
    leader writes it on ``gang_in`` in the same cycle as its own (lane enables merged), so
    the whole layer's output is in the leader's destination buffer when the leader
    responds. A follower write that is not in step with the leader's (no write of its
    own, or another address) makes the leader's response an error (it never happens while
    the gang runs one command; the tests check it stays 0).

    Ports
    -----
    cmd / resp : layer commands in, one response each out (``tag``, ``error``, ``cycles``).
    weight_write, bias_write : host writes, accepted while the engine is idle.
    act_write : ``{buffer, addr, data, skip}`` host writes of an activation-buffer word; the
        lanes set in ``skip`` keep their value (0: the whole word). Accepted whenever the
        buffer is not in use by the running command (its ``src``, or its ``dst`` until the
        last write landed), so the next sub-batch loads while a layer runs.
    act_read / act_data : host reads of an activation-buffer word, one each, under the same
        rule; a read accepted on cycle t offers its word on t + 2 (one a cycle when
        ``act_data`` is always ready), and ``act_data`` holds the word until it is taken.
        A host read and a host write of the same word in the same cycle read either word.
    scores : ``{score, row, last}`` of a score-mode layer, row order, ``last`` on row B-1,
        from a ``SCORE_FIFO_DEPTH``-entry FIFO: a consumer that stalls pauses the layer
        (rows stop leaving the array once the FIFO's room is down to the scores in flight)
        and loses nothing; the layer's response comes after its last score left the FIFO.
    array_weights, array_acts / array_results : to and from one systolic-array partition.
    gang_index, gang_out / gang_in : where the configuration forms gangs: the engine's place
        in the gang of the command it takes (taken with it; the compute core drives it),
        a follower's writes out (:func:`gang_write_layout`), the leader's followers'
        writes in (all zero when not ganged).

    Throughput: one activation row per cycle into the array for the whole layer (tiles
    back to back), so a layer takes about ``n_ot * n_it * max(B, R)`` cycles plus the array
    latency; ``tests/test_mlp_engine.py`` and ``rpaccel core-bench`` measure it.

    Bad commands (``rows`` 0 or above ``sub_batch``, a dimension 0 or above
    ``max_layer_dim``, weight tiles or bias words beyond the memories, ``src == dst``, a
    score layer with more than one output) are answered with ``error = 1`` and dropped;
    the engine stays ready for the next command. A command is checked in the three cycles
    after it is taken, from its register (its buffers count as in use from then on), and
    its layer starts in the fourth, so the check is neither on the path of whatever drives
    ``cmd`` nor on the feeders' starts; ``cycles`` in the response counts from the cycle it
    is taken and includes those.

    Reset: while ``rst`` is asserted no input accepts anything (every ``ready`` is low, no
    host write reaches a memory) and no output offers anything (every ``valid`` is low); a
    layer in progress is abandoned without a response. The memories keep their contents
    (weights, biases and activations loaded before a reset are still there after it).
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        self._geo = EngineGeometry.of(config)
        super().__init__({
            "cmd": In(stream.Signature(command_layout(config))),
            "resp": Out(stream.Signature(response_layout(config))),
            "weight_write": In(stream.Signature(weight_write_layout(config))),
            "bias_write": In(stream.Signature(bias_write_layout(config))),
            "act_write": In(stream.Signature(act_write_layout(config))),
            "act_read": In(stream.Signature(act_read_layout(config))),
            "act_data": Out(stream.Signature(act_word_layout(config))),
            "scores": Out(stream.Signature(score_layout(config))),
            "array_weights": Out(stream.Signature(systolic.weight_layout(config))),
            "array_acts": Out(stream.Signature(systolic.act_layout(config))),
            "array_results": In(stream.Signature(systolic.result_layout(config))),
            "busy": Out(1),
            **({"gang_index": In(range(max(config.partitions, 2))),
                "gang_out": Out(gang_write_layout(config)),
                "gang_in": In(gang_write_layout(config))} if gang_sizes(config) else {}),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def geometry(self) -> EngineGeometry:
        return self._geo

    def elaborate(self, platform):
        m = Module()
        cfg, geo = self._config, self._geo
        R, Cp, W, SB = geo.rows, geo.cols, geo.act_lanes, geo.sub_batch
        ow, aw = cfg.operand_width, cfg.acc_width

        # -- memories ------------------------------------------------------------------------
        # These three memories are read on every cycle (no read enable: an enable would be one
        # signal fanned out to every block RAM of the memory, across the device, and it was
        # the compute core's critical path), and a read whose data is used never meets a
        # write of the same word: weights and biases are written only while no layer runs and
        # read only while one does; an accumulator row is read while an earlier write of it
        # is pending only on the first input tile, whose sums ignore what was read (the
        # read-after-write interlock below holds the others). So `no_rw_check` tells yosys
        # not to build logic for read/write collisions.
        no_collision = {"no_rw_check": 1}
        weight_mem = Memory(shape=unsigned(ow * Cp), depth=geo.weight_words, init=[],
                            attrs=no_collision)
        # (a one-word bias memory keeps a second word: no zero-width address)
        bias_mem = Memory(shape=unsigned(aw * Cp), depth=max(geo.bias_words, 2), init=[],
                          attrs=no_collision)
        acc_mem = Memory(shape=unsigned(aw * Cp), depth=len(_row_range(SB)), init=[],
                         attrs=no_collision)
        # An activation buffer is read and written in the same cycle only by different owners
        # of different buffers (a command's source is never written while it runs, the host
        # never reads or writes a buffer in use), so no read that is kept meets a write of its
        # word: no collision logic either.
        act_mems = [Memory(shape=unsigned(ow * W), depth=geo.act_words, init=[],
                           attrs=no_collision)
                    for _ in range(geo.act_buffers)]
        m.submodules.weight_mem = weight_mem
        m.submodules.bias_mem = bias_mem
        m.submodules.acc_mem = acc_mem
        for n, mem in enumerate(act_mems):
            m.submodules[f"act_mem{n}"] = mem
        w_rd, w_wr = weight_mem.read_port(), weight_mem.write_port()
        b_rd, b_wr = bias_mem.read_port(), bias_mem.write_port()
        acc_wr = acc_mem.write_port()
        # Not transparent: the accumulate stage never reads a row that is still being written.
        acc_rd = acc_mem.read_port()
        act_wr = [mem.write_port(granularity=ow) for mem in act_mems]
        act_rd = [mem.read_port() for mem in act_mems]

        # -- command registers and control -----------------------------------------------------
        cmd = Signal(command_layout(cfg))
        src_oh = Signal(geo.act_buffers)      # cmd.src, one-hot (a src beyond the buffers: 0)
        n_it = Signal(range(geo.max_layer_dim + 1))   # input tiles
        n_ot = Signal(range(geo.max_layer_dim + 1))   # output tiles
        cycles = Signal(32)
        error = Signal()
        done = Signal()
        # a ganged follower: fed by its leader, its writes go to the leader's buffer
        ganged = bool(gang_sizes(cfg))
        follower = Signal()
        gang_index = Signal(range(max(cfg.partitions, 2)))   # of the command taken
        if ganged:
            m.d.comb += follower.eq(gang_index != 0)
        running = Signal()
        m.d.comb += self.busy.eq(running)
        # running & src_oh, one register per buffer: set on the edge into RUN, cleared on the
        # edge out of it (the decoded state on its way to every block's read address was the
        # engine's longest path: control state -> a block's address, 8.3 of 9.8 ns routing)
        src_run = Signal(geo.act_buffers)
        rows_is = Signal(3)        # the command's B is 1, 2 or 3 (the interlock, below)

        # A command is checked from the command register in the three cycles after it is
        # taken (states CHECK, PRODUCT, VERDICT), and the layer starts from registers in GO:
        # the check on the port's payload ran on from whatever drove the port (the command
        # processor's layer table, across units), and a one-cycle check from the register
        # drove every feeder's start (tile counts, their product, the memories' bounds:
        # 61.6 MHz on tiny). The layer's check is layer_refused_pipelined, the command
        # processor's.
        c = cmd
        c_it, c_ot = _tiles(c.in_dim, R), _tiles(c.out_dim, Cp)
        check_now = Signal()
        # (its `tiles` register follows the command register, which holds still until the
        # next command is taken: the layer's weight tiles from PRODUCT's end on)
        _, layer_bad, layer_tiles = layer_refused_pipelined(
            m, cfg, check_now, c.in_dim, c.out_dim, c.weight_tile, c.bias_word, c.score)
        other_bad = Signal()
        m.d.comb += other_bad.eq(
            (c.rows == 0) | _above(c.rows, SB) |
            ((c.src == c.dst) & ~c.score) |
            _beyond(c.src, geo.act_buffers) | _beyond(c.dst, geo.act_buffers))

        start = Signal()
        checking = Signal()        # the taken command's buffers are claimed from here on
        in_reset = ResetSignal()
        with m.FSM(name="control"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~in_reset)
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [cmd.eq(self.cmd.payload), cycles.eq(1),
                                 src_oh.eq(1 << self.cmd.payload.src)]
                    if ganged:
                        m.d.sync += gang_index.eq(self.gang_index)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += [checking.eq(1), check_now.eq(1)]
                m.d.sync += [n_it.eq(c_it), n_ot.eq(c_ot), cycles.eq(cycles + 1),
                             error.eq(other_bad),
                             rows_is.eq(Cat(c.rows == 1, c.rows == 2, c.rows == 3))]
                m.next = "PRODUCT"
            with m.State("PRODUCT"):
                m.d.comb += checking.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                m.next = "VERDICT"
            with m.State("VERDICT"):
                m.d.comb += checking.eq(1)
                m.d.sync += [error.eq(error | layer_bad), cycles.eq(cycles + 1)]
                m.next = "GO"
            with m.State("GO"):
                m.d.comb += checking.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(error):
                    m.next = "RESPOND"
                with m.Else():
                    m.d.comb += start.eq(1)
                    m.d.sync += src_run.eq(src_oh)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(done):
                    m.d.sync += src_run.eq(0)
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [self.resp.valid.eq(~in_reset),
                             self.resp.payload.tag.eq(cmd.tag),
                             self.resp.payload.error.eq(error),
                             self.resp.payload.cycles.eq(cycles)]
                with m.If(self.resp.ready):
                    m.next = "IDLE"
        # Host ports are served while no layer runs (and not under reset).
        idle = ~running & ~checking & ~self.resp.valid & ~in_reset

        # -- weight feeder: every tile's R rows, in stored order, into the array ----------------
        m.submodules.weight_fifo = w_fifo = StreamFIFO(systolic.weight_layout(cfg), FEED_FIFO_DEPTH)
        wiring.connect(m, w_fifo.r, wiring.flipped(self.array_weights))
        w_addr = Signal.like(w_rd.addr)
        w_left = Signal(range(geo.weight_words + 1))
        # A read issued in cycle t shows its data in t+1, is registered in t+2 and again in
        # t+3: the block RAM's clock-to-out is most of a cycle, and the weight memory's blocks
        # are spread over the device's block-RAM rows while the FIFO sits in one place, so a
        # register near the blocks and one near the FIFO split the distance (one register
        # was the compute core's critical path, 6.2 ns of routing after the block RAM's
        # 5.6 ns). Three reads in flight.
        w_pending = Signal()
        w_held_valid = Signal()
        w_valid = Signal()
        # (the registers that take block-RAM read data have no reset: on the ECP5 they become
        # the block RAMs' own output registers, gen/ebr_outreg.py)
        w_held = Signal.like(w_rd.data, reset_less=True)
        w_data = Signal.like(w_rd.data)
        w_issue = running & (w_left != 0) & (w_fifo.level < FEED_FIFO_DEPTH - FEED_IN_FLIGHT - 1)
        with m.If(start):
            m.d.sync += [w_addr.eq(c.weight_tile * R), w_left.eq(layer_tiles * R)]
        with m.Elif(w_issue):
            m.d.sync += [w_addr.eq(w_addr + 1), w_left.eq(w_left - 1)]
        m.d.sync += [w_pending.eq(w_issue), w_held_valid.eq(w_pending), w_held.eq(w_rd.data),
                     w_valid.eq(w_held_valid), w_data.eq(w_held)]
        m.d.comb += [w_rd.addr.eq(w_addr), w_rd.en.eq(1),
                     w_fifo.w.valid.eq(w_valid), w_fifo.w.payload.eq(w_data)]

        # -- activation feeder: for each (j, i), rows 0..B-1 of input lanes i*R .. i*R+R-1 ------
        m.submodules.act_fifo = a_fifo = StreamFIFO(systolic.act_layout(cfg), FEED_FIFO_DEPTH)
        wiring.connect(m, a_fifo.r, wiring.flipped(self.array_acts))
        f_j = Signal.like(n_ot)
        f_i = Signal.like(n_it)
        f_b = Signal(_row_range(SB))
        f_active = Signal()
        f_pending = Signal()       # a read issued last cycle: its data is on the read port
        f_held = Signal()          # ... registered as it left the RAM (every buffer's word)
        f_valid = Signal()         # ... selected: the row written into the FIFO this cycle
        f_last = Signal()          # of the row whose read is pending
        f_held_last = Signal()
        f_lane = Signal(range(max(W // R, 2)))
        f_held_lane = Signal.like(f_lane)
        f_issue = f_active & (a_fifo.level < FEED_FIFO_DEPTH - FEED_IN_FLIGHT - 1)
        # The read address is a register (the RAM sees no arithmetic): `f_base` is the word
        # of input tile f_i's chunk, chunk(f_i) * sub_batch, `f_addr` = f_base + f_b.
        # The RAM reads `f_addr` every cycle; only issued reads are kept.
        chunk_tiles = W // R             # input tiles per buffer word
        f_base = Signal(range(geo.act_words))
        f_addr = Signal(range(geo.act_words))
        with m.If(start):
            m.d.sync += [f_j.eq(0), f_i.eq(0), f_b.eq(0), f_active.eq(~follower), f_base.eq(0),
                         f_addr.eq(0)]
        with m.Elif(f_issue):
            with m.If(f_b == cmd.rows - 1):
                m.d.sync += f_b.eq(0)
                with m.If(f_i == n_it - 1):
                    m.d.sync += [f_i.eq(0), f_base.eq(0), f_addr.eq(0)]
                    with m.If(f_j == n_ot - 1):
                        m.d.sync += f_active.eq(0)
                    with m.Else():
                        m.d.sync += f_j.eq(f_j + 1)
                with m.Else():
                    m.d.sync += f_i.eq(f_i + 1)
                    next_chunk = (f_i[:exact_log2(chunk_tiles)] == chunk_tiles - 1) \
                        if chunk_tiles > 1 else 1
                    with m.If(next_chunk):
                        m.d.sync += [f_base.eq(f_base + SB), f_addr.eq(f_base + SB)]
                    with m.Else():
                        m.d.sync += f_addr.eq(f_base)
            with m.Else():
                m.d.sync += [f_b.eq(f_b + 1), f_addr.eq(f_addr + 1)]
        m.d.sync += [f_pending.eq(f_issue), f_last.eq(f_b == cmd.rows - 1)]
        if W > R:
            m.d.sync += [f_lane.eq(f_i[:exact_log2(W // R)]), f_held_lane.eq(f_lane)]
        # Every buffer's read data is registered as it leaves the RAM, before the buffer and
        # lane multiplexers: the block RAM's clock-to-out is most of a cycle on its own.
        # (act_buffers x W x 8 flip-flops: 256 on `default`.)
        # (no reset: on the ECP5 they are the block RAMs' output registers, gen/ebr_outreg.py;
        # each takes its port's word on every cycle but while it holds a host read's word)
        held = [Signal(ow * W, name=f"act_held{n}", reset_less=True)
                for n in range(geo.act_buffers)]
        held_en = Signal(geo.act_buffers)
        for n, (h, port) in enumerate(zip(held, act_rd)):
            with m.If(held_en[n]):
                m.d.sync += h.eq(port.data)
        m.d.sync += [f_held.eq(f_pending), f_held_last.eq(f_last)]
        src_word = Signal(ow * W)
        m.d.comb += src_word.eq(Array(held)[cmd.src])
        lanes = src_word if W == R else src_word.word_select(f_held_lane, ow * R)
        f_row = Signal(systolic.act_layout(cfg))
        m.d.sync += [f_valid.eq(f_held), f_row.data.eq(lanes), f_row.last.eq(f_held_last)]
        m.d.comb += [a_fifo.w.valid.eq(f_valid), a_fifo.w.payload.eq(f_row)]

        # -- accumulate: result rows of input tile 0 start from zero, later tiles add ----------
        # Three register stages, so neither block RAM's clock-to-out nor a 32-bit add shares a
        # path with anything else: s1 the row taken from the array (its accumulator and bias
        # reads on the RAM ports), s2 the RAM data registered, s3 the sum registered, which
        # is written back (not the last input tile) or handed to the vector unit (the last).
        # The stages never stall: the vector unit takes a row on every cycle (its output
        # never waits, see SCORE_FIFO_DEPTH), so the memories are read without an enable and
        # a row moves one stage per cycle. A row may not be taken while an earlier row with
        # the same index is still in s1..s3 and will be written (read-after-write
        # interlock): that only happens with B <= 3 rows, and costs a cycle or two then.
        vu = m.submodules.vector_unit = VectorUnit(cfg)
        r_j = Signal.like(n_ot)
        r_i = Signal.like(n_it)
        r_b = Signal(_row_range(SB))
        stage = data.StructLayout({"valid": 1, "first": 1, "final": 1, "last": 1,
                                   "row": _row_range(SB)})
        s1, s2, s3 = (Signal(stage, name=f"acc_s{n}") for n in (1, 2, 3))
        s1_psum, s2_psum = Signal(aw * Cp), Signal(aw * Cp)
        s2_acc = Signal(aw * Cp, reset_less=True)      # block-RAM read data (no reset)
        s2_bias = Signal(aw * Cp, reset_less=True)
        s3_bias = Signal(aw * Cp)
        s3_sum = Signal(aw * Cp)
        # The interlock without comparing row numbers: rows are taken in order 0 .. B - 1 and
        # again, so the row in s_k (taken k cycles ago) is the one at r_b exactly when the
        # takes since then, its own included, are a multiple of B: s1 for B = 1; s2 for
        # B = 1, and B = 2 after a take in s1; s3 for B = 1, B = 2 after one take in s1
        # and s2, B = 3 after two. (Three row compares, their OR and the result FIFO's
        # handshake were the compute core's longest path: r_b through seven LUTs into the
        # array's result FIFO, 9.20 ns.) `rows_is[b - 1]`: the command's B is b, registered
        # in CHECK.
        hazard = Signal()
        t1, t2 = s1.valid, s2.valid
        in_flight = [s.valid & ~s.final for s in (s1, s2, s3)]
        m.d.comb += hazard.eq((r_i != 0) & (
            (rows_is[0] & Cat(*in_flight).any())
            | (rows_is[1] & ((in_flight[1] & t1) | (in_flight[2] & (t1 ^ t2))))
            | (rows_is[2] & in_flight[2] & t1 & t2)))
        res = self.array_results
        take = res.valid & res.ready
        m.submodules.score_fifo = score_fifo = StreamFIFO(score_layout(cfg), SCORE_FIFO_DEPTH)
        wiring.connect(m, score_fifo.r, wiring.flipped(self.scores))
        score_room = Signal()       # every row that may be in flight fits in the FIFO
        m.d.sync += score_room.eq(score_fifo.level < SCORE_FIFO_DEPTH - SCORES_IN_FLIGHT)
        m.d.comb += [
            res.ready.eq(~hazard & ~in_reset & (~cmd.score | score_room)),
            acc_rd.addr.eq(r_b), acc_rd.en.eq(1),
            b_rd.addr.eq(cmd.bias_word + r_j), b_rd.en.eq(1),
        ]
        with m.If(start):
            m.d.sync += [r_j.eq(0), r_i.eq(0), r_b.eq(0)]
        with m.Elif(take):
            with m.If(r_b == cmd.rows - 1):
                m.d.sync += r_b.eq(0)
                with m.If(r_i == n_it - 1):
                    m.d.sync += [r_i.eq(0), r_j.eq(r_j + 1)]
                with m.Else():
                    m.d.sync += r_i.eq(r_i + 1)
            with m.Else():
                m.d.sync += r_b.eq(r_b + 1)
        m.d.sync += [s1.valid.eq(take), s1.first.eq(r_i == 0), s1.final.eq(r_i == n_it - 1),
                     s1.last.eq(r_b == cmd.rows - 1), s1.row.eq(r_b),
                     s1_psum.eq(res.payload.data.as_value())]
        # the RAM data of the row in s1 is on the read ports now
        m.d.sync += [s2.eq(s1), s2_psum.eq(s1_psum), s2_acc.eq(acc_rd.data), s2_bias.eq(b_rd.data)]
        m.d.sync += [s3.eq(s2), s3_bias.eq(s2_bias)]
        for lane in range(Cp):
            old = s2_acc.word_select(lane, aw)
            new = s2_psum.word_select(lane, aw)
            m.d.sync += s3_sum.word_select(lane, aw).eq(Mux(s2.first, 0, old) + new)
        m.d.comb += [
            acc_wr.addr.eq(s3.row), acc_wr.data.eq(s3_sum),
            acc_wr.en.eq(s3.valid & ~s3.final),
            vu.inp.valid.eq(s3.valid & s3.final),
            vu.inp.payload.acc.eq(s3_sum),
            vu.inp.payload.bias.eq(s3_bias),
            vu.inp.payload.mult.eq(cmd.mult),
            vu.inp.payload.shift.eq(cmd.shift),
            vu.inp.payload.relu.eq(cmd.relu),
            vu.inp.payload.score.eq(cmd.score),
            vu.inp.payload.last.eq(s3.last),
        ]

        # -- output: requantized rows into the destination buffer, or scores out --------------
        o_j = Signal.like(n_ot)
        o_b = Signal(_row_range(SB))
        out = vu.out
        o_take = out.valid & out.ready
        # (the score FIFO always has room: see SCORE_FIFO_DEPTH)
        m.d.comb += out.ready.eq(1)
        m.d.comb += [score_fifo.w.valid.eq(out.valid & cmd.score & ~in_reset),
                     score_fifo.w.payload.score.eq(out.payload.data[0]),
                     score_fifo.w.payload.row.eq(o_b),
                     score_fifo.w.payload.last.eq(o_b == cmd.rows - 1)]
        o_last_row = (o_b == cmd.rows - 1) & (o_j == n_ot - 1)
        with m.If(start):
            m.d.sync += [o_j.eq(0), o_b.eq(0)]
        with m.Elif(o_take):
            with m.If(o_b == cmd.rows - 1):
                m.d.sync += [o_b.eq(0), o_j.eq(o_j + 1)]
            with m.Else():
                m.d.sync += o_b.eq(o_b + 1)
        # a score layer is done when its last score has left the FIFO
        last_score_out = self.scores.valid & self.scores.ready & self.scores.payload.last
        m.d.comb += done.eq(Mux(cmd.score, last_score_out, o_take & o_last_row))
        # Output tile j covers lanes j*Cp .. j*Cp+Cp-1: word chunk (j*Cp) // W, lane group
        # (j*Cp) % W // Cp. The Cp results are replicated across the word and only that
        # group's byte enables are set.
        out_word = Signal(ow * W)
        m.d.comb += out_word.eq(Cat(*[out.payload.data[lane][:ow]
                                      for _ in range(W // Cp) for lane in range(Cp)]))
        groups = W // Cp
        if ganged:
            # the layer's output tile of o_j: o_j * G + gang_index (see "Ganged layers")
            o_tile = Signal(len(o_j) + exact_log2(cfg.partitions))
            o_step = Signal(range(cfg.partitions + 1))
            with m.If(start):
                m.d.sync += [o_tile.eq(gang_index), o_step.eq(Const(1, 1) << cmd.gang_log2)]
            with m.Elif(o_take & (o_b == cmd.rows - 1)):
                m.d.sync += o_tile.eq(o_tile + o_step)
        else:
            o_tile = o_j
        o_chunk = o_tile >> exact_log2(groups) if groups > 1 else o_tile
        o_group = o_tile[:exact_log2(groups)] if groups > 1 else Const(0, 1)
        # The write goes through one register stage (address, data, lane enables), so the
        # RAM's many blocks see registers only. A follower's goes to its leader instead.
        o_addr = Signal(range(geo.act_words))
        o_lanes = Signal(W)
        o_word = Signal(ow * W)
        # (the buffer it goes to one-hot, 0 without a write: the buffer's write select is
        # then a register, not the command's dst compared on the way to every block's
        # enables)
        o_dst = Signal(geo.act_buffers)
        o_write = o_dst.any()
        m.d.sync += [o_addr.eq(o_chunk * SB + o_b), o_word.eq(out_word),
                     o_dst.eq(Mux(o_take & ~cmd.score & ~follower, 1 << cmd.dst, 0))]
        if ganged:
            o_export = Signal()
            m.d.sync += o_export.eq(o_take & ~cmd.score & follower)
            m.d.comb += [self.gang_out.valid.eq(o_export), self.gang_out.addr.eq(o_addr),
                         self.gang_out.word.eq(o_word), self.gang_out.lanes.eq(o_lanes)]
        for g in range(groups):
            m.d.sync += o_lanes[g * Cp:(g + 1) * Cp].eq(Mux(o_group == g, (1 << Cp) - 1, 0))

        if ganged:
            # a follower write out of step with this engine's own (see "Ganged layers")
            gang_bad = Signal()
            gang_fault = Signal()
            m.d.comb += gang_bad.eq(self.gang_in.valid &
                                    (~o_write | (self.gang_in.addr != o_addr)))
            with m.If(start):
                m.d.sync += gang_fault.eq(0)
            with m.Elif(gang_bad):
                m.d.sync += gang_fault.eq(1)
            m.d.comb += self.resp.payload.error.eq(error | gang_fault | gang_bad)

        # -- host ports and buffer port sharing ------------------------------------------------
        # Weights and biases are written only while the engine is idle. An activation buffer
        # is in use while a command reads it (src) or writes it (dst, until its last write
        # has landed); every other buffer's ports are free, so the host may write the next
        # sub-batch's input or read a finished output while a layer runs.
        in_use = Signal(geo.act_buffers)
        # the engine's write registered in front of the buffer (below), still to land
        o_dst_q = Signal(geo.act_buffers)
        m.d.sync += o_dst_q.eq(o_dst)
        for n in range(geo.act_buffers):
            m.d.comb += in_use[n].eq(((running | checking)
                                      & (src_oh[n] | ((cmd.dst == n) & ~cmd.score)))
                                     | o_dst[n] | o_dst_q[n])
        w_buf, r_buf = self.act_write.payload.buffer, self.act_read.payload.buffer
        m.d.comb += [
            self.weight_write.ready.eq(idle), self.bias_write.ready.eq(idle),
            self.act_write.ready.eq(~in_use.bit_select(w_buf, 1) & ~_beyond(w_buf, geo.act_buffers)
                                    & ~in_reset),
        ]
        def registered_write(port, addr, data, en, name):
            """``port`` writes ``data`` at ``addr`` with enable ``en`` one cycle later, from
            registers: a memory's blocks are spread over the device's block-RAM rows, and
            handshakes and selects on the way to all of them were the unit's longest paths
            (94.9 MHz on `default`). A write offered on cycle t lands at the end of t + 1."""
            q_addr = Signal.like(port.addr, name=f"{name}_addr", reset_less=True)
            q_data = Signal.like(port.data, name=f"{name}_data", reset_less=True)
            q_en = Signal.like(port.en, name=f"{name}_en")
            m.d.sync += [q_addr.eq(addr), q_data.eq(data), q_en.eq(en)]
            m.d.comb += [port.addr.eq(q_addr), port.data.eq(q_data), port.en.eq(q_en)]

        # Weights and biases: long before a command taken on t + 1 reads them (after its
        # three check cycles).
        for port, write, name in ((w_wr, self.weight_write, "weight_wr"),
                                  (b_wr, self.bias_write, "bias_wr")):
            registered_write(port, write.payload.addr, write.payload.data.as_value(),
                             write.valid & idle, name)
        # A host read is two stages, the block RAM's port (`host_on_port`: the word is on
        # buffer n's read port) and the buffer's read register (`host_in_held`: the word is
        # in `held[n]`, which is `act_data`), each holding still while the next is full: so
        # the read data's only load is its register (the ECP5 block RAM's own output
        # register, gen/ebr_outreg.py). One cycle more than a read from the port.
        host_on_port = Signal()
        host_in_held = Signal()
        host_port_buffer = Signal(range(geo.act_buffers))
        host_held_buffer = Signal(range(geo.act_buffers))
        host_on = Signal(geo.act_buffers)      # one-hot of host_on_port's buffer
        host_in = Signal(geo.act_buffers)      # one-hot of host_in_held's buffer
        held_free = Signal()                   # the read register may take a word
        m.d.comb += held_free.eq(~host_in_held | self.act_data.ready)
        m.d.comb += self.act_read.ready.eq(~in_use.bit_select(r_buf, 1) &
                                           ~_beyond(r_buf, geo.act_buffers) & ~in_reset &
                                           (~host_on_port | held_free))
        host_rd = self.act_read.valid & self.act_read.ready
        with m.If(host_rd):
            m.d.sync += [host_on_port.eq(1), host_port_buffer.eq(r_buf),
                         host_on.eq(1 << r_buf)]
        with m.Elif(held_free):
            m.d.sync += [host_on_port.eq(0), host_on.eq(0)]
        with m.If(held_free):
            m.d.sync += [host_in_held.eq(host_on_port), host_held_buffer.eq(host_port_buffer),
                         host_in.eq(host_on)]
        m.d.comb += [self.act_data.valid.eq(host_in_held & ~in_reset),
                     self.act_data.payload.eq(Array(held)[host_held_buffer])]

        host_w = self.act_write.valid & self.act_write.ready
        host_lanes = ~self.act_write.payload.skip
        for n in range(geo.act_buffers):
            # (the source buffer one-hot, registered with the command: the compare of the
            # command's src on the way to every block's read address was the compute core's
            # longest path, 101.8 MHz on `default`)
            is_src = src_run[n]          # running & src_oh[n]
            # The engine's last write lands in the cycle after its last result, when the
            # control is already responding: the registered write carries its own select.
            is_dst = o_dst[n]
            if ganged:
                # the followers' writes of the same cycle merged into the leader's
                gin = self.gang_in
                dst_lanes = o_lanes | Mux(gin.valid, gin.lanes, 0)
                dst_word = Cat(Mux(o_lanes[lane], o_word.word_select(lane, ow),
                                   gin.word.word_select(lane, ow)) for lane in range(W))
            else:
                dst_lanes, dst_word = o_lanes, o_word
            m.d.comb += [
                act_rd[n].addr.eq(Mux(is_src, f_addr, self.act_read.payload.addr)),
                # The feeder reads every cycle and keeps what it issued. A buffer that is no
                # command's source reads the host's address every cycle too, whether or not
                # the host's read is accepted, except while it holds an accepted read's word
                # that cannot move into the read register yet (it reads again on the cycle
                # the word moves, when the next read may be accepted). So the enable, which
                # every block of the buffer takes, is registers and two gates away.
                act_rd[n].en.eq(is_src | ~host_on[n] | held_free),
                held_en[n].eq(is_src | ~host_in[n] | self.act_data.ready),
            ]
            # every write, the engine's or the host's, through registers (the host's in-use
            # bit and the engine's select were the paths into all of the buffer's blocks)
            registered_write(act_wr[n], Mux(is_dst, o_addr, self.act_write.payload.addr),
                             Mux(is_dst, dst_word, self.act_write.payload.data.as_value()),
                             Mux(is_dst, dst_lanes, Mux(host_w & (w_buf == n), host_lanes, 0)),
                             f"act_wr{n}")
        return m
