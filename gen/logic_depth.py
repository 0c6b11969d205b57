"""Register-to-register path depths of a mapped ECP5 netlist, estimated before placement.

``rpaccel depth`` runs yosys (the ``synth_ecp5`` script of ``rpaccel synth``, and the block-RAM
output-register pass) and then this module, so a design's deep paths are known in minutes
instead of after nextpnr: the ``default`` top level places and routes in about an hour.

Model. Every flip-flop, DSP, block-RAM output and distributed-RAM write starts or ends a
path; along it each LUT4 adds :data:`LUT_NS`, a carry cell :data:`CARRY_IN_NS` where a path
enters it and :data:`CARRY_NS` per cell along its chain, a distributed-RAM read
:data:`LUTRAM_READ_NS`, and every net but a carry link :data:`ROUTE_NS`. Start delays are
the cells' clock-to-output (:data:`START_NS`; a DP16KD without its output register
:data:`EBR_NOREG_NS`). The cell figures are those nextpnr reported on this project's
critical paths (a LUT4 0.24 ns, a carry entry 0.45, a carry link 0.07, a flip-flop's
clock-to-output 0.52); :data:`ROUTE_NS` is a round figure inside the 0.6-2.5 ns its nets
took in unit-level runs (measured once: `tiny`'s vector unit 5.96 ns estimated, 5.21 ns
routed). So an estimate is roughly what a path costs in a well-placed unit, not at the
top level, where nets between units are longer: rank paths by it and count levels, do
not read it as an Fmax. Where a path crosses units (the first part
of each cell's hierarchical name) the report says so: such paths are invisible to a unit's
own synthesis, whose ports are not timed. A path is attributed to the units of its
start and end registers (see :attr:`Path.units`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

__all__ = ["Path", "DepthReport", "estimate_paths", "LUT_NS", "ROUTE_NS"]

LUT_NS = 0.24
ROUTE_NS = 0.9
CARRY_IN_NS = 0.45
CARRY_NS = 0.07
CARRY_SUM_NS = 0.4
LUTRAM_READ_NS = 0.6
MUX_NS = 0.2
START_NS = {"TRELLIS_FF": 0.5, "MULT18X18D": 1.0, "DP16KD": 0.9}
EBR_NOREG_NS = 5.6

_ENDPOINT_CELLS = ("TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4")


@dataclass
class Path:
    #: Estimated delay, ns (see the module's model).
    delay_ns: float
    #: LUT4 levels on it (carry cells not counted).
    luts: int
    #: Cells from the start cell to the last combinational one.
    cells: list
    #: The endpoint cell and its input pin.
    to: str
    pin: str
    #: The unit it starts in and, when another, the unit it ends in (the first part of the
    #: start and end cells' hierarchical names; ``(top)`` for cells of the top module).
    #: Only registers, DSPs and RAMs are named after their source; the LUTs between are
    #: named after some net they touch, often in a neighbouring unit, so a path's units in
    #: between are not known.
    units: list

    @property
    def start(self) -> str:
        return self.cells[0]

    def line(self) -> str:
        return (f"{self.delay_ns:6.2f} ns {self.luts:3d} LUTs  {' -> '.join(self.units)}: "
                f"{self.start} -> {self.to}.{self.pin}")


@dataclass
class DepthReport:
    top: str
    #: The deepest paths, one per (units, endpoint register), deepest first.
    paths: list = field(default_factory=list)
    #: Endpoints over the threshold whose deepest path starts in another unit, by
    #: "start unit -> end unit" (the 25 most frequent).
    crossings: dict = field(default_factory=dict)
    endpoints: int = 0
    over: int = 0
    threshold_ns: float = 0.0

    def text(self, limit: int = 20) -> str:
        lines = [f"{self.top}: {self.over} of {self.endpoints} endpoints estimated over "
                 f"{self.threshold_ns:.2f} ns (pre-placement model, gen/logic_depth.py)"]
        lines += [p.line() for p in self.paths[:limit]]
        if self.crossings:
            lines.append("endpoints over the threshold whose deepest path starts in another "
                         "unit:")
            lines += [f"{n:7d}  {route}" for route, n in self.crossings.items()]
        return "\n".join(lines)

    def to_dict(self, limit: int = 50) -> dict:
        return {"top": self.top, "endpoints": self.endpoints, "over": self.over,
                "threshold_ns": self.threshold_ns, "crossings": self.crossings,
                "paths": [{"delay_ns": round(p.delay_ns, 2), "luts": p.luts, "from": p.start,
                           "to": p.to, "pin": p.pin, "units": p.units, "cells": p.cells}
                          for p in self.paths[:limit]]}


def _unit(cell: str) -> str:
    return cell.split(".", 1)[0] if "." in cell else "(top)"


def _endpoint_key(cell: str) -> str:
    # the register a flip-flop belongs to: yosys names bit i `<reg>_TRELLIS_FF_Q_<i>`
    return cell.split("_TRELLIS_FF_Q")[0]


def estimate_paths(netlist: dict, *, threshold_ns: float = 1000 / 150,
                   keep: int = 200) -> DepthReport:
    """The register-to-register paths of the top module of ``netlist`` (a yosys JSON
    netlist after ``synth_ecp5``), deepest first: ``keep`` of them, one per endpoint register
    and route of units; ``threshold_ns`` (default one 150 MHz period) sets which endpoints
    ``over`` and ``crossings`` count."""
    modules = netlist["modules"]
    top = next(name for name, mod in modules.items() if mod.get("attributes", {}).get("top"))
    cells = modules[top]["cells"]
    driver, arrival = {}, {}
    for name, cell in cells.items():
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) == "output":
                for bit in bits:
                    if not isinstance(bit, str):
                        driver[bit] = (name, pin)

    def start_delay(name, pin):
        cell = cells[name]
        kind = cell["type"]
        if kind == "DP16KD":
            side = "A" if pin.startswith("DOA") else "B"
            return START_NS["DP16KD"] if "OUTREG" in str(cell["parameters"].get(
                f"REGMODE_{side}", "")) else EBR_NOREG_NS
        return START_NS.get(kind)

    def through(kind, pin_in, pin_out):
        if kind == "LUT4":
            return LUT_NS
        if kind == "CCU2C":
            if pin_in == "CIN":
                return CARRY_NS if pin_out == "COUT" else CARRY_SUM_NS
            return CARRY_IN_NS
        if kind == "TRELLIS_DPR16X4":
            return LUTRAM_READ_NS if pin_in.startswith("RAD") else None
        if kind in ("PFUMX", "L6MUX21"):
            return MUX_NS
        return None

    deps_of = {}

    def deps(bit):
        # the net bits a cell output depends on, each with the delay from it (route + cell)
        if bit not in deps_of:
            name, pin = driver[bit]
            cell = cells[name]
            found = []
            for pin_in, bits in cell["connections"].items():
                if cell["port_directions"].get(pin_in) != "input":
                    continue
                delay = through(cell["type"], pin_in, pin)
                if delay is None:
                    continue
                route = 0.0 if (cell["type"] == "CCU2C" and pin_in == "CIN") else ROUTE_NS
                found += [(b, route + delay) for b in bits if not isinstance(b, str)]
            deps_of[bit] = found
        return deps_of[bit]

    def resolve(root):
        # depth first, one unresolved input at a time, so the stack is a chain of ancestors:
        # an input on it closes a combinational loop (none in a sound design) and counts 0
        stack, on_stack = [root], {root}
        while stack:
            bit = stack[-1]
            if bit not in driver:
                arrival[bit] = (0.0, None)
            elif (start := start_delay(*driver[bit])) is not None:
                arrival[bit] = (start, None)
            else:
                todo = next((b for b, _ in deps(bit) if b not in arrival and b not in on_stack),
                            None)
                if todo is not None:
                    stack.append(todo)
                    on_stack.add(todo)
                    continue
                best, pred = 0.0, None
                for b, delay in deps(bit):
                    if b in arrival and arrival[b][0] + delay > best:
                        best, pred = arrival[b][0] + delay, b
                arrival[bit] = (best, pred)
            stack.pop()
            on_stack.discard(bit)

    def trace(bit):
        chain = []
        while bit is not None and bit in driver:
            chain.append(driver[bit][0])
            bit = arrival[bit][1]
        return chain[::-1]

    found = []
    for name, cell in cells.items():
        if cell["type"] not in _ENDPOINT_CELLS:
            continue
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) != "input" or pin.startswith("CLK") \
                    or pin == "WCK" or (cell["type"] == "TRELLIS_DPR16X4" and
                                        pin.startswith("RAD")):
                continue
            for bit in bits:
                if isinstance(bit, str) or bit not in driver:
                    continue
                if bit not in arrival:
                    resolve(bit)
                found.append((arrival[bit][0] + ROUTE_NS, name, pin, bit))
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    report = DepthReport(top=top, endpoints=len(found), threshold_ns=threshold_ns)
    seen, crossings = set(), collections.Counter()
    for delay, name, pin, bit in found:
        chain = trace(bit)
        units = [_unit(chain[0] if chain else name)]
        if _unit(name) != units[0]:
            units.append(_unit(name))
        if delay > threshold_ns:
            report.over += 1
            if len(units) > 1:
                crossings[" -> ".join(units)] += 1
        key = (tuple(units), _endpoint_key(name))
        if key in seen or len(report.paths) >= keep:
            continue
        seen.add(key)
        luts = sum(1 for c in chain if cells[c]["type"] == "LUT4")
        report.paths.append(Path(delay_ns=delay, luts=luts, cells=chain, to=name, pin=pin,
                                 units=units))
    report.crossings = dict(crossings.most_common(25))
    return report


def unit_depth(config, unit: str, *, progress=print,
               threshold_ns: float = 1000 / 150) -> DepthReport:
    """Generate ``unit`` of ``config``, map it with ``rpaccel synth``'s yosys script for the
    ECP5-85k and its block-RAM output-register pass, and estimate its paths
    (:func:`estimate_paths`). The mapped netlist is kept in
    ``<build root>/depth-<unit>-<config hash>`` beside the SHA-256 of the Verilog it came
    from, so a second run on the same Verilog skips yosys."""
    import hashlib
    import json

    from .ebr_outreg import absorb_output_registers
    from .generate import build_root, generate
    from .options import heartbeat
    from .synth import TARGET_MULTIPLIER, check_memories_fit, yosys_synthesize

    with heartbeat(f"generating {unit} ({config.hash})", progress=progress):
        gen = generate(config, unit, multiplier=TARGET_MULTIPLIER["ecp5-85k"])
    verilog = gen.verilog.read_bytes()
    check_memories_fit(verilog.decode(), gen.top, f"{unit} (config {config.hash})", "ecp5-85k")
    work = build_root() / f"depth-{unit}-{config.hash}"
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "verilog.sha256"
    digest = hashlib.sha256(verilog).hexdigest()
    netlist = work / f"{gen.top}.json"
    if not (netlist.exists() and stamp.exists() and stamp.read_text() == digest):
        stamp.unlink(missing_ok=True)
        netlist, _ = yosys_synthesize(gen, work, "ecp5-85k", progress=progress)
        stamp.write_text(digest)
    else:
        progress(f"yosys: {netlist} is of this Verilog; not run again")
    design = json.loads(netlist.read_text())
    absorb_output_registers(design)
    with heartbeat(f"estimating the paths of {gen.top}", progress=progress):
        return estimate_paths(design, threshold_ns=threshold_ns)
