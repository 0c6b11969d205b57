"""The whole accelerator in cocotb on the HDL memory model (``rpaccel sim``, gen/cosim.py,
gen/rtl_backend.py, tb/bench_accel.py, tb/accel_harness.py): real MovieLens test users
through two-stage cascades on random ``tiny`` variants (partitions, sub-batch, cache sizes,
feature switches, ``k`` per stage), bit-exact with the golden, CSR counters equal to the
testbench's cycle count, no access outside the region; bad queries between good ones and a
queue overrun on the RTL; Icarus on one query; the command line's checks before any build.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from rpaccel.gen.cosim import run_cosim
from rpaccel.gen.rtl_backend import RTLBackend, read_hex, write_hex
from rpaccel.gen.simulators import unavailable_reason
from rpaccel.hw import descriptors as d
from rpaccel.hw.config import PRESETS
from rpaccel.hw.regmap import ERROR_CODES
from rpaccel.sim.accel_model import AccelModel
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.files import data_root
from rpaccel.sim.golden import load_golden
from rpaccel.sim.scheduler import MemoryImage, Scheduler
from rpaccel.tb.random_configs import describe, random_cosim_case
from rpaccel.tb.ring_edits import corrupt_entry

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

ERROR = {name: code for code, (name, _) in ERROR_CODES.items()}
needs_verilator = pytest.mark.skipif(unavailable_reason("verilator") is not None,
                                     reason=f"verilator: {unavailable_reason('verilator')}")


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def users_with_tests(setup, n, skip=0):
    return [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[skip:skip + n]]


def test_hex_images_round_trip(tmp_path):
    image = MemoryImage()
    image.put(bytes(range(200)))
    write_hex(image, 16, tmp_path / "m.hex")
    text = (tmp_path / "m.hex").read_text().split("\n")
    assert text[0] == f"@{image.base // 16:x}"
    assert text[1] == bytes(range(16))[::-1].hex()        # lane 0 is the low byte
    dump = tmp_path / "d.hex"
    dump.write_text("// comment\n" + "\n".join(text[1:]))
    assert read_hex(dump, 16, 13)[:200] == bytes(range(200))
    dump.write_text("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
    with pytest.raises(Exception, match="not hexadecimal"):
        read_hex(dump, 16, 1)


@needs_verilator
@pytest.mark.cocotb
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow),
                                  pytest.param(4, marks=pytest.mark.slow)])
def test_random_tiny_variants_rank_real_queries_bit_exact(setup, seed, tmp_path):
    """Random `tiny` variants (tb/random_configs.py) on real users. Seed 1 (one partition,
    static cache only, sub-batch overlap) is in the fast suite; seeds 2-4 (two partitions
    with only a dynamic cache and no overlap; no on-chip top-k; three top-k units; stage 1
    ganged on both partitions in all three) are `make test-all` (about 80 s each). Their
    features stay in the fast suite through the base `tiny` build's RTL tests below (two
    partitions, both caches, queries in flight, a ganged stage) and the every-feature-off
    test."""
    config, pipeline, n, gangs = random_cosim_case(seed)
    report = run_cosim(config, "tiny", "verilator", pipeline, 3, work=tmp_path, setup=setup,
                       candidates=n, stall=40, latency=3, seed=seed, progress=lambda m: None,
                       stage_gangs=gangs)
    where = f"seed {seed}: {describe(config)}; {pipeline}, {n} candidates, ganged {gangs}"
    assert report["mismatches"] == 0, (where, report["first_mismatches"])
    assert report["counters_agree"] and not report["outside_region"], where
    assert report["errors"] == 0, where
    # without on-chip top-k each of the two stages is its own RUN_QUERY (a host round)
    assert report["counters"]["QUERIES_DONE"] == 3 * (1 if config.onchip_topk else 2)
    assert all(c > 0 for c in report["stage_cycles"]) and report["ndcg@10"] >= 0
    if config.static_cache_rows == 0:
        assert report["counters"]["STATIC_HITS"] == 0
    if config.dynamic_cache_sets == 0:
        assert report["counters"]["DYNAMIC_HITS"] == 0
    assert (report["engines_overlap"] is None) == (config.partitions == 1)
    assert report["engines_overlap"] is None or 0 <= report["engines_overlap"] < 1


@needs_verilator
@pytest.mark.cocotb
def test_every_feature_off_ranks_real_queries_bit_exact(setup, tmp_path):
    """The baseline accelerator (one partition, no top-k unit: the host filters between
    stages in round trips, no static or dynamic cache, sub-batches in sequence) on the RTL."""
    config = PRESETS["tiny"].replace(partitions=1, topk_units=1, onchip_topk=False,
                                     static_cache_rows=0, dynamic_cache_sets=0,
                                     subbatch_overlap=False, act_buffers=3)
    report = run_cosim(config, "tiny-baseline", "verilator", "small:8,medium:4", 2,
                       work=tmp_path, setup=setup, candidates=30, progress=lambda m: None)
    assert report["mismatches"] == 0, report["first_mismatches"]
    assert report["host_round_trips"] == 1 and report["counters_agree"]
    # every lookup checks the (empty) static range, goes on to the dynamic path (no sets:
    # straight to memory) and misses there; nothing is ever filled
    counters = report["counters"]
    assert counters["STATIC_ACCESSES"] > 0 and counters["STATIC_HITS"] == 0
    assert counters["DYNAMIC_ACCESSES"] == counters["STATIC_ACCESSES"]
    assert counters["DYNAMIC_MISSES"] == counters["DYNAMIC_ACCESSES"]
    assert counters["DYNAMIC_HITS"] == 0 and counters["DYNAMIC_FILLS"] == 0
    assert "ENGINES_OVERLAP" not in counters                # one partition: no such counter
    assert report["counters"]["QUERIES_DONE"] == 4          # two stages of two queries


def run_beside_the_model(config, plan, work, *, stall, latency, overrun_first=False,
                         model=True):
    """``plan``'s ring on the RTL (the image gets the accelerator's writes) and, unless
    ``model`` is false, on a copy of its image in the functional model first; checks the
    bench's own verdicts (every access inside the region, CSR cycles = testbench cycles).
    Returns the bench's figures and the model's image (or None)."""
    reference = None
    if model:
        reference = MemoryImage(plan.image.base)
        reference.data = bytearray(plan.image.data)
        ring = dataclasses.replace(plan.ring)
        assert AccelModel(config).execute(reference, ring) == plan.ring.tail
    backend = RTLBackend(config, "verilator", work, stall=stall, latency=latency, quiet=True)
    assert backend.execute_many([(plan.image, plan.ring)], overrun_first=overrun_first) == \
        [plan.ring.tail]
    fig = backend.figures[0]
    assert not fig["violation"] and fig["csr_cycles"] == fig["tb_cycles"]
    return fig, reference


BAD = [({"opcode": 9}, "BAD_OPCODE"),
       ({"n_candidates": 0}, "ZERO_CANDIDATES"),
       ({"stage0_k": 17}, "BAD_K"),                   # above topk_max = 16
       ({"stage0_k": 41}, "BAD_K"),                   # above the stage's 40 candidates
       ({"records_addr": 0x10}, "ADDRESS_RANGE"),
       ({"result_addr": 0xFFFF_FF00}, "ADDRESS_RANGE"),
       ({"stage0_partition_mask": 4}, "BAD_PARTITION"),
       ({"stage0_slot": 3}, "MODEL_NOT_LOADED")]


@needs_verilator
@pytest.mark.cocotb
def test_bad_queries_between_good_ones_and_an_overrun_on_the_rtl(setup, tmp_path):
    """One ring: good, bad, good, bad, ... on the RTL after a refused queue overrun. Every
    bad query completes with its code (and the error registers say so), writes nothing;
    every good one is bit-exact; the memory equals the functional model's byte for byte
    apart from the completions' cycle counts; nothing outside the region is touched."""
    config = PRESETS["tiny"]
    sch = Scheduler(config, setup, "small:8,medium:4")
    users = users_with_tests(setup, 2 * len(BAD) + 1)
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    plan = sch.plan(queries)
    bad_queries = {}                  # query number: (code, its result area before)
    for b, (change, code) in enumerate(BAD):
        q = plan.queries[2 * b + 1]   # between good queries 2b and 2b + 2
        bad_queries[2 * b + 1] = (code, plan.image.read(q["result"], 4 * d.RESULT_BYTES))
        corrupt_entry(plan, q["index"], d.run_query_layout(config), **change)
    fig, reference = run_beside_the_model(config, plan, tmp_path, stall=30, latency=2,
                                          overrun_first=True)
    over = fig["overrun"]
    assert over["error"]["CODE"] == ERROR["QUEUE_OVERRUN"] and over["head"] == 0
    assert over["error_count"] == 1 and over["irq"] == 1
    results = sch.results(plan)
    for n, ((user, cands), res) in enumerate(zip(queries, results)):
        if n in bad_queries:
            code, before = bad_queries[n]
            assert res.error == ERROR[code], (n, res.error_name, code)
            assert plan.image.read(plan.queries[n]["result"], 4 * d.RESULT_BYTES) == before
            continue
        assert res.differences(setup.golden.run(sch.pipeline, user, cands)) == [], n
    assert fig["errors"] == 1 + len(bad_queries)        # the overrun and each bad query
    last = max(bad_queries)                             # the error registers name it
    assert fig["error"]["CODE"] == ERROR[bad_queries[last][0]]
    assert fig["error"]["INDEX"] == plan.queries[last]["index"]
    # byte for byte the functional model's memory, but the cycle counts it does not model
    _reference_without_cycles(config, plan, reference)
    assert plan.image.data == reference.data


