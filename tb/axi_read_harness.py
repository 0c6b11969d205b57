"""Test harness (unit ``axi_read_harness``): one :class:`~rpaccel.hw.axi_read.AxiWordReader`
per word size of :func:`harness_word_sizes`, each with its own ports ``r<i>_jobs``,
``r<i>_words`` and AXI4 read port ``r<i>_bus`` (cocotb binds a memory model to each)."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.hw.axi import axi4_read_signature
from rpaccel.hw.axi_read import AxiWordReader, read_job_layout, word_layout
from rpaccel.hw.config import AccelConfig

__all__ = ["AxiReadHarness", "harness_word_sizes"]


def harness_word_sizes(config: AccelConfig) -> list[int]:
    """Narrower than, as wide as, and wider than a bus beat (4 bytes up to 4 beats)."""
    B = config.mem_bus_width // 8
    return sorted({4, max(4, B // 2), B, 2 * B, 4 * B})


class AxiReadHarness(wiring.Component):
    def __init__(self, config: AccelConfig):
        self._config = config
        self._sizes = harness_word_sizes(config)
        members = {}
        for i, w in enumerate(self._sizes):
            members[f"r{i}_jobs"] = In(stream.Signature(read_job_layout(config)))
            members[f"r{i}_words"] = Out(stream.Signature(word_layout(w)))
            members[f"r{i}_bus"] = Out(axi4_read_signature(config.mem_addr_width,
                                                           config.mem_bus_width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, w in enumerate(self._sizes):
            reader = m.submodules[f"reader{i}"] = AxiWordReader(self._config, w)
            wiring.connect(m, wiring.flipped(getattr(self, f"r{i}_jobs")), reader.jobs)
            wiring.connect(m, reader.words, wiring.flipped(getattr(self, f"r{i}_words")))
            wiring.connect(m, reader.bus, wiring.flipped(getattr(self, f"r{i}_bus")))
        return m
