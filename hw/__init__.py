"""The hardware layer, bottom of the architecture (``rpaccel.hw``).

The one configuration object (:mod:`~rpaccel.hw.config`), the error type every layer
raises (:mod:`~rpaccel.hw.errors`), the engine memory geometry (:mod:`~rpaccel.hw.geometry`)
and the Amaranth components of RPAccel: processing element, partitioned systolic array,
vector unit, feature interaction, MLP layer engine, compute core, top-k filter and stream
building blocks. Modules here import only Amaranth, the standard library and each other;
``tests/test_layering.py`` enforces it (docs/architecture.md, "Layers").
"""
