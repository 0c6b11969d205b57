"""Reset is part of every unit's contract (docs/architecture.md, "Conventions"): while ``rst``
is asserted no input takes a beat (``ready`` low) and no output offers one (``valid`` low);
after it the unit works from a clean state.

Each test runs some traffic, then asserts reset for a few cycles while a beat is offered on
every input and every output is ready, checks cycle by cycle that nothing is taken or
offered, releases reset and runs a job checked against the golden model. The top-k and
interaction units have their own reset tests beside them (tests/test_topk.py,
tests/test_interaction.py). In Amaranth's simulator; the reset is the ``sync`` domain's,
driven by the testbench (a domain declared around the unit).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import ClockDomain, Module, Value
from amaranth.lib import wiring

from rpaccel.hw.compute_core import ComputeCore
from rpaccel.hw.config import PRESETS
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.pe import PRODUCT_LATENCY, ProcessingElement
from rpaccel.hw.stream import StreamFIFO
from rpaccel.hw.systolic import SystolicArray
from rpaccel.hw.vector import VectorUnit
from rpaccel.sim.mlp_program import (MLPProgram, activation_addresses, pack_activations,
                                     random_layer, reference_mlp, unpack_activations)
from rpaccel.sim.numerics import wrap
from rpaccel.tb.amaranth_sim import get, put, receive, send, simulate

TINY = PRESETS["tiny"]
RESET_CYCLES = 4


def with_reset(dut):
    """``dut`` inside a module that declares the ``sync`` domain, and that domain's reset."""
    m = Module()
    m.domains.sync = domain = ClockDomain("sync")
    m.submodules.dut = dut
    return m, domain.rst


def streams(dut):
    """Every stream port of ``dut``: (name, interface, True for an input)."""
    found = []
    for name, member in dut.signature.members.items():
        if not member.is_signature:
            continue
        ports = getattr(dut, name)
        for i, port in enumerate(ports if isinstance(ports, list) else [ports]):
            if {"valid", "ready", "payload"} <= set(port.signature.members):
                found.append((f"{name}[{i}]", port, member.flow == wiring.In))
    return found


async def reset_with_beats_offered(ctx, dut, rst, offers=None):
    """Assert reset for RESET_CYCLES cycles with a beat offered on every input stream (the
    payload from ``offers`` by name, else all ones) and ready on every output stream; fail on
    any cycle where an input is ready or an output valid. Leaves every stream idle."""
    ports = streams(dut)
    assert ports, f"{type(dut).__name__} has no streams"
    ctx.set(rst, 1)
    for name, port, is_input in ports:
        if is_input:
            value = (offers or {}).get(name)
            if value is None:
                bits = Value.cast(port.payload)
                ctx.set(bits, (1 << len(bits)) - 1)
            else:
                ctx.set(port.payload, port.payload.shape().const(value))
            ctx.set(port.valid, 1)
        else:
            ctx.set(port.ready, 1)
    for cycle in range(RESET_CYCLES):
        for name, port, is_input in ports:
            if is_input:
                assert not ctx.get(port.ready), f"{name}.ready is high in reset cycle {cycle}"
            else:
                assert not ctx.get(port.valid), f"{name}.valid is high in reset cycle {cycle}"
        await ctx.tick()
    for name, port, is_input in ports:
        ctx.set(port.valid if is_input else port.ready, 0)
    ctx.set(rst, 0)
    await ctx.tick()


def test_stream_fifo_takes_nothing_under_reset_and_is_empty_after():
    dut = StreamFIFO(8, 4)
    top, rst = with_reset(dut)
    got = {}

    async def bench(ctx):
        await send(ctx, dut.w, [1, 2])             # left in the FIFO: reset empties it
        await reset_with_beats_offered(ctx, dut, rst)
        assert ctx.get(dut.level) == 0 and not ctx.get(dut.r.valid)
        await send(ctx, dut.w, [7, 8, 9])
        got["after"] = await receive(ctx, dut.r, 3)
        for _ in range(3):
            assert not ctx.get(dut.r.valid), "a beat offered or taken under reset came out"
            await ctx.tick()

    simulate(top, [bench], max_cycles=200, name="reset_fifo")
    assert got["after"] == [7, 8, 9]


def test_pe_ignores_weight_loads_under_reset():
    dut = ProcessingElement(TINY)
    top, rst = with_reset(dut)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.weight_in, 5)
        ctx.set(dut.weight_shift, 1)
        await ctx.tick()                          # weight bank 0 = 5
        assert ctx.get(dut.weight_out) == 5
        ctx.set(rst, 1)
        for _ in range(RESET_CYCLES):             # a load offered throughout reset
            ctx.set(dut.weight_in, 9)
            await ctx.tick()
            assert ctx.get(dut.weight_out) == 0 and ctx.get(dut.psum_out) == 0
        ctx.set(rst, 0)
        ctx.set(dut.weight_shift, 0)
        ctx.set(dut.act_in, 3)
        ctx.set(dut.psum_in, 100)
        for _ in range(PRODUCT_LATENCY + 1):      # operands, product, then the sum
            await ctx.tick()
        seen["zero weight"] = ctx.get(dut.psum_out)   # 100 + 3 * 0
        ctx.set(dut.weight_in, -7)
        ctx.set(dut.weight_shift, 1)
        await ctx.tick()
        ctx.set(dut.weight_shift, 0)
        for _ in range(PRODUCT_LATENCY + 1):
            await ctx.tick()
        seen["after load"] = ctx.get(dut.psum_out)    # 100 + 3 * -7

    simulate(top, [bench], max_cycles=100, name="reset_pe")
    assert seen == {"zero weight": 100, "after load": 79}


