"""Stage runner: one stage of a query on one partition, from candidate records in memory to
scores streaming into a top-k unit.

A stage's candidates (positions ``0..n-1``, or the positions the previous stage kept, from
``positions``) are processed in sub-batches of at most ``sub_batch``. Each sub-batch goes
through four phases:

* **L** (load): its positions into an on-chip slot; each record is read
  (``records_addr + position * record_bytes``) and its dense int8 codes are written into
  activation buffer ``X`` (row = its place in the sub-batch);
* **B** (bottom MLP): the model's bottom layers ``X -> H -> X -> ... -> Z`` on the engine
  (layer descriptors from the command processor's model table);
* **I** (embeddings and interaction): each record is read again; its lookups go to the
  embedding subsystem; the candidate's bottom output, read from ``Z`` through the engine's
  free-buffer port, and its pooled vectors go to the interaction unit, whose pair results
  are written into ``Z`` after the bottom output (element ``D + p``), one lane at a time;
* **T** (top MLP): ``Z -> H -> Z -> ... -> score``; every score goes to the top-k unit with
  the candidate's position as its id and the stage's ``k``, ``last`` on the stage's final
  candidate.

Three workers run the phases (a loader for L, a front end for I, the engine sequencer for
B and T, each one sub-batch at a time) and a controller starts them. Within I the front
end overlaps candidates: candidate ``r + 1``'s record read and lookups (up to
:data:`FRONT_AHEAD` candidates ahead) go out while candidate ``r``'s vectors are pooled and
go through the interaction unit, which loads one sample while it computes the previous,
and while the results of the one before are written into ``Z``.

* ``subbatch_overlap = False`` (the baseline): ``L(i) B(i) I(i) T(i)`` for each sub-batch in
  turn, buffers ``X``, ``H``, ``Z``.
* ``subbatch_overlap = True``: buffers ``X``, ``H``, ``Z0``, ``Z1``; sub-batch ``i`` uses
  ``Z[i % 2]``. After ``L(0) B(0)``, step ``i`` runs ``I(i)`` on the front end while the
  engine runs ``T(i-1)`` (reading and ping-ponging ``Z[(i-1) % 2]`` and ``H``) and then
  ``B(i+1)`` (``X``/``H`` into ``Z[(i+1) % 2]``, the buffer ``T(i-1)`` has just released),
  and the loader runs ``L(i+1)`` into ``X`` beside ``T(i-1)``; the step ends when all three
  are done, and ``T(last)`` runs alone at the end. During step ``i`` the engine touches
  only ``X``, ``H`` and ``Z[(i+1) % 2]``, and the loader writes ``X`` only before ``B(i+1)``
  starts, so the front end's reads and writes of ``Z[i % 2]`` and the loader's writes of
  ``X`` always find their buffer free (the engine refuses its host ports only on the
  buffers of the running layer); positions live in three slots (the sub-batches in L, I
  and T).

Latency and throughput: step ``i`` lasts ``max(I(i), max(T(i-1), L(i+1)) + B(i+1))`` plus
a few cycles of control, so a stage of ``s`` sub-batches takes ``L + B``, the steps, and a
final ``T`` instead of ``s * (L + B + I + T)``; in steady state one sub-batch per
``max(I, T + B)`` (``L`` stretches while it shares the reader with ``I``, but hides under
``T``). With one sub-batch nothing overlaps and both schedules take the same cycles (the
overlapped controller adds two). ``tests/test_stage.py`` measures both schedules.

The loader and the front end share one record reader (front end first: its phase is the
longer) and the engine's ``act_write`` port (front end first). Scores leave in candidate
order on both schedules, so the top-k unit sees the same stream.

``done`` reports the stage: ``error`` set if an embedding lookup was out of range or
unconfigured (its vector pooled to zeros; the stage still completes) or the engine
rejected a layer (then no further phase is started: the phases already running finish, and
``done`` is answered; the top-k unit may not have seen ``last``). ``n`` must be at least 1.
"""

from __future__ import annotations

from types import SimpleNamespace

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
from .shared import times_const

__all__ = ["StageRunner", "stage_job_layout", "BUFFER_X", "BUFFER_H", "BUFFER_Z", "BUFFER_Z1"]

