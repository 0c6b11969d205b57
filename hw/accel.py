"""RPAccel, the top level: one AXI4-Lite slave for the registers, one AXI4 master to memory,
an interrupt, and inside: the CSR block, the command processor, the query engine, one stage
runner per partition over the compute core, the top-k units and the embedding subsystem.

The host drives it only through the registers (``hw/regmap.py``), the command ring and
memory (``hw/descriptors.py``): write the ring base, size, completion base and memory
region, set ``CTRL.ENABLE`` (and ``IRQ_ENABLE``), move ``RING_TAIL``; the accelerator
fetches, loads, ranks and writes completions and results, and raises ``irq`` while
``IRQ_STATUS`` has a cause and ``IRQ_ENABLE`` is set.

Queries are in flight at once (``hw/query.py``): each stage runs on the runners of its
partition mask (its sub-batches dealt over them) and the top-k unit it names
(``topk_units`` are built; none with ``onchip_topk`` off, where the scores go to memory).
Concurrent runners share the embedding subsystem (locked per candidate, pooled vectors
routed back by a FIFO of owners, :meth:`RPAccel._share_embedding`) and read the command
processor's layer and pair tables through a port each. What is not done yet is listed in
docs/architecture.md ("Top level"). Needs ``act_buffers >= 3`` (the stage runner's check,
raised at construction).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import embedding
from .axi import axi4_read_signature
from .axi_arbiter import AxiReadArbiter
from .axi_write import AxiBlockWriter, axi4_write_signature
from .command import CommandProcessor
from .compute_core import ComputeCore
from .config import AccelConfig
from .csr import CSRBlock, axi_lite_signature
from .query import QueryEngine
from .regmap import counter_names
from .shared import index_range
from .stage import StageRunner
from .stream import RegisterSlice, StreamFIFO, connect_through_slice
from .topk import TopKFilter
from .write_mux import WriteJobMux

__all__ = ["RPAccel", "axi4_signature"]


def axi4_signature(addr_width: int, data_width: int, id_width: int) -> wiring.Signature:
    """A whole AXI4 manager port: the read channels (``axi4_read_signature``) and the write
    channels (``axi4_write_signature``) under one name, so ``cocotbext-axi``'s
    ``AxiBus.from_prefix(dut, "m_axi_")`` binds both."""
    members = dict(axi4_read_signature(addr_width, data_width, id_width).members.items())
    members.update(axi4_write_signature(addr_width, data_width, 1).members.items())
    return wiring.Signature(members)


def _connect_read(m, client, port):
    """A read manager ``client`` onto an arbiter ``port`` whose ID may be wider."""
    for name in ("araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot",
                 "arvalid"):
        m.d.comb += getattr(port, name).eq(getattr(client, name))
    m.d.comb += port.arid.eq(client.arid)
    for name in ("arready", "rdata", "rresp", "rlast", "rvalid"):
        m.d.comb += getattr(client, name).eq(getattr(port, name))
    m.d.comb += [client.rid.eq(port.rid), port.rready.eq(client.rready)]


class RPAccel(wiring.Component):
    """The accelerator. Ports: ``s_axil`` (registers), ``m_axi`` (memory), ``irq``."""

    def __init__(self, config: AccelConfig):
        self._config = config
        self._csr_width = CSRBlock.address_width(config)
        cp_ids = CommandProcessor.read_id_width(config)
        self._client_id = cp_ids
        self._read_clients = 2 + config.partitions      # command, embedding, runners
        arb = AxiReadArbiter(config, self._read_clients, client_id_width=cp_ids)
        self._id_width = arb.id_width
        # the parts, built here so that tests can watch their ports
        self.csr = CSRBlock(config)
        self.command = CommandProcessor(config)
        self.queries = QueryEngine(config)
        self.core = ComputeCore(config)
        self.embedding = embedding.EmbeddingSubsystem(config)
        self.writer = AxiBlockWriter(config)
        self.write_mux = WriteJobMux(config, 2)
        self.reads = arb
        self.stages = [StageRunner(config) for _ in range(config.partitions)]
        # ``topk_units`` of them, each stage routed to the one its ``topk_unit`` names;
        # without on-chip top-k (``onchip_topk`` off) none: the query engine writes the
        # scores to memory
        self.topk_units = [TopKFilter(config) for _ in range(config.topk_units)] \
            if config.onchip_topk else []
        super().__init__({
            "s_axil": In(axi_lite_signature(self._csr_width)),
            "m_axi": Out(axi4_signature(config.mem_addr_width, config.mem_bus_width,
                                        self._id_width)),
            "irq": Out(1),
        })

    @staticmethod
    def _share_embedding(m, emb, runners):
        """The one embedding subsystem (one lookup stream in, pooled vectors out, in order)
        shared by the runners of concurrent stages: a runner holds the lookup stream from a
        candidate's first lookup to its ``sample_end`` (a candidate's bags are never
        interleaved with another's), the granted runner is queued in a small FIFO of
        owners at the candidate's first lookup, and each pooled packet (up to its ``last``)
        goes to the owner at the FIFO's head. Grants go round robin among the runners
        offering a lookup (a new candidate is granted only while the FIFO has room); the
        granted lookups reach the subsystem through a two-entry FIFO, its pooled vectors
        come out through a register slice, and each runner talks to the arbiter through
        register slices of its own.
        Contract on the runners: a runner takes its own pooled vectors without waiting for
        any other lookup to be accepted (the stage runner sends a candidate's lookups, then
        takes its pooled vectors)."""
        P = len(runners)
        # A registered stage between the grant and the subsystem: without it the runners'
        # front-end state ran through the grant multiplexer into the subsystem's set hash
        # and tag read address, the `default` top level's critical path (40.0 MHz, 25.0 ns,
        # 18.0 of it routing across the chip). A two-entry FIFO, so half rate, on purpose:
        # measured with a full-rate register slice here, stage 1 of `default` (20 users)
        # took 55,929 cycles instead of 50,370, the same lookups and hit rates; why the
        # subsystem runs slower when offered a lookup on every cycle is not known yet
        # (docs/architecture.md, "Top level").
        # And one register slice per runner each way, so a runner's state reaches neither
        # the other runner (through the grant) nor the subsystem (through the pooled
        # demultiplexer into its retire and fill-queue logic, 12 LUT levels, the most
        # frequent top-level crossing before them): the grant and the demultiplexer see
        # only the slices.
        m.submodules.emb_lookups_q = lookups_q = StreamFIFO(emb.lookups.payload.shape(), 2)
        wiring.connect(m, lookups_q.r, emb.lookups)
        # the subsystem's pooled vectors into a slice before the demultiplexer: its retire
        # logic behind `pooled.ready` then starts at the slice's skid flag, not at the
        # owner FIFO's head (1,115 endpoints over 6.67 ns without it, `rpaccel depth`)
        m.submodules.emb_pooled_q = pooled_q = RegisterSlice(emb.pooled.payload.shape())
        wiring.connect(m, emb.pooled, pooled_q.w)
        lk, pooled = lookups_q.w, pooled_q.r
        lookups, pooleds = [], []           # the slices' ends on the arbiter's side
        for p, run in enumerate(runners):
            look_q = RegisterSlice(run.lookups.payload.shape())
            pool_q = RegisterSlice(run.pooled.payload.shape())
            m.submodules[f"emb_lookups_q{p}"], m.submodules[f"emb_pooled_q{p}"] = look_q, pool_q
            wiring.connect(m, run.lookups, look_q.w)
            wiring.connect(m, pool_q.r, run.pooled)
            lookups.append(look_q.r)
            pooleds.append(pool_q.w)
        depth = 4
        # buffered: the head is a register, so the pooled demultiplexer below starts at one
        # (a runner is queued a cycle later; its pooled vectors come many cycles after that)
        m.submodules.emb_owners = owners = SyncFIFOBuffered(
            width=Shape.cast(index_range(P)).width, depth=depth)
        locked = Signal()                     # a candidate's lookups are under way
        holder = Signal(index_range(P))       # ... from this runner
        last = Signal(index_range(P))         # the runner granted last (round robin)
        grant = Signal(index_range(P))
        offering = Cat(look.valid for look in lookups)
        for step in range(P, 0, -1):
            for origin in range(P):
                client = (origin + step) % P
                with m.If((last == origin) & offering[client]):
                    m.d.comb += grant.eq(client)
        sel = Signal(index_range(P))
        m.d.comb += sel.eq(Mux(locked, holder, grant))
        may = locked | (owners.w_rdy & offering.any())
        for p, look in enumerate(lookups):
            with m.If(sel == p):
                m.d.comb += [lk.payload.eq(look.payload), lk.valid.eq(look.valid & may),
                             look.ready.eq(lk.ready & may)]
        fire = lk.valid & lk.ready
        with m.If(fire):
            m.d.sync += [locked.eq(~lk.payload.sample_end), holder.eq(sel)]
            with m.If(~locked):
                m.d.sync += last.eq(sel)
        # the owner is queued on the candidate's first lookup: the subsystem may pool a bag
        # before the candidate's later lookups are in
        m.d.comb += [owners.w_en.eq(fire & ~locked), owners.w_data.eq(sel)]
        for p, pv in enumerate(pooleds):
            mine = owners.r_rdy & (owners.r_data == p)
            m.d.comb += [pv.payload.eq(pooled.payload), pv.valid.eq(pooled.valid & mine)]
            with m.If(mine):
                m.d.comb += pooled.ready.eq(pv.ready)
        m.d.comb += owners.r_en.eq(pooled.valid & pooled.ready & pooled.payload.last)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, aw = cfg.partitions, cfg.mem_addr_width
        m.submodules.csr = csr = self.csr
        m.submodules.command = cp = self.command
        m.submodules.queries = qe = self.queries
        m.submodules.core = core = self.core
        m.submodules.embedding = emb = self.embedding
        m.submodules.writer = writer = self.writer
        m.submodules.write_mux = wmux = self.write_mux
        m.submodules.reads = arb = self.reads
        runners, units = self.stages, self.topk_units
        for p in range(P):
            m.submodules[f"stage{p}"] = runners[p]
        for u, unit in enumerate(units):
            m.submodules[f"topk{u}"] = unit

        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        r = csr.regs

        # -- memory port ------------------------------------------------------------------------
        _connect_read(m, cp.rd_bus, arb.clients[0])
        _connect_read(m, emb.m_axi, arb.clients[1])
        for p in range(P):
            _connect_read(m, runners[p].rd_bus, arb.clients[2 + p])
        for name, member in arb.bus.signature.members.items():
            if member.flow == Out:
                m.d.comb += getattr(self.m_axi, name).eq(getattr(arb.bus, name))
            else:
                m.d.comb += getattr(arb.bus, name).eq(getattr(self.m_axi, name))
        for name, member in writer.bus.signature.members.items():
            if member.flow == Out:
                m.d.comb += getattr(self.m_axi, name).eq(getattr(writer.bus, name))
            else:
                m.d.comb += getattr(writer.bus, name).eq(getattr(self.m_axi, name))
        # The writer's completions go back through register slices (a completion a cycle
        # later): its beat state ran through the multiplexer's routing into both clients'
        # state machines.
        for j, client in enumerate((cp, qe)):
            wiring.connect(m, client.wr_jobs, wmux.jobs[j])
            wiring.connect(m, client.wr_data, wmux.data[j])
            connect_through_slice(m, f"wr_done_q{j}", wmux.done[j], client.wr_done)
        wiring.connect(m, wmux.out_jobs, writer.jobs)
        wiring.connect(m, wmux.out_data, writer.data)
        wiring.connect(m, writer.done, wmux.out_done)

        # -- command processor, query engine, stages -------------------------------------------
        # Register slices both ways between the command processor and the query engine (a
        # query, and its completion, a cycle later): the processor's command state ran
        # through its query handshake into the engine's slot allocation, and the engine's
        # slot state through its completion into the processor's record logic.
        connect_through_slice(m, "query_q", cp.query, qe.query)
        connect_through_slice(m, "query_done_q", qe.done, cp.query_done)
        m.d.comb += qe.model_info.eq(cp.model_info)
        for p in range(P):
            run = runners[p]
            wiring.connect(m, cp.weight_write[p], core.weight_write[p])
            wiring.connect(m, cp.bias_write[p], core.bias_write[p])
            # register slices on the query engine's job stream into the runner (its slot
            # state ran through the runner's job decode into the loader's enables)
            connect_through_slice(m, f"jobs_q{p}", qe.jobs[p], run.job)
            wiring.connect(m, run.done, qe.job_done[p])
            # and on its positions (the runner's ready ran into the query engine's kept-list
            # read address, which reads ahead on a transfer)
            connect_through_slice(m, f"positions_q{p}", qe.positions[p], run.positions)
            wiring.connect(m, run.cmd, core.cmd[p])
            wiring.connect(m, core.resp[p], run.resp)
            wiring.connect(m, run.act_write, core.act_write[p])
            wiring.connect(m, run.act_read, core.act_read[p])
            wiring.connect(m, core.act_data[p], run.act_data)
            wiring.connect(m, core.scores[p], run.scores)
            # A registered stage between each runner and the query engine's merge: without
            # it the merge's ready (selected by the owning slot's stage) ran through the
            # runner, the engine's score output and its accumulator pipeline into its bias
            # memory's read enable, the `tiny` top level's critical path (43.4 MHz, 19.2 of
            # 23.0 ns routing). A register slice: full rate, a score a cycle later.
            connect_through_slice(m, f"scores_q{p}", run.topk, qe.scores[p])
            m.d.comb += [cp.layer_addr[p].eq(run.layer_addr), run.layer_data.eq(cp.layer_data[p]),
                         cp.pair_addr[p].eq(run.pair_addr), run.pair_data.eq(cp.pair_data[p])]
        # register slices both ways between the query engine and each top-k unit: the
        # engine's slot state ran through its candidate routing into the units' input
        # logic, and a unit's result state through the engine's merge back
        for u, unit in enumerate(units):
            connect_through_slice(m, f"topk_in_q{u}", qe.topk_in[u], unit.scores)
            connect_through_slice(m, f"results_q{u}", unit.topk, qe.results[u])
        self._share_embedding(m, emb, runners)
        # Register slices between the command processor and the embedding subsystem's
        # host writes (a write lands a cycle later): without them the
        # command processor's state ran through its table decode into the descriptor
        # memory's write data across the device, the `default` top level's critical path
        # (43.6 MHz, 22.9 ns of which 17.3 routing).
        for name, src, dst in (("descriptors_q", cp.emb_descriptors, emb.descriptors),
                               ("static_write_q", cp.static_write, emb.static_write)):
            connect_through_slice(m, name, src, dst)

        # -- registers ----------------------------------------------------------------------------
        m.d.comb += [
            cp.enable.eq(r.CTRL__ENABLE),
            cp.ring_base.eq(Cat(r.RING_BASE_LO__VALUE, r.RING_BASE_HI__VALUE)[:aw]),
            cp.ring_log2.eq(r.RING_ENTRIES__LOG2),
            cp.tail.eq(r.RING_TAIL__INDEX),
            cp.completion_base.eq(Cat(r.COMPLETION_BASE_LO__VALUE,
                                      r.COMPLETION_BASE_HI__VALUE)[:aw]),
            cp.region_base.eq(Cat(r.REGION_BASE_LO__VALUE, r.REGION_BASE_HI__VALUE)[:aw]),
            cp.region_size.eq(Cat(r.REGION_SIZE_LO__VALUE, r.REGION_SIZE_HI__VALUE)[:aw + 1]),
            r.RING_HEAD__INDEX.eq(cp.head),
            r.STATUS__BUSY.eq(cp.busy),
            r.STATUS__RING_EMPTY.eq(cp.head == r.RING_TAIL__INDEX),
            r.STATUS__ERROR.eq(r.IRQ_STATUS__ERROR),
            r.IRQ_STATUS__DONE_set.eq(cp.done_pulse),
            r.IRQ_STATUS__ERROR_set.eq(cp.error_pulse),
            r.ERROR__CODE.eq(cp.last_error),
            r.ERROR__INDEX.eq(cp.last_error_index),
            r.ERROR_COUNT__VALUE.eq(cp.errors),
            self.irq.eq(r.CTRL__IRQ_ENABLE & (r.IRQ_STATUS__DONE | r.IRQ_STATUS__ERROR)),
        ]
        for s in range(min(cfg.max_stages, embedding.STAGES)):
            m.d.comb += emb.stage_ways[s].eq(getattr(r, f"DYNAMIC_WAYS{s}__MASK"))

        # -- 64-bit performance counters --------------------------------------------------------
        clear = r.CTRL__CLEAR_COUNTERS
        bus = self.m_axi
        B = cfg.mem_bus_width // 8
        outstanding = Signal(16)
        ar_fire = bus.arvalid & bus.arready
        r_last = bus.rvalid & bus.rready & bus.rlast
        m.d.sync += outstanding.eq(outstanding + ar_fire - r_last)
        queries_done = qe.done.valid & qe.done.ready

        # Every event is registered before it is counted, and the write strobes once more
        # before their popcount: the events are handshakes of the memory port and of the
        # units, and counting them combinationally ran the AXI writer's beat state through
        # the strobe popcount into a 64-bit adder (40 cells, writer -> CSR, at the top
        # level). A counter so lags its events by a cycle (two for MEM_WRITE_BYTES), which
        # only a read within those cycles could see; a clear zeroes the registered events
        # too, so it drops exactly what it dropped before.
        def registered(value, name):
            q = Signal(len(Value.cast(value)), name=f"event_{name}")
            m.d.sync += q.eq(Mux(clear, 0, value))
            return q
        strobes = registered(Mux(bus.wvalid & bus.wready, bus.wstrb, 0), "wstrb")
        increments = {
            "CYCLES": 1, "BUSY_CYCLES": registered(cp.busy, "busy"),
            "QUERIES_DONE": registered(queries_done, "queries_done"),
            "COMMANDS_DONE": registered(cp.done_pulse, "commands_done"),
            "MEM_READ_BURSTS": registered(ar_fire, "ar_fire"),
            "MEM_READ_BYTES": registered(bus.rvalid & bus.rready, "r_fire") * B,
            "MEM_READ_LATENCY": registered(outstanding, "outstanding"),
            "MEM_WRITE_BYTES": registered(sum(strobes[i] for i in range(B)), "write_bytes"),
        }
        for p in range(P):
            increments[f"ENGINE{p}_BUSY"] = registered(core.busy[p], f"engine{p}_busy")
        if P > 1:
            busy = Cat(*(core.busy[p] for p in range(P)))
            increments["ENGINES_OVERLAP"] = registered((busy & (busy - 1)).any(),  # 2+ bits
                                                       "engines_overlap")
        emb_names = {"STATIC_ACCESSES": "static_accesses", "STATIC_HITS": "static_hits",
                     "DYNAMIC_ACCESSES": "dynamic_accesses", "DYNAMIC_HITS": "dynamic_hits",
                     "DYNAMIC_MISSES": "dynamic_misses", "DYNAMIC_FILLS": "dynamic_fills",
                     "DYNAMIC_EVICTIONS": "dynamic_evictions"}
        for name, _ in counter_names(cfg):
            value = Signal(64, name=f"counter_{name.lower()}")
            if name in emb_names:
                # the embedding subsystem counts (32 bits, cleared with the others)
                m.d.comb += value.eq(getattr(emb.counters, emb_names[name]))
            else:
                with m.If(clear):
                    m.d.sync += value.eq(0)
                with m.Else():
                    m.d.sync += value.eq(value + increments[name])
            m.d.comb += [getattr(r, f"{name}_LO__VALUE").eq(value[:32]),
                         getattr(r, f"{name}_HI__VALUE").eq(value[32:])]
        m.d.comb += emb.clear_counters.eq(clear)
        return m
