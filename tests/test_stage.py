"""The stage runner (hw/stage.py) with the real units around it, in the Amaranth simulator:
the command processor loads a trained model into the engine and the embedding subsystem
from a scheduler's memory image, then the runner ranks a real query's candidates (records
and embedding rows read from that memory over AXI with random pauses) through the bottom
MLP, the embedding subsystem, the interaction unit, the top MLP and the top-k unit; the
kept positions and scores equal the functional model's (and so the golden's)."""

import copy

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring

from rpaccel.hw import descriptors as d
from rpaccel.hw.axi_write import AxiBlockWriter
from rpaccel.hw.command import CommandProcessor
from rpaccel.hw.compute_core import ComputeCore
from rpaccel.hw.config import PRESETS, ConfigError
from rpaccel.hw.embedding import EmbeddingSubsystem
from rpaccel.hw.stage import StageRunner
from rpaccel.hw.topk import TopKFilter
from rpaccel.sim.accel_model import AccelModel
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.golden import load_golden
from rpaccel.sim.scheduler import Scheduler
from rpaccel.tb.amaranth_axi import AxiMemory
from rpaccel.tb.amaranth_sim import Stalls, get, put, receive, send, simulate

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

CONFIG = PRESETS["tiny"]


class Harness(Elaboratable):
    """Command processor, compute core, embedding subsystem, stage runner (partition 0) and
    a top-k unit, wired as the top level wires them."""

    def __init__(self, config):
        self.cp = CommandProcessor(config)
        self.writer = AxiBlockWriter(config)
        self.core = ComputeCore(config)
        self.emb = EmbeddingSubsystem(config)
        self.runner = StageRunner(config)
        self.topk = TopKFilter(config)
        self.config = config

    def elaborate(self, platform):
        m = Module()
        cp, core, emb, run = self.cp, self.core, self.emb, self.runner
        for name in ("cp", "writer", "core", "emb", "runner", "topk"):
            m.submodules[name] = getattr(self, name)
        wiring.connect(m, cp.wr_jobs, self.writer.jobs)
        wiring.connect(m, cp.wr_data, self.writer.data)
        wiring.connect(m, self.writer.done, cp.wr_done)
        for p in range(self.config.partitions):
            wiring.connect(m, cp.weight_write[p], core.weight_write[p])
            wiring.connect(m, cp.bias_write[p], core.bias_write[p])
        wiring.connect(m, cp.emb_descriptors, emb.descriptors)
        wiring.connect(m, cp.static_write, emb.static_write)
        m.d.comb += [cp.layer_addr[0].eq(run.layer_addr), run.layer_data.eq(cp.layer_data[0]),
                     cp.pair_addr[0].eq(run.pair_addr), run.pair_data.eq(cp.pair_data[0])]
        wiring.connect(m, run.cmd, core.cmd[0])
        wiring.connect(m, core.resp[0], run.resp)
        wiring.connect(m, run.act_write, core.act_write[0])
        wiring.connect(m, run.act_read, core.act_read[0])
        wiring.connect(m, core.act_data[0], run.act_data)
        wiring.connect(m, core.scores[0], run.scores)
        wiring.connect(m, run.lookups, emb.lookups)
        wiring.connect(m, emb.pooled, run.pooled)
        wiring.connect(m, run.topk, self.topk.scores)
        ways = (1 << self.config.dynamic_cache_ways) - 1
        m.d.comb += [emb.stage_ways[s].eq(ways) for s in range(len(emb.stage_ways))]
        return m


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def test_stage_runner_needs_three_buffers_and_a_fourth_for_overlap():
    tiny = PRESETS["tiny"]
    StageRunner(tiny.replace(act_buffers=3, subbatch_overlap=False))    # X, H, Z
    with pytest.raises(ConfigError, match=r"act_buffers must be at least 4 for the stage "
                                          r"runner with subbatch_overlap = True \(buffers "
                                          r"X, H, Z0, Z1\), not 3"):
        StageRunner(tiny.replace(act_buffers=3, subbatch_overlap=True))
    with pytest.raises(ConfigError, match=r"act_buffers must be at least 3 for the stage "
                                          r"runner with subbatch_overlap = False .*not 2"):
        StageRunner(tiny.replace(act_buffers=2, subbatch_overlap=False))


