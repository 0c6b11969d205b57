"""Testbenches (``rpaccel.tb``), above :mod:`rpaccel.hw` and :mod:`rpaccel.sim`.

cocotb benches ``test_<unit>.py`` and benchmarks ``bench_*.py`` (run through
:func:`rpaccel.gen.simulators.run_cocotb`), their shared setup (:mod:`~rpaccel.tb.common`),
stream drivers and sinks for cocotb (:mod:`~rpaccel.tb.cocotb_streams`) and for Amaranth's
simulator (:mod:`~rpaccel.tb.amaranth_sim`), host models of units, test harnesses, and one
pure-Python model per unit (:mod:`rpaccel.tb.unit_models`) shared by both simulators' tests.
"""
