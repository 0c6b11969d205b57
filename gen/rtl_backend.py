"""The RTL backend of the host scheduler: ring entries run on the generated accelerator.

:class:`RTLBackend` implements :class:`rpaccel.sim.scheduler.Backend` on the whole
:class:`~rpaccel.hw.accel.RPAccel` in cocotb (``tb/bench_accel.py`` on
``tb/accel_harness.py``, the accelerator on the HDL AXI4 memory model): each memory image
becomes a ``$readmemh`` file, the bench writes the ring registers the scheduler planned,
awaits the interrupt, and the memory model dumps the image's words back, which replace the
image's contents (completions, kept lists and results are then read by the scheduler as
from any backend). One simulator process serves every call of a session (one build, one
start-up): new images with a reset between them, and rounds on the same image without one.

After a run, :attr:`RTLBackend.figures` holds the bench's figures of each image: cycles the
testbench measured beside the CSR ``CYCLES`` difference over the same reads, every
performance counter, the region monitor's verdict and the simulator's wall time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from rpaccel.sim.scheduler import MemoryImage, RingState

from .generate import generate
from .simulators import run_cocotb, waves_file

__all__ = ["RTLBackend", "write_hex", "read_hex", "CosimError", "VERILATOR_SPEED_ARGS"]

#: Verilator options of the cosimulation build: its own optimizations at -O3, and X values
#: resolved once at build time instead of by code (the design resets everything it reads).
#: Measured on `default`, two real queries (802,734 cycles), side by side on a loaded
#: machine: 75k -> 93k cycles/s, at 175 s instead of 131 s of build. The C++ stays at the
#: wheel's -Os: a `-MAKEFLAGS OPT_FAST=-O2` here did nothing (cocotb runs make itself), and
#: -O2 passed to that make did not help either (`default`, six users, alternating: -Os
#: 160.5k and 161.3k cycles/s, -O2 161.1k and 162.2k).
VERILATOR_SPEED_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast"]


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
    image, dump and command files; ``latency``/``stall`` configure the memory model (cycles
    of read latency, stall probability out of 256 per cycle); ``waves`` writes FST.

    A **session** is one simulator process: the first :meth:`execute` starts it, each call
    hands the bench one command (a file ``cmd<k>.json``; the bench answers ``done<k>.json``
    after the ring ran and the memory was dumped), :meth:`close` (or leaving a ``with``
    block) stops it. A call with ``ring.head == 0`` starts a new image: the accelerator is
    reset and the image loaded. A call with ``ring.head > 0`` continues the same image
    without a reset (the host's round trip without on-chip top-k, or more queries on the
    same ring): the host's updated image is loaded again (what the accelerator wrote was
    dumped into it, so nothing changes under it), the models and caches stay on chip, and
    only ``RING_TAIL`` moves.
    """

    def __init__(self, config: AccelConfig, sim: str, work: Path, *, latency: int = 0,
                 stall: int = 0, seed: int = 1, waves: bool = False,
                 timeout_cycles: int = 200_000_000, progress_cycles: int = 2_000_000,
                 quiet: bool | str = False, answer_timeout_s: float = 24 * 3600):
        from rpaccel.tb.accel_harness import MEM_BYTES
        self.config, self.sim, self.work = config, sim, Path(work)
        self.name = f"RTL ({sim})"
        self.latency, self.stall, self.seed, self.waves = latency, stall, seed, waves
        self.timeout_cycles, self.progress_cycles = timeout_cycles, progress_cycles
        self.quiet, self.answer_timeout_s = quiet, answer_timeout_s
        self.mem_bytes = MEM_BYTES
        #: the bench's figures of every command, in order (``image`` and ``round`` added)
        self.figures: list[dict] = []
        self.wall_s = 0.0
        self.waves_path: Path | None = None
        self._thread = None
        self._failure = None
        self._k = 0
        self._image_id = None
        self._images = -1
        self._round = 0
        self._build_dir = None

    # -- session ------------------------------------------------------------------------
    def _start(self):
        from rpaccel.tb.accel_harness import SOURCES, VERILATOR_ARGS

        for old in [*self.work.glob("cmd*.json"), *self.work.glob("done*.json"),
                    *self.work.glob("bench_accel.*.results.xml")]:
            old.unlink()
        job = {"commands": str(self.work), "latency": self.latency, "stall": self.stall,
               "seed": self.seed, "timeout_cycles": self.timeout_cycles,
               "progress_cycles": self.progress_cycles,
               "answer_timeout_s": self.answer_timeout_s}
        job_path = self.work / "job.json"
        job_path.write_text(json.dumps(job, indent=1))
        generated = generate(self.config, "accel_harness")
        self._build_dir = str(Path(generated.directory).resolve())
        started = time.perf_counter()

        def run():
            try:
                results = run_cocotb(
                    generated, self.sim, "rpaccel.tb.bench_accel", optimize=True,
                    ports_only=True, waves=self.waves, test_dir=self.work, quiet=self.quiet,
                    build_args=[*map(str, SOURCES)] +
                    ([*VERILATOR_ARGS, *VERILATOR_SPEED_ARGS] if self.sim == "verilator"
                     else []),
                    extra_env={"RPACCEL_ACCEL_JOB": str(job_path)})
                if self.waves:
                    self.waves_path = waves_file(results)
            except BaseException as err:        # reported by the waiting side
                self._failure = err
            finally:
                self.wall_s = time.perf_counter() - started

        self._thread = threading.Thread(target=run, name="rtl-backend", daemon=True)
        self._thread.start()

    def _command(self, command: dict) -> dict | None:
        if self._thread is None:
            self._start()
        k = self._k
        self._k += 1
        tmp = self.work / f"cmd{k}.json.tmp"
        tmp.write_text(json.dumps(command, indent=1))
        tmp.rename(self.work / f"cmd{k}.json")
        if command["op"] == "stop":
            return None
        answer = self.work / f"done{k}.json"
        while not answer.exists():
            if not self._thread.is_alive():
                self._thread.join()
                raise self._failure or CosimError(
                    f"the {self.sim} simulation ended before answering command {k}")
            ended = self._bench_failure()
            if ended is not None:
                # the bench's test ended (it failed) but the simulator did not exit
                # (seen on Icarus): stop it rather than wait for an answer forever
                self._stop_simulator()
                self._thread.join()
                self._thread = None
                raise CosimError(f"the {self.sim} bench failed at command {k}: {ended}")
            time.sleep(0.02)
        return json.loads(answer.read_text())

    def _bench_failure(self) -> str | None:
        """The failure message once the bench's cocotb test has ended without answering
        (its results file appears only at the end of the test), else ``None``."""
        for path in self.work.glob("bench_accel.*.results.xml"):
            try:
                case = ET.parse(path).getroot().find(".//testcase")
            except ET.ParseError:            # still being written
                return None
            failure = None if case is None else case.find("failure")
            if failure is None:
                return "the test ended without a failure but before the host's stop"
            return f"{failure.get('message')} (see {path})"
        return None

    def _stop_simulator(self):
        """Kill this process's simulator children (those running from the build folder)."""
        me = str(os.getpid())
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
                cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError):
                continue
            if ppid == me and self._build_dir in cmdline:
                try:
                    os.kill(int(stat.parent.name), signal.SIGKILL)
                except OSError:
                    pass

    def close(self):
        """Stop the simulator process (waits for it; raises if the simulation failed)."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._command({"op": "stop"})
        self._thread.join()
        self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the Backend protocol -----------------------------------------------------------
    def execute(self, image: MemoryImage, ring: RingState, *, overrun_first: bool = False) -> int:
        """Run ring entries ``ring.head`` to ``ring.tail`` of ``image`` (see the class
        docstring); the image gets the accelerator's writes; returns the new head. With
        ``overrun_first`` the bench first writes a tail past the ring's end (a queue
        overrun, which must be refused) before the right one."""
        B = self.config.mem_bus_width // 8
        if image.end > self.mem_bytes:
            raise CosimError(f"the image ends at {image.end:#x}, beyond the harness's "
                             f"{self.mem_bytes >> 20} MiB of memory: plan fewer queries "
                             f"per image")
        new_image = ring.head == 0
        if not new_image and self._image_id != id(image):
            raise CosimError("a ring can be continued (head > 0) only on the image the "
                             "session ran last")
        if new_image:
            self._images += 1
            self._round = 0
        else:
            self._round += 1
        self._image_id = id(image)
        n = len(self.figures)
        self.work.mkdir(parents=True, exist_ok=True)   # before the session starts (in _command)
        hex_path, dump = self.work / f"image{n}.hex", self.work / f"dump{n}.hex"
        write_hex(image, B, hex_path)
        fig = self._command({
            "op": "run", "reset": new_image, "overrun": overrun_first, "hex": str(hex_path),
            "dump": str(dump),
            "ring": {k: int(getattr(ring, k)) for k in (
                "ring_base", "ring_log2", "completion_base", "region_base", "region_size",
                "tail")}})
        fig.update(image=self._images, round=self._round)
        self.figures.append(fig)
        n_words = -(-len(image.data) // B)
        image.data[:] = read_hex(dump, B, n_words)[:len(image.data)]
        ring.head = fig["head"]
        return fig["head"]

    def execute_many(self, runs: list[tuple[MemoryImage, RingState]], *,
                     overrun_first: bool = False) -> list[int]:
        """Each ``(image, ring)`` in turn in one session, which is then closed; the heads."""
        try:
            return [self.execute(image, ring, overrun_first=overrun_first)
                    for image, ring in runs]
        finally:
            self.close()
