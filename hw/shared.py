"""Verilog generation of repeated hardware: emit a module once, instantiate it many times.

Amaranth elaborates every submodule instance separately and writes each as its own Verilog
module, so a 128 x 128 systolic array would be 16,384 copies of the PE's module (about
9 minutes and over 4 GB to generate). Units whose sub-blocks repeat identically (a row of
PEs, a partition, an MLP engine) instead call :func:`add_shared`: when the design is being
converted to Verilog through :func:`convert`, the sub-block becomes an ``Instance`` of one
module generated once; in every other elaboration (Amaranth's simulator, ``Fragment.get``)
it is an ordinary submodule. Both build the same netlist: only the hierarchy of the Verilog
differs, and the shared module's Verilog is exactly what Amaranth writes for the block.

The platform object handed to ``elaborate`` carries the request (:class:`SharedModules`); it
has none of the platform hooks (``get_memory``, ...), so every other component elaborates as
with ``platform = None``. Output is deterministic: shared modules are appended after the top
module in the order they are first requested, each named ``<top>__<key>``.
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, ResetSignal, Value
from amaranth.back import verilog
from amaranth.lib import wiring

__all__ = ["SharedModules", "add_shared", "convert", "index_bits", "index_range", "times_const"]


def index_range(n: int) -> range:
    """The shape of an index into ``n`` things, one bit wide at least: for ``n == 1``
    Amaranth's ``range(1)`` is zero bits wide, which its Verilog writes as ``[-1:0]`` (a
    lint error under Verilator ``-Wall``); the unused value costs nothing."""
    return range(max(2, n))


def index_bits(n: int) -> int:
    """Bits of an index into ``n`` things, one at least: ``len(Signal(index_range(n)))``,
    for a field width in a layout or a descriptor."""
    return max(1, (n - 1).bit_length())


def times_const(value: Value, factor: int) -> Value:
    """``value * factor`` for a constant ``factor >= 0`` as a sum of shifted copies of
    ``value``, one per set bit of ``factor``. Yosys maps a ``$mul`` by a constant to a
    MULT18X18D on ECP5 (3.9 ns through the DSP, and a DSP taken from the MACs); a shift is
    wiring and a few set bits are a short adder chain."""
    if factor < 0:
        raise ValueError(f"factor must be at least 0, not {factor!r}")
    terms = [value << bit for bit in range(factor.bit_length()) if factor >> bit & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class SharedModules:
    """The ``platform`` of a Verilog conversion that shares repeated modules (see module doc)."""

    def __init__(self, prefix: str, multiplier: str = "portable"):
        self.prefix = prefix
        #: the PEs' multiplier (``hw/pe.py``, ``MULTIPLIERS``)
        self.multiplier = multiplier
        self._modules: dict[str, wiring.Component] = {}
        self._order: list[str] = []

    def module_name(self, key: str) -> str:
        return f"{self.prefix}__{key}"

    def request(self, key: str, component: wiring.Component) -> str:
        """Register ``component`` as the module for ``key`` (once); its module name."""
        known = self._modules.get(key)
        if known is None:
            self._modules[key] = component
            self._order.append(key)
        elif known.signature != component.signature or type(known) is not type(component):
            raise ValueError(f"shared module {key!r} requested for two different blocks")
        return self.module_name(key)

    def pending(self):
        """(module name, component) of every module requested so far, in order; modules
        requested while iterating are included."""
        done = 0
        while done < len(self._order):
            key = self._order[done]
            yield self.module_name(key), self._modules[key]
            done += 1


def add_shared(m, platform, name: str, key: str, component: wiring.Component):
    """Add ``component`` to ``m`` as submodule ``name``; when ``platform`` is a
    :class:`SharedModules`, as an instance of the shared module ``key`` instead.

    ``key`` must identify the hardware completely (the same key, the same Verilog): use the
    block's kind; every block of one design is built from the same configuration. The parent
    connects to ``component``'s ports in both cases. Returns ``component``.
    """
    if not isinstance(platform, SharedModules):
        m.submodules[name] = component
        return component
    module = platform.request(key, component)
    component._MustUse__used = True  # stands for the instance's ports; elaborated once, apart
    ports = {"i_clk": ClockSignal("sync"), "i_rst": ResetSignal("sync")}
    for path, member, value in component.signature.flatten(component):
        port = "__".join(str(part) for part in path)
        prefix = "i_" if member.flow == wiring.In else "o_"
        ports[prefix + port] = Value.cast(value)
    m.submodules[name] = Instance(module, **ports)
    return component


def convert(component, name: str, multiplier: str = "portable", **kwargs) -> str:
    """Verilog of ``component`` as module ``name``, with repeated blocks shared: the top
    module first, then each shared module once. ``multiplier`` is how every PE writes its
    multiplier (``hw/pe.py``: ``"ecp5"`` for the DSP primitive)."""
    shared = SharedModules(name, multiplier)
    texts = [verilog.convert(component, name=name, platform=shared, **kwargs)]
    for module, block in shared.pending():
        texts.append(verilog.convert(block, name=module, platform=shared, **kwargs))
    return "".join(texts)