def test_systolic_array_loses_no_weight_beat_across_reset():
    """Half a tile of weights before the reset, beats offered during it: afterwards the first
    R weight beats are tile 0 again and every partition computes ``x @ W`` exactly."""
    config = TINY
    R, Cp = config.rows, config.partition_cols
    dut = SystolicArray(config)
    top, rst = with_reset(dut)
    rng = np.random.default_rng(7)
    tiles = [(rng.integers(-128, 128, (R, Cp)), rng.integers(-128, 128, (5, R)))
             for _ in range(config.partitions)]
    got = {}

    async def bench(ctx):
        for p in range(config.partitions):
            await send(ctx, dut.weights[p], [[1] * Cp, [2] * Cp])   # half a tile
        await reset_with_beats_offered(ctx, dut, rst)
        for p, (w, x) in enumerate(tiles):
            await send(ctx, dut.weights[p], [[int(v) for v in row] for row in w])
            await send(ctx, dut.acts[p], [{"data": [int(v) for v in row],
                                           "last": int(i == len(x) - 1)}
                                          for i, row in enumerate(x)])
            got[p] = await receive(ctx, dut.results[p], len(x))
            assert ctx.get(dut.busy[p]) == len(x), "the counters were not reset"

    simulate(top, [bench], max_cycles=2000, name="reset_systolic")
    for p, (w, x) in enumerate(tiles):
        want = wrap(x.astype(np.int64) @ w.astype(np.int64), config.acc_width)
        assert [row["data"] for row in got[p]] == want.tolist(), f"partition {p}"
        assert [row["last"] for row in got[p]] == [0, 0, 0, 0, 1]


def test_vector_unit_drops_its_pipeline_and_takes_nothing_under_reset():
    config = TINY
    cp = config.partition_cols
    dut = VectorUnit(config)
    top, rst = with_reset(dut)
    rows = [{"acc": [100 * i + lane for lane in range(cp)], "bias": [-3] * cp, "mult": 0,
             "shift": 0, "relu": 0, "score": 1, "last": i % 2} for i in range(4)]
    got = {}

    async def bench(ctx):
        await send(ctx, dut.inp, rows[:2])       # in the pipeline when reset comes
        await reset_with_beats_offered(ctx, dut, rst)
        await send(ctx, dut.inp, rows[2:])
        got["out"] = await receive(ctx, dut.out, 2)
        ctx.set(dut.out.ready, 1)
        for _ in range(VectorUnit.LATENCY + 2):
            assert not ctx.get(dut.out.valid), "a row from before the reset came out"
            await ctx.tick()

    simulate(top, [bench], max_cycles=500, name="reset_vector")
    assert got["out"] == [{"data": [wrap(a + b, config.acc_width)
                                    for a, b in zip(row["acc"], row["bias"])],
                           "last": row["last"]} for row in rows[2:]]


@pytest.mark.parametrize("config", [
    pytest.param(TINY, id="tiny"),
    # Sub-batch sizes whose row indices are 0 bits wide, or fill their width exactly.
    pytest.param(TINY.replace(sub_batch=1), id="sub_batch=1"),
    pytest.param(TINY.replace(sub_batch=7, partitions=1), id="sub_batch=7-p1"),
])
def test_compute_core_and_engines_take_nothing_under_reset(config):
    """Every host port of every engine offered under reset (a command included); then a
    two-layer MLP on each partition matches the golden model."""
    geo = EngineGeometry.of(config)
    dut = ComputeCore(config)
    top, rst = with_reset(dut)
    rng = np.random.default_rng(3)
    rows = min(7, config.sub_batch)
    jobs = {p: ([random_layer(rng, 6, 5), random_layer(rng, 5, 3)],
                rng.integers(-128, 128, (rows, 6))) for p in range(config.partitions)}
    # A valid command (it would run a layer if it were taken).
    program = MLPProgram(geo, jobs[0][0])
    command = program.commands(rows)[0].payload()
    offers = {f"cmd[{p}]": command for p in range(config.partitions)}
    got = {}

    async def bench(ctx):
        await reset_with_beats_offered(ctx, dut, rst, offers)
        assert not any(ctx.get(dut.busy[p]) for p in range(config.partitions))
        for p, (layers, x) in jobs.items():
            prog = MLPProgram(geo, layers)
            for addr, row in prog.weight_writes():
                await put(ctx, dut.weight_write[p], {"addr": addr, "data": row.tolist()})
            for addr, row in prog.bias_writes():
                await put(ctx, dut.bias_write[p], {"addr": addr, "data": row.tolist()})
            for addr, word in pack_activations(x, geo):
                await put(ctx, dut.act_write[p], {"buffer": 0, "addr": addr,
                                                  "data": word.tolist()})
            responses = []
            for cmd in prog.commands(len(x)):
                await put(ctx, dut.cmd[p], cmd.payload())
                responses.append(await get(ctx, dut.resp[p]))
            assert [r["error"] for r in responses] == [0, 0], responses
            words = []
            for addr in activation_addresses(len(x), layers[-1].n_out, geo):
                await put(ctx, dut.act_read[p], {"buffer": len(layers) % 2, "addr": addr})
                words.append(await get(ctx, dut.act_data[p]))
            got[p] = unpack_activations(words, len(x), layers[-1].n_out, geo)

    simulate(top, [bench], max_cycles=50_000, name="reset_compute_core")
    for p, (layers, x) in jobs.items():
        np.testing.assert_array_equal(got[p], reference_mlp(x, layers))