def _reference_without_cycles(config, plan, reference):
    """Blank the completions' cycle counts (the functional model does not model them) in
    both images, so that the two can be compared byte for byte."""
    comp = d.completion_layout(config)
    for n in range(plan.ring.tail):
        for image in (plan.image, reference):
            addr = plan.ring.completion_base + n * d.COMPLETION_BYTES
            value = d.unpack(comp, image.read(addr, d.COMPLETION_BYTES))
            value["stage_cycles"] = [0] * len(value["stage_cycles"])
            value["total_cycles"] = 0
            image.write(addr, d.pack(comp, value, d.COMPLETION_BYTES))


def _completions(config, plan):
    comp = d.completion_layout(config)
    return [d.unpack(comp, plan.image.read(plan.ring.completion_base + n * d.COMPLETION_BYTES,
                                           d.COMPLETION_BYTES)) for n in range(plan.ring.tail)]


@needs_verilator
@pytest.mark.cocotb
def test_a_model_with_a_layer_the_engines_refuse_is_not_loaded_on_the_rtl(setup, tmp_path):
    """A LOAD_MODEL whose second model has a layer wider than ``max_layer_dim`` completes
    with BAD_LAYER and leaves its slot unloaded: a query naming it completes with
    MODEL_NOT_LOADED instead of reaching the engine (which used to leave the stage without
    its top-k ``last``: a hang); one-stage queries on the good model before and after it
    run, and the memory equals the functional model's byte for byte (cycle counts aside)."""
    config = PRESETS["tiny"]
    # (stage 2 dealt: ganged by default, its model would take two loads, both refused)
    sch = Scheduler(config, setup, "small:4,medium:4", stage_gangs=[False, False])
    users = users_with_tests(setup, 3, skip=20)
    plan = sch.plan([(u, setup.split.test_candidates(u)[:24]) for u in users])
    medium = sch.models["medium"]
    layer = d.unpack(d.layer_layout(config), plan.image.read(medium.layers_addr, d.LAYER_BYTES))
    layer["out_dim"] = config.max_layer_dim + 1
    plan.image.write(medium.layers_addr, d.pack(d.layer_layout(config), layer, d.LAYER_BYTES))
    first, bad, last = plan.queries
    for q in (first, last):                      # the good model only
        corrupt_entry(plan, q["index"], d.run_query_layout(config), n_stages=1)
    fig, reference = run_beside_the_model(config, plan, tmp_path, stall=20, latency=1)
    codes = _completions(config, plan)
    load = next(n for n in range(plan.ring.tail) if codes[n]["error"] == ERROR["BAD_LAYER"])
    assert [c["error"] for c in codes].count(ERROR["BAD_LAYER"]) == 1
    assert codes[bad["index"]]["error"] == ERROR["MODEL_NOT_LOADED"]
    for q in (first, last):
        assert codes[q["index"]]["error"] == 0 and codes[q["index"]]["kept"][0] == 4
    assert load < first["index"] and fig["errors"] == 2
    _reference_without_cycles(config, plan, reference)
    assert plan.image.data == reference.data


