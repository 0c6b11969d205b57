"""cocotb host model of the compute core (hw/compute_core.py): loads MLPs, runs layers.

One :class:`PartitionHost` per partition drives that partition's engine ports through the
shared stream drivers (``tb/cocotb_streams.py``): weight/bias/activation memory images
and layer commands come from :mod:`rpaccel.sim.mlp_program`, exactly as the host
scheduler will produce them, so the RTL is exercised with the real layouts.
"""

from __future__ import annotations

import numpy as np

import cocotb
from cocotb.triggers import RisingEdge

from rpaccel.hw.config import AccelConfig
from rpaccel.hw import mlp_engine
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.sim.mlp_program import (LayerCommand, MLPProgram,
                                     activation_addresses, pack_activations,
                                     unpack_activations)
from rpaccel.tb.cocotb_streams import CycleCounter, StreamDriver, StreamSink, child_rng

__all__ = ["PartitionHost", "core_hosts"]


class PartitionHost:
    """Host side of partition ``p``: memory loads, commands, responses, read-back."""

    def __init__(self, dut, config: AccelConfig, p: int, counter: CycleCounter,
                 rng: np.random.Generator, stall: float = 0.0):
        self.dut, self.config, self.p = dut, config, p
        self.geo = EngineGeometry.of(config)
        self.counter = counter

        def driver(name, layout):
            return StreamDriver(dut, f"{name}__{p}", layout, counter=counter,
                                rng=child_rng(rng), idle=stall)

        def sink(name, layout):
            return StreamSink(dut, f"{name}__{p}", layout, counter=counter,
                              rng=child_rng(rng), backpressure=stall)

        self.weights = driver("weight_write", mlp_engine.weight_write_layout(config))
        self.biases = driver("bias_write", mlp_engine.bias_write_layout(config))
        self.acts = driver("act_write", mlp_engine.act_write_layout(config))
        self.reads = driver("act_read", mlp_engine.act_read_layout(config))
        self.cmds = driver("cmd", mlp_engine.command_layout(config))
        self.resps = sink("resp", mlp_engine.response_layout(config))
        self.words = sink("act_data", mlp_engine.act_word_layout(config))
        self.scores = sink("scores", mlp_engine.score_layout(config))

    async def load_program(self, program: MLPProgram):
        await self.weights.send({"addr": a, "data": row.tolist()}
                                for a, row in program.weight_writes())
        await self.biases.send({"addr": a, "data": row.tolist()}
                               for a, row in program.bias_writes())

    async def load_activations(self, x: np.ndarray, buffer: int = 0):
        await self.acts.send({"buffer": buffer, "addr": a, "data": w.tolist()}
                             for a, w in pack_activations(x, self.geo))

    async def run(self, cmd: LayerCommand) -> tuple[dict, list | None]:
        """Send one command; returns its response and, for a score layer that was accepted,
        the list of score payloads."""
        await self.cmds.send([cmd.payload()])
        scores = None
        if cmd.score:
            task = cocotb.start_soon(self.scores.receive(cmd.rows))
            resp = (await self.resps.receive(1))[0].payload
            if resp["error"]:
                task.cancel()
                self.scores.ready.value = 0  # the cancelled sink may have left it high
            else:
                scores = [t.payload for t in await task]
        else:
            resp = (await self.resps.receive(1))[0].payload
        return resp, scores

    async def start(self, cmd: LayerCommand):
        """Send a command without waiting (for throughput runs: see :meth:`wait_response`)."""
        await self.cmds.send([cmd.payload()])

    async def wait_response(self) -> dict:
        """Wait for the response without taking part in every cycle: the simulator runs
        freely until ``resp valid`` rises, then one transfer is taken."""
        valid = getattr(self.dut, f"resp__{self.p}__valid")
        while not int(valid.value):
            await RisingEdge(valid)
        return (await self.resps.receive(1))[0].payload

    async def read_activations(self, buffer: int, rows: int, dim: int) -> np.ndarray:
        addrs = activation_addresses(rows, dim, self.geo)
        reader = cocotb.start_soon(self.words.receive(len(addrs)))
        await self.reads.send({"buffer": buffer, "addr": a} for a in addrs)
        return unpack_activations([t.payload for t in await reader], rows, dim, self.geo)

    async def run_program(self, program: MLPProgram, x: np.ndarray,
                          expected: np.ndarray | None = None, *, gang_log2: int = 0,
                          out_dim: int | None = None):
        """Run a loaded ``program`` on rows ``x`` (loaded into buffer 0 here): every command
        must be accepted with its tag, score rows come in order with ``last`` on the final
        one. Returns (outputs, cycles per layer): the int32 scores of a score MLP, else the
        last layer's int8 outputs (``out_dim`` of them, default the program's), compared
        with ``expected`` when given. With ``gang_log2`` this partition leads a gang whose
        members hold their slices of the MLP (``mlp_program.gang_slice``)."""
        await self.load_activations(x, buffer=0)
        cycles, out = [], None
        for cmd in program.commands(x.shape[0], gang_log2=gang_log2):
            resp, scores = await self.run(cmd)
            assert resp["error"] == 0 and resp["tag"] == cmd.tag, \
                f"partition {self.p}: {resp} for {cmd}"
            cycles.append(resp["cycles"])
            if scores is not None:
                assert [s["row"] for s in scores] == list(range(cmd.rows))
                assert [s["last"] for s in scores] == [0] * (cmd.rows - 1) + [1]
                out = np.array([s["score"] for s in scores], dtype=np.int64)
        if out is None:
            last = program.layers[-1]
            out = await self.read_activations(len(program.layers) % 2, x.shape[0],
                                              out_dim or last.n_out)
        if expected is not None:
            bad = np.argwhere(np.atleast_1d(out != expected))
            assert bad.size == 0, (f"partition {self.p}: {bad.shape[0]} mismatches, first at "
                                   f"{bad[0].tolist()}: got {out[tuple(bad[0])]}, expected "
                                   f"{expected[tuple(bad[0])]}")
        return out, cycles


def core_hosts(dut, config: AccelConfig, counter: CycleCounter, rng: np.random.Generator,
               stall: float = 0.0) -> list[PartitionHost]:
    return [PartitionHost(dut, config, p, counter, rng, stall) for p in range(config.partitions)]
