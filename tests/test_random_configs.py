"""Any valid configuration works, not only the presets.

On ``small`` and on seeded random valid configurations (:mod:`rpaccel.tb.random_configs`):
every unit generates deterministically and lints clean, and the top-k and systolic-array
cocotb benches pass on Verilator. ``make test`` runs the seeds in :data:`FAST_SEEDS`; the
slow variant (``make test-all``) more seeds, Icarus too, and the compute core's bench.

The seed is in every test id (``[seed=3]``) and the failure message prints the
configuration as TOML, so a failure can be replayed: ``RPACCEL_SEEDS=3 pytest
tests/test_random_configs.py`` (any comma-separated list of seeds replaces the defaults).
``RPACCEL_CONFIG=my.toml`` adds a configuration file to the configurations tested (and
``RPACCEL_CONFIG=my.toml make test`` runs these checks on it with the rest of the suite).
"""

from __future__ import annotations

import os

import pytest

from rpaccel.gen.generate import convert, generate
from rpaccel.gen.simulators import lint, run_cocotb, unavailable_reason
from rpaccel.gen.units import UNITS
from rpaccel.hw.config import PRESETS, ConfigError, load_toml
from rpaccel.tb.random_configs import random_config

#: Seeds of the fast suite and, besides them, of the slow one.
FAST_SEEDS = (1, 2)
SLOW_SEEDS = (3, 4, 5, 6, 7, 8)
#: The cocotb bench of each unit the smoke tests run.
BENCHES = {"topk": "rpaccel.tb.test_topk", "systolic_array": "rpaccel.tb.test_systolic",
           "compute_core": "rpaccel.tb.test_compute_core"}


def seeds(default):
    chosen = os.environ.get("RPACCEL_SEEDS")
    return tuple(int(s) for s in chosen.split(",")) if chosen else default


def configurations(default_seeds, with_small=True):
    """(test id, configuration) of ``small``, the seeds and ``$RPACCEL_CONFIG``."""
    found = [("small", PRESETS["small"])] if with_small else []
    found += [(f"seed={seed}", random_config(seed)) for seed in seeds(default_seeds)]
    if os.environ.get("RPACCEL_CONFIG"):
        path = os.environ["RPACCEL_CONFIG"]
        found.append((f"file={os.path.basename(path)}", load_toml(path)))
    return found


#: Edge values lint used to reject (zero-width row indices, constant comparisons).
EDGES = [("edge1", PRESETS["tiny"].replace(sub_batch=1, topk_max=1)),
         ("edge31", PRESETS["small"].replace(sub_batch=31, topk_max=31))]
FAST = configurations(FAST_SEEDS)
SLOW = configurations(SLOW_SEEDS, with_small=False)


def params(configs, *marks):
    return [pytest.param(config, id=name, marks=marks) for name, config in configs]


def replay(config) -> str:
    return f"configuration {config.hash}:\n{config.to_toml()}"


def needs(sim):
    reason = unavailable_reason(sim)
    return pytest.mark.skipif(reason is not None, reason=f"{sim} unavailable: {reason}")


#: The hardware units lint checks: every unit but the test-only harnesses (some of them
#: instantiate Verilog testbench models that live beside the benches).
LINTED = [name for name in UNITS if not name.endswith("_harness")]


#: Defects these tests found and that are not fixed yet: (unit, predicate on the
#: configuration, what is wrong). Expected failures, strict, so the test fails as soon as
#: one is fixed and its entry must go. (Empty: interaction_lanes = 1 and
#: dynamic_cache_sets = 1, found by seeds 1 and 3, are fixed.)
KNOWN: list = []


def lint_params(configs):
    cases = []
    for name, config in configs:
        for unit in LINTED:
            marks = [pytest.mark.xfail(reason=why, strict=True)
                     for known, applies, why in KNOWN if known == unit and applies(config)]
            cases.append(pytest.param(config, unit, id=f"{name}-{unit}", marks=marks))
    return cases


