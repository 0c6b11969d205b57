"""Stage runner: one stage of a query on one partition, from candidate records in memory to
scores streaming into a top-k unit.

This is the first version of the sub-batch controller's datapath: the sub-batches of a
stage run one after another (the "sub-batch overlap off" configuration of the top level);
the version that overlaps sub-batch ``i + 1``'s bottom MLP with sub-batch ``i``'s
interaction adds a second top-input buffer to the same structure (docs/architecture.md).

For each sub-batch of at most ``sub_batch`` candidates (positions ``0..n-1``, or the
positions the previous stage kept, from ``positions``):

1. **dense**: each candidate's record is read (``records_addr + position * record_bytes``)
   and its dense int8 codes are written into activation buffer ``X`` (row = its place in
   the sub-batch);
2. **bottom MLP**: the model's bottom layers run ``X -> H -> ... -> Z`` on the engine
   (layer descriptors from the command processor's model table);
3. **embeddings and interaction**: each record is read again; its lookups go to the
   embedding subsystem; the candidate's bottom output, read from ``Z`` through the
   engine's free-buffer port, and its pooled vectors go to the interaction unit, whose
   pair results are written into ``Z`` after the bottom output (element ``D + p``), one
   lane at a time;
4. **top MLP**: ``Z -> H -> ... -> score``; every score goes to the top-k unit with the
   candidate's position as its id and the stage's ``k``, ``last`` on the stage's final
   candidate.

``done`` reports the stage: ``error`` set if an embedding lookup was out of range or
unconfigured (its vector pooled to zeros; the stage still completes) or the engine
rejected a layer (then the stage ends early, still answering ``done``).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import descriptors as d
from . import embedding, interaction, mlp_engine, topk
from .axi import axi4_read_signature
from .axi_read import AxiWordReader
from .command import MAX_LAYERS
from .config import AccelConfig, ConfigError
from .geometry import EngineGeometry

__all__ = ["StageRunner", "stage_job_layout", "BUFFER_X", "BUFFER_H", "BUFFER_Z"]

#: Activation buffers of the stage runner: dense inputs, hidden layers, top-MLP input.
BUFFER_X, BUFFER_H, BUFFER_Z = 0, 1, 2


def stage_job_layout(config: AccelConfig) -> data.StructLayout:
    """One stage to run: where the records are, how many candidates, whether their
    positions come on ``positions`` (a later stage) or are ``0..n-1``, what to keep, and
    the model (its slot and shape as the command processor's ``model_info`` holds it)."""
    return data.StructLayout({
        "records_addr": unsigned(config.mem_addr_width),
        "n": range((1 << config.id_width) + 1),
        "from_kept": 1,
        "k": topk.k_shape(config),
        "slot": range(config.model_slots),
        "n_bottom": 4, "n_top": 4, "n_tables": 8, "emb_dim": 16, "n_dense": 8, "n_pairs": 16,
        "stage": range(embedding.STAGES),
    })


class StageRunner(wiring.Component):
    """See the module docstring.

    Ports
    -----
    job : In(stream(stage_job_layout)); done : Out(stream({error}))
    positions : In(stream({position})) — a later stage's input positions, in order.
    rd_bus : the record reader's AXI4 read port.
    layer_addr / layer_data, pair_addr / pair_data : the command processor's model table.
    cmd, resp, act_write, act_read, act_data, scores : one partition's engine ports.
    lookups / pooled : the embedding subsystem.
    topk : Out(stream(topk.score_layout)) — the stage's candidates for a top-k unit.

    Needs ``act_buffers >= 3`` (buffers ``X``, ``H``, ``Z``).
    """

    def __init__(self, config: AccelConfig):
        if config.act_buffers < 3:
            raise ConfigError(f"act_buffers must be at least 3 for the stage runner, not "
                              f"{config.act_buffers!r}")
        self._config = config
        self._geo = EngineGeometry.of(config)
        self._pairs_max = interaction.pairs_max(config)
        self._record_bytes = d.record_bytes(config)
        aw = config.mem_addr_width
        super().__init__({
            "job": In(stream.Signature(stage_job_layout(config))),
            "done": Out(stream.Signature(data.StructLayout({"error": 1}))),
            "positions": In(stream.Signature(data.StructLayout(
                {"position": unsigned(config.id_width)}))),
            "rd_bus": Out(axi4_read_signature(aw, config.mem_bus_width)),
            "layer_addr": Out(range(config.model_slots * MAX_LAYERS)),
            "layer_data": In(d.layer_layout(config)),
            "pair_addr": Out(range(config.model_slots * self._pairs_max)),
            "pair_data": In(d.pair_layout(config)),
            "cmd": Out(stream.Signature(mlp_engine.command_layout(config))),
            "resp": In(stream.Signature(mlp_engine.response_layout(config))),
            "act_write": Out(stream.Signature(mlp_engine.act_write_layout(config))),
            "act_read": Out(stream.Signature(mlp_engine.act_read_layout(config))),
            "act_data": In(stream.Signature(mlp_engine.act_word_layout(config))),
            "scores": In(stream.Signature(mlp_engine.score_layout(config))),
            "lookups": Out(stream.Signature(embedding.lookup_layout(config))),
            "pooled": In(stream.Signature(embedding.pooled_layout(config))),
            "topk": Out(stream.Signature(topk.score_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, geo = self._config, self._geo
        ow = cfg.operand_width
        W, SB = geo.act_lanes, geo.sub_batch
        in_reset = ResetSignal()

        m.submodules.records = reader = AxiWordReader(cfg, self._record_bytes)
        wiring.connect(m, reader.bus, wiring.flipped(self.rd_bus))
        m.submodules.interaction = inter = interaction.InteractionUnit(cfg)
        rec_layout = d.record_layout(cfg)
        record = rec_layout(reader.words.payload.data[:rec_layout.size])

        job = Signal(stage_job_layout(cfg))
        pos_mem = Memory(shape=unsigned(cfg.id_width), depth=SB, init=[])
        m.submodules.positions_mem = pos_mem
        pos_w, pos_r = pos_mem.write_port(), pos_mem.read_port(transparent_for=())
        base = Signal(range((1 << cfg.id_width) + 1))      # first candidate of the sub-batch
        rows = Signal(range(SB + 1))                       # candidates in the sub-batch
        b = Signal(range(SB + 1))                          # row counter
        layer = Signal(range(MAX_LAYERS + 1))
        buf = Signal(range(cfg.act_buffers))               # source buffer of the next layer
        error = Signal()
        chunk = Signal(range(max(2, -(-max(cfg.max_dense, cfg.emb_dim_max) // W) + 1)))
        dense_chunks = -(-cfg.max_dense // W)
        held = Signal(rec_layout)
        vec0 = Signal(data.ArrayLayout(unsigned(ow), cfg.emb_dim_max))
        lookup_n = Signal(range(cfg.max_lookups + 1))
        table = Signal(range(cfg.max_tables + 1))
        pooled_n = Signal(range(cfg.max_tables + 1))
        result_n = Signal(range(self._pairs_max + 1))     # pair results written of the row
        n_pairs = Signal(range(self._pairs_max + 1))
        score_pending = Signal()                           # a score beat waits for its id
        score_reg = Signal(mlp_engine.score_layout(cfg))
        last_sub = Signal()

        m.d.comb += [reader.words.ready.eq(0), self.layer_addr.eq(job.slot * MAX_LAYERS + layer)]
        cmd = self.cmd.payload
        ld = self.layer_data
        m.d.comb += [cmd.rows.eq(rows), cmd.in_dim.eq(ld.in_dim), cmd.out_dim.eq(ld.out_dim),
                     cmd.weight_tile.eq(ld.weight_tile), cmd.bias_word.eq(ld.bias_word),
                     cmd.mult.eq(ld.mult), cmd.shift.eq(ld.shift), cmd.relu.eq(ld.relu),
                     cmd.score.eq(ld.score), cmd.src.eq(buf), cmd.tag.eq(layer)]
        bottom_last = layer == job.n_bottom - 1
        top_last = layer == job.n_bottom + job.n_top - 1

        def next_buffer(src, last, final):
            """Layers alternate between two buffers; the final layer writes ``final``."""
            return Mux(last, final, Mux(src == BUFFER_H, Mux(final == BUFFER_Z, BUFFER_X,
                                                             BUFFER_Z), BUFFER_H))

        def fetch_record(prefix: str, then: str, on_word: list):
            """States reading row ``b``'s record (its position, then one word) into
            ``held``; used twice, for the dense codes and for the lookups."""
            with m.State(f"{prefix}_READ"):
                m.d.comb += pos_r.addr.eq(b)
                m.next = f"{prefix}_JOB"
            with m.State(f"{prefix}_JOB"):
                m.d.comb += [pos_r.addr.eq(b), reader.jobs.valid.eq(1),
                             reader.jobs.payload.addr.eq(job.records_addr +
                                                         pos_r.data * self._record_bytes),
                             reader.jobs.payload.count.eq(1)]
                with m.If(reader.jobs.ready):
                    m.next = f"{prefix}_WORD"
            with m.State(f"{prefix}_WORD"):
                m.d.comb += reader.words.ready.eq(1)
                with m.If(reader.words.valid):
                    m.d.sync += [held.eq(record), *on_word]
                    m.next = then

        def layer_command(prefix: str, last, final: int):
            """The states sending the current layer's command: its descriptor is read in
            ``prefix`` (one cycle), the command goes in ``<prefix>_CMD``, its destination
            the other buffer of the pair, ``final`` for the MLP's last layer."""
            with m.State(prefix):
                m.next = f"{prefix}_CMD"
            with m.State(f"{prefix}_CMD"):
                dst = next_buffer(buf, last, final)
                m.d.comb += [self.cmd.valid.eq(1), cmd.dst.eq(dst)]
                with m.If(self.cmd.ready):
                    m.d.sync += buf.eq(dst)
                    m.next = f"{prefix}_RESP"

        with m.FSM(name="stage"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(~in_reset)
                with m.If(self.job.valid & ~in_reset):
                    m.d.sync += [job.eq(self.job.payload), base.eq(0), error.eq(0),
                                 n_pairs.eq(0)]
                    m.next = "PARAMS"
            # -- the model's interaction parameters into the interaction unit ------------------
            with m.State("PARAMS"):
                m.d.comb += self.pair_addr.eq(job.slot * self._pairs_max + n_pairs)
                m.next = "PARAM_WRITE"
            with m.State("PARAM_WRITE"):
                m.d.comb += [self.pair_addr.eq(job.slot * self._pairs_max + n_pairs),
                             inter.pair_params.valid.eq(1),
                             inter.pair_params.payload.index.eq(n_pairs),
                             inter.pair_params.payload.mult.eq(self.pair_data.mult),
                             inter.pair_params.payload.shift.eq(self.pair_data.shift)]
                with m.If(inter.pair_params.ready):
                    m.d.sync += n_pairs.eq(n_pairs + 1)
                    with m.If(n_pairs + 1 >= job.n_pairs):
                        m.next = "SUB_BATCH"
                    with m.Else():
                        m.next = "PARAMS"
            # -- the next sub-batch: its positions ----------------------------------------------
            with m.State("SUB_BATCH"):
                left = job.n - base
                m.d.sync += [rows.eq(Mux(left > SB, SB, left)), b.eq(0),
                             last_sub.eq(left <= SB)]
                m.next = "POSITIONS"
            with m.State("POSITIONS"):
                pv = self.positions
                m.d.comb += [pos_w.addr.eq(b), pv.ready.eq(job.from_kept),
                             pos_w.data.eq(Mux(job.from_kept, pv.payload.position, base + b)),
                             pos_w.en.eq(~job.from_kept | pv.valid)]
                with m.If(~job.from_kept | pv.valid):
                    m.d.sync += b.eq(b + 1)
                    with m.If(b + 1 == rows):
                        m.d.sync += b.eq(0)
                        m.next = "DENSE_READ"
            # -- 1. dense codes into X -------------------------------------------------------------
            fetch_record("DENSE", "DENSE_WRITE", [chunk.eq(0)])
            with m.State("DENSE_WRITE"):
                aw_ = self.act_write
                dense = Cat(held.dense.as_value(), Const(0, W * ow * dense_chunks))
                m.d.comb += [aw_.valid.eq(1), aw_.payload.buffer.eq(BUFFER_X),
                             aw_.payload.addr.eq(chunk * SB + b),
                             aw_.payload.data.eq(dense.word_select(chunk, W * ow))]
                with m.If(aw_.ready):
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If(chunk == dense_chunks - 1):
                        m.d.sync += b.eq(b + 1)
                        with m.If(b + 1 == rows):
                            m.d.sync += [layer.eq(0), buf.eq(BUFFER_X)]
                            m.next = "BOTTOM"
                        with m.Else():
                            m.next = "DENSE_READ"
            # -- 2. bottom MLP X -> H -> ... -> Z --------------------------------------------------
            layer_command("BOTTOM", bottom_last, BUFFER_Z)
            with m.State("BOTTOM_RESP"):
                m.d.comb += self.resp.ready.eq(1)
                with m.If(self.resp.valid):
                    with m.If(self.resp.payload.error):
                        m.d.sync += error.eq(1)
                        m.next = "DONE"
                    with m.Elif(bottom_last):
                        m.d.sync += [b.eq(0), layer.eq(layer + 1)]
                        m.next = "INTER_READ"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "BOTTOM"
            # -- 3. lookups, bottom output and pooled vectors through the interaction ------------
            fetch_record("INTER", "LOOKUPS", [lookup_n.eq(0), table.eq(0), chunk.eq(0),
                                              pooled_n.eq(0), result_n.eq(0)])
            with m.State("LOOKUPS"):
                # A record without lookups sends one empty bag (pooled to zeros, flagged).
                lk = held.lookups[lookup_n]
                lo = self.lookups
                empty = held.n_lookups == 0
                final = empty | (lookup_n == held.n_lookups - 1)
                m.d.comb += [lo.valid.eq(1), lo.payload.model.eq(job.slot),
                             lo.payload.table.eq(table), lo.payload.row.eq(lk.row),
                             lo.payload.bag_end.eq(lk.bag_end | empty),
                             lo.payload.sample_end.eq(final),
                             lo.payload.empty.eq(empty), lo.payload.stage.eq(job.stage)]
                with m.If(lo.ready):
                    m.d.sync += [lookup_n.eq(lookup_n + 1), table.eq(table + lk.bag_end)]
                    with m.If(final):
                        m.next = "VEC0_READ"
            with m.State("VEC0_READ"):
                ar = self.act_read
                m.d.comb += [ar.valid.eq(1), ar.payload.buffer.eq(BUFFER_Z),
                             ar.payload.addr.eq(chunk * SB + b)]
                with m.If(ar.ready):
                    m.next = "VEC0_DATA"
            with m.State("VEC0_DATA"):
                m.d.comb += self.act_data.ready.eq(1)
                with m.If(self.act_data.valid):
                    words = -(-cfg.emb_dim_max // W)
                    with m.Switch(chunk):
                        for c in range(words):
                            with m.Case(c):
                                for lane in range(W):
                                    if c * W + lane < cfg.emb_dim_max:
                                        m.d.sync += vec0[c * W + lane].eq(
                                            self.act_data.payload[lane])
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If((chunk + 1) * W >= job.emb_dim):
                        m.next = "VEC0_SEND"
                    with m.Else():
                        m.next = "VEC0_READ"
            with m.State("VEC0_SEND"):
                m.d.comb += [inter.vectors.valid.eq(1), inter.vectors.payload.last.eq(0),
                             inter.vectors.payload.data.eq(vec0.as_value()),
                             inter.dim.eq(job.emb_dim)]
                with m.If(inter.vectors.ready):
                    m.next = "POOLED"
            with m.State("POOLED"):
                pv = self.pooled
                # the candidate's pooled vectors up to the embedding subsystem's `last`
                # (a record with more or fewer bags than the model has tables makes the
                # interaction answer with its error beat: the candidate is flagged)
                m.d.comb += [inter.vectors.valid.eq(pv.valid),
                             inter.vectors.payload.data.eq(pv.payload.data),
                             inter.vectors.payload.last.eq(pv.payload.last),
                             pv.ready.eq(inter.vectors.ready)]
                with m.If(pv.valid & inter.vectors.ready):
                    m.d.sync += [pooled_n.eq(pooled_n + 1), error.eq(error | pv.payload.error)]
                    with m.If(pv.payload.last):
                        m.next = "RESULTS"
            with m.State("RESULTS"):
                # one pair result per cycle into Z, element D + p of row b
                out = inter.out
                lane_of = Signal(range(max(interaction.pack_max(cfg), 2)))
                aw_ = self.act_write
                element = job.emb_dim + result_n
                m.d.comb += [aw_.valid.eq(out.valid & ~out.payload.error),
                             aw_.payload.buffer.eq(BUFFER_Z),
                             aw_.payload.addr.eq((element // W) * SB + b),
                             aw_.payload.data.eq(out.payload.data[lane_of].replicate(W)),
                             aw_.payload.skip.eq(~(Const(1, W) << (element % W)))]
                done_beat = lane_of == out.payload.count - 1
                m.d.comb += out.ready.eq(out.payload.error | (aw_.ready & done_beat))
                with m.If(out.valid & out.payload.error):
                    m.d.sync += error.eq(1)
                with m.If(out.valid & ~out.payload.error & aw_.ready):
                    m.d.sync += [result_n.eq(result_n + 1), lane_of.eq(lane_of + 1)]
                    with m.If(done_beat):
                        m.d.sync += lane_of.eq(0)
                with m.If(out.valid & out.ready & out.payload.last):
                    m.d.sync += [b.eq(b + 1), lane_of.eq(0)]
                    with m.If(b + 1 == rows):
                        m.d.sync += buf.eq(BUFFER_Z)
                        m.next = "TOP"
                    with m.Else():
                        m.next = "INTER_READ"
            # -- 4. top MLP Z -> H -> ... -> scores into the top-k unit --------------------------
            layer_command("TOP", top_last, BUFFER_H)
            with m.State("TOP_RESP"):
                m.d.comb += self.resp.ready.eq(~score_pending)
                with m.If(self.resp.valid & ~score_pending):
                    with m.If(self.resp.payload.error):
                        m.d.sync += error.eq(1)
                        m.next = "DONE"
                    with m.Elif(top_last):
                        m.d.sync += base.eq(base + rows)
                        with m.If(last_sub):
                            m.next = "DONE"
                        with m.Else():
                            m.next = "SUB_BATCH"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "TOP"
            with m.State("DONE"):
                m.d.comb += [self.done.valid.eq(1), self.done.payload.error.eq(error)]
                with m.If(self.done.ready):
                    m.next = "IDLE"

        # Scores to the top-k unit: a beat waits one cycle for its position (memory read);
        # the position memory reads only when a beat is taken, so a waiting id holds.
        sc = self.scores
        tk = self.topk
        m.d.comb += [sc.ready.eq(~score_pending | tk.ready),
                     pos_r.en.eq(~score_pending | tk.ready)]
        with m.If(sc.valid & sc.ready):
            m.d.sync += [score_reg.eq(sc.payload), score_pending.eq(1)]
        with m.Elif(tk.ready):
            m.d.sync += score_pending.eq(0)
        with m.If(sc.valid):
            m.d.comb += pos_r.addr.eq(sc.payload.row)
        m.d.comb += [tk.valid.eq(score_pending), tk.payload.score.eq(score_reg.score),
                     tk.payload.id.eq(pos_r.data), tk.payload.k.eq(job.k),
                     tk.payload.last.eq(score_reg.last & last_sub)]
        return m
