"""The pre-placement path estimate (gen/logic_depth.py, ``rpaccel depth``): its delay model on
hand-built netlists whose paths are known, and the command on a real unit through yosys."""

import json
import os
import subprocess
import sys

import pytest

from rpaccel.gen import logic_depth as ld


def _netlist(cells: dict) -> dict:
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells}}}


def _ff(d, q):
    return {"type": "TRELLIS_FF", "parameters": {},
            "port_directions": {"CLK": "input", "DI": "input", "CE": "input", "Q": "output"},
            "connections": {"CLK": [1], "DI": [d], "CE": ["1"], "Q": [q]}}


def _lut(inputs, z):
    pins = dict(zip("ABCD", inputs))
    return {"type": "LUT4", "parameters": {},
            "port_directions": {**{p: "input" for p in pins}, "Z": "output"},
            "connections": {**{p: [b] for p, b in pins.items()}, "Z": [z]}}


def _ccu2c(a0, cin, s0, cout):
    return {"type": "CCU2C", "parameters": {},
            "port_directions": {"A0": "input", "CIN": "input", "S0": "output", "COUT": "output"},
            "connections": {"A0": [a0], "CIN": [cin], "S0": [s0], "COUT": [cout]}}


def _ebr(regmode, addr, do):
    return {"type": "DP16KD", "parameters": {"REGMODE_A": regmode},
            "port_directions": {"CLKA": "input", "ADA0": "input", "DOA0": "output"},
            "connections": {"CLKA": [1], "ADA0": [addr], "DOA0": [do]}}


R, L = ld.ROUTE_NS, ld.LUT_NS
FF = ld.START_NS["TRELLIS_FF"]


def test_lut_chain_carry_chain_and_block_ram_starts_cost_what_the_model_says():
    netlist = _netlist({
        # u0.a -> two LUTs -> u1.b: crosses from unit u0 to unit u1
        "u0.a": _ff(100, 2), "u0.l1": _lut([2], 3), "u0.l2": _lut([3, 2], 4),
        "u1.b": _ff(4, 101),
        # u2.c -> a carry cell's input -> its carry out -> the next cell's sum -> u2.d
        "u2.c": _ff(102, 10), "u2.k1": _ccu2c(10, "0", 13, 11), "u2.k2": _ccu2c("0", 11, 12, 14),
        "u2.d": _ff(12, 103),
        # a block RAM read without and with its output register, one LUT, a register
        "u3.noreg": _ebr("NOREG", 104, 20), "u3.l": _lut([20], 21), "u3.e": _ff(21, 105),
        "u4.outreg": _ebr("OUTREG", 106, 30), "u4.l": _lut([30], 31), "u4.f": _ff(31, 107),
    })
    report = ld.estimate_paths(netlist, threshold_ns=5.0)
    by_end = {p.to: p for p in report.paths}
    lut_path = by_end["u1.b"]
    assert lut_path.delay_ns == pytest.approx(FF + 2 * (R + L) + R)
    assert (lut_path.start, lut_path.luts, lut_path.units) == ("u0.a", 2, ["u0", "u1"])
    carry = by_end["u2.d"]
    assert carry.delay_ns == pytest.approx(FF + R + ld.CARRY_IN_NS + ld.CARRY_SUM_NS + R)
    assert (carry.luts, carry.units) == (0, ["u2"])
    assert by_end["u3.e"].delay_ns == pytest.approx(ld.EBR_NOREG_NS + R + L + R)
    assert by_end["u4.f"].delay_ns == pytest.approx(ld.START_NS["DP16KD"] + R + L + R)
    # deepest first; only the block RAM without output register is over 5 ns
    assert report.paths[0].to == "u3.e"
    assert report.over == 1 and report.crossings == {}
    assert [p.delay_ns for p in report.paths] == sorted((p.delay_ns for p in report.paths),
                                                        reverse=True)
    text = report.text()
    assert "1 of" in text and "u0.a -> u1.b.DI" in text


def test_a_combinational_loop_ends_instead_of_hanging_and_crossings_are_counted():
    netlist = _netlist({
        "p.a": _ff(100, 2),
        "x.l1": _lut([2, 4], 3), "x.l2": _lut([3], 4),      # l1 -> l2 -> l1
        "q.b": _ff(4, 101),
    })
    report = ld.estimate_paths(netlist, threshold_ns=1.0)
    (path,) = report.paths
    assert path.units == ["p", "q"] and path.luts == 2
    assert path.delay_ns == pytest.approx(FF + 2 * (R + L) + R)
    assert report.crossings == {"p -> q": 1}
    assert json.loads(json.dumps(report.to_dict()))["paths"][0]["from"] == "p.a"


def test_depth_command_runs_yosys_once_per_verilog_and_reports_paths(tmp_path):
    build = tmp_path / "build"
    out = tmp_path / "depth.json"
    cmd = [sys.executable, "-m", "rpaccel.gen.cli", "depth", "--preset", "tiny", "--unit",
           "vector_unit", "--limit", "3", "--json", str(out)]
    env = {**os.environ, "RPACCEL_BUILD": str(build)}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(out.read_text())
    assert report["top"] and report["endpoints"] > 100 and report["paths"]
    deepest = report["paths"][0]
    assert deepest["delay_ns"] > ld.START_NS["TRELLIS_FF"] and deepest["cells"]
    lines = first.stdout.splitlines()
    assert "endpoints estimated over 6.67 ns" in lines[0]
    assert len(lines) == 4 and all(" ns " in line and " LUTs " in line for line in lines[1:])
    second = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "not run again" in second.stderr
    assert json.loads(out.read_text()) == report


@pytest.mark.parametrize("args, message", [(["--limit", "0"], "--limit must be at least 1"),
                                           (["--period", "-1"], "--period must be between")])
def test_bad_depth_options_are_one_line_errors(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rpaccel.gen.cli", "depth", "--preset", "tiny",
                           "--unit", "pe", *args], capture_output=True, text=True,
                          env={**os.environ, "RPACCEL_BUILD": str(tmp_path)})
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1