@needs_verilator
@pytest.mark.cocotb
def test_queries_in_flight_overlap_on_two_partitions_on_the_rtl(setup, tmp_path):
    """Four queries back to back (stage 1 on partition 0, stage 2 on partition 1), the third
    one bad (stage 2 on a partition that does not exist: BAD_PARTITION, nothing written),
    the second with one candidate's item row outside its table (EMBEDDING, still ranked):
    the memory equals the functional model's byte for byte (cycle counts aside), the good
    queries the golden. The queries overlap: their own cycle counts add up to more than the
    whole run's, and the ENGINES_OVERLAP counter saw both engines busy in the same cycles.
    (The Amaranth-simulator form, tests/test_accel.py, also checks that counter against
    the busy signals themselves; it is in `make test-all`.)"""
    config = PRESETS["tiny"]
    sch = Scheduler(config, setup, "small:8,medium:4", stage_partitions=[1, 2])
    users = users_with_tests(setup, 4)
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    plan = sch.plan(queries)
    bad, q1 = plan.queries[2], plan.queries[1]
    before = plan.image.read(bad["result"], 4 * d.RESULT_BYTES) + \
        plan.image.read(bad["kept"], 2 * config.topk_max * d.RESULT_BYTES)

    corrupt_entry(plan, bad["index"], d.run_query_layout(config), stage1_partition_mask=4)
    raw = plan.image.read(plan.ring.ring_base + q1["index"] * d.COMMAND_BYTES, d.COMMAND_BYTES)
    rec_addr = d.unpack(d.run_query_layout(config), raw)["records_addr"] + \
        5 * d.record_bytes(config)
    rec = d.unpack(d.record_layout(config), plan.image.read(rec_addr, d.record_bytes(config)))
    rec["lookups"][1]["row"] = 100_000
    plan.image.write(rec_addr, d.pack(d.record_layout(config), rec, d.record_bytes(config)))
    fig, reference = run_beside_the_model(config, plan, tmp_path, stall=40, latency=3)
    results = sch.results(plan)
    assert results[2].error == ERROR["BAD_PARTITION"]
    assert results[1].error == ERROR["EMBEDDING"] and len(results[1].ranking) == 4
    assert plan.image.read(bad["result"], 4 * d.RESULT_BYTES) + \
        plan.image.read(bad["kept"], 2 * config.topk_max * d.RESULT_BYTES) == before
    for n in (0, 3):
        user, cands = queries[n]
        assert results[n].differences(setup.golden.run(sch.pipeline, user, cands)) == [], n
    counters = fig["counters"]
    assert counters["QUERIES_DONE"] == 3 and fig["errors"] == 2
    query_cycles = sum(c["total_cycles"] for c in _completions(config, plan)
                       if c["index"] in [q["index"] for q in plan.queries])
    assert query_cycles > counters["BUSY_CYCLES"], "the queries never were in flight together"
    assert counters["ENGINES_OVERLAP"] > 0, "the two partitions never ran at the same time"
    _reference_without_cycles(config, plan, reference)
    assert plan.image.data == reference.data