def run_stage(setup, n: int, overlap: bool, stalls: float, *, seed: int = 11,
              config=CONFIG, from_kept: bool = False):
    """A real query's first ``n`` candidates through one stage (k = 8, or n if fewer) on
    the harness; checks the kept list against the functional model and the golden and
    returns the cycles from the job to ``done``. With ``from_kept`` the positions come on
    the runner's ``positions`` stream, in reverse order and with pauses: the kept list is
    the same (the top-k unit breaks ties on positions, not on arrival)."""
    config = config.replace(subbatch_overlap=overlap)
    k = min(8, n)
    user = int(np.flatnonzero(setup.split.test.any(axis=1))[0])
    cands = setup.split.test_candidates(user)[:n]
    assert len(cands) == n
    sch = Scheduler(config, setup, f"small:{k}", stage_partitions=[1])
    plan = sch.plan([(user, cands)])
    q = plan.queries[0]
    model = AccelModel(config)
    expected = copy.deepcopy(plan.image)
    model.execute(expected, copy.deepcopy(plan.ring))
    kept = [d.unpack(d.result_layout(config), expected.read(q["result"] + i * d.RESULT_BYTES,
                                                            d.RESULT_BYTES))
            for i in range(k)]
    entry = d.unpack(d.run_query_layout(config), plan.image.read(
        plan.ring.ring_base + q["index"] * d.COMMAND_BYTES, d.COMMAND_BYTES))
    loads = q["index"]                                   # the entries before the query

    h = Harness(config)
    cp, run = h.cp, h.runner
    rng = np.random.default_rng(seed)
    B = config.mem_bus_width // 8
    memories = [AxiMemory(plan.image, B, stalls=Stalls(stalls, rng)) for _ in range(4)]
    ring, out, clock = plan.ring, {}, {"cycle": 0}
    order = [{"position": p} for p in reversed(range(n))] if from_kept else []

    async def feed(ctx):
        await send(ctx, run.positions, order, Stalls(0.3, 5))

    async def count(ctx):
        async for _ in ctx.tick():
            clock["cycle"] += 1

    async def bench(ctx):
        ctx.set(cp.ring_base, ring.ring_base)
        ctx.set(cp.ring_log2, ring.ring_log2)
        ctx.set(cp.completion_base, ring.completion_base)
        ctx.set(cp.region_base, ring.region_base)
        ctx.set(cp.region_size, ring.region_size)
        ctx.set(cp.tail, loads)
        ctx.set(cp.enable, 1)
        await ctx.tick().until(cp.entries_done == loads)
        info = ctx.get(cp.model_info[0])
        assert info.loaded
        begin = clock["cycle"]
        await put(ctx, run.job, {
            "records_addr": entry["records_addr"], "n": n, "from_kept": int(from_kept), "k": k,
            "slot": 0, "n_bottom": info.n_bottom, "n_top": info.n_top,
            "n_tables": info.n_tables, "emb_dim": info.emb_dim, "n_dense": info.n_dense,
            "n_pairs": info.n_pairs, "stage": 0})
        out["kept"] = await receive(ctx, h.topk.topk, k, Stalls(0.2, 3))
        out["done"] = await get(ctx, run.done)
        out["cycles"] = clock["cycle"] - begin

    simulate(h, [bench, feed], background=[count, memories[0].reader(cp.rd_bus),
                                     memories[1].writer(h.writer.bus),
                                     memories[2].reader(run.rd_bus),
                                     memories[3].reader(h.emb.m_axi)],
             max_cycles=400_000, name=f"stage_runner_{n}_{'overlap' if overlap else 'seq'}")
    got = [(b["id"], b["score"]) for b in out["kept"]]
    assert got == [(r["position"], r["score"]) for r in kept], (got, kept)
    assert out["done"] == {"error": 0}
    assert [b["last"] for b in out["kept"]] == [0] * (k - 1) + [1]
    # the golden's ranking of those candidates
    ref = setup.golden.run(sch.pipeline, user, cands)
    assert [int(np.sort(cands)[p]) for p, _ in got] == ref.ranking.tolist()
    return out["cycles"]


# tiny: sub_batch 16. 5: one sub-batch (nothing to overlap); 32: two full ones; 37: three
# (16, 16, 5: an odd count and a short last one), also with streamed positions; 7 in
# sub-batches of 2: four (2, 2, 2, 1), so the three position slots and Z0/Z1 wrap around.
# Two full sub-batches, and three from the records instead of the kept list, are slow tests
# (`make test-all`, 110 s): the three-sub-batch case from the kept list has two full ones and
# a short one, and 1x5 takes its positions from the records. That three-sub-batch case runs
# with overlap in the fast suite, without it (46 s) in `make test-all`: 2-2-2-1-kept and 1x5
# run without overlap in both.
_SLOW = pytest.mark.slow
@pytest.mark.parametrize("n, sub_batch, from_kept, overlap", [
    (5, 16, False, False), (5, 16, False, True),
    pytest.param(32, 16, False, False, marks=_SLOW), pytest.param(32, 16, False, True, marks=_SLOW),
    pytest.param(37, 16, False, False, marks=_SLOW), pytest.param(37, 16, False, True, marks=_SLOW),
    pytest.param(37, 16, True, False, marks=_SLOW), (37, 16, True, True),
    (7, 2, True, False), (7, 2, True, True)],
    ids=["1x5-sequential", "1x5-overlap", "2x16-sequential", "2x16-overlap",
         "16-16-5-sequential", "16-16-5-overlap", "16-16-5-kept-sequential",
         "16-16-5-kept-overlap", "2-2-2-1-kept-sequential", "2-2-2-1-kept-overlap"])
def test_a_real_stage_on_the_hardware_equals_the_functional_model(setup, n, sub_batch,
                                                                   from_kept, overlap):
    cycles = run_stage(setup, n, overlap, stalls=0.25, from_kept=from_kept,
                       config=CONFIG.replace(sub_batch=sub_batch))
    print(f"n={n} sub_batch={sub_batch} {'overlap' if overlap else 'sequential'}: "
          f"{cycles} cycles (stalls 0.25)")


@pytest.mark.slow
def test_the_overlapped_schedule_is_faster(setup):
    # A performance comparison (99 s): in `make test-all`; the sweep (`rpaccel sim-sweep`,
    # variant no-overlap) measures the same on the whole accelerator. The schedules'
    # correctness stays in the fast suite (the tests above, both schedules).
    # No memory pauses, so the figures differ by the schedule only.
    for n in (5, 37):
        seq = run_stage(setup, n, overlap=False, stalls=0.0)
        ovl = run_stage(setup, n, overlap=True, stalls=0.0)
        print(f"n={n}: sequential {seq} cycles, overlapped {ovl} cycles ({seq / ovl:.2f}x)")
        if n > CONFIG.sub_batch:
            assert ovl < seq
        else:
            # one sub-batch has nothing to overlap: the same phases in the same order
            assert ovl <= seq + 8
