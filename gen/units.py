"""The registry of generatable units: a name, a one-line description and a factory.

``rpaccel gen --unit NAME`` and ``rpaccel synth --unit NAME`` take these names; every unit
is built from the one :class:`~rpaccel.hw.config.AccelConfig`. Factories import their
hardware module lazily so that the CLI starts quickly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError

__all__ = ["Unit", "UNITS", "get_unit", "UnknownUnit"]


class UnknownUnit(RpaccelError, LookupError):
    pass


@dataclass(frozen=True)
class Unit:
    name: str
    description: str
    #: "module:Class"; the class takes the config as its only argument.
    target: str

    def build(self, config: AccelConfig):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)(config)


UNITS: dict[str, Unit] = {unit.name: unit for unit in [
    Unit("pe", "processing element: int8 x int8 -> int32 weight-stationary MAC",
         "rpaccel.hw.pe:ProcessingElement"),
    Unit("vector_unit", "bias add, requantization, ReLU, saturation of one partition's rows",
         "rpaccel.hw.vector:VectorUnit"),
    Unit("interaction", "DLRM feature interaction: requantized pairwise dot products",
         "rpaccel.hw.interaction:InteractionUnit"),
    Unit("systolic_array", "weight-stationary systolic array: P independent R x C/P partitions",
         "rpaccel.hw.systolic:SystolicArray"),
    Unit("topk", "exact streaming top-k filter: one candidate per cycle, k best sorted out",
         "rpaccel.hw.topk:TopKFilter"),
    Unit("mlp_engine", "MLP layer engine of one partition: tiling, accumulation, vector unit",
         "rpaccel.hw.mlp_engine:MLPLayerEngine"),
    Unit("compute_core", "systolic array with one MLP layer engine per partition",
         "rpaccel.hw.compute_core:ComputeCore"),
    Unit("csr", "control and status registers of the register map on an AXI4-Lite slave",
         "rpaccel.hw.csr:CSRBlock"),
    Unit("axi_writer", "AXI4 write master: blocks of bus words in INCR bursts, never across 4 KiB",
         "rpaccel.hw.axi_write:AxiBlockWriter"),
    Unit("embedding", "embedding subsystem: AXI4 row reader, static and dynamic caches, bag pooling",
         "rpaccel.hw.embedding:EmbeddingSubsystem"),
    Unit("embedding_harness", "test only: embedding subsystem on the HDL AXI4 memory model",
         "rpaccel.tb.embedding_harness:EmbeddingHarness"),
    Unit("axi_read_arbiter", "AXI4 read arbiter: client read ports onto one, ARID per client",
         "rpaccel.hw.axi_arbiter:AxiReadArbiter"),
    Unit("command", "command processor: ring fetch, model and static loads, query hand-off, "
         "completions", "rpaccel.hw.command:CommandProcessor"),
    Unit("stage_runner", "stage runner: records, dense, bottom MLP, embeddings, interaction, "
         "top MLP, scores to a top-k unit (needs act_buffers >= 3)",
         "rpaccel.hw.stage:StageRunner"),
    Unit("axi_read_harness", "test only: AXI4 word readers of several word sizes",
         "rpaccel.tb.axi_read_harness:AxiReadHarness"),
    Unit("topk_harness", "benchmark harness (test only): stimulus RAM -> top-k -> result RAM",
         "rpaccel.tb.topk_harness:TopKHarness"),
]}


def get_unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise UnknownUnit(f"unknown unit {name!r}; known units: {', '.join(UNITS)}") from None
