"""RPAccel, the top level (hw/accel.py), end to end in the Amaranth simulator: the host
scheduler's memory image and ring for real MovieLens queries, the host driving only the
registers (AXI4-Lite) and memory (AXI4 with random pauses), the interrupt awaited; every
query's ranking, scores and every stage's kept list equal the golden cascade."""

import copy

import numpy as np
import pytest

from rpaccel.hw import descriptors as d
from rpaccel.hw.accel import RPAccel
from rpaccel.hw.config import PRESETS, ConfigError
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.accel_model import ERROR, AccelModel
from rpaccel.sim.golden import load_golden
from rpaccel.sim.registers import RegisterAccess
from rpaccel.sim.scheduler import Scheduler
from rpaccel.tb.amaranth_axi import AxiMemory, axil_read, axil_write
from rpaccel.tb.amaranth_sim import Stalls, simulate

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

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


COUNTERS = ("QUERIES_DONE", "CYCLES", "ENGINE0_BUSY", "STATIC_ACCESSES", "STATIC_HITS",
            "DYNAMIC_ACCESSES", "DYNAMIC_HITS", "DYNAMIC_MISSES", "DYNAMIC_FILLS",
            "MEM_READ_BYTES", "MEM_WRITE_BYTES")


def run_rpaccel(config, sch, plan, *, seed=2, max_cycles=600_000, watch=None):
    """``plan`` on the whole RPAccel in the Amaranth simulator, the host using only the
    registers, the ring and memory and waiting for the interrupt; without on-chip top-k
    the host runs its round trips (``Scheduler.advance``) between rings. Returns the
    counters read at the end (and ``head``, ``errors``). ``watch(ctx)``, if given, runs
    beside it every cycle (a background testbench)."""
    ring = plan.ring
    dut = RPAccel(config)
    regs = RegisterAccess(config)
    memory = AxiMemory(plan.image, config.mem_bus_width // 8,
                       stalls=Stalls(0.2, np.random.default_rng(seed)))
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
        assert ident["VALUE"] == int(config.hash, 16) & 0xFFFFFFFF
        for name, fields in regs.ring_start(**vars(ring)):
            await write(name, **fields)
        while True:
            await write("RING_TAIL", INDEX=ring.tail)
            while True:
                await ctx.tick().until(dut.irq)
                done = (await read("COMMANDS_DONE_LO"))["VALUE"]
                await write("IRQ_STATUS", DONE=1, ERROR=1)
                if done == ring.tail:
                    break
            ring.head = ring.tail
            if not sch.advance(plan):      # the host's round trip (no on-chip top-k)
                break
        engines = tuple(f"ENGINE{p}_BUSY" for p in range(1, config.partitions))
        for name in COUNTERS + engines + (("ENGINES_OVERLAP",) if engines else ()):
            figures[name] = (await read(f"{name}_LO"))["VALUE"]
        figures["head"] = (await read("RING_HEAD"))["INDEX"]
        figures["errors"] = (await read("ERROR_COUNT"))["VALUE"]
        figures["error"] = await read("ERROR")

    background = [memory.reader(dut.m_axi), memory.writer(dut.m_axi)]
    if watch is not None:
        background.append(watch(dut))
    simulate(dut, [host], background=background, max_cycles=max_cycles, name="rpaccel")
    for addr, beats in memory.ars + memory.aws:
        assert plan.image.base <= addr and addr + beats * memory.B <= plan.image.end
    figures["memory"] = memory
    return figures


def check_golden(setup, sch, queries, results):
    for (user, cands), res in zip(queries, results, strict=True):
        assert res.differences(setup.golden.run(sch.pipeline, user, cands)) == [], user
        assert all(c > 0 for c in res.stage_cycles) and res.total_cycles >= sum(res.stage_cycles)


