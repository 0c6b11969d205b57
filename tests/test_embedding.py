"""Embedding subsystem (hw/embedding.py, hw/axi.py): Amaranth-simulator tests against the
golden pooling and the exact cache model, lint, and the cocotb benches (tb/test_embedding.py)
on both RTL simulators, against cocotbext-axi's AxiRam and the HDL memory model."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment

from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.axi import RESP_OKAY, RESP_SLVERR, bus_bytes
from rpaccel.hw.config import PRESETS, ConfigError
from rpaccel.hw.embedding import (KIND_HIT, KIND_MISS, KIND_STATIC, LOOKUP_LATENCY,
                                  EmbeddingSubsystem, lookup_layout,
                                  pooled_layout, set_index)
from rpaccel.sim.cache_model import EmbeddingCacheModel, Lookup, TableDescriptor
from rpaccel.tb.amaranth_sim import Stalls, receive, send, simulate, to_python
from rpaccel.tb.unit_models.embedding import (TableSet, check_address, check_pooled,
                                              expected_pooled, random_lookups, random_tables,
                                              split_static, static_writes)

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

PRESET_NAMES = ["tiny", "default"]


class AxiResponder:
    """An AXI4 read subordinate for Amaranth's simulator: serves bursts from ``image`` in
    order after ``latency`` cycles (an int or a (lo, hi) range drawn per burst), with random
    ``arready``/``rvalid`` gaps; records every burst and checks it against ``tset``."""

    def __init__(self, dut, tset, *, latency=(1, 12), ar_stall=0.3, r_stall=0.3, seed=0,
                 error_addresses=()):
        self.dut, self.tset = dut, tset
        self.latency = latency
        self.rng = np.random.default_rng(seed)
        self.ar_stall, self.r_stall = ar_stall, r_stall
        self.error_addresses = set(error_addresses)
        self.bursts = []          # (addr, beats, ar cycle, last r cycle)

    def _latency(self):
        if isinstance(self.latency, int):
            return self.latency
        return int(self.rng.integers(self.latency[0], self.latency[1] + 1))

    async def run(self, ctx):
        bus = self.dut.m_axi
        nbytes = bus_bytes(self.dut.config)
        queue = []
        cycle, beat = 0, 0
        while True:
            ar_ready = int(self.rng.random() >= self.ar_stall)
            offer = bool(queue) and queue[0]["due"] <= cycle and self.rng.random() >= self.r_stall
            ctx.set(bus.arready, ar_ready)
            if offer:
                head = queue[0]
                ctx.set(bus.rdata, self.tset.image.get(head["addr"] + beat * nbytes, 0))
                ctx.set(bus.rlast, int(beat == head["beats"] - 1))
                ctx.set(bus.rresp, RESP_SLVERR if head["addr"] in self.error_addresses
                        else RESP_OKAY)
            ctx.set(bus.rvalid, int(offer))
            _, _, arvalid, araddr, arlen, rready = await ctx.tick().sample(
                bus.arvalid, bus.araddr, bus.arlen, bus.rready)
            if ar_ready and arvalid:
                check_address(self.tset, araddr, arlen + 1, nbytes)
                queue.append({"addr": araddr, "beats": arlen + 1, "ar": cycle,
                              "due": cycle + self._latency()})
            if offer and rready:
                beat += 1
                if beat == queue[0]["beats"]:
                    head = queue.pop(0)
                    self.bursts.append((head["addr"], head["beats"], head["ar"], cycle))
                    beat = 0
            cycle += 1


def run(config, tset, lookups, *, idle=0.0, backpressure=0.0, seed=0, stage_ways=None,
        memory=None, descriptors=None, flush_after=None):
    """Load descriptors and the static cache, stream ``lookups``, collect the pooled beats
    and the counters once the unit is idle again."""
    dut = EmbeddingSubsystem(config)
    model = tset.model(**({"stage_ways": stage_ways} if stage_ways else {}))
    want, counters = expected_pooled(config, tset, lookups, model=model)
    mem = AxiResponder(dut, tset, seed=seed + 7, **(memory or {}))
    out = {"want": want, "model": counters, "memory": mem, "in": [], "out": []}

    async def producer(ctx):
        if stage_ways:
            ctx.set(dut.stage_ways, stage_ways)
        for desc in descriptors or tset.descriptors:
            await send(ctx, dut.descriptors, [desc.payload()])
        await send(ctx, dut.static_write, static_writes(config, tset))
        await send(ctx, dut.lookups, [lk.payload() for lk in lookups], Stalls(idle, seed))

    async def consumer(ctx):
        out["payloads"] = await receive(ctx, dut.pooled, len(want),
                                        stalls=Stalls(backpressure, seed + 1))
        ctx.set(dut.pooled.ready, 1)
        for _ in range(8):
            _, _, valid, idle_ = await ctx.tick().sample(dut.pooled.valid, dut.idle)
            assert not valid, "an extra pooled vector"
        assert idle_, "the unit is not idle after its last vector"
        out["counters"] = to_python(ctx.get(dut.counters))

    async def monitor(ctx):
        cycle = 0
        async for _, _, iv, ir, ov, o_r in ctx.tick().sample(
                dut.lookups.valid, dut.lookups.ready, dut.pooled.valid, dut.pooled.ready):
            if iv and ir:
                out["in"].append(cycle)
            if ov and o_r:
                out["out"].append(cycle)
            cycle += 1

    lat = mem.latency if isinstance(mem.latency, int) else mem.latency[1]
    budget = 2000 + int(len(lookups) * (lat + 10) / (1 - max(idle, backpressure, 0.5)))
    simulate(dut, [producer, consumer], background=[mem.run, monitor], max_cycles=budget,
             name=f"embedding_{config.hash}")
    return out


def check_counters(out):
    got = {k: v for k, v in out["counters"].items() if k != "read_latency"}
    assert got == out["model"], {k: (got[k], out["model"][k]) for k in got
                                 if got[k] != out["model"][k]}
    bursts = out["memory"].bursts
    assert out["counters"]["read_latency"] == sum(end - start for _, _, start, end in bursts)


# -- construction and layouts ---------------------------------------------------------------

def test_constructor_takes_a_config():
    with pytest.raises(TypeError, match="config must be an AccelConfig"):
        EmbeddingSubsystem(8)
    dut = EmbeddingSubsystem(PRESETS["tiny"])
    assert dut.config is PRESETS["tiny"]
    Fragment.get(dut, None)


@pytest.mark.parametrize("field, value, message", [
    ("max_bag", 0, "max_bag must be between 1 and 255, not 0"),
    ("model_slots", 3, "model_slots must be a power of two between 1 and 16, not 3"),
    ("emb_row_width", 40, "emb_row_width must be between 4 and 28, not 40"),
    ("emb_inflight", 1, "emb_inflight must be between 2 and 256, not 1"),
    ("mem_addr_width", 8, "mem_addr_width must be between 16 and 64, not 8"),
])
def test_embedding_config_fields_are_validated(field, value, message):
    with pytest.raises(ConfigError, match=message):
        PRESETS["tiny"].replace(**{field: value})


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_pooled_layout_matches_the_interaction_unit(preset):
    from rpaccel.hw.interaction import vector_layout
    config = PRESETS[preset]
    pooled, vector = pooled_layout(config), vector_layout(config)
    assert pooled["data"].shape == vector["data"].shape
    assert pooled["last"].shape == vector["last"].shape
    beat = {"model": config.model_slots - 1, "table": config.max_tables - 1,
            "row": (1 << config.emb_row_width) - 1, "bag_end": 1, "sample_end": 0,
            "empty": 1, "stage": 3}
    layout = lookup_layout(config)
    assert to_python(layout.from_bits(layout.const(beat).as_bits())) == beat


# -- cache model unit tests (pure Python, the reference for the RTL) --------------------------

def test_model_true_lru_and_way_masks():
    """One set, four ways: LRU evicts the least recently used; a stage's mask confines its
    fills (and its victims) to its ways; hits are found in any way."""
    config = PRESETS["tiny"].replace(dynamic_cache_sets=1, dynamic_cache_ways=4)
    desc = TableDescriptor(0, 0, 0, 100, 3, 4)
    model = EmbeddingCacheModel(config, [desc], stage_ways=(0b0011, 0b1100, 0, 0b1111))
    kinds = lambda rows, stage: [model.access(Lookup(0, 0, r, 1, 1, 0, stage)).kind
                                 for r in rows]
    assert kinds([1, 2, 1, 3], 0) == [KIND_MISS, KIND_MISS, KIND_HIT, KIND_MISS]
    # stage 0 owns ways 0, 1: row 3 evicted row 2 (LRU of the two), row 1 stays
    assert kinds([1, 2], 0) == [KIND_HIT, KIND_MISS]
    assert model.counters["dynamic_evictions"] == 2
    assert kinds([1], 1) == [KIND_HIT]         # stage 1 finds stage 0's line
    assert kinds([5, 6, 7], 1) == [KIND_MISS] * 3
    assert kinds([3], 2) == [KIND_MISS]       # stage 2 owns nothing: never fills
    assert model.counters["dynamic_fills"] == model.counters["dynamic_misses"] - 1


def test_model_static_range_and_bad_lookups():
    config = PRESETS["tiny"]
    desc = TableDescriptor(0, 1, 4096, 50, 3, 4, static_base=10, static_rows=20)
    model = EmbeddingCacheModel(config, [desc])
    assert model.access(Lookup(0, 1, 19, 1, 1)).kind == KIND_STATIC
    assert model.access(Lookup(0, 1, 20, 1, 1)).kind == KIND_MISS
    assert model.access(Lookup(0, 1, 20, 1, 1)).kind == KIND_HIT
    for bad in (Lookup(0, 1, 50, 1, 1), Lookup(0, 2, 0, 1, 1), Lookup(0, 1, 0, 1, 1, 1)):
        assert model.access(bad).error
    assert model.counters["bad_lookups"] == 3 and model.counters["bad_vectors"] == 3
    # a descriptor that breaks a rule is rejected and leaves the table unconfigured
    rejected = EmbeddingCacheModel(config, [TableDescriptor(0, 0, 4100, 8, 3, 4)])
    assert rejected.counters["descriptor_errors"] == 1 and not rejected.tables


def test_set_index_spreads_tables():
    config = PRESETS["default"]
    sets = {set_index(config, 0, t, 5) for t in range(config.max_tables)}
    assert len(sets) == config.max_tables


# -- Amaranth-simulator tests of the RTL ------------------------------------------------------

STALL_PATTERNS = {"full-rate": (0.0, 0.0, {"latency": 1, "ar_stall": 0.0, "r_stall": 0.0}),
                  "stalls": (0.3, 0.3, {"latency": (1, 30), "ar_stall": 0.4, "r_stall": 0.4})}


@pytest.mark.parametrize("stalls", list(STALL_PATTERNS))
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_random_lookups_against_model(preset, stalls):
    config = PRESETS[preset]
    rng = np.random.default_rng(100 + PRESET_NAMES.index(preset))
    tables = random_tables(rng, config, models=2, max_rows=200)
    tset = TableSet.build(config, tables, split_static(config, tables, rng))
    lookups = random_lookups(rng, config, tables, 40)
    idle, bp, memory = STALL_PATTERNS[stalls]
    out = run(config, tset, lookups, idle=idle, backpressure=bp, seed=3, memory=memory)
    check_pooled(out["payloads"], out["want"])
    check_counters(out)
    c = out["counters"]
    assert c["static_hits"] and c["dynamic_hits"] and c["dynamic_misses"] and \
        c["dynamic_evictions"], c


def test_replacement_under_a_capacity_split():
    """A small cache split between stages: stage 0 owns way 0, stage 1 way 1, stage 2
    nothing; random traffic on a hot set makes every path (evictions, bypassing misses,
    pending hits) happen, and the RTL's counters are the model's."""
    config = PRESETS["tiny"].replace(dynamic_cache_sets=2, dynamic_cache_ways=2)
    rng = np.random.default_rng(7)
    tables = {(m, t): rng.integers(-128, 128, (12, 4)) for m in range(3) for t in range(2)}
    tset = TableSet.build(config, tables)
    lookups = []
    for _ in range(150):
        m = int(rng.integers(0, 3))
        lookups.append(Lookup(m, int(rng.integers(0, 2)), int(rng.integers(0, 12)), 1,
                              int(rng.random() < 0.3), 0, m))
    lookups[-1] = lookups[-1]._replace(sample_end=1)
    out = run(config, tset, lookups, stage_ways=[0b01, 0b10, 0, 0b11], seed=9,
              memory={"latency": (1, 20), "ar_stall": 0.2, "r_stall": 0.2})
    check_pooled(out["payloads"], out["want"])
    check_counters(out)
    c = out["counters"]
    assert c["dynamic_fills"] < c["dynamic_misses"] and c["dynamic_evictions"] > 0


def test_all_hit_stream_is_one_row_per_cycle():
    """Every row in the static cache: after the first, a lookup is accepted every cycle and
    a single-row vector leaves every cycle, ``LOOKUP_LATENCY`` cycles after its lookup."""
    config = PRESETS["tiny"]
    rng = np.random.default_rng(11)
    tables = {(0, 0): rng.integers(-128, 128, (32, 4))}
    tset = TableSet.build(config, tables, {(0, 0): (0, 32)})
    lookups = [Lookup(0, 0, int(r), 1, 1) for r in rng.integers(0, 32, 200)]
    out = run(config, tset, lookups)
    check_pooled(out["payloads"], out["want"])
    assert out["in"] == list(range(out["in"][0], out["in"][0] + 200))
    assert out["out"] == list(range(out["out"][0], out["out"][0] + 200))
    assert out["out"][0] - out["in"][0] == LOOKUP_LATENCY


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_input_is_flagged_and_the_next_candidate_is_exact(preset):
    config = PRESETS[preset]
    rng = np.random.default_rng(200)
    tables = random_tables(rng, config, models=2, max_rows=100)
    tset = TableSet.build(config, tables, split_static(config, tables, rng))
    lookups = random_lookups(rng, config, tables, 40, bad=0.3)
    out = run(config, tset, lookups, idle=0.2, backpressure=0.2, seed=5,
              memory={"latency": (1, 10)})
    check_pooled(out["payloads"], out["want"])
    check_counters(out)
    assert out["counters"]["bad_lookups"] > 0 and out["counters"]["bad_vectors"] > 0


def test_bad_descriptors_are_rejected():
    """Misaligned base, a stride smaller than the row, too large a static range, a dim of 0:
    each counts as a descriptor error and its table answers flagged zeros."""
    config = PRESETS["tiny"]
    rng = np.random.default_rng(300)
    tables = {(0, t): rng.integers(-128, 128, (10, 4)) for t in range(5)}
    tset = TableSet.build(config, tables)
    good = {d.table: d for d in tset.descriptors}
    bad = [good[0].__class__(**{**good[0].__dict__, "base": good[0].base + 4}),
           good[1].__class__(**{**good[1].__dict__, "row_shift": 2}),
           good[2].__class__(**{**good[2].__dict__, "static_rows": 11}),
           good[3].__class__(**{**good[3].__dict__, "dim": 0})]
    descriptors = bad + [good[4]]
    lookups = [Lookup(0, t, 1, 1, 1) for t in range(5)] * 2
    tset_bad = TableSet(config, tables, descriptors, tset.image)
    out = run(config, tset_bad, lookups, descriptors=descriptors)
    check_pooled(out["payloads"], out["want"])
    check_counters(out)
    assert out["counters"]["descriptor_errors"] == 4
    assert [p["error"] for p in out["payloads"]] == [1, 1, 1, 1, 0] * 2


def test_axi_error_response_is_flagged_and_poisons_its_line():
    config = PRESETS["tiny"]
    rng = np.random.default_rng(400)
    tables = {(0, 0): rng.integers(-128, 128, (16, 4))}
    tset = TableSet.build(config, tables)
    desc = tset.descriptors[0]
    bad_rows = {3, 9}
    errors = {desc.address(r) for r in bad_rows}
    lookups = [Lookup(0, 0, int(r), 1, 1) for r in rng.integers(0, 16, 80)]
    dut_model = tset.model(error_address=lambda a: a in errors)
    want, counters = expected_pooled(config, tset, lookups, model=dut_model)
    out = run(config, tset, lookups, memory={"latency": (1, 6), "error_addresses": errors})
    out["model"] = counters
    check_pooled(out["payloads"], want)
    check_counters(out)
    assert counters["axi_errors"] > 0


def test_flush_invalidates_the_dynamic_cache():
    config = PRESETS["tiny"]
    rng = np.random.default_rng(500)
    tables = {(0, 0): rng.integers(-128, 128, (8, 4))}
    tset = TableSet.build(config, tables)
    dut = EmbeddingSubsystem(config)
    lookups = [Lookup(0, 0, r, 1, 1) for r in range(8)]
    mem = AxiResponder(dut, tset, latency=3, ar_stall=0, r_stall=0)
    got = {}

    async def bench(ctx):
        await send(ctx, dut.descriptors, [tset.descriptors[0].payload()])
        ctx.set(dut.pooled.ready, 1)
        for phase in ("cold", "warm", "flushed"):
            if phase == "flushed":
                ctx.set(dut.flush, 1)
                await ctx.tick()
                ctx.set(dut.flush, 0)
            await send(ctx, dut.lookups, [lk.payload() for lk in lookups])
            await ctx.tick().until(dut.idle)
            got[phase] = to_python(ctx.get(dut.counters))["dynamic_hits"]

    simulate(dut, [bench], background=[mem.run], max_cycles=2000, name="embedding_flush")
    assert got == {"cold": 0, "warm": 8, "flushed": 8}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_verilog_lints_clean(preset):
    proc = lint(generate(PRESETS[preset], "embedding").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- real MovieLens cascade traffic -------------------------------------------------------------

@pytest.fixture(scope="module")
def golden_setup():
    from rpaccel.sim.golden import load_golden
    return load_golden()


def movielens_stimulus_file(golden_setup, config, tmp_path, *, latency=30, **options):
    import json
    from rpaccel.tb.unit_models.embedding import movielens_stimulus
    options = {"max_candidates": 40, "static_rows": 64, **options}
    stim = movielens_stimulus(golden_setup, config, "2-stage", [5], **options)
    stim["latency"] = latency
    path = tmp_path / "stimulus.json"
    path.write_text(json.dumps(stim))
    return stim, path


def test_movielens_stream_in_amaranth(golden_setup, tmp_path):
    """One test user's 2-stage cascade (first 40 candidates of each stage), the 64 hottest
    rows in the static cache: the pooled vectors equal embedding_vectors, the counters the model's."""
    config = PRESETS["default"]
    stim, _ = movielens_stimulus_file(golden_setup, config, tmp_path)
    tables = {tuple(k): np.array(v) for k, v in stim["tables"]}
    tset = TableSet.build(config, tables, {tuple(k): tuple(v) for k, v in stim["static"]})
    lookups = [Lookup(*lk) for lk in stim["lookups"]]
    out = run(config, tset, lookups, idle=0.1, backpressure=0.1, seed=13,
              memory={"latency": (5, 40)})
    assert out["want"] == stim["expected"]
    check_pooled(out["payloads"], stim["expected"])
    check_counters(out)
    assert out["counters"]["static_hits"] > 0 and out["counters"]["dynamic_hits"] > 0


