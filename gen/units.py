"""The registry of generatable units: a name, a description, a factory and its cocotb bench.

``rpaccel gen --unit NAME`` and ``rpaccel synth --unit NAME`` take these names; every unit
is built from the one :class:`~rpaccel.hw.config.AccelConfig`. Factories import their
hardware module lazily so that the CLI starts quickly.

A unit with a cocotb bench names its module (``bench``) and how many cocotb tests it holds
(``cocotb_tests``, parametrized ones counted once per parameter value).
:func:`rpaccel.gen.simulators.run_bench` fails when a full run of the bench ran another
number or skipped any, and ``tests/test_units.py`` counts the tests each bench module
declares, so a renamed, dropped or skipped cocotb test fails the suite. Registering a
unit with its bench is one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError

__all__ = ["Unit", "UNITS", "get_unit", "UnknownUnit", "benches", "declared_cocotb_tests"]


class UnknownUnit(RpaccelError, LookupError):
    pass


@dataclass(frozen=True)
class Unit:
    name: str
    description: str
    #: "module:Class"; the class takes the config as its only argument.
    target: str
    #: The cocotb bench module of the unit (``rpaccel.tb.test_<unit>``), if it has one.
    bench: str | None = None
    #: The number of cocotb tests ``bench`` holds; required with ``bench``.
    cocotb_tests: int | None = None

    def __post_init__(self):
        if (self.bench is None) != (self.cocotb_tests is None):
            raise ValueError(f"unit {self.name!r}: bench and cocotb_tests go together")
        if self.cocotb_tests is not None and self.cocotb_tests < 1:
            raise ValueError(f"unit {self.name!r}: cocotb_tests must be at least 1, "
                             f"not {self.cocotb_tests!r}")

    def build(self, config: AccelConfig):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)(config)


UNITS: dict[str, Unit] = {unit.name: unit for unit in [
    Unit("pe", "processing element: weight-stationary multiply-accumulate cell",
         "rpaccel.hw.pe:ProcessingElement", bench="rpaccel.tb.test_pe", cocotb_tests=1),
    Unit("vector_unit", "bias add, requantization, ReLU, saturation of one partition's rows",
         "rpaccel.hw.vector:VectorUnit", bench="rpaccel.tb.test_vector", cocotb_tests=5),
    Unit("interaction", "DLRM feature interaction: requantized pairwise dot products",
         "rpaccel.hw.interaction:InteractionUnit"),
    Unit("systolic_array", "weight-stationary systolic array: P independent R x C/P partitions",
         "rpaccel.hw.systolic:SystolicArray", bench="rpaccel.tb.test_systolic", cocotb_tests=5),
    Unit("topk", "exact streaming top-k filter: one candidate per cycle, k best sorted out",
         "rpaccel.hw.topk:TopKFilter"),
    Unit("mlp_engine", "MLP layer engine of one partition: tiling, accumulation, vector unit",
         "rpaccel.hw.mlp_engine:MLPLayerEngine"),
    Unit("compute_core", "systolic array with one MLP layer engine per partition",
         "rpaccel.hw.compute_core:ComputeCore", bench="rpaccel.tb.test_compute_core",
         cocotb_tests=5),
    Unit("csr", "control and status registers of the register map on an AXI4-Lite slave",
         "rpaccel.hw.csr:CSRBlock",
         bench="rpaccel.tb.test_csr", cocotb_tests=2),
    Unit("axi_writer", "AXI4 write master: blocks of bus words in INCR bursts, never across 4 KiB",
         "rpaccel.hw.axi_write:AxiBlockWriter",
         bench="rpaccel.tb.test_axi_write", cocotb_tests=2),
    Unit("embedding", "embedding subsystem: AXI4 row reader, static and dynamic caches, bag pooling",
         "rpaccel.hw.embedding:EmbeddingSubsystem"),
    Unit("embedding_harness", "test only: embedding subsystem on the HDL AXI4 memory model",
         "rpaccel.tb.embedding_harness:EmbeddingHarness"),
    Unit("axi_memory_harness", "test only: the HDL AXI4 memory model alone (reads and writes)",
         "rpaccel.tb.embedding_harness:AxiMemoryHarness", bench="rpaccel.tb.test_embedding_memory",
         cocotb_tests=5),
    Unit("axi_read_arbiter", "AXI4 read arbiter: client read ports onto one, ARID per client",
         "rpaccel.hw.axi_arbiter:AxiReadArbiter",
         bench="rpaccel.tb.test_axi_arbiter", cocotb_tests=2),
    Unit("command", "command processor: ring fetch, model and static loads, query hand-off, "
         "completions", "rpaccel.hw.command:CommandProcessor"),
    Unit("stage_runner", "stage runner: records, dense, bottom MLP, embeddings, interaction, "
         "top MLP, scores to a top-k unit (needs act_buffers >= 3 + subbatch_overlap)",
         "rpaccel.hw.stage:StageRunner"),
    Unit("axi_read_harness", "test only: AXI4 word readers of several word sizes",
         "rpaccel.tb.axi_read_harness:AxiReadHarness",
         bench="rpaccel.tb.test_axi_read", cocotb_tests=2),
    Unit("accel", "the accelerator: CSRs, command ring, query engine, stage runners, compute "
         "core, embedding subsystem, top-k units, one AXI4 master", "rpaccel.hw.accel:RPAccel"),
    Unit("accel_harness", "test only: the accelerator on the HDL AXI4 memory model "
         "(cosimulation of real queries)", "rpaccel.tb.accel_harness:AccelHarness"),
    Unit("topk_harness", "benchmark harness (test only): stimulus RAM -> top-k -> result RAM",
         "rpaccel.tb.topk_harness:TopKHarness"),
]}


def get_unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise UnknownUnit(f"unknown unit {name!r}; known units: {', '.join(UNITS)}") from None


def benches() -> dict[str, Unit]:
    """``{bench module: unit}`` of every registered unit with a cocotb bench."""
    return {unit.bench: unit for unit in UNITS.values() if unit.bench is not None}


def declared_cocotb_tests(bench: str) -> list[tuple[str, bool]]:
    """``(name, skip)`` of every cocotb test module ``bench`` declares, parametrized ones
    expanded, as cocotb's regression manager discovers them (importing the module does
    not need a simulator)."""
    from cocotb.regression import Test, TestGenerator

    module = importlib.import_module(bench)
    tests = []
    for obj in vars(module).values():
        if isinstance(obj, Test):
            tests.append((obj.name, bool(obj.skip)))
        elif isinstance(obj, TestGenerator):
            tests += [(test.name, bool(test.skip)) for test in obj.generate_tests()]
    return tests