@pytest.mark.slow
def test_real_queries_through_a_two_stage_cascade(setup):
    """In `make test-all` (85-150 s in the Amaranth simulator): the fast suite ranks real
    queries through the same cascade on the same design on the RTL (tests/test_cosim.py,
    random tiny variants with memory stalls) and in the tests below here."""
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:2]]
    queries = [(u, setup.split.test_candidates(u)[:37]) for u in users]
    # stage s on partition s alone
    sch = Scheduler(CONFIG, setup, "small:8,medium:4", stage_partitions=[1, 2])
    plan = sch.plan(queries)
    figures = run_rpaccel(CONFIG, sch, plan)
    assert figures["head"] == plan.ring.tail and figures["errors"] == 0
    check_golden(setup, sch, queries, sch.results(plan))
    assert figures["QUERIES_DONE"] == 2
    assert figures["ENGINE0_BUSY"] > 0 and figures["ENGINE1_BUSY"] > 0   # stage 2 on p1
    assert figures["STATIC_HITS"] > 0 and figures["MEM_WRITE_BYTES"] > 0


NO_TOPK = CONFIG.replace(onchip_topk=False)


@pytest.mark.slow
def test_without_onchip_topk_the_host_filters_between_stages(setup):
    """In `make test-all` (96 s in the Amaranth simulator); the fast suite runs the host's
    rounds on the RTL without on-chip top-k
    (tests/test_cosim.py::test_every_feature_off_ranks_real_queries_bit_exact) and the
    BAD_STAGES rejection on the functional model (tests/test_scheduler.py).
    onchip_topk off: no top-k unit is built; each stage's scores (every candidate, in
    order, also from a stage dealt over both partitions) go to memory and the host keeps
    the top k and submits the next stage. A 2-stage cascade on real users equals the
    golden; a 2-stage RUN_QUERY between the
    rounds is rejected with BAD_STAGES (completion and ERROR register) and writes
    nothing."""
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:3]]
    queries = [(u, setup.split.test_candidates(u)[:37]) for u in users]
    # stage 1 dealt over both partitions (its scores merged back in candidate order),
    # stage 2 on partition 1
    sch = Scheduler(NO_TOPK, setup, "small:8,medium:4", stage_partitions=[3, 2])
    assert RPAccel(NO_TOPK).topk_units == []
    plan = sch.plan(queries)
    bad = plan.queries[1]
    addr = bad["rounds"][0]["scores"]
    before = plan.image.read(addr, 37 * d.RESULT_BYTES)
    index = bad["rounds"][0]["index"]
    raw = plan.image.read(plan.ring.ring_base + index * d.COMMAND_BYTES, d.COMMAND_BYTES)
    entry = d.unpack(d.run_query_layout(NO_TOPK), raw)
    entry["n_stages"] = 2
    plan.image.write(plan.ring.ring_base + index * d.COMMAND_BYTES,
                     d.pack(d.run_query_layout(NO_TOPK), entry, d.COMMAND_BYTES))
    figures = run_rpaccel(NO_TOPK, sch, plan)
    assert figures["head"] == plan.ring.tail and figures["errors"] == 1
    assert figures["error"]["CODE"] == ERROR["BAD_STAGES"] and figures["error"]["INDEX"] == index
    results = sch.results(plan)
    assert results[1].error == ERROR["BAD_STAGES"]
    assert plan.image.read(addr, 37 * d.RESULT_BYTES) == before
    check_golden(setup, sch, [queries[0], queries[2]], [results[0], results[2]])
    assert figures["QUERIES_DONE"] == 4                    # 2 queries x 2 rounds
    assert figures["ENGINE0_BUSY"] > 0 and figures["ENGINE1_BUSY"] > 0


def busy_overlap(counts):
    """A background testbench counting the cycles in which both engines are busy."""
    def watch(dut):
        async def run(ctx):
            while True:
                _, _, b0, b1 = await ctx.tick().sample(dut.core.busy[0], dut.core.busy[1])
                counts["both"] += int(b0 and b1)
        return run
    return watch