TOPS = ["embedding", "embedding_harness"]


def _build_args(top):
    from rpaccel.tb.embedding_harness import AXI_MEM_MODEL
    return [str(AXI_MEM_MODEL)] if top == "embedding_harness" else None


@pytest.mark.parametrize("top", TOPS)
@pytest.mark.parametrize("preset", [
    "tiny", pytest.param("default", marks=pytest.mark.slow)])
def test_embedding_cocotb(simulator, preset, top):
    run_cocotb(generate(PRESETS[preset], top), simulator, "rpaccel.tb.test_embedding",
               build_args=_build_args(top))


def test_axi_memory_model_cocotb(simulator):
    """The HDL memory model alone under cocotbext-axi's AxiMaster (writes, reads, errors)."""
    run_cocotb(generate(PRESETS["tiny"], "axi_memory_harness"), simulator,
               "rpaccel.tb.test_embedding_memory", build_args=_build_args("embedding_harness"))


@pytest.mark.parametrize("top", TOPS)
def test_embedding_cocotb_movielens(simulator, top, golden_setup, tmp_path):
    """A real 2-stage cascade stream (first 40 candidates per stage; 10 on Icarus, which is
    slower) on the tiny preset: multi-beat rows (32-byte rows of the large model on a 64-bit
    bus), the 64 hottest rows static."""
    config = PRESETS["tiny"]
    _, path = movielens_stimulus_file(golden_setup, config, tmp_path,
                                      max_candidates=40 if simulator == "verilator" else 10)
    run_cocotb(generate(config, top), simulator, "rpaccel.tb.test_embedding",
               testcase="movielens_cascade_stream", build_args=_build_args(top),
               extra_env={"RPACCEL_EMB_STIMULUS": str(path)}, test_dir=tmp_path)


@pytest.mark.slow
def test_embedding_cocotb_movielens_full_query(golden_setup, tmp_path):
    """Performance run (figures in docs/architecture.md): one test user's whole 2-stage
    cascade (every candidate of both stages) on the HDL memory model at latency 100, the
    default static plan (static_cache_rows hottest rows); checked like every other run, the
    rows per cycle are in embedding_movielens.json beside the results."""
    config = PRESETS["default"]
    _, path = movielens_stimulus_file(golden_setup, config, tmp_path, latency=100,
                                      max_candidates=None, static_rows=None)
    run_cocotb(generate(config, "embedding_harness"), "verilator", "rpaccel.tb.test_embedding",
               testcase="movielens_cascade_stream", build_args=_build_args("embedding_harness"),
               extra_env={"RPACCEL_EMB_STIMULUS": str(path)}, test_dir=tmp_path)
    import json
    figures = json.loads((tmp_path / "embedding_movielens.json").read_text())
    print(f"MovieLens 2-stage, user 5: {figures['rows']} rows in {figures['cycles']} cycles = "
          f"{figures['rows'] / figures['cycles']:.3f} rows/cycle; {figures}")
