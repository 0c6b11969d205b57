"""The block-write job mux (hw/write_mux.py) in the Amaranth simulator: three clients offer
jobs at random times against a writer that is often not ready; every offered job on the
output keeps its payload until taken, each job's data beats follow it, each client gets its
own ``done``, and no client starves."""

import numpy as np

from rpaccel.hw.config import PRESETS
from rpaccel.hw.write_mux import WriteJobMux
from rpaccel.tb.amaranth_sim import Stalls, get, put, simulate

CONFIG = PRESETS["tiny"]
CLIENTS, JOBS = 3, 12


def test_jobs_keep_their_payload_and_data_until_taken():
    dut = WriteJobMux(CONFIG, CLIENTS)
    rng = np.random.default_rng(5)
    plans = {c: [(0x1000 * (c + 1) + 0x40 * j, int(rng.integers(1, 4))) for j in range(JOBS)]
             for c in range(CLIENTS)}
    seen, dones, offered_changes = [], {c: 0 for c in range(CLIENTS)}, []

    def client(c):
        async def bench(ctx):
            stalls = Stalls(0.5, np.random.default_rng(10 + c))
            for addr, beats in plans[c]:
                await put(ctx, dut.jobs[c], {"addr": addr, "bytes": 8 * beats}, stalls)
                for b in range(beats):
                    await put(ctx, dut.data[c], {"data": addr + b}, stalls)
                await get(ctx, dut.done[c], stalls)
                dones[c] += 1
        return bench

    async def writer(ctx):
        stalls = Stalls(0.6, np.random.default_rng(3))
        for _ in range(CLIENTS * JOBS):
            job = await get(ctx, dut.out_jobs, stalls)
            for b in range(job["bytes"] // 8):
                beat = await get(ctx, dut.out_data, stalls)
                assert beat["data"] == job["addr"] + b       # the job's own data, in order
            seen.append(job["addr"])
            await put(ctx, dut.out_done, {"error": 0}, stalls)

    async def monitor(ctx):
        # an offer not taken at a clock edge must still be there, unchanged, at the next
        waiting = None
        async for _, _, valid, ready, addr in ctx.tick().sample(
                dut.out_jobs.valid, dut.out_jobs.ready, dut.out_jobs.payload.addr):
            if waiting is not None and (not valid or addr != waiting):
                offered_changes.append((waiting, addr if valid else None))
            waiting = addr if valid and not ready else None

    simulate(dut, [client(c) for c in range(CLIENTS)] + [writer], background=[monitor],
             max_cycles=20_000, name="write_mux")
    assert offered_changes == []
    assert sorted(seen) == sorted(a for c in plans for a, _ in plans[c])
    assert dones == {c: JOBS for c in range(CLIENTS)}