def check_lint(config, unit):
    try:
        out = generate(config, unit)
    except ConfigError as err:
        # A unit may need more than the configuration's general rules (e.g. the stage
        # runner's act_buffers >= 3); it says so at construction, as the contract wants.
        pytest.skip(f"{unit} does not take this configuration: {err}")
    proc = lint(out.verilog)
    assert proc.returncode == 0, f"{unit}: lint failed on {replay(config)}\n" \
                                 f"{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("config, unit", lint_params(FAST + EDGES))
def test_every_unit_lints_clean(config, unit):
    check_lint(config, unit)


@pytest.mark.slow
@pytest.mark.parametrize("config, unit", lint_params(SLOW))
def test_every_unit_lints_clean_more_seeds(config, unit):
    check_lint(config, unit)


@pytest.mark.parametrize("config", params(FAST[1:2]))
def test_generation_is_deterministic(config):
    for unit in ("systolic_array", "topk"):
        assert convert(config, unit) == convert(config, unit), replay(config)


def smoke(config, unit, sim, module):
    try:
        run_cocotb(generate(config, unit), sim, module, quiet=True)
    except Exception as err:
        raise AssertionError(f"{module} on {sim} failed for {replay(config)}{err}") from None


@needs("verilator")
@pytest.mark.cocotb
@pytest.mark.parametrize("unit", ["topk", "systolic_array"])
@pytest.mark.parametrize("config", params(FAST))
def test_cocotb_smoke_verilator(config, unit):
    smoke(config, unit, "verilator", BENCHES[unit])


def slow_cases():
    """Every (configuration, unit, simulator) not already in the fast smoke test."""
    cases = []
    for name, config in FAST + SLOW:
        for unit in BENCHES:
            for sim in ("verilator", "icarus"):
                if (name, sim) in {(n, "verilator") for n, _ in FAST} and unit != "compute_core":
                    continue
                cases.append(pytest.param(config, unit, sim, id=f"{name}-{unit}-{sim}",
                                          marks=needs(sim)))
    return cases


@pytest.mark.slow
@pytest.mark.cocotb
@pytest.mark.parametrize("config, unit, sim", slow_cases())
def test_cocotb_more_seeds_both_simulators(config, unit, sim):
    smoke(config, unit, sim, BENCHES[unit])


def test_stream_driver_rejects_values_that_do_not_fit():
    """A bench whose stimulus ignores the configuration fails loudly: the cocotb driver
    refuses a value its field cannot hold instead of truncating it."""
    from rpaccel.hw.systolic import act_layout
    from rpaccel.tb.cocotb_streams import check_fits
    narrow = PRESETS["tiny"].replace(operand_width=6)
    check_fits(act_layout(narrow), {"data": [-32, 31, 0, 1], "last": 1}, "acts__0")
    for beat, message in [
            ({"data": [-128, 0, 0, 0], "last": 0},
             r"acts__0\.data\[0\] = -128 does not fit signed\(6\) \(-32\.\.31\)"),
            ({"data": [0, 0, 0, 32], "last": 0}, r"acts__0\.data\[3\] = 32 does not fit"),
            ({"data": [0] * 4, "last": 2}, r"acts__0\.last = 2 does not fit unsigned\(1\)"),
            ({"data": [0] * 5, "last": 0}, r"acts__0\.data: 5 elements for 4 lanes"),
            ({"data": [0] * 4, "lst": 0}, r"acts__0: no field 'lst'")]:
        with pytest.raises(ValueError, match=message):
            check_fits(act_layout(narrow), beat, "acts__0")
    with pytest.raises(ValueError, match=r"scores = 256 does not fit unsigned\(8\)"):
        check_fits(8, 256, "scores")


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["systolic_array", "compute_core"])
def test_paper_preset_generates_and_lints(unit):
    """The 128 x 128 preset: every partition, PE row and PE is one module (hw/shared.py),
    so this takes seconds to a minute instead of many minutes and gigabytes."""
    check_lint(PRESETS["paper"], unit)
