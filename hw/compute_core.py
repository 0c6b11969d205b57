"""Compute core: the partitioned systolic array with one MLP layer engine per partition."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rpaccel.hw.config import AccelConfig
from rpaccel.hw import mlp_engine
from rpaccel.hw.mlp_engine import MLPLayerEngine, gangs as gangs_of
from rpaccel.hw.shared import add_shared
from rpaccel.hw.systolic import SystolicArray

__all__ = ["ComputeCore"]


def _with_field(layout, value, name, new):
    """``value`` (of struct ``layout``) with field ``name`` replaced by ``new``, as one
    expression (separate assignments to a field and the rest left constant bits in their
    own ``always`` blocks, which Verilator's lint rejects)."""
    field = layout[name]
    return Cat(value[:field.offset], new[:field.width], value[field.offset + field.width:])


class ComputeCore(wiring.Component):
    """``partitions`` independent MLP engines, each driving its own sub-array.

    Every partition ``p`` exposes its engine's host ports as element ``p`` of an array port
    (``cmd[p]``, ``resp[p]``, ``weight_write[p]``, ``bias_write[p]``, ``act_write[p]``,
    ``act_read[p]``, ``act_data[p]``, ``scores[p]``, ``busy[p]``); see
    :class:`~rpaccel.hw.mlp_engine.MLPLayerEngine` for their contracts. Partitions share
    nothing but the clock: each runs its own layer (its own shape, sub-batch and model) at
    the same time as the others, which is how RPAccel runs the stages of a cascade
    concurrently. With ``partitions = 1`` it is one engine on one monolithic array.

    Gangs: a command on ``cmd[L]`` with ``gang_log2 = k`` (``G = 2**k`` in
    :func:`~rpaccel.hw.mlp_engine.gang_sizes`, ``L`` a multiple of ``G``) runs one layer on
    engines ``L .. L+G-1`` together, its output columns split (the engine's "Ganged
    layers"). The core offers it to all ``G`` engines at once (taken when all are ready,
    engine ``L+e`` with ``gang_index = e``), routes engine ``L``'s activation rows to all
    ``G`` sub-arrays (a row goes when every one of them takes it) and the followers'
    writes into engine ``L``'s destination buffer, and answers on ``resp[L]`` once every
    engine has answered (``error`` if any did). Until then the followers' own ports
    ``cmd``/``resp`` are closed: partitions ``L+1 .. L+G-1`` must have no command of their
    own while they are ganged (the query engine claims them for the stage). A ``gang_log2``
    that names no gang of ``L`` (not in ``gang_sizes``, or ``L`` not a multiple of ``G``)
    runs the layer on engine ``L`` alone.

    Reset: as for the engine and the array, no port takes or offers anything while ``rst``
    is asserted. In Verilog the engine is one module instantiated ``partitions`` times.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        P = config.partitions
        super().__init__({
            "cmd": In(stream.Signature(mlp_engine.command_layout(config))).array(P),
            "resp": Out(stream.Signature(mlp_engine.response_layout(config))).array(P),
            "weight_write": In(stream.Signature(mlp_engine.weight_write_layout(config))).array(P),
            "bias_write": In(stream.Signature(mlp_engine.bias_write_layout(config))).array(P),
            "act_write": In(stream.Signature(mlp_engine.act_write_layout(config))).array(P),
            "act_read": In(stream.Signature(mlp_engine.act_read_layout(config))).array(P),
            "act_data": Out(stream.Signature(mlp_engine.act_word_layout(config))).array(P),
            "scores": Out(stream.Signature(mlp_engine.score_layout(config))).array(P),
            "busy": Out(1).array(P),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P = cfg.partitions
        m.submodules.array = array = SystolicArray(cfg)
        engines = []
        for p in range(P):
            engine = add_shared(m, platform, f"engine{p}", "mlp_engine", MLPLayerEngine(cfg))
            engines.append(engine)
            wiring.connect(m, engine.array_weights, array.weights[p])
            wiring.connect(m, array.results[p], engine.array_results)
            for name in ("weight_write", "bias_write", "act_write", "act_read"):
                wiring.connect(m, wiring.flipped(getattr(self, name)[p]), getattr(engine, name))
            for name in ("act_data", "scores"):
                wiring.connect(m, getattr(engine, name), wiring.flipped(getattr(self, name)[p]))
            m.d.comb += self.busy[p].eq(engine.busy)
        gangs = gangs_of(cfg)
        if not gangs:
            for p, engine in enumerate(engines):
                wiring.connect(m, wiring.flipped(self.cmd[p]), engine.cmd)
                wiring.connect(m, engine.resp, wiring.flipped(self.resp[p]))
                wiring.connect(m, engine.array_acts, array.acts[p])
            return m

        # -- gangs: which one runs (a register from its command's acceptance to its answer) --
        active = {gl: Signal(name=f"gang{gl[0]}_{gl[1]}") for gl in gangs}
        offer = {}          # the command on cmd[L] is for this gang
        for G, L in gangs:
            offer[G, L] = self.cmd[L].valid & (self.cmd[L].payload.gang_log2 == exact_log2(G))
        leader_of = {p: [(G, L) for G, L in gangs if L < p < L + G] for p in range(P)}
        leads = {p: [(G, L) for G, L in gangs if L == p] for p in range(P)}
        members = {(G, L): range(L, L + G) for G, L in gangs}
        following = [Cat(active[gl] for gl in leader_of[p]).any() if leader_of[p] else Const(0)
                     for p in range(P)]

        all_ready = {gl: Cat(engines[q].cmd.ready for q in members[gl]).all() for gl in gangs}
        answered = {gl: Cat(engines[q].resp.valid for q in members[gl]).all() for gl in gangs}
        for p, engine in enumerate(engines):
            own_cmd, eng_cmd = self.cmd[p], engine.cmd
            led = leads[p]
            # its own command (as a leader: offered to its gang, taken when all are ready)
            valid, ready = own_cmd.valid, eng_cmd.ready
            for gl in led:
                valid = Mux(offer[gl], all_ready[gl], valid)
                ready = Mux(offer[gl], all_ready[gl], ready)
            layout = own_cmd.payload.shape()
            known = Cat(own_cmd.payload.gang_log2 == exact_log2(G) for G, _ in led).any() \
                if led else Const(0)
            # (a gang_log2 of none of its gangs: the layer runs here alone)
            payload = _with_field(layout, own_cmd.payload.as_value(), "gang_log2",
                                  Mux(known, own_cmd.payload.gang_log2, 0))
            # ... or, as a follower, its leader's command in the same cycle
            targeted, index = Const(0), Const(0)
            for gl in leader_of[p]:
                G, L = gl
                payload = Mux(offer[gl], self.cmd[L].payload.as_value(), payload)
                index = Mux(offer[gl], p - L, index)
                valid = Mux(offer[gl], all_ready[gl], valid)
                targeted = targeted | offer[gl]
            if leader_of[p]:
                m.d.comb += engine.gang_index.eq(index)
            closed = following[p] | targeted
            m.d.comb += [eng_cmd.valid.eq(Mux(targeted, valid, valid & ~following[p])),
                         eng_cmd.payload.eq(payload),
                         own_cmd.ready.eq(ready & ~closed)]
            for gl in led:
                with m.If(offer[gl] & all_ready[gl]):
                    m.d.sync += active[gl].eq(1)

        # -- answers: a gang's when all its engines have answered --------------------------------
        for p, engine in enumerate(engines):
            own_resp, eng_resp = self.resp[p], engine.resp
            led = leads[p]
            valid, error = eng_resp.valid, eng_resp.payload.error
            m.d.comb += own_resp.payload.eq(eng_resp.payload)
            for gl in led:
                anyerr = Cat(engines[q].resp.payload.error for q in members[gl]).any()
                valid = Mux(active[gl], answered[gl], valid)
                error = Mux(active[gl], anyerr, error)
                with m.If(active[gl] & answered[gl] & own_resp.ready):
                    m.d.sync += active[gl].eq(0)
            m.d.comb += [own_resp.valid.eq(valid & ~following[p]),
                         own_resp.payload.error.eq(error)]
            ready = own_resp.ready
            for gl in led:
                ready = Mux(active[gl], own_resp.ready & answered[gl], ready)
            for gl in leader_of[p]:
                ready = Mux(active[gl], self.resp[gl[1]].ready & answered[gl], ready)
            m.d.comb += eng_resp.ready.eq(ready)

        # -- activation rows: a gang's leader feeds every member's sub-array ----------------------
        for p, engine in enumerate(engines):
            src = engine.array_acts
            led = leads[p]
            ready = array.acts[p].ready
            for gl in led:
                ready = Mux(active[gl], Cat(array.acts[q].ready for q in members[gl]).all(),
                            ready)
            m.d.comb += src.ready.eq(ready & ~following[p])
        for p in range(P):
            dst = array.acts[p]
            valid = engines[p].array_acts.valid
            payload = engines[p].array_acts.payload.as_value()
            led = leads[p]
            for gl in led:
                valid = Mux(active[gl], valid & Cat(array.acts[q].ready for q in members[gl]
                                                    if q != p).all(), valid)
            for G, L in leader_of[p]:
                others = Cat(array.acts[q].ready for q in members[G, L] if q != p).all()
                valid = Mux(active[G, L], engines[L].array_acts.valid & others, valid)
                payload = Mux(active[G, L], engines[L].array_acts.payload.as_value(), payload)
            m.d.comb += [dst.valid.eq(valid), dst.payload.eq(payload)]

        # -- the followers' writes into their leader's buffer ----------------------------------------
        for p, engine in enumerate(engines):
            led = leads[p]
            ins = []
            for gl in led:
                for q in members[gl]:
                    if q != p:
                        out = engines[q].gang_out
                        ins.append((active[gl] & out.valid, out))
            gin = engine.gang_in
            if ins:
                # The lanes of a gang's followers are disjoint, so an OR merges them; each
                # follower's word has its results in every lane group (as the engine's own
                # writes), so only its own lanes of it go into the OR.
                ow = cfg.operand_width
                lanes, word, addr = Const(0), Const(0), Const(0)
                for v, o in ins:
                    own = Cat(o.lanes[lane].replicate(ow) for lane in range(len(o.lanes)))
                    lanes = lanes | Mux(v, o.lanes, 0)
                    word = word | Mux(v, o.word & own, 0)
                    addr = addr | Mux(v, o.addr, 0)
                m.d.comb += [gin.valid.eq(Cat(v for v, _ in ins).any()), gin.lanes.eq(lanes),
                             gin.word.eq(word), gin.addr.eq(addr)]
        return m
