"""The feature sweep (``rpaccel sim-sweep``, gen/sweep.py): the variants and their
configurations, the Markdown table, speed-ups and the chart formatted from a synthetic result
(the numbers are made up here, the test checks they are carried and formatted, never what
the RTL measures), and one real tiny sweep of two variants on Verilator.
"""

import copy
import dataclasses

import numpy as np
import pytest

from rpaccel.gen.simulators import unavailable_reason as simulator_unavailable
from rpaccel.gen.sweep import (VARIANTS, format_markdown, plot_sweep, run_sweep, speedups,
                               variant_config)
from rpaccel.hw.config import PRESETS, AccelConfig

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

SWITCHES = {"subbatch_overlap": False, "onchip_topk": False, "static_cache_rows": 0,
            "dynamic_cache_sets": 0, "partitions": 1}


def _differences(a: AccelConfig, b: AccelConfig) -> dict:
    return {f.name: getattr(b, f.name) for f in dataclasses.fields(a)
            if getattr(a, f.name) != getattr(b, f.name)}


@pytest.mark.parametrize("preset", ["default", "tiny", "small"])
def test_each_variant_differs_from_the_base_in_exactly_its_fields(preset):
    base = PRESETS[preset]
    expected = {
        "all-on": {},
        "no-overlap": {"subbatch_overlap": False},
        "no-onchip-topk": {"onchip_topk": False},
        "no-static-cache": {"static_cache_rows": 0},
        "no-dynamic-cache": {"dynamic_cache_sets": 0},
        "one-partition": {"partitions": 1},
        "all-off-but-topk": {k: v for k, v in SWITCHES.items() if k != "onchip_topk"},
        "all-off": SWITCHES,
    }
    assert [v.key for v in VARIANTS] == list(expected)
    hashes = set()
    for v in VARIANTS:
        config = variant_config(base, v)          # validated on construction
        assert isinstance(config, AccelConfig)
        assert _differences(base, config) == expected[v.key], v.key
        # The same MACs in every variant: partitions = 1 keeps the columns.
        assert config.rows * config.cols == base.rows * base.cols
        hashes.add(config.hash)
    assert len(hashes) == len(VARIANTS)           # one build folder each


def test_the_top_k_off_variant_builds_no_top_k_unit():
    """``onchip_topk = False`` is a real switch: the design has no top-k unit at all (its
    scores go to memory), so the sweep measures the feature, not a build with it still on."""
    from rpaccel.hw.accel import RPAccel
    base = PRESETS["tiny"]
    assert len(RPAccel(base).topk_units) > 0
    off = variant_config(base, next(v for v in VARIANTS if v.key == "no-onchip-topk"))
    assert len(RPAccel(off).topk_units) == 0


def _report(stage_cycles, util, cycles, b2b, static=0.5, dynamic=0.25, speed=90_000.0):
    return {"stage_cycles": stage_cycles, "utilization": util, "cycles_per_query": cycles,
            "throughput_cycles_per_query": b2b, "mismatches": 0, "queries": 2,
            "first_mismatches": [], "errors": 0, "outside_region": False,
            "counters_agree": True, "cache_hit_rate": {"static": static, "dynamic": dynamic},
            "sim_cycles_per_s": speed}


def _synthetic():
    runs = [
        {"variant": "all-on", "title": "all features on (RPAccel)", "pipeline": "2-stage",
         "status": "ok", "report": _report([1000.0, 3000.0], [0.125, 0.5], 4000.0, 4100.0)},
        {"variant": "no-onchip-topk", "title": "on-chip top-k off", "pipeline": "2-stage",
         "status": "unavailable", "reason": "not available on this build: why"},
        {"variant": "all-off", "title": "all features off (baseline)", "pipeline": "2-stage",
         "status": "ok", "report": _report([4000.0, 6000.0], [0.03125, 0.25], 10000.0,
                                           12300.0)},
        {"variant": "all-on", "title": "all features on (RPAccel)", "pipeline": "3-stage",
         "status": "ok", "report": _report([10.0, 20.0, 30.0], [1.0, 0.5, 0.25], 60.0, 61.0)},
        {"variant": "all-off", "title": "all features off (baseline)", "pipeline": "3-stage",
         "status": "mismatch", "reason": "1 of 2 queries differ from the golden",
         "report": {**_report([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], 6.0, 7.0), "mismatches": 1}},
    ]
    return {"preset": "default", "base_config_hash": "abc123", "simulator": "verilator",
            "queries": 2, "users": [0, 1], "candidates": None,
            "pipelines": ["2-stage", "3-stage"], "runs": runs,
            "speedup": speedups(runs, ["2-stage", "3-stage"]), "failures": 1}


