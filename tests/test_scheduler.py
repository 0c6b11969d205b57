"""The host scheduler (sim/scheduler.py) and the functional model of the top level
(sim/accel_model.py): real queries through the memory formats of hw/descriptors.py equal
the golden cascade; invalid pipelines are refused before anything is built; bad ring
entries are rejected with their error code while the next entries run normally."""

import numpy as np
import pytest

from rpaccel.hw import descriptors as d
from rpaccel.hw.config import PRESETS
from rpaccel.sim.accel_model import ERROR, AccelModel
from rpaccel.sim import numerics
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.golden import PIPELINES, load_golden
from rpaccel.sim.scheduler import (MemoryImage, Scheduler, SchedulerError, access_counts,
                                   hot_order)
from rpaccel.tb.ring_edits import corrupt_entry

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

CONFIG = PRESETS["default"].replace(topk_max=256)
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def users_with_tests(setup, n):
    return [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:n]]


def check_against_golden(setup, scheduler, queries, results):
    for (user, cands), res in zip(queries, results, strict=True):
        assert res.differences(setup.golden.run(scheduler.pipeline, user, cands)) == [], user


@pytest.mark.parametrize("pipeline", ["2-stage", "3-stage"])
def test_real_queries_equal_the_golden_cascade(setup, pipeline):
    """Whole test users (every candidate) through the report's cascades, everything read
    from the memory image: records, hot-ordered tables, static rows, weight words."""
    sch = Scheduler(CONFIG, setup, PIPELINES[pipeline])
    queries = [(u, setup.split.test_candidates(u)) for u in users_with_tests(setup, 2)]
    model = AccelModel(CONFIG)
    check_against_golden(setup, sch, queries, sch.run(model, queries))
    assert model.lookups["static_hits"] > 0 and model.lookups["memory"] > 0
    assert model.lookups["errors"] == 0


def test_without_static_cache_and_on_one_partition(setup):
    cfg = CONFIG.replace(partitions=1, topk_units=1, static_cache_rows=0)
    sch = Scheduler(cfg, setup, "small:64,medium:8")
    queries = [(u, setup.split.test_candidates(u)[:300]) for u in users_with_tests(setup, 2)]
    model = AccelModel(cfg)
    check_against_golden(setup, sch, queries, sch.run(model, queries))
    assert model.lookups["static_hits"] == 0


def test_hot_order_and_static_rows_are_prefixes(setup):
    counts = access_counts(setup)
    assert [c.size for c in counts] == list(setup.features.table_rows)
    assert counts[1].sum() == setup.split.train.sum()          # one item row per pair
    order = hot_order(np.array([3, 9, 9, 0, 5]))
    assert order.tolist() == [1, 2, 4, 0, 3]                   # ties: lower row first
    sch = Scheduler(CONFIG, setup, "small:64,large:10")
    used = sum(sum(m.static_rows) for m in sch.models.values())
    assert used == min(CONFIG.static_cache_rows, sum(
        sum(setup.features.table_rows) for _ in sch.models))
    for m in sch.models.values():
        assert all(0 <= h <= rows for h, rows in zip(m.static_rows, setup.features.table_rows))


@pytest.mark.parametrize("pipeline, config, message", [
    ("small:300,large:10", CONFIG, "keep_k 300 is above topk_max=256"),
    ("small:64,medium:32,large:16,small:8,medium:4", CONFIG,
     "5 stages; this accelerator runs at most max_stages=4"),
    ("tiny:10", CONFIG, "unknown model 'tiny'"),
    ("small:10,large:20", CONFIG, "larger than its input"),
    # (stage 2 ganged by default: the model is its gang slices, half the columns each)
    ("small:16,large:10", TINY, "model 'large@gang0x3.top' does not fit the engine"),
])
def test_invalid_pipelines_are_refused_before_anything_is_built(setup, pipeline, config,
                                                                message):
    with pytest.raises(SchedulerError, match=message):
        Scheduler(config, setup, pipeline)


def test_invalid_stage_mapping_is_refused(setup):
    with pytest.raises(SchedulerError, match="partition mask 0x4 names no partition"):
        Scheduler(CONFIG, setup, "small:8", stage_partitions=[4])
    with pytest.raises(SchedulerError, match="top-k unit 5 does not exist"):
        Scheduler(CONFIG, setup, "small:8", stage_topk_units=[5])
    sch = Scheduler(CONFIG, setup, "small:8")
    user = users_with_tests(setup, 1)[0]
    with pytest.raises(SchedulerError, match="keeps 8 of only 3 candidates"):
        sch.plan([(user, setup.split.test_candidates(user)[:3])])


