"""The flow layer (``rpaccel.gen``), top of the architecture; it may import every other.

Verilog generation with its manifest (:mod:`~rpaccel.gen.generate`), the unit registry
(:mod:`~rpaccel.gen.units`), simulator setup and cocotb runs
(:mod:`~rpaccel.gen.simulators`), synthesis (:mod:`~rpaccel.gen.synth`), benchmarks, the
``rpaccel`` command line (:mod:`~rpaccel.gen.cli`) and ``make demo``
(:mod:`~rpaccel.gen.demo`).
"""
