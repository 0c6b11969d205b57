"""The command processor (hw/command.py) against the functional model (sim/accel_model.py):
a real plan's ring (model loads, the static-cache load, queries, bad entries) runs on both;
every completion the RTL writes equals the functional model's byte for byte, every weight,
bias, descriptor and static row it sends equals what the model loaded, and the queries it
hands on are the entries (Amaranth simulator, AXI memory with random pauses)."""

import copy

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring

from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint
from rpaccel.hw import descriptors as d
from rpaccel.hw.axi_write import AxiBlockWriter
from rpaccel.hw.command import ERROR, MAX_LAYERS, CommandProcessor
from rpaccel.hw.config import PRESETS
from rpaccel.sim.accel_model import AccelModel
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.golden import load_golden
from rpaccel.sim.scheduler import Scheduler
from rpaccel.tb.amaranth_axi import AxiMemory
from rpaccel.tb.amaranth_sim import Stalls, get, put, simulate, to_python

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

CONFIG = PRESETS["tiny"]


class Harness(Elaboratable):
    def __init__(self, config):
        self.cp = CommandProcessor(config)
        self.writer = AxiBlockWriter(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.cp, m.submodules.writer = self.cp, self.writer
        wiring.connect(m, self.cp.wr_jobs, self.writer.jobs)
        wiring.connect(m, self.cp.wr_data, self.writer.data)
        wiring.connect(m, self.writer.done, self.cp.wr_done)
        return m


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def _set_entry(plan, index, layout, **fields):
    addr = plan.ring.ring_base + index * d.COMMAND_BYTES
    value = d.unpack(layout, plan.image.read(addr, d.COMMAND_BYTES))
    for key, v in fields.items():
        if key == "opcode":
            value["header"]["opcode"] = v
        elif key.startswith("stage0_"):
            value["stages"][0][key[7:]] = v
        else:
            value[key] = v
    plan.image.write(addr, d.pack(layout, value, d.COMMAND_BYTES))


def test_ring_of_loads_queries_and_bad_entries(setup):
    users = [int(u) for u in np.flatnonzero(setup.split.test.any(axis=1))[:4]]
    sch = Scheduler(CONFIG, setup, "small:8,medium:4",
                    stage_partitions=[0b01, 0b11])          # medium on both partitions
    plan = sch.plan([(u, setup.split.test_candidates(u)[:40]) for u in users],
                    ring_log2=4)
    q = plan.queries
    _set_entry(plan, q[1]["index"], d.run_query_layout(CONFIG), stage0_k=0)      # BAD_K
    _set_entry(plan, q[2]["index"], d.run_query_layout(CONFIG), opcode=7)        # opcode
    _set_entry(plan, q[3]["index"], d.run_query_layout(CONFIG),
               records_addr=plan.image.end + 4096)                              # range
    # one more entry: a static load outside the cache, then a NOP
    lay = d.load_static_layout(CONFIG)
    extra = [d.pack(lay, {"header": {"opcode": d.OPCODES["LOAD_STATIC"], "tag": 99},
                          "rows": 5, "static_base": CONFIG.static_cache_rows - 2,
                          "src_addr": plan.image.base}, d.COMMAND_BYTES),
             d.pack(d.command_header_layout(), {"opcode": 0, "tag": 7}, d.COMMAND_BYTES)]
    for raw in extra:
        plan.image.write(plan.ring.ring_base + plan.ring.tail * d.COMMAND_BYTES, raw)
        plan.ring.tail += 1

    model = AccelModel(CONFIG)
    expected_image = copy.deepcopy(plan.image)
    model.execute(expected_image, copy.deepcopy(plan.ring))

    h = Harness(CONFIG)
    cp = h.cp
    rng = np.random.default_rng(5)
    memory = AxiMemory(plan.image, CONFIG.mem_bus_width // 8, stalls=Stalls(0.3, rng))
    got = {"weights": [[] for _ in range(CONFIG.partitions)],
           "biases": [[] for _ in range(CONFIG.partitions)],
           "descriptors": [], "static": [], "queries": []}
    ring = plan.ring

    async def csrs(ctx):
        ctx.set(cp.ring_base, ring.ring_base)
        ctx.set(cp.ring_log2, ring.ring_log2)
        ctx.set(cp.completion_base, ring.completion_base)
        ctx.set(cp.region_base, ring.region_base)
        ctx.set(cp.region_size, ring.region_size)
        ctx.set(cp.tail, ring.tail)
        ctx.set(cp.enable, 1)

    def sink(stream, into, p=0.3, seed=0):
        async def take(ctx):
            stalls = Stalls(p, seed)
            while True:
                into.append(await get(ctx, stream, stalls))
        return take

    async def query_engine(ctx):
        """Plays the query engine: takes each handed-on query, answers with the functional
        model's figures for it."""
        while True:
            beat = await get(ctx, cp.query)
            got["queries"].append(beat)
            comp = d.unpack(d.completion_layout(CONFIG), expected_image.read(
                ring.completion_base + beat["index"] * d.COMPLETION_BYTES, d.COMPLETION_BYTES))
            await put(ctx, cp.query_done, {k: comp[k] for k in (
                "index", "tag", "error", "n_stages", "total_cycles", "kept", "stage_cycles")})

    async def wait_done(ctx):
        await ctx.tick().until(cp.entries_done == ring.tail)
        for _ in range(5):
            await ctx.tick()
        got["errors"] = ctx.get(cp.errors)
        got["head"] = ctx.get(cp.head)
        layers = []
        for slot in range(len(sch.models)):
            m_ = model.models[slot]
            for i in range(len(m_.bottom) + len(m_.top)):
                ctx.set(cp.layer_addr[0], slot * MAX_LAYERS + i)
                await ctx.tick().repeat(2)          # (data two cycles after the address)
                layers.append(to_python(ctx.get(cp.layer_data[0])))
        got["layers"] = layers

    background = [csrs, query_engine, memory.reader(cp.rd_bus), memory.writer(h.writer.bus),
                  sink(cp.emb_descriptors, got["descriptors"], seed=1),
                  sink(cp.static_write, got["static"], seed=2)]
    for p in range(CONFIG.partitions):
        background += [sink(cp.weight_write[p], got["weights"][p], seed=10 + p),
                       sink(cp.bias_write[p], got["biases"][p], seed=20 + p)]
    simulate(h, [wait_done], background=background, max_cycles=200_000, name="command")

    # every completion byte for byte
    for i in range(ring.tail):
        addr = ring.completion_base + i * d.COMPLETION_BYTES
        assert plan.image.read(addr, d.COMPLETION_BYTES) == \
            expected_image.read(addr, d.COMPLETION_BYTES), f"completion {i}"
    codes = [d.unpack(d.completion_layout(CONFIG), plan.image.read(
        ring.completion_base + i * d.COMPLETION_BYTES, d.COMPLETION_BYTES))["error"]
        for i in range(ring.tail)]
    assert codes[q[1]["index"]] == ERROR["BAD_K"]
    assert codes[q[2]["index"]] == ERROR["BAD_OPCODE"]
    assert codes[q[3]["index"]] == ERROR["ADDRESS_RANGE"]
    assert codes[-2:] == [ERROR["ADDRESS_RANGE"], 0]
    assert got["errors"] == 4 and got["head"] == ring.tail
    # the one good query was handed on as it is in the ring
    assert [b["index"] for b in got["queries"]] == [q[0]["index"]]
    # engine memories, per partition, as the functional model loaded them
    for p in range(CONFIG.partitions):
        mem = {}
        for beat in got["weights"][p]:
            mem[beat["addr"]] = beat["data"]
        for addr, word in mem.items():
            assert word == model.weights[p][addr].tolist(), (p, addr)
        loaded = sum(1 for mm in sch.models.values() if mm.partition_mask >> p & 1)
        assert len(got["weights"][p]) == sum(mm.weight_words for mm in sch.models.values()
                                             if mm.partition_mask >> p & 1) and loaded
        for beat in got["biases"][p]:
            assert beat["data"] == model.biases[p][beat["addr"]].tolist()
    # table descriptors and static rows
    assert len(got["descriptors"]) == sum(len(mm.static_rows) for mm in sch.models.values())
    for beat in got["descriptors"]:
        t = model.models[beat["model"]].tables[beat["table"]]
        assert (beat["base"], beat["rows"], 1 << beat["row_shift"], beat["dim"],
                beat["static_base"], beat["static_rows"]) == \
            (t["base_addr"], t["rows"], t["row_bytes"], t["dim"], t["static_base"],
             t["static_rows"])
    assert len(got["static"]) == sum(sum(mm.static_rows) for mm in sch.models.values())
    for beat in got["static"]:
        assert beat["data"] == model.static[beat["addr"]].tolist()
    # layer descriptors as loaded
    flat = [ds for s in range(len(sch.models))
            for ds in model.models[s].bottom + model.models[s].top]
    assert [{k: v for k, v in layer.items() if k != "_pad"} for layer in got["layers"]] == \
        [{k: v for k, v in layer.items() if k != "_pad"} for layer in flat]
    # no read or write outside the image
    for addr, beats in memory.ars + memory.aws:
        assert plan.image.base <= addr and addr + beats * memory.B <= plan.image.end


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_lint_clean(preset):
    proc = lint(generate(PRESETS[preset], "command").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr
