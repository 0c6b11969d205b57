"""The unit registry (gen/units.py) and its cocotb benches: every bench holds exactly the
number of cocotb tests the registry names, none skipped, and a full run that ran another
number fails (rpaccel.gen.simulators.run_bench)."""

from dataclasses import replace
from pathlib import Path

import pytest

from rpaccel.gen import units
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import SimulationFailed, results_summary, run_bench
from rpaccel.gen.units import UNITS, Unit, benches, declared_cocotb_tests
from rpaccel.hw.config import PRESETS

TB = Path(__file__).resolve().parents[1] / "tb"
#: Bench modules whose registry line their owners are adding (topk, interaction, embedding:
#: the embedding bench reads its manifest at import, so it cannot be counted without a
#: simulator yet); a new bench that is neither registered nor listed here fails the suite.
PENDING = {"rpaccel.tb.test_topk", "rpaccel.tb.test_interaction", "rpaccel.tb.test_embedding"}


@pytest.mark.parametrize("bench", sorted(benches()))
def test_bench_declares_the_registered_number_of_cocotb_tests(bench):
    unit = benches()[bench]
    declared = declared_cocotb_tests(bench)
    assert len(declared) == unit.cocotb_tests, (
        f"{bench} declares {len(declared)} cocotb tests "
        f"({', '.join(name for name, _ in declared)}); gen/units.py says "
        f"{unit.cocotb_tests} for unit {unit.name!r}")
    assert not [name for name, skip in declared if skip], f"{bench} skips a cocotb test"


def test_every_bench_module_is_registered():
    modules = {f"rpaccel.tb.{path.stem}" for path in TB.glob("test_*.py")}
    unregistered = modules - set(benches()) - PENDING
    assert not unregistered, f"cocotb benches missing from gen/units.py: {sorted(unregistered)}"
    for bench, unit in benches().items():
        assert (TB / f"{bench.rsplit('.', 1)[-1]}.py").exists(), f"{unit.name}: no {bench}"


def test_a_bench_goes_with_its_test_count():
    with pytest.raises(ValueError, match="unit 'x': bench and cocotb_tests go together"):
        Unit("x", "a unit", "m:C", bench="rpaccel.tb.test_x")
    with pytest.raises(ValueError, match="unit 'x': cocotb_tests must be at least 1, not 0"):
        Unit("x", "a unit", "m:C", bench="rpaccel.tb.test_x", cocotb_tests=0)
    assert UNITS["pe"].bench == "rpaccel.tb.test_pe" and UNITS["mlp_engine"].bench is None


def test_results_summary_counts_failures_and_skips(tmp_path):
    xml = tmp_path / "r.results.xml"
    xml.write_text('<testsuites><testsuite name="all" tests="4">'
                   '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase>'
                   '<testcase name="c"><skipped/></testcase>'
                   '<testcase name="d"><error message="y"/></testcase>'
                   '</testsuite></testsuites>')
    assert results_summary(xml) == {"tests": 4, "failed": 2, "skipped": 1,
                                    "names": ["a", "b", "c", "d"]}


def test_run_bench_fails_when_the_count_differs(monkeypatch):
    """A full run of a bench whose registered count is not what ran fails, naming the tests
    that did run (the PE bench on Icarus: one test, registered here as two)."""
    from rpaccel.gen.simulators import unavailable_reason
    if unavailable_reason("icarus"):
        pytest.skip(f"icarus unavailable: {unavailable_reason('icarus')}")
    monkeypatch.setitem(units.UNITS, "pe", replace(UNITS["pe"], cocotb_tests=2))
    with pytest.raises(SimulationFailed, match=r"rpaccel.tb.test_pe ran 1 cocotb tests \(0 "
                                               r"skipped\) on icarus; the unit registry expects "
                                               r"2, none skipped: random_mac_and_weight_loads"):
        run_bench(generate(PRESETS["tiny"], "pe"), "icarus", quiet=True)
    with pytest.raises(SimulationFailed, match="unit 'mlp_engine' has no cocotb bench"):
        run_bench(generate(PRESETS["tiny"], "mlp_engine"), "icarus")
