"""AXI4 memory for Amaranth-simulator tests: a read slave and a write slave over a byte
memory (``rpaccel.sim.scheduler.MemoryImage`` or anything with ``read(addr, n)`` and
``write(addr, data)``), with random pauses drawn from a seeded ``Stalls``.

The read slave answers bursts in order (one beat per cycle when not paused) and the write
slave applies ``WSTRB`` and answers OKAY; an address for which the memory raises
``IndexError`` is answered DECERR (reads return zeros), so tests of error paths need no
special model. Every AR and AW is recorded (``ars``, ``aws``) for checks such as "no
access outside the region".
"""

from __future__ import annotations

from .amaranth_sim import NO_STALLS, Stalls

__all__ = ["AxiMemory"]

OKAY, DECERR = 0, 3


class AxiMemory:
    def __init__(self, memory, bus_bytes: int, *, stalls: Stalls = NO_STALLS):
        self.memory = memory
        self.B = bus_bytes
        self.stalls = stalls
        self.ars: list[tuple[int, int]] = []
        self.aws: list[tuple[int, int]] = []

    def _read(self, addr: int) -> tuple[int, int]:
        try:
            return int.from_bytes(self.memory.read(addr, self.B), "little"), OKAY
        except IndexError:
            return 0, DECERR

    def reader(self, bus):
        """A background testbench serving the AXI4 read port ``bus`` (manager's view)."""
        async def serve(ctx):
            queue = []
            beat = None                     # (addr, beats left, id) of the burst on R
            ctx.set(bus.arready, 1)
            async for _, _, arv, ara, arl, arid, rr, rv in ctx.tick().sample(
                    bus.arvalid, bus.araddr, bus.arlen, bus.arid, bus.rready, bus.rvalid):
                if arv:
                    self.ars.append((ara, arl + 1))
                    queue.append([ara, arl + 1, arid])
                if rv and rr:
                    beat[0] += self.B
                    beat[1] -= 1
                    if beat[1] == 0:
                        beat = None
                if beat is None and queue:
                    beat = queue.pop(0)
                if beat is not None and not self.stalls.stall():
                    data, resp = self._read(beat[0])
                    ctx.set(bus.rdata, data)
                    ctx.set(bus.rresp, resp)
                    ctx.set(bus.rid, beat[2])
                    ctx.set(bus.rlast, beat[1] == 1)
                    ctx.set(bus.rvalid, 1)
                else:
                    ctx.set(bus.rvalid, 0)
        return serve

    def writer(self, bus):
        """A background testbench serving the AXI4 write port ``bus``."""
        async def serve(ctx):
            bursts, responses = [], []
            ctx.set(bus.awready, 1)
            ctx.set(bus.wready, 1)
            async for _, _, awv, awa, awl, wv, wd, ws, wl, bv, br in ctx.tick().sample(
                    bus.awvalid, bus.awaddr, bus.awlen, bus.wvalid, bus.wdata, bus.wstrb,
                    bus.wlast, bus.bvalid, bus.bready):
                if awv:
                    self.aws.append((awa, awl + 1))
                    bursts.append([awa, OKAY])
                if wv:
                    addr = bursts[0][0]
                    raw = wd.to_bytes(self.B, "little")
                    for i in range(self.B):
                        if ws >> i & 1:
                            try:
                                self.memory.write(addr + i, raw[i:i + 1])
                            except IndexError:
                                bursts[0][1] = DECERR
                    bursts[0][0] += self.B
                    if wl:
                        responses.append(bursts.pop(0)[1])
                if bv and br:
                    responses.pop(0)
                ctx.set(bus.bvalid, bool(responses))
                ctx.set(bus.bresp, responses[0] if responses else 0)
        return serve