@needs_verilator
@pytest.mark.cocotb
def test_a_stage_dealt_over_both_partitions_on_the_rtl(setup, tmp_path):
    """Both stages dealt over both partitions (40 candidates: sub-batches 0 and 2 on
    partition 0, 1 on partition 1, merged into one top-k unit; stage 2's one sub-batch
    leaves partition 1 idle), each stage routed to the top-k unit it names (1, then 0):
    bit-exact with the golden. (The Amaranth-simulator form with three top-k units,
    tests/test_accel.py, is in `make test-all`; tests/test_cosim.py's random variants draw
    the number of units.)"""
    config = PRESETS["tiny"]
    sch = Scheduler(config, setup, "small:8,medium:4", stage_partitions=[3, 3],
                    stage_topk_units=[1, 0])
    users = users_with_tests(setup, 2, skip=4)
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    plan = sch.plan(queries)
    fig, _ = run_beside_the_model(config, plan, tmp_path, stall=40, latency=3, model=False)
    assert fig["errors"] == 0
    for (user, cands), res in zip(queries, sch.results(plan), strict=True):
        assert res.differences(setup.golden.run(sch.pipeline, user, cands)) == [], user
    counters = fig["counters"]
    assert counters["ENGINE0_BUSY"] > 0 and counters["ENGINE1_BUSY"] > 0
    assert counters["ENGINES_OVERLAP"] > 0, "the dealt stage never ran on both partitions at once"


