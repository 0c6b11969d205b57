"""Command-line options shared by the ``rpaccel`` commands: choosing a configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from rpaccel.hw.config import PRESETS, AccelConfig, load_toml, preset
from rpaccel.hw.errors import RpaccelError

__all__ = ["add_config_options", "config_from_args"]


def add_config_options(parser: argparse.ArgumentParser, *, default: str | None = "default"):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", metavar="NAME", default=None,
                       help=f"named configuration: {', '.join(PRESETS)}"
                            + (f" (default: {default})" if default else ""))
    group.add_argument("--config", metavar="FILE", type=Path,
                       help="configuration TOML file (flat key = value; optional preset = NAME)")
    parser.set_defaults(_default_preset=default)


def config_from_args(args) -> tuple[AccelConfig, str]:
    """The configuration chosen on the command line and a name for it."""
    if args.config is not None:
        return load_toml(args.config), args.config.stem
    name = args.preset or args._default_preset
    if name is None:
        raise RpaccelError("choose a configuration with --preset NAME or --config FILE")
    return preset(name), name
