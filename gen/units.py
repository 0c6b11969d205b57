"""The registry of generatable units: a name, a one-line description and a factory.

``rpaccel gen --unit NAME`` and ``rpaccel synth --unit NAME`` take these names; every unit
is built from the one :class:`~rpaccel.gen.config.AccelConfig`. Factories import their
hardware module lazily so that the CLI starts quickly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .config import AccelConfig
from .errors import RpaccelError

__all__ = ["Unit", "UNITS", "get_unit", "UnknownUnit"]


class UnknownUnit(RpaccelError, LookupError):
    pass


@dataclass(frozen=True)
class Unit:
    name: str
    description: str
    #: "module:Class"; the class takes the config as its only argument.
    target: str

    def build(self, config: AccelConfig):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)(config)


UNITS: dict[str, Unit] = {unit.name: unit for unit in [
    Unit("pe", "processing element: int8 x int8 -> int32 weight-stationary MAC",
         "rpaccel.hw.pe:ProcessingElement"),
]}


def register(unit: Unit) -> None:
    UNITS[unit.name] = unit


def get_unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise UnknownUnit(f"unknown unit {name!r}; known units: {', '.join(UNITS)}") from None
