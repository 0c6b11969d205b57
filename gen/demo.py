"""``make demo``: the main job end to end on an embedded default configuration.

Each step is measured, not assumed, and the demo ends with one summary table:
generate the Verilog, lint it, simulate it against the golden model on the RTL simulators,
synthesize and place-and-route it for an ECP5-85k.
"""

from __future__ import annotations

import sys
import time

from .cli import config_from_args
from .report import format_table

__all__ = ["run_demo"]


def _say(msg: str):
    print(f"[demo] {msg}", flush=True)


def run_demo(args) -> int:
    from .generate import generate
    from .simulators import SIMULATORS, lint, run_cocotb, unavailable_reason
    from .synth import synthesize

    config, name = config_from_args(args)
    rows = []

    def step(what, fn):
        _say(f"{what} ...")
        t0 = time.monotonic()
        result = fn()
        seconds = time.monotonic() - t0
        return result, seconds

    gen, secs = step(f"generating Verilog for the processing element ({name})",
                     lambda: generate(config, "pe"))
    rows.append(["generate pe", f"{gen.verilog}", round(secs, 1)])

    proc, secs = step("verilator --lint-only -Wall", lambda: lint(gen.verilog))
    rows.append(["lint pe", "clean" if proc.returncode == 0 else "FAILED", round(secs, 1)])

    sims = [args.sim] if args.sim else list(SIMULATORS)
    for sim in sims:
        reason = unavailable_reason(sim)
        if reason:
            rows.append([f"simulate pe ({sim})", f"skipped: {reason}", None])
            continue
        _, secs = step(f"cocotb: processing element vs model on {sim}",
                       lambda: run_cocotb(gen, sim, "rpaccel.tb.test_pe"))
        rows.append([f"simulate pe ({sim})", "2000 random cycles bit-exact", round(secs, 1)])

    if not args.skip_synth:
        res, secs = step("yosys + nextpnr-ecp5", lambda: synthesize(
            config, "pe", "ecp5-85k", preset_name=name, progress=_say))
        rows.append(["synthesize pe (ecp5-85k)", res.summary().split(": ", 1)[1], round(secs, 1)])

    print()
    print(format_table(["step", "result", "seconds"], rows,
                       title=f"RPAccel demo: configuration {name} ({config.hash})"))
    return 0 if all("FAILED" not in str(r[1]) for r in rows) else 1
