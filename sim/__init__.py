"""The software layer (``rpaccel.sim``), above :mod:`rpaccel.hw`.

The golden model of multi-stage ranking and everything it stands on: the integer numerics
(:mod:`~rpaccel.sim.numerics`, the executable form of docs/numerics.md), MovieLens-100K data,
split and features, the ranking models and their integer versions, cascades
(:mod:`~rpaccel.sim.golden`), quality metrics and report, and the host side of the
hardware (memory images and commands of the MLP engine, :mod:`~rpaccel.sim.mlp_program`).
It may import :mod:`rpaccel.hw` (layouts, configuration), never the testbenches or the CLI.
"""
