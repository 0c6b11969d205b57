"""The ``rpaccel`` command line.

Each sub-command is a small function here that turns its options into values, checks every
path and tool it will need (``gen/options.py``: output folders and files writable, the build
and data roots usable, the simulator installed, the unit and target known) and only then
calls the library, so a mistake fails at once and leaves nothing behind. Errors the user can
fix (:class:`~rpaccel.hw.errors.RpaccelError`, usage errors, and any file-system error no
check foresaw) are printed as one line ``rpaccel: error: ...`` with exit status 2, never as
a traceback. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

from rpaccel.hw.errors import RpaccelError

from . import cache_study_cli, cosim, golden_cli, regmap_export, sweep, synth_report
from .options import (add_config_options, add_synth_options, check_build_root, check_output_dir,
                      check_output_file, check_simulator, config_from_args, heartbeat, say)

__all__ = ["main", "config_from_args", "DEFAULT_UNIT", "build_parser"]

#: The unit `gen`, `lint` and `synth` build when none is named: the largest one that exists
#: (the accelerator's top level will take its place).
DEFAULT_UNIT = "compute_core"


def _write_json(path: Path | None, text: str):
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _generate(config, unit: str, name: str, out=None):
    from .generate import generate
    with heartbeat(f"generating {unit} for {name} ({config.hash})"):
        return generate(config, unit, out)


# -- gen ------------------------------------------------------------------------------------
def cmd_gen(args) -> int:
    from .units import get_unit
    config, name = config_from_args(args)
    get_unit(args.unit)  # unknown names fail before anything is written
    if args.out is not None:
        check_output_dir(args.out, "--out")
    else:
        from .generate import unit_dir
        check_output_dir(unit_dir(config, args.unit), "the build folder")
    out = _generate(config, args.unit, name, args.out)
    ports = out.read_manifest()["ports"]
    print(f"wrote {out.verilog} ({len(ports)} ports) and {out.manifest} "
          f"[config {config.hash}]")
    return 0


# -- lint -----------------------------------------------------------------------------------
def cmd_lint(args) -> int:
    from .simulators import lint
    from .units import get_unit
    config, name = config_from_args(args)
    get_unit(args.unit)
    check_simulator("verilator")
    check_build_root()
    out = _generate(config, args.unit, name)
    with heartbeat(f"verilator --lint-only -Wall {out.verilog.name}"):
        proc = lint(out.verilog)
    sys.stdout.write(proc.stdout + proc.stderr)
    status = "clean" if proc.returncode == 0 else "FAILED"
    print(f"verilator --lint-only -Wall {out.verilog.name}: {status}")
    return 0 if proc.returncode == 0 else 1


# -- synth ----------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from .synth import check_fit, check_synth, synthesize
    from .units import get_unit
    config, name = config_from_args(args)
    get_unit(args.unit)
    check_synth(args.target)
    # Before generation and yosys: a configuration that cannot fit ends here, in one line.
    check_fit(config, args.unit, args.target)
    check_build_root()
    check_output_file(args.json, "--json")
    result = synthesize(config, args.unit, args.target, preset_name=name, progress=say,
                        seeds=args.seeds, clock_mhz=args.clock, use_cache=not args.no_cache,
                        multiplier=args.multiplier, wide_luts=args.wide_luts)
    _write_json(args.json, result.to_json())
    print(result.summary())
    return 0


# -- depth ----------------------------------------------------------------------------------
def cmd_depth(args) -> int:
    from .logic_depth import unit_depth
    from .units import get_unit
    config, _ = config_from_args(args)
    get_unit(args.unit)
    if args.limit < 1:
        raise RpaccelError(f"--limit must be at least 1, not {args.limit}")
    if not 0 < args.period < 1000:
        raise RpaccelError(f"--period must be between 0 and 1000 ns, not {args.period}")
    check_build_root()
    check_output_file(args.json, "--json")
    report = unit_depth(config, args.unit, progress=say, threshold_ns=args.period)
    _write_json(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    print(report.text(args.limit))
    return 0


# -- core-bench -----------------------------------------------------------------------------
def cmd_core_bench(args) -> int:
    from .core_bench import format_report, run_core_bench
    config, name = config_from_args(args)
    check_simulator(args.sim)
    check_build_root()
    check_output_file(args.json, "--json")
    report = run_core_bench(config, name, args.sim, progress=say)
    _write_json(args.json, json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(format_report(report))
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``rpaccel: error: COMMAND: ...`` (exit status 2), like every
    other error, with a pointer to the help instead of the whole usage text."""

    def error(self, message):
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(2, f"rpaccel: error: {where}{message} (see `{self.prog} --help`)\n")