#: Activation buffers of the stage runner: dense inputs, hidden layers, top-MLP input (and
#: the second top-MLP input of the overlapped schedule).
BUFFER_X, BUFFER_H, BUFFER_Z, BUFFER_Z1 = 0, 1, 2, 3

#: Rows the front end's record fetch and lookups may run ahead of the rows whose vectors go
#: to the interaction unit (bounds how long the loader waits for the shared record reader).
FRONT_AHEAD = 2

#: Position slots of the overlapped schedule: the sub-batches in their L, I and T phases.
OVERLAP_SLOTS = 3


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
        # every layer but the score layer ganged over 2**gang_log2 engines from this one
        **({"gang_log2": mlp_engine.command_layout(config)["gang_log2"].shape}
           if mlp_engine.gang_sizes(config) else {}),
    })


class StageRunner(wiring.Component):
    """See the module docstring.

    Ports
    -----
    job : In(stream(stage_job_layout)); done : Out(stream({error}))
        One job at a time: ``job`` is taken when the runner is idle, ``done`` answers it.
    positions : In(stream({position})) — a later stage's input positions, in order; taken
        sub-batch by sub-batch in its L phase.
    rd_bus : the record reader's AXI4 read port (one burst outstanding).
    layer_addr / layer_data, pair_addr / pair_data : the command processor's model table.
    cmd, resp, act_write, act_read, act_data, scores : one partition's engine ports.
    lookups / pooled : the embedding subsystem.
    topk : Out(stream(topk.score_layout)) — the stage's candidates for a top-k unit, in
        candidate order, ``last`` on the stage's final one.

    Needs ``act_buffers >= 3 + subbatch_overlap`` (``X``, ``H``, ``Z`` and ``Z1``);
    fewer raise ``ConfigError`` naming the field, its value and the need.
    """

    def __init__(self, config: AccelConfig):
        need = 3 + config.subbatch_overlap
        if config.act_buffers < need:
            names = "X, H, Z0, Z1" if config.subbatch_overlap else "X, H, Z"
            raise ConfigError(
                f"act_buffers must be at least {need} for the stage runner with "
                f"subbatch_overlap = {config.subbatch_overlap} (buffers {names}), not "
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
        overlap = cfg.subbatch_overlap
        in_reset = ResetSignal()

        m.submodules.records = reader = AxiWordReader(cfg, self._record_bytes)
        wiring.connect(m, reader.bus, wiring.flipped(self.rd_bus))
        m.submodules.interaction = inter = interaction.InteractionUnit(cfg)
        rec_layout = d.record_layout(cfg)
        record = rec_layout(reader.words.payload.data[:rec_layout.size])

        job = Signal(stage_job_layout(cfg))
        slots = OVERLAP_SLOTS if overlap else 1
        # (at least two words: no zero-width address with sub_batch = 1)
        # no_rw_check: no read meets a write of its word on one edge (the loader writes the
        # slot of the sub-batch it loads; the front end and the scores read the two other
        # slots, and a slot is loaded again only in a later step, after its last reader is
        # done), so yosys builds no read-first collision logic, which sat between the block
        # RAM and the registers after it (the unit's longest path, 8.41 ns from the DP16KD)
        pos_mem = Memory(shape=unsigned(cfg.id_width), depth=max(slots * SB, 2), init=[],
                         attrs={"no_rw_check": 1})
        m.submodules.positions_mem = pos_mem
        pos_w = pos_mem.write_port()
        # One read port per reader of the slots (scores, loader, front end): they run at once.
        pos_s, pos_l, pos_f = (pos_mem.read_port(transparent_for=()) for _ in range(3))

        def pos_addr(slot, row):
            return slot * SB + row if overlap else row

        def z_buffer(parity):
            return Mux(parity, BUFFER_Z1, BUFFER_Z) if overlap else Const(BUFFER_Z, 2)

        # -- the sub-batch a worker is started on -------------------------------------------
        first_shape = range((1 << cfg.id_width) + 3 * SB + 1)
        task_layout = data.StructLayout({
            "first": first_shape,              # its first candidate (of 0..n-1)
            "rows": range(SB + 1),
            "slot": range(OVERLAP_SLOTS),      # its positions' slot
            "zbuf": range(cfg.act_buffers),    # its Z buffer
            "top": 1,                          # (engine) top MLP, else bottom
            "last": 1,                         # the stage's final sub-batch
        })

        def worker(name):
            """A worker's start pulse and task (driven by the controller) and its copy."""
            return SimpleNamespace(go=Signal(name=f"{name}_go"),
                                   task=Signal(task_layout, name=f"{name}_task"),
                                   cur=Signal(task_layout, name=f"{name}_cur"))

        load, front, engine = worker("load"), worker("front"), worker("engine")

        def start(w, first, slot, parity, top=0):
            left = job.n - first
            m.d.comb += [w.go.eq(1), w.task.first.eq(first),
                         w.task.rows.eq(Mux(left > SB, SB, left)), w.task.slot.eq(slot),
                         w.task.zbuf.eq(z_buffer(parity)), w.task.top.eq(top),
                         w.task.last.eq(first + SB >= job.n)]

        # -- the shared record reader: one job (one record) at a time, front end first ------
        def reader_client(name):
            return SimpleNamespace(name=name, valid=Signal(name=f"{name}_rd_valid"),
                                   ready=Signal(name=f"{name}_rd_ready"),
                                   addr=Signal.like(reader.jobs.payload.addr,
                                                    name=f"{name}_rd_addr"),
                                   word_valid=Signal(name=f"{name}_word_valid"),
                                   word_ready=Signal(name=f"{name}_word_ready"))

        f_rd, l_rd = reader_client("front"), reader_client("load")
        word_to_front = Signal()     # whose job the reader is answering
        # The reader samples a job only when it takes it, so the offered job may change
        # from the loader's to the front end's while the reader is busy.
        m.d.comb += [reader.jobs.valid.eq(f_rd.valid | l_rd.valid),
                     reader.jobs.payload.addr.eq(Mux(f_rd.valid, f_rd.addr, l_rd.addr)),
                     reader.jobs.payload.count.eq(1),
                     f_rd.ready.eq(reader.jobs.ready),
                     l_rd.ready.eq(reader.jobs.ready & ~f_rd.valid),
                     f_rd.word_valid.eq(reader.words.valid & word_to_front),
                     l_rd.word_valid.eq(reader.words.valid & ~word_to_front),
                     reader.words.ready.eq(Mux(word_to_front, f_rd.word_ready,
                                               l_rd.word_ready))]
        with m.If(reader.jobs.valid & reader.jobs.ready):
            m.d.sync += word_to_front.eq(f_rd.valid)

        def fetch_record(port, slot, row, client, then, on_word):
            """States reading ``row``'s record: its position from ``port`` (one cycle), the
            position into a register (one cycle: it leaves a block RAM, whose clock-to-out
            followed by the address arithmetic was the unit's longest path), the record's
            address into a register (one cycle: its product and sum would otherwise run on
            into the AXI request), the reader job, the word (``on_word`` runs with
            ``record`` on it)."""
            record_addr = Signal.like(client.addr, name=f"{client.name}_rec_addr")
            # (no reset: on the ECP5 it is the block RAM's output register, gen/ebr_outreg.py)
            position = Signal.like(port.data, name=f"{client.name}_rec_position",
                                   reset_less=True)
            with m.State("READ"):
                m.d.comb += port.addr.eq(pos_addr(slot, row))
                m.next = "POSITION"
            with m.State("POSITION"):
                m.d.sync += position.eq(port.data)
                m.next = "ADDR"
            with m.State("ADDR"):
                m.d.sync += record_addr.eq(job.records_addr
                                           + times_const(position, self._record_bytes))
                m.next = "JOB"
            with m.State("JOB"):
                m.d.comb += [client.valid.eq(1), client.addr.eq(record_addr)]
                with m.If(client.ready):
                    m.next = "WORD"
            with m.State("WORD"):
                m.d.comb += client.word_ready.eq(1)
                with m.If(client.word_valid):
                    m.d.sync += on_word
                    m.next = then

        # -- the engine's act_write port: front end (pair results) first, then loader -------
        f_aw = SimpleNamespace(valid=Signal(name="front_aw_valid"),
                               payload=Signal(mlp_engine.act_write_layout(cfg),
                                              name="front_aw_payload"))
        # (the loader writes whole words of X: its address and data only)
        l_aw = SimpleNamespace(valid=Signal(name="load_aw_valid"),
                               addr=Signal.like(self.act_write.payload.addr, name="load_aw_addr"),
                               data=Signal.like(self.act_write.payload.data, name="load_aw_data"))
        aw_, fp = self.act_write, f_aw.payload
        m.d.comb += [aw_.valid.eq(f_aw.valid | l_aw.valid),
                     aw_.payload.buffer.eq(Mux(f_aw.valid, fp.buffer, BUFFER_X)),
                     aw_.payload.addr.eq(Mux(f_aw.valid, fp.addr, l_aw.addr)),
                     aw_.payload.data.eq(Mux(f_aw.valid, fp.data, l_aw.data)),
                     aw_.payload.skip.eq(Mux(f_aw.valid, fp.skip, 0))]
        f_aw.ready, l_aw.ready = aw_.ready, aw_.ready & ~f_aw.valid

        # -- L: positions into the slot, dense codes into X ----------------------------------
        dense_chunks = -(-cfg.max_dense // W)
        lb = Signal(range(SB + 1))
        l_chunk = Signal(range(max(2, dense_chunks + 1)))
        l_dense = Signal.like(record.dense)
        lt = load.cur
        with m.FSM(name="load") as load_fsm:
            with m.State("IDLE"):
                with m.If(load.go):
                    m.d.sync += [lt.eq(load.task), lb.eq(0)]
                    m.next = "POSITIONS"
            with m.State("POSITIONS"):
                pv = self.positions
                m.d.comb += [pos_w.addr.eq(pos_addr(lt.slot, lb)), pv.ready.eq(job.from_kept),
                             pos_w.data.eq(Mux(job.from_kept, pv.payload.position,
                                               lt.first + lb)),
                             pos_w.en.eq(~job.from_kept | pv.valid)]
                with m.If(~job.from_kept | pv.valid):
                    m.d.sync += lb.eq(lb + 1)
                    with m.If(lb + 1 == lt.rows):
                        m.d.sync += lb.eq(0)
                        m.next = "READ"
            fetch_record(pos_l, lt.slot, lb, l_rd, "WRITE", [l_dense.eq(record.dense),
                                                             l_chunk.eq(0)])
            with m.State("WRITE"):
                dense = Cat(l_dense.as_value(), Const(0, W * ow * dense_chunks))
                m.d.comb += [l_aw.valid.eq(1), l_aw.addr.eq(l_chunk * SB + lb),
                             l_aw.data.eq(dense.word_select(l_chunk, W * ow))]
                with m.If(l_aw.ready):
                    m.d.sync += l_chunk.eq(l_chunk + 1)
                    with m.If(l_chunk == dense_chunks - 1):
                        m.d.sync += lb.eq(lb + 1)
                        with m.If(lb + 1 == lt.rows):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "READ"

        # -- I: lookups, bottom output and pooled vectors through the interaction ------------
        # Three processes, each a row at a time and in row order, so candidate r + 1's record
        # fetch and lookups overlap candidate r's pooling, interaction and pair results (the
        # interaction unit loads a sample while it computes the one before): the *issue*
        # FSM reads a row's record and sends its lookups (at most FRONT_AHEAD rows ahead of
        # the feed), the *feed* FSM sends the row's bottom output and its pooled vectors to
        # the interaction unit once the row's lookups are out, and the *results* process
        # writes each row's pair results into Z as they come. The sub-batch's I phase ends
        # with its last row's results (``front_active`` low).
        ft = front.cur
        fb = Signal(range(SB + 1))          # issue: the row whose record and lookups go out
        fv = Signal(range(SB + 1))          # feed: the row whose vectors go out
        fr = Signal(range(SB + 1))          # results: the row whose pair results come in
        front_active = Signal()
        # fr is the sub-batch's last row (fr + 1 == rows), registered: the compare had been
        # in series with the engine's act_write ready on the way into front_active, the
        # `default` top level's deepest path (`rpaccel depth`: 18 LUT levels from the
        # engine's command register)
        fr_last = Signal()
        chunk = Signal(range(max(2, -(-cfg.emb_dim_max // W) + 1)))
        held = Signal(rec_layout)
        vec0 = Signal(data.ArrayLayout(unsigned(ow), cfg.emb_dim_max))
        lookup_n = Signal(range(cfg.max_lookups + 1))
        table = Signal(range(cfg.max_tables + 1))
        result_n = Signal(range(self._pairs_max + 1))     # pair results written of the row
        lane_of = Signal(range(max(interaction.pack_max(cfg), 2)))
        pooled_error = Signal()     # a lookup out of range or unconfigured (feed)
        result_error = Signal()     # the interaction's error beat for a sample (results)
        front_error = pooled_error | result_error
        with m.FSM(name="front"):
            with m.State("IDLE"):
                with m.If(front.go):
                    m.d.sync += [ft.eq(front.task), fb.eq(0), fv.eq(0), fr.eq(0),
                                 fr_last.eq(front.task.rows == 1),
                                 result_n.eq(0), lane_of.eq(0), front_active.eq(1)]
                    m.next = "AHEAD"
            with m.State("AHEAD"):
                with m.If(fb < fv + FRONT_AHEAD):
                    m.next = "READ"
            fetch_record(pos_f, ft.slot, fb, f_rd, "LOOKUPS",
                         [held.eq(record), lookup_n.eq(0), table.eq(0)])
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
                        m.d.sync += fb.eq(fb + 1)
                        with m.If(fb + 1 == ft.rows):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "AHEAD"

        with m.FSM(name="feed"):
            with m.State("IDLE"):
                with m.If(front_active & (fv < fb)):
                    m.d.sync += chunk.eq(0)
                    m.next = "VEC0_READ"
            with m.State("VEC0_READ"):
                ar = self.act_read
                m.d.comb += [ar.valid.eq(1), ar.payload.buffer.eq(ft.zbuf),
                             ar.payload.addr.eq(chunk * SB + fv)]
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
                    m.d.sync += pooled_error.eq(pooled_error | pv.payload.error)
                    with m.If(pv.payload.last):
                        m.d.sync += fv.eq(fv + 1)
                        m.next = "IDLE"

        # results: one pair result per cycle into Z, element D + p of row fr
        out = inter.out
        element = job.emb_dim + result_n
        m.d.comb += [f_aw.valid.eq(front_active & out.valid & ~out.payload.error),
                     f_aw.payload.buffer.eq(ft.zbuf),
                     f_aw.payload.addr.eq((element // W) * SB + fr),
                     f_aw.payload.data.eq(out.payload.data[lane_of].replicate(W)),
                     f_aw.payload.skip.eq(~(Const(1, W) << (element % W)))]
        done_beat = lane_of == out.payload.count - 1
        m.d.comb += out.ready.eq(front_active & (out.payload.error | (f_aw.ready & done_beat)))
        with m.If(front_active & out.valid & out.payload.error):
            m.d.sync += result_error.eq(1)
        with m.If(f_aw.valid & f_aw.ready):
            m.d.sync += [result_n.eq(result_n + 1), lane_of.eq(lane_of + 1)]
            with m.If(done_beat):
                m.d.sync += lane_of.eq(0)
        with m.If(out.valid & out.ready & out.payload.last):
            m.d.sync += [fr.eq(fr + 1), fr_last.eq(fr + 2 == ft.rows), lane_of.eq(0),
                         result_n.eq(0)]
            with m.If(fr_last):
                m.d.sync += front_active.eq(0)

        # -- B and T: one MLP of a sub-batch on the engine, layer by layer -------------------
        et = engine.cur
        layer = Signal(range(MAX_LAYERS + 1))
        buf = Signal(range(cfg.act_buffers))               # source buffer of the next layer
        engine_error = Signal()
        score_pending = Signal()                           # a score beat waits for its id
        m.d.comb += self.layer_addr.eq(times_const(job.slot, MAX_LAYERS) + layer)
        cmd = self.cmd.payload
        ld = self.layer_data
        m.d.comb += [cmd.rows.eq(et.rows), cmd.in_dim.eq(ld.in_dim), cmd.out_dim.eq(ld.out_dim),
                     cmd.weight_tile.eq(ld.weight_tile), cmd.bias_word.eq(ld.bias_word),
                     cmd.mult.eq(ld.mult), cmd.shift.eq(ld.shift), cmd.relu.eq(ld.relu),
                     cmd.score.eq(ld.score), cmd.src.eq(buf), cmd.tag.eq(layer)]
        if mlp_engine.gang_sizes(cfg):
            m.d.comb += cmd.gang_log2.eq(Mux(ld.score, 0, job.gang_log2))
        final_layer = Mux(et.top, layer == job.n_bottom + job.n_top - 1,
                          layer == job.n_bottom - 1)
        # Layers alternate between two buffers: the bottom MLP between X and H, ending in
        # its Z; the top MLP between its Z and H (never X: the next sub-batch loads there
        # meanwhile), its score layer naming H (a score layer writes no buffer).
        other = Mux(et.top, et.zbuf, BUFFER_X)
        dst = Mux(final_layer, Mux(et.top, BUFFER_H, et.zbuf),
                  Mux(buf == BUFFER_H, other, BUFFER_H))
        with m.FSM(name="engine") as engine_fsm:
            with m.State("IDLE"):
                with m.If(engine.go):
                    m.d.sync += [et.eq(engine.task),
                                 layer.eq(Mux(engine.task.top, job.n_bottom, 0)),
                                 buf.eq(Mux(engine.task.top, engine.task.zbuf, BUFFER_X))]
                    m.next = "DESC"
            with m.State("DESC"):
                # the layer's descriptor is read in this cycle (layer_addr registered) and
                # registered in the next, so it is on layer_data in CMD
                m.next = "DESC_HELD"
            with m.State("DESC_HELD"):
                m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.cmd.valid.eq(1), cmd.dst.eq(dst)]
                with m.If(self.cmd.ready):
                    m.d.sync += buf.eq(dst)
                    m.next = "RESP"
            with m.State("RESP"):
                # A score layer answers after its last score was taken; the response waits
                # until that score has gone to the top-k unit, so the next task may change
                # the slot the scores' ids are read from.
                m.d.comb += self.resp.ready.eq(~score_pending)
                with m.If(self.resp.valid & ~score_pending):
                    with m.If(self.resp.payload.error):
                        m.d.sync += engine_error.eq(1)
                        m.next = "IDLE"
                    with m.Elif(final_layer):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "DESC"

        load_busy = ~load_fsm.ongoing("IDLE")
        front_busy = front_active
        engine_busy = ~engine_fsm.ongoing("IDLE")

        # -- the controller --------------------------------------------------------------------
        # nxt: the first candidate of the sub-batch to load next (sequential: of the current
        # one); slot_n, par_n: that sub-batch's position slot and Z parity.
        nxt = Signal(first_shape)
        slot_n = Signal(range(OVERLAP_SLOTS))
        par_n = Signal()
        n_pairs = Signal(range(self._pairs_max + 1))

        def slot_plus(s, k):
            return Mux(s + k >= OVERLAP_SLOTS, s + k - OVERLAP_SLOTS, s + k)

        with m.FSM(name="stage"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(~in_reset)
                with m.If(self.job.valid & ~in_reset):
                    m.d.sync += [job.eq(self.job.payload), nxt.eq(0), slot_n.eq(0),
                                 par_n.eq(0), pooled_error.eq(0), result_error.eq(0),
                                 engine_error.eq(0),
                                 n_pairs.eq(0)]
                    m.next = "PARAMS"
            # -- the model's interaction parameters into the interaction unit ------------------
            # (the pair's parameters are on pair_data two cycles after its address)
            with m.State("PARAMS"):
                m.d.comb += self.pair_addr.eq(times_const(job.slot, self._pairs_max) + n_pairs)
                m.next = "PARAM_HELD"
            with m.State("PARAM_HELD"):
                m.d.comb += self.pair_addr.eq(times_const(job.slot, self._pairs_max) + n_pairs)
                m.next = "PARAM_WRITE"
            with m.State("PARAM_WRITE"):
                m.d.comb += [self.pair_addr.eq(times_const(job.slot, self._pairs_max) + n_pairs),
                             inter.pair_params.valid.eq(1),
                             inter.pair_params.payload.index.eq(n_pairs),
                             inter.pair_params.payload.mult.eq(self.pair_data.mult),
                             inter.pair_params.payload.shift.eq(self.pair_data.shift)]
                with m.If(inter.pair_params.ready):
                    m.d.sync += n_pairs.eq(n_pairs + 1)
                    with m.If(n_pairs + 1 >= job.n_pairs):
                        m.next = "STEP" if overlap else "LOAD"
                    with m.Else():
                        m.next = "PARAMS"
            if overlap:
                # Step i (nxt = first candidate of sub-batch i+1): I(i) | T(i-1), B(i+1) |
                # L(i+1). The first step (nxt = 0) is L(0), B(0); the last is T(last).
                # The step's three decisions are registered from `nxt` and the job, one
                # cycle before STEP reads them (STEP_NEXT after `nxt` moved on): the add and
                # compares had run into the workers' start and their task registers
                # (112.5 MHz on `default`). One cycle per step.
                has_next, has_inter, has_top = Signal(), Signal(), Signal()
                m.d.sync += [has_next.eq(nxt < job.n),
                             has_inter.eq((nxt >= SB) & (nxt < job.n + SB)),
                             has_top.eq(nxt >= 2 * SB)]
                with m.State("STEP_NEXT"):
                    m.next = "STEP"
                with m.State("STEP"):
                    with m.If(has_inter):
                        start(front, nxt - SB, slot_plus(slot_n, 2), ~par_n)
                    with m.If(has_next):
                        start(load, nxt, slot_n, par_n)
                    with m.If(has_top):      # Z[(i-1) % 2] is Z[(i+1) % 2]
                        start(engine, nxt - 2 * SB, slot_plus(slot_n, 1), par_n, top=1)
                    m.next = "STEP_BOTTOM"
                with m.State("STEP_BOTTOM"):
                    # B(i+1) needs its dense codes in X and T(i-1) to have released its Z.
                    with m.If(~engine_busy & ~load_busy):
                        with m.If(has_next & ~engine_error):
                            start(engine, nxt, slot_n, par_n)
                        m.next = "STEP_END"
                with m.State("STEP_END"):
                    with m.If(~engine_busy & ~front_busy & ~load_busy):
                        m.d.sync += [nxt.eq(nxt + SB), slot_n.eq(slot_plus(slot_n, 1)),
                                     par_n.eq(~par_n)]
                        # the step that ran T(last) was the last one
                        with m.If(engine_error | (nxt >= job.n + SB)):
                            m.next = "DONE"
                        with m.Else():
                            m.next = "STEP_NEXT"
            else:
                # L(i), B(i), I(i), T(i), each waiting for the one before.
                with m.State("LOAD"):
                    start(load, nxt, 0, 0)
                    m.next = "BOTTOM"
                with m.State("BOTTOM"):
                    with m.If(~load_busy):
                        start(engine, nxt, 0, 0)
                        m.next = "INTER"
                with m.State("INTER"):
                    with m.If(~engine_busy):
                        with m.If(engine_error):
                            m.next = "DONE"
                        with m.Else():
                            start(front, nxt, 0, 0)
                            m.next = "TOP"
                with m.State("TOP"):
                    with m.If(~front_busy):
                        start(engine, nxt, 0, 0, top=1)
                        m.next = "NEXT"
                with m.State("NEXT"):
                    with m.If(~engine_busy):
                        m.d.sync += nxt.eq(nxt + SB)
                        with m.If(engine_error | (nxt + SB >= job.n)):
                            m.next = "DONE"
                        with m.Else():
                            m.next = "LOAD"
            with m.State("DONE"):
                m.d.comb += [self.done.valid.eq(1),
                             self.done.payload.error.eq(front_error | engine_error)]
                with m.If(self.done.ready):
                    m.next = "IDLE"

        # Scores to the top-k unit: a beat waits one cycle for its position (memory read);
        # the position memory reads only when a beat is taken, so a waiting id holds.
        sc = self.scores
        tk = self.topk
        score_reg = Signal(mlp_engine.score_layout(cfg))
        m.d.comb += [sc.ready.eq((~score_pending | tk.ready) & ~in_reset),
                     pos_s.en.eq(~score_pending | tk.ready),
                     pos_s.addr.eq(pos_addr(et.slot, sc.payload.row))]
        with m.If(sc.valid & sc.ready):
            m.d.sync += [score_reg.eq(sc.payload), score_pending.eq(1)]
        with m.Elif(tk.ready):
            m.d.sync += score_pending.eq(0)
        m.d.comb += [tk.valid.eq(score_pending), tk.payload.score.eq(score_reg.score),
                     tk.payload.id.eq(pos_s.data), tk.payload.k.eq(job.k),
                     tk.payload.last.eq(score_reg.last & et.last)]
        return m
