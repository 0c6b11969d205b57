"""The rpaccel command line: deterministic generation and one-line errors that write nothing."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

RPACCEL = [sys.executable, "-m", "rpaccel.gen.cli"]


def rpaccel(*args, cwd=None, env=None):
    return subprocess.run([*RPACCEL, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})})


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_gen_is_byte_identical_across_hash_seeds_and_folders(tmp_path):
    outs = []
    for i, seed in enumerate(("0", "12345")):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        proc = rpaccel("gen", "--preset", "tiny", "--unit", "pe", "--out", "X", cwd=cwd,
                       env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outs.append(cwd / "X")
    assert digest(outs[0]) == digest(outs[1])
    assert set(digest(outs[0])) == {"rpaccel_pe.v", "rpaccel_pe.json"}
    for path in outs[0].iterdir():
        assert path.stat().st_mode & 0o044, f"{path.name} is not readable by others"
        text = path.read_text()
        assert str(tmp_path) not in text and "/work/" not in text and "/home/" not in text


def test_manifest_lists_ports(tmp_path):
    import json
    assert rpaccel("gen", "--preset", "tiny", "--unit", "pe", "--out", tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "rpaccel_pe.json").read_text())
    ports = {p["name"]: (p["direction"], p["width"]) for p in manifest["ports"]}
    assert ports["psum_out"] == ("output", 32) and ports["act_in"] == ("input", 8)
    assert ports["clk"] == ("input", 1) and ports["rst"] == ("input", 1)
    assert manifest["config"]["rows"] == 4 and len(manifest["config_hash"]) == 12
    assert manifest["tools"]["amaranth"] == "0.5.10"


@pytest.mark.parametrize("toml, message", [
    ("rows = 3\n", "rows must be a power of two between 2 and 256, not 3"),
    ("cols = 8\npartitions = 3\n", "partitions must be 1, 2 or 4, not 3"),
    ("cols = 2\npartitions = 2\n",
     "partitions must be a divisor of cols=2 leaving at least 2 columns each, not 2"),
    ("static_cache_rows = -64\n", "static_cache_rows must be between 0 and 1048576, not -64"),
    ("unknown_knob = 1\n", "unknown field 'unknown_knob'"),
    ("rows = [\n", "is not valid TOML"),
    ('preset = "gigantic"\n', "unknown preset 'gigantic'"),
])
def test_bad_config_fails_with_one_line_and_writes_nothing(tmp_path, toml, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    out = tmp_path / "out"
    proc = rpaccel("gen", "--config", bad, "--out", out)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpaccel: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset 'nope'; known presets: tiny, small, default, paper"),
    (["--unit", "nope"], "unknown unit 'nope'; known units: pe, vector_unit, interaction, "
                         "systolic_array, topk, mlp_engine, compute_core, topk_harness"),
    (["--config", "does/not/exist.toml"], "cannot read config file"),
])
def test_unknown_names_and_unreadable_files(tmp_path, args, message):
    proc = rpaccel("gen", *args, "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpaccel: error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_simulator_is_one_clear_line(monkeypatch):
    import shutil
    from rpaccel.gen import simulators
    real_which = shutil.which
    monkeypatch.setattr(simulators.shutil, "which",
                        lambda name, *a, **k: None if name in ("iverilog", "c++", "g++",
                                                              "clang++") else real_which(name))
    monkeypatch.delenv("CXX", raising=False)
    assert simulators.unavailable_reason("icarus") == (
        "Icarus Verilog (iverilog, vvp) is not on PATH: install it, e.g. `apt-get install iverilog`")
    assert "needs a C++ compiler" in simulators.unavailable_reason("verilator")
    with pytest.raises(simulators.ToolMissing, match="apt-get install g"):
        simulators.prepare("verilator")
