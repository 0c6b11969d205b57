"""One pure-Python model per hardware unit: stimulus generators, expected beats, scoreboard.

``tb/unit_models/<unit>.py`` is the single description of what a unit's streams carry and
what it must answer; both the Amaranth-simulator tests (``tests/test_<unit>.py``) and the
cocotb benches (``tb/test_<unit>.py``) import it, so the two never drift apart. A model
imports neither cocotb nor the Amaranth simulator: only numpy, the unit's payload layouts
(``rpaccel.hw``) and the golden numerics (``rpaccel.sim.numerics``).
"""