def test_speedups_are_ratios_of_runs_of_the_same_sweep():
    result = _synthetic()
    two = result["speedup"]["2-stage"]["all-on over all-off"]
    assert two["latency"] == pytest.approx(10000.0 / 4000.0)
    assert two["back_to_back"] == pytest.approx(12300.0 / 4100.0)
    # A failed side gives no ratio, with the reason; so does a variant not in the sweep.
    three = result["speedup"]["3-stage"]["all-on over all-off"]
    assert three["latency"] is None and "differ from the golden" in three["reason"]
    partial = result["speedup"]["2-stage"]["all-on over all-off-but-topk"]
    assert partial["latency"] is None and "not in the sweep" in partial["reason"]


def test_markdown_formats_the_given_numbers():
    text = format_markdown(_synthetic())
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert "stage 3 cycles (MAC util.)" in header and len(body) == 5
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in body]
    assert all(len(c) == len(cells[0]) for c in cells)         # one width for every row
    on2 = cells[0]
    assert on2[:5] == ["all features on (RPAccel)", "2-stage", "bit-exact", "4,000", "4,100"]
    assert on2[5:8] == ["1,000 (12.5 %)", "3,000 (50.0 %)", ""]  # no third stage
    assert on2[8:] == ["50.0 %", "25.0 %", "90,000"]
    assert cells[1][2] == "unavailable: not available on this build: why"
    assert "FAILURE" in cells[4][2]
    assert "2-stage, all-on over all-off: 2.50x per query (latency), 3.00x back to back" in text
    assert "3-stage, all-on over all-off: not measured" in text
    assert "**1 run(s) FAILED**" in text


def test_plot_writes_a_png_for_runs_and_missing_runs(tmp_path):
    result = _synthetic()
    plot_sweep(result, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing ran at all: still a chart (labelled bars of zero height), not an error.
    empty = copy.deepcopy(result)
    for r in empty["runs"]:
        r.pop("report", None)
        r["status"] = "unavailable"
    plot_sweep(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


@pytest.mark.cocotb
@pytest.mark.skipif(simulator_unavailable("verilator") is not None,
                    reason=f"verilator: {simulator_unavailable('verilator')}")
@pytest.mark.slow
def test_a_tiny_sweep_of_two_variants_runs_bit_exact(tmp_path):
    """`rpaccel sim-sweep` end to end on two variants (two Verilator builds, 80 s): a slow
    test. Each of its runs is `run_cosim`, which tests/test_cosim.py runs on real users in
    the fast suite; the sweep's own parts (variants, speed-ups, Markdown, plot, command
    line) have their fast tests above and below."""
    from rpaccel.sim.data import ensure_dataset
    from rpaccel.sim.golden import load_golden
    ensure_dataset()
    variants = [v for v in VARIANTS if v.key in ("all-on", "all-off-but-topk")]
    lines = []
    result = run_sweep(PRESETS["tiny"], "tiny", ["small:8,medium:4"], 1, variants=variants,
                       candidates=20, setup=load_golden(), work_root=tmp_path,
                       progress=lines.append)
    assert result["failures"] == 0, [r.get("reason") for r in result["runs"]]
    assert [r["status"] for r in result["runs"]] == ["ok", "ok"]
    assert any("[2/2]" in line for line in lines)               # progress per run
    for r in result["runs"]:
        rep = r["report"]
        assert rep["mismatches"] == 0 and rep["queries"] == 1
        assert len(rep["stage_cycles"]) == 2 and all(c > 0 for c in rep["stage_cycles"])
        assert all(0 < u <= 1 for u in rep["utilization"])
        # A query's stages run one after another inside its completion.
        assert sum(rep["stage_cycles"]) <= rep["cycles_per_query"]
        assert rep["throughput_cycles_per_query"] >= rep["cycles_per_query"]
    ratio = result["speedup"]["small:8,medium:4"]["all-on over all-off-but-topk"]["latency"]
    on, off = (r["report"]["cycles_per_query"] for r in result["runs"])
    assert ratio == pytest.approx(off / on)
    text = format_markdown(result)
    assert text.count("bit-exact") >= 2
    plot_sweep(result, tmp_path / "s.png")
    assert np.frombuffer((tmp_path / "s.png").read_bytes()[:4], np.uint8)[1] == ord("P")


@pytest.mark.parametrize("args, message", [
    (["--queries", "0"], "--queries: must be at least 1, not 0"),
    (["--pipelines", "2-stage,small"], "pipeline stage 'small' is not MODEL:KEEP_K"),
    (["--pipelines", ","], "--pipelines: name at least one pipeline"),
    (["--latency", "-1"], "--latency: must be at least 0, not -1"),
    (["--variants", "all-on,fast"], "--variants: unknown variant 'fast'; known: all-on, "),
])
def test_bad_command_lines_fail_before_any_build(args, message, tmp_path):
    import os
    import subprocess
    import sys

    from rpaccel.sim.files import data_root
    env = {**os.environ, "RPACCEL_DATA": str(data_root()),
           "RPACCEL_BUILD": str(tmp_path / "build")}
    proc = subprocess.run([sys.executable, "-m", "rpaccel.gen.cli", "sim-sweep", *args],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "build").exists()