@pytest.mark.parametrize("change, code", [
    ({"opcode": 9}, "BAD_OPCODE"),
    ({"n_candidates": 0}, "ZERO_CANDIDATES"),
    ({"stage0_k": 0}, "BAD_K"),
    ({"stage0_k": 257}, "BAD_K"),
    ({"n_stages": 0}, "BAD_STAGES"),
    ({"records_addr": 0x10}, "ADDRESS_RANGE"),
    ({"result_addr": 1 << 40}, "ADDRESS_RANGE"),
    ({"stage0_partition_mask": 4}, "BAD_PARTITION"),
    ({"stage0_topk_unit": 3}, "BAD_PARTITION"),
    ({"stage0_slot": 3}, "MODEL_NOT_LOADED"),
])
def test_a_bad_query_between_two_good_ones(setup, change, code):
    """The bad entry completes with its code and writes no result; both neighbours are
    exact."""
    sch = Scheduler(CONFIG, setup, "small:16,medium:4")
    users = users_with_tests(setup, 3)
    queries = [(u, setup.split.test_candidates(u)[:200]) for u in users]
    plan = sch.plan(queries)
    bad = plan.queries[1]
    before = plan.image.read(bad["result"], 4 * d.RESULT_BYTES)
    corrupt_entry(plan, bad["index"], d.run_query_layout(CONFIG), **change)
    model = AccelModel(CONFIG)
    assert model.execute(plan.image, plan.ring) == plan.ring.tail
    results = sch.results(plan)
    assert results[1].error == ERROR[code], results[1].error_name
    assert plan.image.read(bad["result"], 4 * d.RESULT_BYTES) == before
    check_against_golden(setup, sch, [queries[0], queries[2]], [results[0], results[2]])


def test_an_embedding_row_outside_its_table_is_zeros_and_flagged(setup):
    sch = Scheduler(CONFIG, setup, "small:8")
    user = users_with_tests(setup, 1)[0]
    cands = setup.split.test_candidates(user)[:50]
    plan = sch.plan([(user, cands)])
    q = plan.queries[0]
    size = d.record_bytes(CONFIG)
    layout = d.record_layout(CONFIG)
    rec = d.unpack(layout, plan.image.read(_records_addr(plan, q), size))
    rec["lookups"][1]["row"] = 100_000                  # the item table has 1682 rows
    plan.image.write(_records_addr(plan, q), d.pack(layout, rec, size))
    model = AccelModel(CONFIG)
    model.execute(plan.image, plan.ring)
    res = sch.results(plan)[0]
    assert res.error == ERROR["EMBEDDING"] and model.lookups["errors"] == 1
    assert len(res.ranking) == 8                        # the query still completes


def _records_addr(plan, q):
    raw = plan.image.read(plan.ring.ring_base + q["index"] * d.COMMAND_BYTES, d.COMMAND_BYTES)
    return d.unpack(d.run_query_layout(CONFIG), raw)["records_addr"]


def test_memory_image_bounds_and_words():
    image = MemoryImage(base=0x100)
    a = image.put(b"\x01\x02\x03")
    b = image.put(b"\x04", align=16)
    assert (a, b) == (0x100, 0x110)
    assert image.words(4)[:1] == [0x030201]
    with pytest.raises(IndexError, match="outside the image"):
        image.read(0x0FF, 2)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_descriptor_fits_its_size(name):
    cfg = PRESETS[name]
    for layout in d.command_layouts(cfg).values():
        assert layout.size <= 8 * d.COMMAND_BYTES
    assert d.completion_layout(cfg).size <= 8 * d.COMPLETION_BYTES
    assert d.layer_layout(cfg).size <= 8 * d.LAYER_BYTES
    assert d.table_layout(cfg).size <= 8 * d.TABLE_BYTES
    assert d.record_layout(cfg).size <= 8 * d.record_bytes(cfg)
    raw = d.pack(d.run_query_layout(cfg), {"header": {"opcode": 3, "tag": 7},
                                            "n_candidates": 5}, d.COMMAND_BYTES)
    assert len(raw) == 64 and raw[0] == 3 and raw[2] == 7
    assert d.unpack(d.run_query_layout(cfg), raw)["n_candidates"] == 5


