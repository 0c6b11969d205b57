"""Activation buffers free while a layer runs (hw/mlp_engine.py, ``act_buffers``): the
sub-batch controller loads the next sub-batch and reads a finished output while the engine
computes, and a buffer the running command uses is never touched (Amaranth simulator)."""

import numpy as np
import pytest

from rpaccel.hw.compute_core import ComputeCore
from rpaccel.hw.config import PRESETS, ConfigError
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.mlp_engine import act_write_layout, command_layout
from rpaccel.sim import numerics
from rpaccel.sim.mlp_program import (MLPProgram, activation_addresses, pack_activations,
                                     random_layer, unpack_activations)
from rpaccel.tb.amaranth_sim import NO_STALLS, Stalls, get, put, receive, send, simulate

CONFIG = PRESETS["tiny"]


def test_act_buffers_is_validated_and_sizes_the_fields():
    with pytest.raises(ConfigError, match="act_buffers must be between 2 and 8, not 9"):
        PRESETS["tiny"].replace(act_buffers=9)
    assert command_layout(CONFIG)["src"].width == 2
    assert act_write_layout(CONFIG)["skip"].width == EngineGeometry.of(CONFIG).act_lanes


def test_host_uses_free_buffers_while_a_layer_runs():
    rng = np.random.default_rng(3)
    geo = EngineGeometry.of(CONFIG)
    W = geo.act_lanes
    dut = ComputeCore(CONFIG)
    B = CONFIG.sub_batch
    layer = random_layer(rng, 32, 32)
    program = MLPProgram(geo, [layer])
    x = rng.integers(-128, 128, size=(B, 32))
    y = rng.integers(-128, 128, size=(B, 12))       # the "next sub-batch", into buffer 2
    z = rng.integers(-128, 128, size=(B, 9))        # a finished output, read from buffer 3
    cmd = program.commands(B, src=0)[0]             # buffer 0 -> buffer 1
    events = {}

    async def bench(ctx):
        for addr, row in program.weight_writes():
            await put(ctx, dut.weight_write[0], {"addr": addr, "data": row.tolist()})
        for addr, row in program.bias_writes():
            await put(ctx, dut.bias_write[0], {"addr": addr, "data": row.tolist()})
        for buf, data in ((0, x), (3, z)):
            for addr, word in pack_activations(data, geo):
                await put(ctx, dut.act_write[0], {"buffer": buf, "addr": addr,
                                                  "data": word.tolist()})
        await put(ctx, dut.cmd[0], cmd.payload())
        events["started"] = events["cycle"]
        # while it runs: the next sub-batch into buffer 2, a masked write, a read of 3
        for addr, word in pack_activations(y, geo):
            await put(ctx, dut.act_write[0], {"buffer": 2, "addr": addr, "data": word.tolist()})
        await put(ctx, dut.act_write[0], {"buffer": 2, "addr": 0, "data": [77] * W,
                                          "skip": (1 << W) - 1 - 0b101})
        words = []
        for addr in activation_addresses(B, 9, geo):
            await put(ctx, dut.act_read[0], {"buffer": 3, "addr": addr})
            words.append(await get(ctx, dut.act_data[0]))
        events["z"] = unpack_activations(words, B, 9, geo)
        events["side_done"] = events["cycle"]
        # a write to the running command's destination waits for it to finish
        await put(ctx, dut.act_write[0], {"buffer": 1, "addr": geo.act_words - 1,
                                          "data": [5] * W})
        events["busy_write"] = events["cycle"]
        resp = await get(ctx, dut.resp[0])
        assert resp["error"] == 0
        words = []
        for buf, d in ((1, layer.n_out), (2, 12)):
            got = []
            for addr in activation_addresses(B, d, geo):
                await put(ctx, dut.act_read[0], {"buffer": buf, "addr": addr})
                got.append(await get(ctx, dut.act_data[0]))
            words.append(unpack_activations(got, B, d, geo))
        events["out"], events["y"] = words

    async def monitor(ctx):
        events["cycle"] = 0
        async for _, _, rv in ctx.tick().sample(dut.resp[0].valid):
            events["cycle"] += 1
            if rv and "resp" not in events:
                events["resp"] = events["cycle"]

    simulate(dut, [bench], background=[monitor], max_cycles=20_000, name="engine_buffers")
    expected = numerics.mlp_layer(x, layer.w, layer.bias, layer.mult, layer.shift,
                                  relu=layer.relu)
    np.testing.assert_array_equal(events["out"], expected)
    np.testing.assert_array_equal(events["z"], z)
    y_expected = y.copy()
    y_expected[0, [0, 2]] = 77                       # lanes 0 and 2 of word 0 only
    np.testing.assert_array_equal(events["y"], y_expected)
    # the side traffic finished while the layer was still running ...
    assert events["side_done"] < events["resp"], events
    # ... and the write to the busy destination went in only after the layer's last write
    assert events["busy_write"] >= events["resp"] - 1, events


@pytest.mark.parametrize("stalls", [0.0, 0.4], ids=["full-rate", "stalls"])
def test_host_reads_back_to_back_return_every_word(stalls):
    """Host reads issued while the previous word is still on act_data (a new read accepted
    the cycle the last word is taken), over several buffers, the reader taking words at
    full rate or with random backpressure: every word is the one written at its address.
    (The buffers' RAMs read the host's address every cycle except while they hold an
    accepted read's word; this is the case that rule has to get right.)"""
    rng = np.random.default_rng(8)
    geo = EngineGeometry.of(CONFIG)
    W = geo.act_lanes
    dut = ComputeCore(CONFIG)
    words = {(buf, addr): rng.integers(-128, 128, W).tolist()
             for buf in range(CONFIG.act_buffers) for addr in range(8)}
    reads = [{"buffer": int(b), "addr": int(a)}
             for b, a in zip(rng.integers(0, CONFIG.act_buffers, 200), rng.integers(0, 8, 200))]
    got, accepted = [], []

    async def writer_then_reader(ctx):
        for (buf, addr), word in words.items():
            await put(ctx, dut.act_write[0], {"buffer": buf, "addr": addr, "data": word})
        await send(ctx, dut.act_read[0], reads, Stalls(stalls, 1) if stalls else NO_STALLS)

    async def taker(ctx):
        got.extend(await receive(ctx, dut.act_data[0], len(reads),
                                 Stalls(stalls, 2) if stalls else NO_STALLS))

    async def monitor(ctx):
        async for _, _, rv, rr, dv, dr in ctx.tick().sample(
                dut.act_read[0].valid, dut.act_read[0].ready,
                dut.act_data[0].valid, dut.act_data[0].ready):
            if rv and rr and dv and dr:
                accepted.append(1)        # a read accepted as the previous word goes

    simulate(dut, [writer_then_reader, taker], background=[monitor], max_cycles=20_000,
             name="engine_host_reads")
    assert got == [words[r["buffer"], r["addr"]] for r in reads]
    assert len(accepted) > 50
