"""Block-RAM output registers on the ECP5: the flip-flops that take a DP16KD's read data
moved into the block RAM's own output register (``REGMODE OUTREG``).

Why: without its output register a DP16KD's data leaves 4-6 ns after the clock in
nextpnr's timing model, so any path from a block RAM ends above 6.7 ns (150 MHz) after a
LUT or two of routing; with it the block RAM's output is as early as a flip-flop's
(``docs/synth-report.md`` has the measurement: 134 MHz against 426 MHz for a block RAM
into one XOR into a flip-flop). yosys's ECP5 memory library has no output-register option
(``brams_16kd.txt`` maps every memory with ``REGMODE NOREG``), so the RTL keeps its portable
form (a memory read port, then a register) and this pass, run on yosys's netlist between
``synth_ecp5`` and nextpnr, does what a vendor tool does when it absorbs the register.

The rule (:func:`absorb_output_registers`): a DP16KD port's read data is absorbed when every
used data bit of the port drives exactly one thing, the D input of a ``TRELLIS_FF``, and all
those flip-flops are clocked by the port's clock on its rising edge, share one clock enable
(or none), have no set/reset (``LSR`` tied low, which a ``reset_less`` Amaranth register gives)
and start at 0, and the port's own reset (``RST``) is tied low. Then the port's ``REGMODE``
becomes ``OUTREG``, its ``OCE`` takes the flip-flops' clock enable, its data pins drive the
flip-flops' outputs and the flip-flops are removed: one cycle of latency before, one after,
the same value on every cycle. A 36-bit-wide block (port B reads all 36 bits on ``DOA`` and
``DOB``) is absorbed as one port, with both ports' ``REGMODE`` and ``OCE`` set, as Lattice's
own tools configure the 36-bit pseudo-dual-port mode.

Anything else is left as it is, with the reason (:class:`Absorption`), so the synthesis
report can say which block RAMs still run without their output register.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Absorption", "absorb_output_registers"]

_DATA_BITS = 18


@dataclass
class Absorption:
    """What :func:`absorb_output_registers` did: per block-RAM port absorbed, the cell and
    the port (``"A"``, ``"B"`` or ``"AB"`` for a 36-bit read), and per port left alone
    its reason."""
    absorbed: list[tuple[str, str]] = field(default_factory=list)
    flip_flops_removed: int = 0
    left: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = defaultdict(int)
        for _, _, why in self.left:
            reasons[why] += 1
        why = "; ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        return (f"{len(self.absorbed)} block-RAM read ports with their output register "
                f"({self.flip_flops_removed} flip-flops absorbed)"
                + (f", {len(self.left)} without ({why})" if self.left else ""))


def _int_param(value) -> int:
    """A yosys JSON integer parameter (a binary string, or already an int)."""
    return value if isinstance(value, int) else int(str(value).strip(), 2)


def _str_param(value) -> str:
    return str(value).strip()


def _top(netlist: dict) -> dict:
    tops = [m for m in netlist["modules"].values()
            if _int_param(m.get("attributes", {}).get("top", "0"))]
    if len(tops) != 1:
        raise ValueError(f"the netlist has {len(tops)} top modules, not one")
    return tops[0]


def absorb_output_registers(netlist: dict) -> Absorption:
    """Move the flip-flops that register DP16KD read data into the block RAMs' output
    registers, in place, in a yosys JSON ``netlist`` after ``synth_ecp5`` (flattened, one
    top module). Returns what it did; the netlist's behaviour is unchanged, cycle for
    cycle (see the module's docstring for the rule)."""
    module = _top(netlist)
    cells = module["cells"]
    loads: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        loads[b].append((name, port))
    for port in module.get("ports", {}).values():
        if port["direction"] != "input":
            for b in port["bits"]:
                if isinstance(b, int):
                    loads[b].append(("<port>", "out"))

    used_bits = [b for c in cells.values() for bits in c["connections"].values()
                 for b in bits if isinstance(b, int)]
    next_bit = [max(used_bits, default=1) + 1]      # for the nets of new inverters
    result = Absorption()
    for name in sorted(n for n, c in cells.items() if c["type"] == "DP16KD"):
        cell = cells[name]
        p, conn = cell["parameters"], cell["connections"]
        wide = (_int_param(p.get("DATA_WIDTH_B", 18)) == 36
                and _int_param(p.get("DATA_WIDTH_A", 18)) == 36)
        # (a 36-bit read is port B's: its clock is CLKB, the last side of the label)
        groups = [("AB", [f"DOA{i}" for i in range(_DATA_BITS)]
                   + [f"DOB{i}" for i in range(_DATA_BITS)])] if wide else \
            [(s, [f"DO{s}{i}" for i in range(_DATA_BITS)]) for s in "AB"]
        for label, pins in groups:
            used = [(pin, conn[pin][0]) for pin in pins
                    if pin in conn and isinstance(conn[pin][0], int) and loads.get(conn[pin][0])]
            if not used:
                continue        # a write-only port
            why = _why_not(cells, conn, p, label, used, loads)
            if why:
                result.left.append((name, label, why))
                continue
            ffs = [loads[bit][0][0] for _, bit in used]
            ce = _enable_net(cells, _enable(cells[ffs[0]]), name, label, next_bit)
            for side in label:
                p[f"REGMODE_{side}"] = "OUTREG"
                conn[f"OCE{side}"] = list(ce)
            for (pin, _), ff in zip(used, ffs):
                conn[pin] = list(cells[ff]["connections"]["Q"])
                del cells[ff]
            result.absorbed.append((name, label))
            result.flip_flops_removed += len(ffs)
    return result


def _enable(ff: dict) -> tuple | None:
    """A flip-flop's clock enable: ``("1",)`` (always), ``("CE", bits)``, ``("INV", bits)``
    (``CEMUX INV``, yosys's form of a low-active enable), or None for a mode not handled."""
    cemux = _str_param(ff["parameters"].get("CEMUX", "CE"))
    ce = ff["connections"].get("CE", ["1"])
    if cemux == "1" or ce == ["1"] and cemux == "CE":
        return ("1",)
    return (cemux, tuple(ce)) if cemux in ("CE", "INV") else None


def _enable_net(cells: dict, enable: tuple, ram: str, label: str, next_bit: list) -> list:
    """The output register's enable for :func:`_enable` ``enable``: a constant 1, the
    ``CE`` net, or a new LUT4 inverting it, named after the block RAM's port."""
    if enable[0] == "1":
        return ["1"]
    mode, ce = enable
    if mode == "CE":
        return list(ce)
    out = next_bit[0]
    next_bit[0] += 1
    cells[f"{ram}.oce{label}_inverter"] = {
        "hide_name": 0, "type": "LUT4",
        # Z = INIT[{D, C, B, A}]: 1 where A is 0
        "parameters": {"INIT": "0101010101010101"}, "attributes": {},
        "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input",
                            "Z": "output"},
        "connections": {"A": list(ce), "B": ["0"], "C": ["0"], "D": ["0"], "Z": [out]}}
    return [out]


