"""AXI4 read arbiter: several read managers of the top level on one memory port.

Each client keeps its own AXI4 read port (``hw/axi.py::axi4_read_signature`` with a 1-bit
ID); the arbiter forwards their bursts round robin onto one port whose ARID is the client's
number, and routes every R beat back by RID. Responses of one client return in its request
order (AXI orders responses per ID); different clients' beats may interleave.
"""

from __future__ import annotations

import functools
import operator

from amaranth import Cat, Const, Module, ResetSignal, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .axi import axi4_read_signature
from .config import AccelConfig
from .shared import index_bits
from .stream import StreamFIFO

__all__ = ["AxiReadArbiter"]


class AxiReadArbiter(wiring.Component):
    """``clients`` AXI4 read managers onto one.

    Ports
    -----
    clients : In(axi4_read_signature(addr, data, client_id_width)).array(n)
        One port per client (the client is the manager, with IDs of its own).
    bus : Out(axi4_read_signature(addr, data, id_width))
        ARID = ``{client index, client ARID}`` (the usual interconnect ID extension), RID
        split back the same way. An address is taken from a client into a slot of its own
        (one per client; ``arready`` is the slot's emptiness), then through a holding
        register into a four-entry queue in front of ``bus`` (so ``arvalid`` and the address
        are registers, stable until ``arready``); one burst per cycle when the queue drains
        as fast, a burst on ``bus`` three cycles after its client's handshake at the
        earliest, and a client's next address taken the cycle after its slot is picked.
        R beats go to the client named by RID, with that client's ``rready``.

    Fair: the client after the last one served wins among those offering. While reset is
    asserted no ``arready`` or ``rvalid`` is given to a client.
    """

    #: Clients of a build from the configuration alone (the unit registry): the command
    #: processor, the record fetchers and the embedding subsystem.
    DEFAULT_CLIENTS = 3

    def __init__(self, config: AccelConfig, clients: int = DEFAULT_CLIENTS, *,
                 client_id_width: int = 1):
        if clients < 1:
            raise ValueError(f"an arbiter needs at least one client, not {clients!r}")
        self._config = config
        self._n = clients
        self._index_width = index_bits(clients)
        self._client_id = client_id_width
        self._id_width = client_id_width + self._index_width
        aw, dw = config.mem_addr_width, config.mem_bus_width
        super().__init__({
            "clients": In(axi4_read_signature(aw, dw, client_id_width)).array(clients),
            "bus": Out(axi4_read_signature(aw, dw, self._id_width)),
        })

    @property
    def id_width(self) -> int:
        return self._id_width

    def elaborate(self, platform):
        m = Module()
        n, cfg = self._n, self._config
        bus = self.bus
        in_reset = ResetSignal()
        ar = data.StructLayout({"addr": cfg.mem_addr_width, "len": 8, "size": 3, "burst": 2,
                                "lock": 1, "cache": 4, "prot": 3, "id": self._id_width})
        # Depth 4: SyncFIFOBuffered of depth 2 would hold a zero-width inner memory.
        m.submodules.queue = queue = StreamFIFO(ar, 4)

        # Each client's address is first taken into a slot of its own (its arready is the
        # slot's emptiness, a register), the round robin picks among full slots, and the
        # picked address goes through a holding register into the queue. In the top level
        # the clients sit across the chip: their addresses routed through the grant logic
        # and multiplexer into the queue were the command processor's critical path
        # (71.9 MHz on tiny); now a client's address only travels into its slot.
        slots = [Signal(ar, name=f"slot{i}") for i in range(n)]
        slot_full = Signal(n)
        held = Signal(ar)
        held_valid = Signal()
        for i, c in enumerate(self.clients):
            m.d.comb += c.arready.eq(~slot_full[i] & ~in_reset)
            # An empty slot follows the client's address on every cycle and a full one holds
            # it: the slot's enable is its own emptiness, not the client's arvalid (the
            # client's state through the handshake into the enables of the slot's 50-odd
            # flip-flops was the command processor's critical path, 10.43 ns of which 8.02
            # routing, 95.8 MHz on `default`). Only a full slot is ever granted, so what an
            # empty one holds is never used.
            with m.If(~slot_full[i]):
                m.d.sync += [slots[i].addr.eq(c.araddr), slots[i].len.eq(c.arlen),
                             slots[i].size.eq(c.arsize), slots[i].burst.eq(c.arburst),
                             slots[i].lock.eq(c.arlock), slots[i].cache.eq(c.arcache),
                             slots[i].prot.eq(c.arprot),
                             slots[i].id.eq(Cat(c.arid, Const(i, self._index_width)))]
        # Round robin: the first full slot after the last one granted. One-hot and in
        # parallel: client c wins when its slot is full and every slot between the last
        # granted and c (circularly) is empty; the picked address is an AND-OR of the
        # slots. (A priority chain of conditions on an encoded `last`, then a multiplexer
        # indexed by the encoded grant, was ten LUTs deep: the command processor's critical
        # path on `tiny`, 72.5 MHz, last -> grant -> held.)
        last = Signal(n, init=1)              # one-hot; client 0 counts as served last
        grant = Signal(n)                     # one-hot, or 0 when every slot is empty
        for c in range(n):
            wins = []
            for origin in range(n):
                between = [(origin + k) % n for k in range(1, (c - origin) % n or n)]
                empty = Cat(~slot_full[k] for k in between).all() if between else Const(1, 1)
                wins.append(last[origin] & empty)
            m.d.comb += grant[c].eq(slot_full[c] & Cat(wins).any())
        picked = Signal(ar)
        m.d.comb += picked.eq(functools.reduce(operator.or_, (
            slots[c].as_value() & grant[c].replicate(ar.size) for c in range(n))))
        take = grant.any() & (~held_valid | queue.w.ready) & ~in_reset
        with m.If(queue.w.ready):
            m.d.sync += held_valid.eq(0)
        with m.If(take):
            m.d.sync += [last.eq(grant), held_valid.eq(1), held.eq(picked)]
        for i, c in enumerate(self.clients):
            with m.If(c.arvalid & c.arready):
                m.d.sync += slot_full[i].eq(1)
            with m.Elif(take & grant[i]):
                m.d.sync += slot_full[i].eq(0)
        with m.If(in_reset):
            m.d.sync += [held_valid.eq(0), slot_full.eq(0)]
        m.d.comb += [queue.w.valid.eq(held_valid), queue.w.payload.eq(held)]
        q = queue.r.payload
        m.d.comb += [bus.araddr.eq(q.addr), bus.arlen.eq(q.len), bus.arsize.eq(q.size),
                     bus.arburst.eq(q.burst), bus.arlock.eq(q.lock), bus.arcache.eq(q.cache),
                     bus.arprot.eq(q.prot), bus.arid.eq(q.id),
                     bus.arvalid.eq(queue.r.valid), queue.r.ready.eq(bus.arready)]

        # R: to the client named by RID.
        ready = Signal()
        for i, c in enumerate(self.clients):
            cid = self._client_id
            mine = bus.rid[cid:] == i
            m.d.comb += [c.rdata.eq(bus.rdata), c.rresp.eq(bus.rresp), c.rlast.eq(bus.rlast),
                         c.rid.eq(bus.rid[:cid]), c.rvalid.eq(bus.rvalid & mine & ~in_reset)]
            with m.If(mine):
                m.d.comb += ready.eq(c.rready)
        m.d.comb += bus.rready.eq(ready & ~in_reset)
        return m
