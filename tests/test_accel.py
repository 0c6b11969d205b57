"""RPAccel, the top level (hw/accel.py), end to end in the Amaranth simulator: the host
scheduler's memory image and ring for real MovieLens queries, the host driving only the
registers (AXI4-Lite) and memory (AXI4 with random pauses), the interrupt awaited; every
query's ranking, scores and every stage's kept list equal the golden cascade."""

import numpy as np
import pytest

from rpaccel.hw.accel import RPAccel
from rpaccel.hw.config import PRESETS, ConfigError
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.golden import load_golden
from rpaccel.sim.registers import RegisterAccess
from rpaccel.sim.scheduler import Scheduler
from rpaccel.tb.amaranth_axi import AxiMemory, axil_read, axil_write
from rpaccel.tb.amaranth_sim import Stalls, simulate

CONFIG = PRESETS["tiny"]


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def test_the_top_level_takes_the_stage_runners_buffer_check():
    # three buffers are too few for the overlapped schedule (the default), enough without
    with pytest.raises(ConfigError, match="act_buffers must be at least 4 for the stage runner"):
        RPAccel(PRESETS["tiny"].replace(act_buffers=3))
    with pytest.raises(ConfigError, match="act_buffers must be at least 3 for the stage runner"):
        RPAccel(PRESETS["tiny"].replace(act_buffers=2, subbatch_overlap=False))


def test_real_queries_through_a_two_stage_cascade(setup):
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:2]]
    queries = [(u, setup.split.test_candidates(u)[:37]) for u in users]
    sch = Scheduler(CONFIG, setup, "small:8,medium:4")     # stage s on partition s
    plan = sch.plan(queries)
    ring = plan.ring
    dut = RPAccel(CONFIG)
    regs = RegisterAccess(CONFIG)
    memory = AxiMemory(plan.image, CONFIG.mem_bus_width // 8,
                       stalls=Stalls(0.2, np.random.default_rng(2)))
    figures = {}

    async def host(ctx):
        bus = dut.s_axil

        async def write(name, **fields):
            assert await axil_write(ctx, bus, *regs.encode(name, **fields)) == 0, name

        async def read(name):
            resp, word = await axil_read(ctx, bus, regs.offset(name))
            assert resp == 0, name
            return regs.decode(name, word)

        ident = await read("CONFIG_HASH_LO")
        assert ident["VALUE"] == int(CONFIG.hash, 16) & 0xFFFFFFFF
        await write("RING_BASE_LO", VALUE=ring.ring_base)
        await write("RING_ENTRIES", LOG2=ring.ring_log2)
        await write("COMPLETION_BASE_LO", VALUE=ring.completion_base)
        await write("REGION_BASE_LO", VALUE=ring.region_base)
        await write("REGION_SIZE_LO", VALUE=ring.region_size)
        await write("CTRL", ENABLE=1, IRQ_ENABLE=1)
        await write("RING_TAIL", INDEX=ring.tail)
        while True:
            await ctx.tick().until(dut.irq)
            done = (await read("COMMANDS_DONE_LO"))["VALUE"]
            await write("IRQ_STATUS", DONE=1, ERROR=1)
            if done == ring.tail:
                break
        for name in ("QUERIES_DONE", "CYCLES", "ENGINE0_BUSY", "ENGINE1_BUSY",
                     "STATIC_HITS", "DYNAMIC_ACCESSES", "MEM_READ_BYTES", "MEM_WRITE_BYTES"):
            figures[name] = (await read(f"{name}_LO"))["VALUE"]
        figures["head"] = (await read("RING_HEAD"))["INDEX"]
        figures["errors"] = (await read("ERROR_COUNT"))["VALUE"]

    simulate(dut, [host], background=[memory.reader(dut.m_axi), memory.writer(dut.m_axi)],
             max_cycles=600_000, name="rpaccel")
    assert figures["head"] == ring.tail and figures["errors"] == 0
    results = sch.results(plan)
    for (user, cands), res in zip(queries, results):
        ref = setup.golden.run(sch.pipeline, user, cands)
        assert res.error == 0, res.error_name
        np.testing.assert_array_equal(res.ranking, ref.ranking)
        np.testing.assert_array_equal(res.scores, ref.stages[-1].kept_scores)
        for kept, stage in zip(res.kept, ref.stages):
            np.testing.assert_array_equal(kept, stage.kept)
        assert all(c > 0 for c in res.stage_cycles) and res.total_cycles >= sum(res.stage_cycles)
    assert figures["QUERIES_DONE"] == 2
    assert figures["ENGINE0_BUSY"] > 0 and figures["ENGINE1_BUSY"] > 0   # stage 2 on p1
    assert figures["STATIC_HITS"] > 0 and figures["MEM_WRITE_BYTES"] > 0
    for addr, beats in memory.ars + memory.aws:
        assert plan.image.base <= addr and addr + beats * memory.B <= plan.image.end