def _version() -> str:
    try:
        return metadata.version("rpaccel")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run `make venv`)"


def build_parser() -> argparse.ArgumentParser:
    from .simulators import SIMULATORS
    from .synth import TARGETS
    from rpaccel.hw.pe import MULTIPLIERS
    from .units import UNITS

    parser = _Parser(
        prog="rpaccel", description="RPAccel generator: RTL, simulation, synthesis, quality.")
    parser.add_argument("--version", action="version", version=f"rpaccel {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    units = f"{', '.join(UNITS)} (default: {DEFAULT_UNIT})"
    sims = ", ".join(SIMULATORS)

    p = sub.add_parser("gen", help="generate Verilog and a JSON manifest for a unit")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit to generate: {units}")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (created if needed; files in it are replaced; default: "
                        "the build folder lint, synth and simulation share, "
                        "$RPACCEL_BUILD/<unit>-<config hash>)")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("lint", help="run verilator --lint-only -Wall on a generated unit")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit: {units}")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("synth", help="synthesize and place-and-route a unit; report area, Fmax")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit: {units}")
    p.add_argument("--target", default="ecp5-85k", choices=TARGETS,
                   help=f"{', '.join(TARGETS)} (default: ecp5-85k; generic is yosys "
                        f"`synth -lut 4`, no timing)")
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    p.add_argument("--multiplier", choices=MULTIPLIERS, default=None,
                   help="how the PEs' multipliers are written: ecp5 (the MULT18X18D with its "
                        "own registers) or portable RTL (default: ecp5 on ecp5-85k, "
                        "portable on generic)")
    p.add_argument("--wide-luts", action="store_true",
                   help="let yosys map onto LUT5..LUT7 (synth_ecp5 without -nowidelut): "
                        "often a little faster, always larger; default off")
    add_synth_options(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("depth", help="estimate a unit's deepest register-to-register paths "
                                     "after yosys, before placement (minutes, not an hour)")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit: {units}")
    p.add_argument("--limit", type=int, default=20, help="paths to print (default: 20)")
    p.add_argument("--period", type=float, default=round(1000 / 150, 2),
                   help="clock period in ns the endpoints are counted against "
                        "(default: 6.67, 150 MHz)")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.set_defaults(func=cmd_depth)

    p = sub.add_parser("core-bench", help="measure layer and top-k performance in RTL cycles")
    add_config_options(p)
    p.add_argument("--sim", default="verilator", choices=SIMULATORS,
                   help=f"RTL simulator: {sims} (default: verilator)")
    p.add_argument("--json", type=Path, help="write the measurements as JSON here")
    p.set_defaults(func=cmd_core_bench)

    p = sub.add_parser("demo", help="the end-to-end flow on the default configuration")
    add_config_options(p)
    p.add_argument("--sim", default="verilator", choices=SIMULATORS,
                   help=f"RTL simulator: {sims} (default: verilator)")
    p.add_argument("--skip-synth", action="store_true", help="leave out synthesis")
    p.set_defaults(func=cmd_demo)

    golden_cli.register(sub)
    regmap_export.register(sub)
    cache_study_cli.register(sub)
    cosim.register(sub)
    sweep.register(sub)
    synth_report.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except RpaccelError as err:
        print(f"rpaccel: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file-system problem no check foresaw (a disk that filled up, a folder removed
        # under us): still one line naming the file, not a traceback.
        where = f"{err.filename}: " if err.filename else ""
        print(f"rpaccel: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rpaccel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
