"""Shared pytest fixtures: simulator selection (with a clear skip reason) and presets."""

import pytest

from rpaccel.gen.simulators import SIMULATORS, unavailable_reason


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


@pytest.fixture(params=simulator_params())
def simulator(request):
    return request.param