def _why_not(cells, conn, params, label, used, loads) -> str | None:
    """Why a block-RAM port's read data cannot be absorbed, or None."""
    for side in label:
        if _str_param(params.get(f"REGMODE_{side}", "NOREG")) != "NOREG":
            return "already registered"
        if conn.get(f"RST{side}", ["0"]) != ["0"]:
            return "the port has a reset"
        if _str_param(params.get(f"CLK{side}MUX", f"CLK{side}")) != f"CLK{side}":
            return "inverted clock"
    clock = conn[f"CLK{label[-1]}"]
    key = None
    for _, bit in used:
        sinks = loads[bit]
        if len(sinks) != 1:
            return "read data with more than one load"
        ff_name, port = sinks[0]
        ff = cells.get(ff_name)
        if ff is None or ff["type"] != "TRELLIS_FF" or port != "DI":
            return "read data into logic, not straight into a flip-flop"
        fp, fc = ff["parameters"], ff["connections"]
        if fc.get("LSR", ["0"]) != ["0"] and _str_param(fp.get("LSRMUX", "LSR")) != "0":
            return "its register has a reset"
        if _str_param(fp.get("REGSET", "RESET")) != "RESET":
            return "its register starts at 1"
        if fc["CLK"] != clock or _str_param(fp.get("CLKMUX", "CLK")) != "CLK":
            return "its register on another clock"
        this = _enable(ff)
        if this is None:
            return f"its register's enable mode {_str_param(fp.get('CEMUX'))}"
        if key is None:
            key = this
        elif this != key:
            return "its registers with different enables"
    return None
