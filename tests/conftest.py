"""Shared pytest fixtures: simulator selection (with a clear skip reason) and presets."""

import pytest

from rpaccel.gen.simulators import SIMULATORS, unavailable_reason


def pytest_collection_modifyitems(items):
    """Tests marked ``uses_data`` (the modules that need the dataset and the trained models)
    run first, the others keep their order after them.

    On a fresh clone the first such test downloads MovieLens-100K and trains the three
    models (about 4 minutes); a second worker reaching one meanwhile waits on the models'
    lock. ``--dist worksteal`` hands each of the two workers one half of this list, and the
    ``uses_data`` tests are under half of it, so one worker trains while the other runs
    model-free tests instead of waiting (the wait was 253 s of a CI run).
    """
    items.sort(key=lambda item: item.get_closest_marker("uses_data") is None)


def simulator_params():
    """Both RTL simulators as parameters; one that is not installed is skipped, saying why."""
    params = []
    for sim in SIMULATORS:
        reason = unavailable_reason(sim)
        marks = [pytest.mark.cocotb]
        if reason:
            marks.append(pytest.mark.skip(reason=f"{sim} unavailable: {reason}"))
        params.append(pytest.param(sim, marks=marks, id=sim))
    return params


def simulator_preset_cases(presets=("tiny", "default"), slow=(("icarus", "default"),)):
    """(simulator, preset) parameters for a unit's bench on both simulators; the pairs in
    ``slow`` are slow tests (`make test-all`). By default that is the `default` preset on
    Icarus, which is several times slower than Verilator: the fast suite still runs the same
    bench on `default` on Verilator and on `tiny` on Icarus."""
    cases = []
    for sim in SIMULATORS:
        reason = unavailable_reason(sim)
        for preset in presets:
            marks = [pytest.mark.cocotb]
            if reason:
                marks.append(pytest.mark.skip(reason=f"{sim} unavailable: {reason}"))
            if (sim, preset) in slow:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(sim, preset, marks=marks, id=f"{sim}-{preset}"))
    return cases


@pytest.fixture(params=simulator_params())
def simulator(request):
    return request.param