@pytest.mark.slow
def test_queries_in_flight_overlap_on_two_partitions(setup):
    """In `make test-all` (140 s in the Amaranth simulator); the fast suite runs the same
    ring on the RTL (tests/test_cosim.py::test_queries_in_flight_overlap_on_two_partitions_on_the_rtl).
    Four queries back to back (stage 1 on partition 0, stage 2 on partition 1), the third
    one bad: the query engine takes the next query while the earlier ones run, so query
    q's stage 2 runs beside query q + 1's stage 1 (both engines busy in the same cycles)
    over the shared embedding subsystem and model tables. The bad query completes with
    BAD_PARTITION and writes nothing; the second has an embedding row outside its table
    (EMBEDDING, still completing); every completion and result equals the functional
    model's and the good ones the golden."""
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:4]]
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    sch = Scheduler(CONFIG, setup, "small:8,medium:4", stage_partitions=[1, 2])
    plan = sch.plan(queries)
    bad = plan.queries[2]
    before = plan.image.read(bad["result"], 4 * d.RESULT_BYTES) + \
        plan.image.read(bad["kept"], 2 * CONFIG.topk_max * d.RESULT_BYTES)
    addr = plan.ring.ring_base + bad["index"] * d.COMMAND_BYTES
    entry = d.unpack(d.run_query_layout(CONFIG), plan.image.read(addr, d.COMMAND_BYTES))
    entry["stages"][1]["partition_mask"] = 4                # a partition that does not exist
    plan.image.write(addr, d.pack(d.run_query_layout(CONFIG), entry, d.COMMAND_BYTES))
    # query 1: one candidate's item row outside its table (pooled to zeros, flagged
    # EMBEDDING, the query completes) -- its values are the functional model's
    q1 = plan.queries[1]
    raw = plan.image.read(plan.ring.ring_base + q1["index"] * d.COMMAND_BYTES, d.COMMAND_BYTES)
    rec_addr = d.unpack(d.run_query_layout(CONFIG), raw)["records_addr"] + 5 * d.record_bytes(CONFIG)
    rec = d.unpack(d.record_layout(CONFIG), plan.image.read(rec_addr, d.record_bytes(CONFIG)))
    rec["lookups"][1]["row"] = 100_000
    plan.image.write(rec_addr, d.pack(d.record_layout(CONFIG), rec, d.record_bytes(CONFIG)))
    reference = copy.deepcopy(plan)
    assert AccelModel(CONFIG).execute(reference.image, reference.ring) == plan.ring.tail
    counts = {"both": 0}
    figures = run_rpaccel(CONFIG, sch, plan, seed=3, watch=busy_overlap(counts))
    assert figures["head"] == plan.ring.tail and figures["errors"] == 2
    results = sch.results(plan)
    assert results[2].error == ERROR["BAD_PARTITION"]
    assert results[1].error == ERROR["EMBEDDING"] and len(results[1].ranking) == 4
    for q in plan.queries:              # byte for byte the functional model's writes
        for addr, n in ((q["result"], 4 * d.RESULT_BYTES),
                        (q["kept"], 2 * CONFIG.topk_max * d.RESULT_BYTES)):
            assert plan.image.read(addr, n) == reference.image.read(addr, n)
        got, ref = sch.completion(plan, q["index"]), sch.completion(reference, q["index"])
        for key in ("tag", "index", "error", "n_stages", "kept"):
            assert got[key] == ref[key], key
    assert plan.image.read(bad["result"], 4 * d.RESULT_BYTES) + \
        plan.image.read(bad["kept"], 2 * CONFIG.topk_max * d.RESULT_BYTES) == before
    good = [0, 3]
    check_golden(setup, sch, [queries[i] for i in good], [results[i] for i in good])
    assert figures["QUERIES_DONE"] == 3
    assert figures["error"]["CODE"] in (ERROR["BAD_PARTITION"], ERROR["EMBEDDING"])
    assert counts["both"] > 0, "the two partitions never ran at the same time"
    assert figures["ENGINES_OVERLAP"] == counts["both"]
    print(f"\n4 queries in flight: {figures['CYCLES']} cycles, both engines busy "
          f"{counts['both']}, engine busy {figures['ENGINE0_BUSY']}/{figures['ENGINE1_BUSY']}")


