"""Generation (gen/generate.py) and the flow's file helpers (sim/files.py): the Verilog header,
the manifest's port layouts read by a host that only has the JSON, the shared build folder,
atomic writes and locks, and FST waveforms on both RTL simulators."""

import fcntl
import os
import subprocess
import sys

import numpy as np
import pytest

from rpaccel.gen.generate import convert, generate, tool_versions, unit_dir
from rpaccel.gen.simulators import run_bench, waves_file
from rpaccel.gen.units import UNITS
from rpaccel.hw.config import PRESETS
from rpaccel.sim import files
from rpaccel.tb.amaranth_sim import to_python


# -- Verilog header and manifest ------------------------------------------------------------
def test_verilog_header_names_configuration_and_tools():
    config = PRESETS["tiny"].replace(operand_width=6, acc_width=20)
    text, manifest = convert(config, "pe")
    header = text.split("\nmodule ", 1)[0]
    assert text.startswith("// rpaccel_pe: processing element")
    assert f"from configuration {config.hash}." in header
    tools = tool_versions()
    assert manifest["tools"] == tools and tools["amaranth"] == "0.5.10"
    assert "// Tools: " + ", ".join(f"{k} {v}" for k, v in sorted(tools.items())) in header
    assert '"operand_width": 6' in header and '"acc_width": 20' in header
    assert manifest["config_hash"] == config.hash and manifest["manifest_version"] == 2
    # Byte-deterministic: no date, no path; the same configuration gives the same text.
    assert convert(config, "pe")[0] == text and os.getcwd() not in text


def unpack(bits: int, shape: dict):
    """A payload from its bits using only the manifest's description of its layout: what a
    host in another language does."""
    kind, width = shape["kind"], shape["width"]
    bits &= (1 << width) - 1
    if kind == "struct":
        return {f["name"]: unpack(bits >> f["offset"], f["shape"]) for f in shape["fields"]}
    if kind == "array":
        step = shape["element"]["width"]
        return [unpack(bits >> (i * step), shape["element"]) for i in range(shape["length"])]
    if kind == "signed" and bits >> (width - 1):
        return bits - (1 << width)
    return bits


@pytest.mark.parametrize("unit", ["compute_core", "systolic_array", "vector_unit", "topk",
                                  "interaction"])
def test_manifest_layouts_unpack_like_the_hardware_layouts(unit):
    """Every port but clk/rst has a layout as wide as the Verilog port; random bit patterns
    unpacked from the JSON description alone equal the hardware layout's own unpacking."""
    config = PRESETS["tiny"]
    component = UNITS[unit].build(config)
    _, manifest = convert(config, unit)
    rng = np.random.default_rng(0)
    members = {"__".join(map(str, path)): value
               for path, _, value in component.signature.flatten(component)}
    described = [p for p in manifest["ports"] if "layout" in p]
    assert {p["name"] for p in manifest["ports"]} - {p["name"] for p in described} == \
        {"clk", "rst"}
    assert {p["name"] for p in described} == set(members)
    for port in described:
        assert port["layout"]["width"] == port["width"], port["name"]
        shape = members[port["name"]].shape()
        for _ in range(5):
            bits = int(rng.integers(0, 1 << 62)) | (int(rng.integers(0, 1 << 62)) << 62)
            bits &= (1 << port["width"]) - 1
            if hasattr(shape, "from_bits"):
                want = to_python(shape.from_bits(bits))
            else:
                want = unpack(bits, {"kind": "signed" if shape.signed else "unsigned",
                                     "width": shape.width})
            assert unpack(bits, port["layout"]) == want, port["name"]


def test_manifest_layout_of_a_nested_payload():
    _, manifest = convert(PRESETS["tiny"].replace(operand_width=6, acc_width=20),
                          "systolic_array")
    acts = next(p for p in manifest["ports"] if p["name"] == "acts__0__payload")
    assert acts["layout"] == {
        "kind": "struct", "width": 4 * 6 + 1, "fields": [
            {"name": "data", "offset": 0, "width": 24, "shape": {
                "kind": "array", "width": 24, "length": 4,
                "element": {"kind": "signed", "width": 6}}},
            {"name": "last", "offset": 24, "width": 1,
             "shape": {"kind": "unsigned", "width": 1}}]}


