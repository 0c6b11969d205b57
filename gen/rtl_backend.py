"""The RTL backend of the host scheduler: ring entries run on the generated accelerator.

:class:`RTLBackend` implements :class:`rpaccel.sim.scheduler.Backend` on the whole
:class:`~rpaccel.hw.accel.RPAccel` in cocotb (``tb/bench_accel.py`` on
``tb/accel_harness.py``, the accelerator on the HDL AXI4 memory model): each memory image
becomes a ``$readmemh`` file, the bench writes the ring registers the scheduler planned,
awaits the interrupt, and the memory model dumps the image's words back, which replace the
image's contents (completions, kept lists and results are then read by the scheduler as
from any backend). :meth:`RTLBackend.execute_many` runs several images in one simulator
process (one build, one start-up), resetting the accelerator between them.

After a run, :attr:`RTLBackend.figures` holds the bench's figures of each image: cycles the
testbench measured beside the CSR ``CYCLES`` difference over the same reads, every
performance counter, the region monitor's verdict and the simulator's wall time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from rpaccel.sim.scheduler import MemoryImage, RingState

from .generate import generate
from .simulators import run_cocotb, waves_file

__all__ = ["RTLBackend", "write_hex", "read_hex", "CosimError", "VERILATOR_SPEED_ARGS"]

#: Verilator options of the cosimulation build: its own optimizations at -O3, X values
#: resolved once at build time instead of by code (the design resets everything it reads),
#: and the model's C++ at -O2 instead of the wheel's -Os. Measured on `default`, two real
#: queries (802,734 cycles), side by side on a loaded machine: 75k -> 93k cycles/s, at
#: 175 s instead of 131 s of build.
VERILATOR_SPEED_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast",
                        "-MAKEFLAGS", "OPT_FAST=-O2"]


class CosimError(RpaccelError, RuntimeError):
    """A cosimulation that could not run or whose results cannot be read back."""


def write_hex(image: MemoryImage, bus_bytes: int, path: Path) -> None:
    """``image`` as a ``$readmemh`` file of ``bus_bytes`` words (little-endian lanes)."""
    if image.base % bus_bytes:
        raise CosimError(f"image base {image.base:#x} is not aligned to the {bus_bytes}-byte bus")
    raw = bytes(image.data) + bytes(-len(image.data) % bus_bytes)
    words = np.frombuffer(raw, np.uint8).reshape(-1, bus_bytes)[:, ::-1]
    text = words.tobytes().hex()
    n = 2 * bus_bytes
    lines = [text[i:i + n] for i in range(0, len(text), n)]
    Path(path).write_text(f"@{image.base // bus_bytes:x}\n" + "\n".join(lines) + "\n")


def read_hex(path: Path, bus_bytes: int, n_words: int) -> bytes:
    """The first ``n_words`` words of a ``$writememh`` file (comments and one leading
    address line allowed), as bytes in memory order."""
    words = []
    for line in Path(path).read_text().split("\n"):
        line = line.split("//", 1)[0].strip()
        if not line or line.startswith("@"):
            continue
        words.extend(line.split())
    if len(words) < n_words:
        raise CosimError(f"{path}: {len(words)} words, expected {n_words}")
    out = bytearray()
    for word in words[:n_words]:
        try:
            out += int(word, 16).to_bytes(bus_bytes, "little")
        except ValueError:
            raise CosimError(f"{path}: word {word!r} is not hexadecimal (X or Z in memory: "
                             f"the design wrote an undefined value)") from None
    return bytes(out)


class RTLBackend:
    """See the module docstring. ``sim`` is ``verilator`` or ``icarus``; ``work`` holds the
    image, dump and job files; ``latency``/``stall`` configure the memory model (cycles
    of read latency, stall probability out of 256 per cycle); ``waves`` writes FST."""

    def __init__(self, config: AccelConfig, sim: str, work: Path, *, latency: int = 0,
                 stall: int = 0, seed: int = 1, waves: bool = False,
                 timeout_cycles: int = 200_000_000, progress_cycles: int = 2_000_000,
                 quiet: bool = False):
        from rpaccel.tb.accel_harness import MEM_BYTES
        self.config, self.sim, self.work = config, sim, Path(work)
        self.name = f"RTL ({sim})"
        self.latency, self.stall, self.seed, self.waves = latency, stall, seed, waves
        self.timeout_cycles, self.progress_cycles = timeout_cycles, progress_cycles
        self.mem_bytes = MEM_BYTES
        self.figures: list[dict] = []
        self.wall_s = 0.0
        self.waves_path: Path | None = None
        self.quiet = quiet

    def execute(self, image: MemoryImage, ring: RingState) -> int:
        return self.execute_many([(image, ring)])[0]

    def execute_many(self, runs: list[tuple[MemoryImage, RingState]], *,
                     overrun_first: bool = False) -> list[int]:
        """Run each ``(image, ring)`` in turn in one simulator process; returns the heads.
        With ``overrun_first`` the bench first writes a tail past the ring's end (a queue
        overrun, which must be refused) before the right one."""
        from rpaccel.tb.accel_harness import AXI_MEM_MODEL

        cfg, B = self.config, self.config.mem_bus_width // 8
        self.work.mkdir(parents=True, exist_ok=True)
        batches = []
        for n, (image, ring) in enumerate(runs):
            if image.end > self.mem_bytes:
                raise CosimError(f"image {n} ends at {image.end:#x}, beyond the harness's "
                                 f"{self.mem_bytes >> 20} MiB of memory: plan fewer queries "
                                 f"per image")
            hex_path = self.work / f"image{n}.hex"
            write_hex(image, B, hex_path)
            batches.append({"hex": str(hex_path), "dump": str(self.work / f"dump{n}.hex"),
                            "ring": {k: int(getattr(ring, k)) for k in (
                                "ring_base", "ring_log2", "completion_base", "region_base",
                                "region_size", "tail")},
                            "overrun": overrun_first})
            if ring.head != 0:
                raise CosimError("the RTL backend runs a ring from entry 0 (the accelerator "
                                 "is reset before each image)")
        job = {"batches": batches, "out": str(self.work / "figures.json"),
               "latency": self.latency, "stall": self.stall, "seed": self.seed,
               "timeout_cycles": self.timeout_cycles, "progress_cycles": self.progress_cycles}
        job_path = self.work / "job.json"
        job_path.write_text(json.dumps(job, indent=1))
        start = time.perf_counter()
        results = run_cocotb(generate(cfg, "accel_harness"), self.sim, "rpaccel.tb.bench_accel",
                             optimize=True, ports_only=True, waves=self.waves,
                             test_dir=self.work, quiet=self.quiet,
                             build_args=[str(AXI_MEM_MODEL)] +
                             (VERILATOR_SPEED_ARGS if self.sim == "verilator" else []),
                             extra_env={"RPACCEL_ACCEL_JOB": str(job_path)})
        self.wall_s = time.perf_counter() - start
        if self.waves:
            self.waves_path = waves_file(results)
        self.figures = json.loads((self.work / "figures.json").read_text())
        heads = []
        for (image, ring), batch, fig in zip(runs, batches, self.figures):
            n_words = -(-len(image.data) // B)
            image.data[:] = read_hex(batch["dump"], B, n_words)[:len(image.data)]
            heads.append(fig["head"])
        return heads