@pytest.mark.slow
def test_a_stage_dealt_over_both_partitions_and_more_topk_units(setup):
    """In `make test-all` (120 s in the Amaranth simulator); the fast suite deals both
    stages on the RTL (tests/test_cosim.py::test_a_stage_dealt_over_both_partitions_on_the_rtl).
    A stage whose partition mask has both bits: its sub-batches (16 candidates) are dealt
    round robin over the two runners (40 candidates: sub-batches 0 and 2 on partition 0,
    1 on partition 1) and merged into one top-k unit, ``last`` only after the final one;
    a stage of one sub-batch leaves the second runner without work. Three top-k units,
    each stage routed to the one its ``topk_unit`` names (2, then 1)."""
    cfg = CONFIG.replace(topk_units=3)
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:2]]
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    sch = Scheduler(cfg, setup, "small:8,medium:4", stage_partitions=[3, 3],
                    stage_topk_units=[2, 1])
    plan = sch.plan(queries)
    dut_units = len(RPAccel(cfg).topk_units)
    assert dut_units == 3
    counts = {"both": 0}
    figures = run_rpaccel(cfg, sch, plan, seed=4, watch=busy_overlap(counts))
    assert figures["head"] == plan.ring.tail and figures["errors"] == 0
    check_golden(setup, sch, queries, sch.results(plan))
    assert figures["ENGINE0_BUSY"] > 0 and figures["ENGINE1_BUSY"] > 0
    assert counts["both"] > 0, "the dealt stage never ran on both partitions at once"
    assert figures["ENGINES_OVERLAP"] == counts["both"]


@pytest.mark.slow
def test_every_feature_off_the_baseline_accelerator(setup):
    """In `make test-all` (45 s in the Amaranth simulator); the fast suite runs the same
    configuration on the RTL
    (tests/test_cosim.py::test_every_feature_off_ranks_real_queries_bit_exact). The baseline end of the generator, every RPAccel feature off: one partition (one
    monolithic array, same MACs), no top-k unit, no static and no dynamic embedding cache,
    sub-batches in sequence. Two query slots still overlap one query's score writes with
    the next query's stage; the host's round trips give the golden cascade."""
    cfg = CONFIG.replace(partitions=1, topk_units=1, onchip_topk=False, static_cache_rows=0,
                         dynamic_cache_sets=0, subbatch_overlap=False, act_buffers=3)
    assert cfg.rows * cfg.cols == CONFIG.rows * CONFIG.cols
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:2]]
    queries = [(u, setup.split.test_candidates(u)[:24]) for u in users]
    sch = Scheduler(cfg, setup, "small:8,medium:4")
    plan = sch.plan(queries)
    figures = run_rpaccel(cfg, sch, plan, seed=5)
    assert figures["head"] == plan.ring.tail and figures["errors"] == 0
    check_golden(setup, sch, queries, sch.results(plan))
    assert figures["QUERIES_DONE"] == 4
    # every lookup checks the (empty) static range, goes on to the dynamic path (no sets:
    # straight to memory) and misses there; nothing is ever filled
    assert figures["STATIC_ACCESSES"] > 0 and figures["STATIC_HITS"] == 0
    assert figures["DYNAMIC_ACCESSES"] == figures["STATIC_ACCESSES"]
    assert figures["DYNAMIC_MISSES"] == figures["DYNAMIC_ACCESSES"]
    assert figures["DYNAMIC_HITS"] == 0 and figures["DYNAMIC_FILLS"] == 0


@pytest.mark.slow
def test_four_partitions_a_stage_dealt_over_three(setup):
    """Four partitions (the ``small`` array split in four, sub-batches of 8): stage 1 dealt
    over partitions 0, 1 and 2 (45 candidates: six sub-batches, two per runner) into top-k
    unit 3, stage 2 (one sub-batch) over partitions 1 and 3 into unit 0; bit-exact."""
    cfg = PRESETS["small"].replace(partitions=4, topk_units=4, sub_batch=8)
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:2]]
    queries = [(u, setup.split.test_candidates(u)[:45]) for u in users]
    sch = Scheduler(cfg, setup, "small:8,medium:4", stage_partitions=[0b0111, 0b1010],
                    stage_topk_units=[3, 0])
    plan = sch.plan(queries)
    figures = run_rpaccel(cfg, sch, plan, seed=6, max_cycles=1_500_000)
    assert figures["head"] == plan.ring.tail and figures["errors"] == 0
    check_golden(setup, sch, queries, sch.results(plan))
    assert all(figures[f"ENGINE{p}_BUSY"] > 0 for p in range(3))
    # stage 2's 8 candidates are one sub-batch, dealt to partition 1: partition 3 idles
    assert figures["ENGINE3_BUSY"] == 0
