"""The ``rpaccel`` command line.

Each sub-command is a small function here that parses its options and calls the library;
errors the user can fix (:class:`~rpaccel.hw.errors.RpaccelError`) are printed as one line
``rpaccel: error: ...`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rpaccel.hw.errors import RpaccelError

from . import cache_study_cli, golden_cli
from .options import add_config_options, config_from_args

__all__ = ["main", "config_from_args", "DEFAULT_UNIT"]

#: The unit `gen`, `lint` and `synth` build when none is named: the largest one that exists
#: (the accelerator's top level will take its place).
DEFAULT_UNIT = "compute_core"


def _write_json(path: Path | None, text: str):
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- gen ------------------------------------------------------------------------------------
def cmd_gen(args) -> int:
    from .generate import generate
    from .units import get_unit
    config, _ = config_from_args(args)
    get_unit(args.unit)  # unknown names fail before anything is written
    out = generate(config, args.unit, args.out)
    ports = out.read_manifest()["ports"]
    print(f"wrote {out.verilog} ({len(ports)} ports) and {out.manifest} "
          f"[config {config.hash}]")
    return 0


# -- lint -----------------------------------------------------------------------------------
def cmd_lint(args) -> int:
    from .generate import generate
    from .simulators import lint
    config, _ = config_from_args(args)
    out = generate(config, args.unit)
    proc = lint(out.verilog)
    sys.stdout.write(proc.stdout + proc.stderr)
    status = "clean" if proc.returncode == 0 else "FAILED"
    print(f"verilator --lint-only -Wall {out.verilog.name}: {status}")
    return 0 if proc.returncode == 0 else 1


# -- synth ----------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from .synth import synthesize
    config, name = config_from_args(args)
    result = synthesize(config, args.unit, args.target, preset_name=name,
                        progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    _write_json(args.json, result.to_json())
    print(result.summary())
    return 0


# -- core-bench -----------------------------------------------------------------------------
def cmd_core_bench(args) -> int:
    from .core_bench import format_report, run_core_bench
    config, name = config_from_args(args)
    report = run_core_bench(config, name, args.sim,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    _write_json(args.json, json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(format_report(report))
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from .units import UNITS
    from .synth import TARGETS

    parser = argparse.ArgumentParser(
        prog="rpaccel", description="RPAccel generator: RTL, simulation, synthesis, quality.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("gen", help="generate Verilog and a JSON manifest for a unit")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit to generate: {', '.join(UNITS)} "
                        f"(default: {DEFAULT_UNIT})")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("lint", help="run verilator --lint-only -Wall on a generated unit")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit: {', '.join(UNITS)} "
                        f"(default: {DEFAULT_UNIT})")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("synth", help="synthesize and place-and-route a unit; report area, Fmax")
    add_config_options(p)
    p.add_argument("--unit", default=DEFAULT_UNIT, help=f"unit: {', '.join(UNITS)} "
                        f"(default: {DEFAULT_UNIT})")
    p.add_argument("--target", default="ecp5-85k", choices=TARGETS)
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("core-bench", help="measure layer and top-k performance in RTL cycles")
    add_config_options(p)
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--json", type=Path, help="write the measurements as JSON here")
    p.set_defaults(func=cmd_core_bench)

    p = sub.add_parser("demo", help="the end-to-end flow on the default configuration")
    add_config_options(p)
    p.add_argument("--sim", default=None, help="simulator (default: verilator)")
    p.add_argument("--skip-synth", action="store_true", help="leave out synthesis")
    p.set_defaults(func=cmd_demo)

    golden_cli.register(sub)
    cache_study_cli.register(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except RpaccelError as err:
        print(f"rpaccel: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rpaccel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