@needs_verilator
@pytest.mark.cocotb
def test_a_ganged_stage_on_the_rtl(setup, tmp_path):
    """Stage 2 ganged on both partitions (every layer of its model with the output columns
    split over the two engines, the leader's runner doing the rest), stage 1 dealt over
    them, with memory stalls; between the good queries two bad ones: a ganged stage on a
    mask that is no gang (BAD_PARTITION) and a ganged stage naming the dealt stage's
    slot, loaded whole (MODEL_NOT_LOADED). Good queries bit-exact with the golden, the
    memory equal to the functional model's byte for byte (cycle counts aside), no
    follower write ever out of step (a layer's error would end the query with
    EMBEDDING)."""
    config = PRESETS["tiny"]
    sch = Scheduler(config, setup, "small:8,medium:4", stage_partitions=[3, 3],
                    stage_gangs=[False, True])
    users = users_with_tests(setup, 4, skip=6)
    queries = [(u, setup.split.test_candidates(u)[:40]) for u in users]
    plan = sch.plan(queries)
    layout = d.run_query_layout(config)
    corrupt_entry(plan, plan.queries[1]["index"], layout, stage1_partition_mask=1)
    corrupt_entry(plan, plan.queries[2]["index"], layout, stage1_slot=0)
    fig, reference = run_beside_the_model(config, plan, tmp_path, stall=40, latency=3)
    results = sch.results(plan)
    assert results[1].error == ERROR["BAD_PARTITION"]
    assert results[2].error == ERROR["MODEL_NOT_LOADED"]
    for n in (0, 3):
        user, cands = queries[n]
        assert results[n].differences(setup.golden.run(sch.pipeline, user, cands)) == [], n
    counters = fig["counters"]
    assert counters["ENGINE0_BUSY"] > 0 and counters["ENGINE1_BUSY"] > 0
    _reference_without_cycles(config, plan, reference)
    assert plan.image.data == reference.data


# Icarus on the whole accelerator: one short query (about 2 minutes, most of it the build).
# This once stayed at time 0 forever (gen/simulators.py: why Icarus builds keep `always @*`).
@pytest.mark.cocotb
@pytest.mark.skipif(unavailable_reason("icarus") is not None,
                    reason=f"icarus: {unavailable_reason('icarus')}")
def test_icarus_ranks_a_real_query_bit_exact(setup, tmp_path):
    report = run_cosim(PRESETS["tiny"], "tiny", "icarus", "small:8,medium:4", 1,
                       work=tmp_path, setup=setup, candidates=24, progress=lambda m: None)
    assert report["mismatches"] == 0 and report["counters_agree"], report["first_mismatches"]


def _cli(*args, cwd):
    env = {**os.environ, "RPACCEL_DATA": str(data_root()), "RPACCEL_BUILD": str(cwd / "build")}
    return subprocess.run([sys.executable, "-m", "rpaccel.gen.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("args, message", [
    (["--queries", "0"], "--queries: must be at least 1, not 0"),
    (["--queries", "some"], "--queries: must be a number of queries or 'all', not 'some'"),
    (["--latency", "-1"], "--latency: must be at least 0, not -1"),
    (["--stall", "256"], "--stall: must be at most 255, not 256"),
    (["--stall", "often"], "--stall: must be an integer, not 'often'"),
    (["--pipeline", "small"], "pipeline stage 'small' is not MODEL:KEEP_K"),
    (["--preset", "tiny", "--pipeline", "small:17"], "17"),
    (["--preset", "tiny", "--pipeline", "huge:4"], "huge"),
    (["--partitions", "1,two"], "--partitions: must be partition masks, one per stage"),
    (["--preset", "tiny", "--pipeline", "small:8,medium:4", "--partitions", "1"],
     "give one partition mask and one top-k unit per stage (2)"),
    (["--preset", "tiny", "--pipeline", "small:8,medium:4", "--partitions", "1,4"],
     "partition mask 0x4 names no partition or one beyond partitions=2"),
])
def test_bad_command_lines_fail_before_any_build(args, message, tmp_path, setup):
    proc = _cli("sim", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "build").exists()


@needs_verilator
@pytest.mark.cocotb
def test_a_failing_bench_is_an_error_not_a_hang(setup, tmp_path):
    """A bench that gives up (here: the ring is not done within 100 cycles) ends the session
    with an error naming why, instead of leaving the host waiting for an answer."""
    sch = Scheduler(PRESETS["tiny"], setup, "small:8,medium:4")
    user = users_with_tests(setup, 1)[0]
    plan = sch.plan([(user, setup.split.test_candidates(user)[:24])])
    backend = RTLBackend(PRESETS["tiny"], "verilator", tmp_path, timeout_cycles=100,
                         quiet=True)
    with pytest.raises(Exception, match="timeout 100"):
        backend.execute_many([(plan.image, plan.ring)])
