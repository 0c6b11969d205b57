"""cocotb testbench of the embedding subsystem (hw/embedding.py) against the golden pooling
(``numerics.pool_sum``, ``sim.quant.embedding_vectors``) and the exact cache model.

It runs on two tops: ``embedding`` (the subsystem alone, its AXI4 port served by
cocotbext-axi's ``AxiRamRead`` with random pause generators on AR and R) and
``embedding_harness`` (the subsystem on the HDL memory model ``tb/axi_mem_model.v``, with a
configurable latency and random backpressure). The same tests run on both and check the same
pooled vectors and the same counters: the two memories must be indistinguishable except for
``read_latency``. Every AR address is checked to lie inside its table's region and page.

``RPACCEL_EMB_STIMULUS`` names a JSON file of a real MovieLens cascade stream (written by
``tests/test_embedding.py``); without it that test is skipped.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from rpaccel.hw.axi import bus_bytes
from rpaccel.hw.embedding import (STAGES, counter_layout, descriptor_layout, lookup_layout,
                                  pooled_layout, static_write_layout)
from rpaccel.sim.cache_model import Lookup
from rpaccel.tb.amaranth_sim import to_python
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng
from rpaccel.tb.common import load_manifest, setup
from rpaccel.tb.unit_models.embedding import (TableSet, check_address, check_pooled,
                                              expected_pooled, random_lookups, random_tables,
                                              split_static, static_writes)

HARNESS = load_manifest()["unit"] == "embedding_harness"
#: Icarus simulates this design about 30x slower than Verilator: it gets shorter streams
#: (the same tests; Verilator and the Amaranth-simulator tests carry the long ones).
SCALE = 0.2 if cocotb.SIM_NAME and "icarus" in cocotb.SIM_NAME.lower() else 1.0


def scaled(n: int) -> int:
    return max(4, int(n * SCALE))
STIMULUS = os.environ.get("RPACCEL_EMB_STIMULUS")
STALLS = {"none": (0.0, 0.0, 0.0), "both": (0.3, 0.3, 0.4)}


def _pauses(rng: np.random.Generator, p: float):
    while True:
        yield bool(p and rng.random() < p)


class Memory:
    """The AXI memory behind the DUT: cocotbext-axi or the HDL model."""

    def __init__(self, bench, counter):
        self.bench, self.dut, self.counter = bench, bench.dut, counter
        self.config = bench.config
        self.bursts = []
        self.tset = None
        if not HARNESS:
            from cocotbext.axi import AxiRamRead, AxiReadBus
            self.ram = AxiRamRead(AxiReadBus.from_prefix(self.dut, "m_axi_"), self.dut.clk,
                                  self.dut.rst, size=1 << 22)
        cocotb.start_soon(self._watch())

    async def load(self, tset: TableSet, *, latency: int = 1, stall: float = 0.0,
                   error_range: tuple = (0, 0)):
        self.tset = tset
        nbytes = bus_bytes(self.config)
        rng = child_rng(self.bench.rng)
        if HARNESS:
            digits = self.config.mem_bus_width // 4
            with open("axi_mem.hex", "w") as f:
                for addr in sorted(tset.image):
                    f.write(f"@{addr // nbytes:x}\n{tset.image[addr]:0{digits}x}\n")
            dut = self.dut
            await FallingEdge(dut.clk)
            dut.mem_latency.value = latency
            dut.mem_stall_ar.value = int(stall * 256)
            dut.mem_stall_r.value = int(stall * 256)
            dut.mem_err_lo.value, dut.mem_err_hi.value = error_range
            dut.mem_load.value = 1
            await FallingEdge(dut.clk)
            dut.mem_load.value = 0
        else:
            for addr, word in tset.image.items():
                self.ram.write(addr, word.to_bytes(nbytes, "little"))
            self.ram.ar_channel.set_pause_generator(_pauses(child_rng(rng), stall))
            self.ram.r_channel.set_pause_generator(_pauses(child_rng(rng), stall))

    async def _watch(self):
        dut = self.dut
        nbytes = bus_bytes(self.config)
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if HARNESS:
                fire, addr, length = dut.ar_fire, dut.ar_addr, dut.ar_len
            else:
                fire = int(dut.m_axi__arvalid.value) & int(dut.m_axi__arready.value)
                addr, length = dut.m_axi__araddr, dut.m_axi__arlen
            if int(fire if isinstance(fire, int) else fire.value):
                burst = (int(addr.value), int(length.value) + 1)
                self.bursts.append(burst)
                if self.tset is not None:
                    check_address(self.tset, burst[0], burst[1], nbytes)


class Rig:
    def __init__(self, bench, idle, backpressure):
        dut, cfg = bench.dut, bench.config
        self.bench, self.dut, self.config = bench, dut, cfg
        self.counter = CycleCounter(dut.clk)
        rng = bench.rng
        self.lookups = StreamDriver(dut, "lookups", lookup_layout(cfg), counter=self.counter,
                                    rng=child_rng(rng), idle=idle)
        self.descriptors = StreamDriver(dut, "descriptors", descriptor_layout(cfg),
                                        counter=self.counter)
        self.static = StreamDriver(dut, "static_write", static_write_layout(cfg),
                                   counter=self.counter)
        self.pooled = StreamSink(dut, "pooled", pooled_layout(cfg), counter=self.counter,
                                 rng=child_rng(rng), backpressure=backpressure)
        self.memory = Memory(bench, self.counter)
        self.set_stage_ways(None)

    def set_stage_ways(self, masks):
        """Drive ``stage_ways`` (``None``: every stage owns every way); returns the masks."""
        cfg = self.config
        masks = tuple(masks) if masks is not None else ((1 << cfg.dynamic_cache_ways) - 1,) * STAGES
        self.dut.stage_ways.value = sum(m << (i * cfg.dynamic_cache_ways)
                                        for i, m in enumerate(masks))
        return masks

    def counters(self) -> dict:
        return to_python(counter_layout(self.config).from_bits(int(self.dut.counters.value)))

    async def clear(self):
        await FallingEdge(self.dut.clk)
        self.dut.clear_counters.value = 1
        self.dut.flush.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.clear_counters.value = 0
        self.dut.flush.value = 0
        while int(self.dut.busy.value):
            await FallingEdge(self.dut.clk)

    async def run(self, tset: TableSet, lookups, want=None, *, stage_ways=None, **memory):
        """Load, stream, compare pooled vectors and counters; returns the counters and the
        cycles of the run."""
        await FallingEdge(self.dut.clk)
        masks = self.set_stage_ways(stage_ways)
        await self.clear()
        await self.memory.load(tset, **memory)
        error_range = memory.get("error_range", (0, 0))
        model = tset.model(error_address=lambda a: error_range[0] <= a < error_range[1],
                           stage_ways=masks)
        expect, model_counters = expected_pooled(self.config, tset, lookups, model=model)
        if want is not None:
            assert want == expect, "the stimulus file's vectors differ from the cache model's"
        await self.descriptors.send([d.payload() for d in tset.descriptors])
        await self.static.send(static_writes(self.config, tset))
        bursts_before = len(self.memory.bursts)
        start = self.counter.cycle
        sending = cocotb.start_soon(self.lookups.send([lk.payload() for lk in lookups]))
        got = await self.pooled.receive(len(expect))
        in_cycles = await sending
        cycles = self.counter.cycle - start
        check_pooled([t.payload for t in got], expect)
        await self.pooled.expect_idle(8)
        assert int(self.dut.idle.value), "not idle after the last vector"
        counters = self.counters()
        latency = counters.pop("read_latency")
        assert counters == model_counters, \
            {k: (counters[k], model_counters[k]) for k in counters
             if counters[k] != model_counters[k]}
        assert len(self.memory.bursts) - bursts_before == counters["bursts"]
        return {"cycles": cycles, "first_in": in_cycles[0], "last_out": got[-1].cycle,
                "latency": latency, **counters}


async def start(dut, stalls="none"):
    bench = await setup(dut)
    idle, backpressure, _ = STALLS[stalls]
    return bench, Rig(bench, idle, backpressure)


@cocotb.test()
@cocotb.parametrize(stalls=list(STALLS))
async def random_lookups_vs_model(dut, stalls):
    """Random tables of two models, random static split, Zipf-skewed bags of 1..max_bag rows,
    under random input gaps, output backpressure and memory stalls (and latency 1..40 on the
    HDL model)."""
    bench, rig = await start(dut, stalls)
    cfg, rng = bench.config, bench.rng
    for round_ in range(2):
        tables = random_tables(rng, cfg, models=2, max_rows=250)
        tset = TableSet.build(cfg, tables, split_static(cfg, tables, rng))
        lookups = random_lookups(rng, cfg, tables, scaled(60))
        t0 = time.monotonic()
        res = await rig.run(tset, lookups, latency=int(rng.integers(1, 41)),
                            stall=STALLS[stalls][2])
        dut._log.info("%d lookups, %d cycles (%.0f cycles/s): %s", len(lookups), res["cycles"],
                      res["cycles"] / (time.monotonic() - t0), res)


@cocotb.test()
async def bad_input_is_flagged(dut):
    """Rows outside their table, an unconfigured model, empty and oversized bags: flagged zero
    vectors, counted, never read from memory (the address watcher), and the candidates
    around them exact."""
    bench, rig = await start(dut, "both")
    cfg, rng = bench.config, bench.rng
    tables = random_tables(rng, cfg, models=2, max_rows=120)
    tset = TableSet.build(cfg, tables, split_static(cfg, tables, rng))
    lookups = random_lookups(rng, cfg, tables, scaled(50), bad=0.3)
    res = await rig.run(tset, lookups, latency=7, stall=0.3)
    assert res["bad_lookups"] > 0 and res["bad_vectors"] > 0


@cocotb.test(skip=not HARNESS)
async def axi_error_responses_are_flagged(dut):
    """SLVERR on the rows of one table (the HDL model's error window): their vectors are
    flagged, ``axi_errors`` counts the bursts, nothing hangs, other tables are exact."""
    bench, rig = await start(dut, "both")
    cfg, rng = bench.config, bench.rng
    tables = random_tables(rng, cfg, models=1, max_rows=60)
    tset = TableSet.build(cfg, tables)
    lo, hi = tset.descriptors[1].region
    lookups = random_lookups(rng, cfg, tables, scaled(30))
    res = await rig.run(tset, lookups, latency=5, stall=0.3, error_range=(lo, hi))
    assert res["axi_errors"] > 0


@cocotb.test(skip=not HARNESS)
async def throughput(dut):
    """Rows per cycle: all hits (every row in the static cache), all misses at memory
    latency 100 (no dynamic fills: stage 0 owns no way), logged for the docs."""
    bench, rig = await start(dut)
    cfg, rng = bench.config, bench.rng
    n = scaled(2000)
    tables = {(0, 0): rng.integers(-128, 128, (256, cfg.emb_dim_max))}
    hot = TableSet.build(cfg, tables, {(0, 0): (0, min(256, cfg.static_cache_rows))})
    rows = rng.integers(0, min(256, cfg.static_cache_rows), n)
    lookups = [Lookup(0, 0, int(r), 1, 1) for r in rows]
    res = await rig.run(hot, lookups, latency=1)
    hit_rate = n / (res["last_out"] - res["first_in"] + 1)
    assert res["static_hits"] == n
    cold = TableSet.build(cfg, tables)
    m = scaled(400)
    res = await rig.run(cold, [Lookup(0, 0, int(r), 1, 1) for r in rng.integers(0, 256, m)],
                        latency=100, stage_ways=(0,) * STAGES)
    miss_rate = m / (res["last_out"] - res["first_in"] + 1)
    assert res["dynamic_misses"] == m
    dut._log.info("rows per cycle: all-hit %.3f, all-miss (latency 100) %.3f; "
                  "mean read latency %.1f cycles", hit_rate, miss_rate,
                  res["latency"] / res["bursts"])
    with open("embedding_throughput.json", "w") as f:
        json.dump({"all_hit_rows_per_cycle": hit_rate, "all_miss_rows_per_cycle": miss_rate,
                   "mean_read_latency": res["latency"] / res["bursts"]}, f)


@cocotb.test(skip=STIMULUS is None)
async def movielens_cascade_stream(dut):
    """The lookups of real MovieLens cascade queries (tables of the golden's quantized
    models, hot rows in the static cache): pooled vectors equal
    ``sim.quant.embedding_vectors``, counters equal the model's."""
    bench, rig = await start(dut, "both" if not HARNESS else "none")
    cfg = bench.config
    with open(STIMULUS) as f:
        stim = json.load(f)
    tables = {tuple(k): np.array(v, dtype=np.int64) for k, v in stim["tables"]}
    static = {tuple(k): tuple(v) for k, v in stim["static"]}
    tset = TableSet.build(cfg, tables, static)
    lookups = [Lookup(*lk) for lk in stim["lookups"]]
    t0 = time.monotonic()
    res = await rig.run(tset, lookups, stim["expected"], latency=stim.get("latency", 30),
                        stall=0.2 if not HARNESS else 0.0)
    rows = len(lookups)
    dut._log.info("MovieLens stream: %d lookups, %d vectors, %d cycles: %.3f rows/cycle; "
                  "%.0f cycles/s; %s", rows, res["vectors"], res["cycles"],
                  rows / res["cycles"], res["cycles"] / (time.monotonic() - t0), res)
    with open("embedding_movielens.json", "w") as f:
        json.dump({"rows": rows, **res}, f)