def _records_by_layout(sch, user, candidates) -> bytes:
    """The records the obvious, slow way: ``d.pack`` of each record's fields."""
    cfg = sch.config
    batch = sch.setup.golden.batch(user, candidates)
    dense = numerics.quantize_tensor(batch.dense,
                                     next(iter(sch.models.values())).dense_scale)
    layout, size = d.record_layout(cfg), d.record_bytes(cfg)
    n_single = batch.sparse.shape[1]
    out = bytearray()
    for b in range(len(batch)):
        lookups = [{"row": int(sch.ranks[t][batch.sparse[b, t]]), "bag_end": 1}
                   for t in range(n_single)]
        genres = np.flatnonzero(batch.genres[b])
        lookups += [{"row": int(sch.ranks[n_single][g]), "bag_end": int(i == len(genres) - 1)}
                    for i, g in enumerate(genres)]
        n = len(lookups)
        lookups += [{"row": 0, "bag_end": 0}] * (cfg.max_lookups - n)
        out += d.pack(layout, {"item": int(batch.items[b]), "n_lookups": n,
                               "n_dense": dense.shape[1],
                               "dense": [int(v) for v in dense[b]] +
                                        [0] * (cfg.max_dense - dense.shape[1]),
                               "lookups": lookups}, size)
    return bytes(out)


def test_fast_record_packing_equals_the_layout(setup):
    """The records the scheduler writes (packed with shifts at the layout's offsets) are
    byte for byte ``d.pack`` of each record's fields, on a real query."""
    for config in (CONFIG, PRESETS["tiny"]):
        sch = Scheduler(config, setup, "small:8")
        user = users_with_tests(setup, 1)[0]
        cands = setup.split.test_candidates(user)[:300]
        assert sch.records(user, cands) == _records_by_layout(sch, user, cands)


NO_TOPK = CONFIG.replace(onchip_topk=False)


@pytest.mark.parametrize("pipeline", ["2-stage", "3-stage"])
def test_without_onchip_topk_the_host_filters_between_stages(setup, pipeline):
    """onchip_topk off: each stage is one RUN_QUERY whose every score goes to memory; the
    host keeps the top k (the golden's tie-break), writes the kept candidates' records and
    submits the next stage. Rankings and kept lists equal the golden cascade."""
    sch = Scheduler(NO_TOPK, setup, PIPELINES[pipeline])
    queries = [(u, setup.split.test_candidates(u)) for u in users_with_tests(setup, 2)]
    model = AccelModel(NO_TOPK)
    results = sch.run(model, queries)
    check_against_golden(setup, sch, queries, results)
    assert all(len(r.kept) == len(sch.pipeline.stages) for r in results)


def test_without_onchip_topk_a_multi_stage_query_is_rejected(setup):
    """The accelerator without top-k units runs one stage per query: a RUN_QUERY of two
    stages completes with BAD_STAGES, writes nothing, and the next query runs."""
    sch = Scheduler(NO_TOPK, setup, "small:16,medium:4")
    users = users_with_tests(setup, 3)
    queries = [(u, setup.split.test_candidates(u)[:200]) for u in users]
    plan = sch.plan(queries)
    bad = plan.queries[1]
    addr = bad["rounds"][0]["scores"]
    before = plan.image.read(addr, 200 * d.RESULT_BYTES)
    corrupt_entry(plan, bad["rounds"][0]["index"], d.run_query_layout(NO_TOPK), n_stages=2)
    model = AccelModel(NO_TOPK)
    while True:
        assert model.execute(plan.image, plan.ring) == plan.ring.tail
        if not sch.advance(plan):
            break
    results = sch.results(plan)
    assert results[1].error == ERROR["BAD_STAGES"], results[1].error_name
    assert len(results[1].ranking) == 0
    assert plan.image.read(addr, 200 * d.RESULT_BYTES) == before
    check_against_golden(setup, sch, [queries[0], queries[2]], [results[0], results[2]])


def test_the_default_mapping_deals_every_stage_over_every_partition(setup):
    """Without a mapping every stage's mask names all partitions (so every model is loaded
    into every engine) and stage s uses top-k unit s mod topk_units; with one partition
    the mask is 1. A later stage with fewer sub-batches than partitions runs ganged on all
    of them where they form a gang (not with one partition, nor on `small`, whose
    partitions form none); one of as many sub-batches as partitions is dealt."""
    for cfg, gangs in ((CONFIG, [False, True, True]),
                       (CONFIG.replace(partitions=4, topk_units=4), [False, True, True]),
                       (CONFIG.replace(partitions=1, topk_units=1), [False] * 3)):
        sch = Scheduler(cfg, setup, "small:64,medium:16,large:8")
        every = (1 << cfg.partitions) - 1
        assert sch.stage_masks == [every] * 3
        assert sch.stage_units == [s % cfg.topk_units for s in range(3)]
        assert [m.partition_mask for m in sch.models.values()] == [every] * 3
        assert sch.stage_gangs == gangs
    assert Scheduler(PRESETS["small"].replace(topk_max=64), setup,
                     "small:64,medium:16").stage_gangs == [False, False]
    assert Scheduler(CONFIG, setup, "small:256,large:10").stage_gangs == [False, False]
    assert Scheduler(CONFIG, setup, "small:129,large:10").stage_gangs == [False, False]
    assert Scheduler(CONFIG, setup, "small:128,large:10").stage_gangs == [False, True]


def test_stages_dealt_over_partitions_and_routed_to_more_topk_units(setup):
    """The mapping is free: a stage dealt over both partitions, another on one, top-k units
    beyond the partitions; the values are those of the default mapping."""
    cfg = CONFIG.replace(topk_units=4)
    sch = Scheduler(cfg, setup, "small:64,medium:8", stage_partitions=[3, 2],
                    stage_topk_units=[3, 2])
    assert [m.partition_mask for m in sch.models.values()] == [3, 2]
    queries = [(u, setup.split.test_candidates(u)[:300]) for u in users_with_tests(setup, 2)]
    check_against_golden(setup, sch, queries, sch.run(AccelModel(cfg), queries))


def test_ganged_stages_equal_the_golden_cascade(setup):
    """A stage ganged on both partitions (every layer's columns split over the two engines)
    beside one dealt over them, on `default` and with four partitions (gangs of 2 and of
    4): one LOAD_MODEL per gang member, flagged, into the model's own slot; the values are
    the golden's."""
    for cfg, masks in ((CONFIG, [3, 3]), (CONFIG.replace(partitions=4, topk_units=4),
                                          [0xC, 0xF])):
        sch = Scheduler(cfg, setup, "small:64,medium:8", stage_partitions=masks,
                        stage_gangs=[False, True])
        assert [(m.partition_mask, m.ganged) for m in sch.models.values()] == \
            [(masks[0], False), (masks[1], True)]
        plan = sch.plan([(u, setup.split.test_candidates(u)[:300])
                         for u in users_with_tests(setup, 1)])
        loads = [d.unpack(d.load_model_layout(cfg),
                          bytes(plan.image.read(plan.ring.ring_base + i * d.COMMAND_BYTES,
                                                d.COMMAND_BYTES)))
                 for op, i in plan.entries if op == "LOAD_MODEL"]
        members = bin(masks[1]).count("1")
        assert [(ld["slot"], ld["partition_mask"], ld["header"]["flags"]) for ld in loads] == \
            [(0, masks[0], 0)] + [(1, (masks[1] & -masks[1]) << e, d.LOAD_MODEL_GANG)
                                  for e in range(members)]
        queries = [(u, setup.split.test_candidates(u)[:300])
                   for u in users_with_tests(setup, 2)]
        check_against_golden(setup, sch, queries, sch.run(AccelModel(cfg), queries))


def test_a_model_ganged_and_not_takes_two_slots(setup):
    """The same model in a ganged stage and in a dealt one is compiled twice (the gang's
    slices are another layout of its weights)."""
    sch = Scheduler(CONFIG, setup, "medium:64,medium:8", stage_partitions=[3, 3],
                    stage_gangs=[True, False])
    assert [(m.name, m.slot, m.ganged) for m in sch.models.values()] == \
        [("medium", 0, True), ("medium", 1, False)]
    queries = [(u, setup.split.test_candidates(u)[:200]) for u in users_with_tests(setup, 1)]
    check_against_golden(setup, sch, queries, sch.run(AccelModel(CONFIG), queries))


@pytest.mark.parametrize("config, mask, needle", [
    (CONFIG, 1, "cannot run ganged on partitions 0x1: the gangs of this configuration are "
                "the masks 0x3"),
    (PRESETS["small"], 3, "forms no gang"),
    (CONFIG.replace(partitions=1, topk_units=1), 1, "forms no gang"),
])
def test_a_gang_the_configuration_cannot_form_is_refused(setup, config, mask, needle):
    with pytest.raises(SchedulerError, match=needle):
        Scheduler(config, setup, "small:8", stage_partitions=[mask], stage_gangs=[True])
