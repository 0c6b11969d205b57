"""The host's register accessors, derived from the one register map (``hw/regmap.py``).

:class:`RegisterAccess` turns register and field names into offsets and values and back;
it does no I/O, so every way the host reaches the CSRs (a cocotb AXI4-Lite master in
simulation, ``/dev/mem`` or a driver on a board) wraps the same arithmetic:
:class:`SyncRegisters` over ``read32(offset)`` / ``write32(offset, value)`` callables, and
``tb`` wraps it around ``cocotbext-axi``'s ``AxiLiteMaster`` the same way with ``await``.
"""

from __future__ import annotations

from typing import Callable

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.errors import RpaccelError
from rpaccel.hw.regmap import MAGIC, RegisterMap, register_map

__all__ = ["RegisterError", "RegisterAccess", "SyncRegisters"]


class RegisterError(RpaccelError, ValueError):
    """An unknown register or field, a value that does not fit, or the wrong hardware."""


class RegisterAccess:
    """Offsets, encodings and decodings of the registers of one configuration."""

    def __init__(self, config: AccelConfig):
        self.config = config
        self.map: RegisterMap = register_map(config)

    def register(self, name: str):
        try:
            return self.map[name]
        except KeyError:
            raise RegisterError(f"no register {name!r}; registers: "
                                f"{', '.join(r.name for r in self.map)}") from None

    def offset(self, name: str) -> int:
        return self.register(name).offset

    def encode(self, name: str, value: int | None = None, **fields: int) -> tuple[int, int]:
        """``(offset, 32-bit value)`` writing register ``name``: either the whole ``value``
        or the named ``fields`` (others 0)."""
        reg = self.register(name)
        if value is not None:
            if fields:
                raise RegisterError("give a whole value or fields, not both")
            if not 0 <= value < 1 << 32:
                raise RegisterError(f"{name}: {value!r} does not fit 32 bits")
            return reg.offset, value
        word = 0
        for fname, fvalue in fields.items():
            try:
                f = reg.field(fname)
            except KeyError as err:
                raise RegisterError(str(err).strip("'\"")) from None
            if not 0 <= fvalue < 1 << f.width:
                raise RegisterError(f"{name}.{fname} is {f.width} bits wide; {fvalue!r} does "
                                    f"not fit")
            word |= fvalue << f.lsb
        return reg.offset, word

    def decode(self, name: str, word: int) -> dict[str, int]:
        """The fields of register ``name`` in a 32-bit ``word`` read from it."""
        return {f.name: (word >> f.lsb) & ((1 << f.width) - 1)
                for f in self.register(name).fields}

    def counter_offsets(self, name: str) -> tuple[int, int]:
        """Offsets of a 64-bit counter's ``_LO`` and ``_HI`` words (read ``_LO`` first)."""
        return self.offset(f"{name}_LO"), self.offset(f"{name}_HI")

    @staticmethod
    def ring_start(ring_base: int, ring_log2: int, completion_base: int, region_base: int,
                   region_size: int, **_ignored) -> list[tuple[str, dict[str, int]]]:
        """The writes that give the accelerator a ring (``(register, fields)`` in order):
        ring and completion bases, the allowed region, the ring size, then ``CTRL``
        (``ENABLE``, ``IRQ_ENABLE``). The tail is written afterwards, to start it. Takes a
        :class:`~rpaccel.sim.scheduler.RingState`'s fields (``**vars(ring)``); the others
        (head, tail) are ignored."""
        writes = []
        for name, value in (("RING_BASE", ring_base), ("COMPLETION_BASE", completion_base),
                            ("REGION_BASE", region_base), ("REGION_SIZE", region_size)):
            writes += [(f"{name}_LO", {"VALUE": value & 0xFFFFFFFF}),
                       (f"{name}_HI", {"VALUE": value >> 32})]
        return writes + [("RING_ENTRIES", {"LOG2": ring_log2}),
                         ("CTRL", {"ENABLE": 1, "IRQ_ENABLE": 1})]

    def check_identity(self, magic: int, hash_lo: int, hash_hi: int) -> None:
        """Raise unless ``ID``, ``CONFIG_HASH_LO`` and ``_HI`` read back as this build's."""
        if magic != MAGIC:
            raise RegisterError(f"ID reads {magic:#010x}, not RPAccel's {MAGIC:#010x}")
        got = f"{(hash_hi << 32) | hash_lo:012x}"
        if got != self.config.hash:
            raise RegisterError(f"the hardware was built for configuration {got}, the host "
                                f"for {self.config.hash}")


class SyncRegisters:
    """Named register access over a synchronous 32-bit bus."""

    def __init__(self, config: AccelConfig, read32: Callable[[int], int],
                 write32: Callable[[int, int], None]):
        self.access = RegisterAccess(config)
        self._read, self._write = read32, write32

    def read(self, name: str) -> dict[str, int]:
        return self.access.decode(name, self._read(self.access.offset(name)))

    def write(self, name: str, value: int | None = None, **fields: int) -> None:
        self._write(*self.access.encode(name, value, **fields))

    def counter(self, name: str) -> int:
        lo, hi = self.access.counter_offsets(name)
        low = self._read(lo)
        return (self._read(hi) << 32) | low

    def check_identity(self) -> None:
        a = self.access
        self.access.check_identity(self._read(a.offset("ID")),
                                   self._read(a.offset("CONFIG_HASH_LO")),
                                   self._read(a.offset("CONFIG_HASH_HI")))
