"""Compute core: the partitioned systolic array with one MLP layer engine per partition."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.config import AccelConfig
from rpaccel.hw import mlp_engine
from rpaccel.hw.mlp_engine import MLPLayerEngine
from rpaccel.hw.shared import add_shared
from rpaccel.hw.systolic import SystolicArray

__all__ = ["ComputeCore"]


class ComputeCore(wiring.Component):
    """``partitions`` independent MLP engines, each driving its own sub-array.

    Every partition ``p`` exposes its engine's host ports as element ``p`` of an array port
    (``cmd[p]``, ``resp[p]``, ``weight_write[p]``, ``bias_write[p]``, ``act_write[p]``,
    ``act_read[p]``, ``act_data[p]``, ``scores[p]``, ``busy[p]``); see
    :class:`~rpaccel.hw.mlp_engine.MLPLayerEngine` for their contracts. Partitions share
    nothing but the clock: each runs its own layer (its own shape, sub-batch and model) at
    the same time as the others, which is how RPAccel runs the stages of a cascade
    concurrently. With ``partitions = 1`` it is one engine on one monolithic array.

    Reset: as for the engine and the array, no port takes or offers anything while ``rst``
    is asserted. In Verilog the engine is one module instantiated ``partitions`` times.
    """

    def __init__(self, config: AccelConfig):
        self._config = config
        P = config.partitions
        super().__init__({
            "cmd": In(stream.Signature(mlp_engine.command_layout(config))).array(P),
            "resp": Out(stream.Signature(mlp_engine.response_layout(config))).array(P),
            "weight_write": In(stream.Signature(mlp_engine.weight_write_layout(config))).array(P),
            "bias_write": In(stream.Signature(mlp_engine.bias_write_layout(config))).array(P),
            "act_write": In(stream.Signature(mlp_engine.act_write_layout(config))).array(P),
            "act_read": In(stream.Signature(mlp_engine.act_read_layout(config))).array(P),
            "act_data": Out(stream.Signature(mlp_engine.act_word_layout(config))).array(P),
            "scores": Out(stream.Signature(mlp_engine.score_layout(config))).array(P),
            "busy": Out(1).array(P),
        })

    @property
    def config(self) -> AccelConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = SystolicArray(self._config)
        for p in range(self._config.partitions):
            engine = add_shared(m, platform, f"engine{p}", "mlp_engine",
                                MLPLayerEngine(self._config))
            wiring.connect(m, engine.array_weights, array.weights[p])
            wiring.connect(m, engine.array_acts, array.acts[p])
            wiring.connect(m, array.results[p], engine.array_results)
            for name in ("cmd", "weight_write", "bias_write", "act_write", "act_read"):
                wiring.connect(m, wiring.flipped(getattr(self, name)[p]), getattr(engine, name))
            for name in ("resp", "act_data", "scores"):
                wiring.connect(m, getattr(engine, name), wiring.flipped(getattr(self, name)[p]))
            m.d.comb += self.busy[p].eq(engine.busy)
        return m