# -- one build folder -------------------------------------------------------------------------
def test_generate_defaults_to_the_shared_build_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_BUILD", str(tmp_path / "b"))
    config = PRESETS["tiny"]
    out = generate(config, "pe")
    assert out.directory == unit_dir(config, "pe") == tmp_path / "b" / f"pe-{config.hash}"
    assert out.read_manifest()["verilog"] == out.verilog.name == "rpaccel_pe.v"
    mtime = out.verilog.stat().st_mtime_ns
    assert generate(config, "pe").verilog.stat().st_mtime_ns == mtime  # unchanged, not rewritten


# -- sim/files.py -----------------------------------------------------------------------------
def test_roots_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_BUILD", "here")
    monkeypatch.setenv("RPACCEL_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert files.build_root() == tmp_path / "here" and files.data_root() == tmp_path
    monkeypatch.delenv("RPACCEL_BUILD")
    monkeypatch.delenv("RPACCEL_DATA")
    assert files.build_root() == tmp_path / "build" and files.data_root() == tmp_path / "data"


def test_atomic_write_text_bytes_and_writer(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "a.txt"
        files.atomic_write(target, "text")
        assert target.read_text() == "text" and target.stat().st_mode & 0o777 == 0o644
        files.atomic_write(target, b"bytes")
        assert target.read_bytes() == b"bytes"
        arrays = tmp_path / "x.npz"
        files.atomic_write(arrays, lambda path: np.savez(path, a=np.arange(3)))
        assert np.load(arrays)["a"].tolist() == [0, 1, 2]

        def broken(path):
            path.write_text("half")
            raise RuntimeError("disk full")
        with pytest.raises(RuntimeError, match="disk full"):
            files.atomic_write(target, broken)
        assert target.read_bytes() == b"bytes"              # the old file is untouched
        assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]  # no leftovers
        assert files.write_if_changed(target, "bytes") is False
        assert files.write_if_changed(target, "new") is True and target.read_text() == "new"
    finally:
        os.umask(old)


def test_file_lock_excludes_other_processes(tmp_path):
    lock = tmp_path / "dir" / ".lock"
    probe = ("import fcntl, sys\n"
             "f = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n"
             "    sys.exit(3)\n")
    with files.file_lock(lock):
        assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 3
    assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 0
    assert fcntl  # the probe above uses the same flock the helper does


# -- waveforms ---------------------------------------------------------------------------------
def test_waves_are_fst_on_both_simulators(simulator, monkeypatch):
    """``RPACCEL_WAVES=1`` makes a run write an FST file beside its results: FST's first
    block is the header block (type 0), where a VCD would start with text."""
    monkeypatch.setenv("RPACCEL_WAVES", "1")
    results = run_bench(generate(PRESETS["tiny"], "pe"), simulator, quiet=True)
    assert results.parent.name == f"{simulator}-waves"
    wave = waves_file(results)
    assert wave.suffix == ".fst" and wave.exists(), sorted(p.name for p in wave.parent.iterdir())
    head = wave.read_bytes()[:16]
    assert head[0] == 0 and not head.startswith(b"$"), head


def test_missing_fst_headers_are_one_clear_line(monkeypatch):
    from rpaccel.gen import simulators
    monkeypatch.setattr(simulators, "_cxx", lambda: "false")   # a "compiler" that fails
    assert simulators.fst_unavailable_reason("verilator") == (
        "FST waveforms on Verilator need the lz4 and zlib development headers: install them, "
        "e.g. `apt-get install liblz4-dev zlib1g-dev`")
    assert simulators.fst_unavailable_reason("icarus") is None
