"""Command-line options shared by the ``rpaccel`` commands, and the checks every command runs
before it starts work.

A command first turns its options into values (:func:`config_from_args`) and checks every
path and tool it will need (:func:`check_output_dir`, :func:`check_output_file`,
:func:`check_build_root`, :func:`check_data_root`, :func:`check_simulator`, and
``synth.check_synth``); each check raises :class:`~rpaccel.hw.errors.RpaccelError` with
one line naming what is wrong and where, so a command a user got wrong fails at once, before
minutes of work, and leaves nothing behind. The checks write nothing: a folder that does not
exist yet is judged by its nearest existing parent, and writability is probed with a
temporary file that is removed at once (a permission check alone is not enough: root may
write into a mode-0555 folder but not into a read-only or immutable one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from rpaccel.hw.config import PRESETS, AccelConfig, load_toml, preset
from rpaccel.hw.errors import RpaccelError

__all__ = ["add_config_options", "config_from_args", "positive_int", "check_output_dir",
           "check_output_file", "check_build_root", "check_data_root", "check_simulator",
           "say", "heartbeat"]


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


def bounded_int(low: int, high: int | None = None, noun: str = "an integer"):
    """An argparse type: a whole number from ``low`` to ``high`` (inclusive; no upper bound
    when None). Its messages name the value (``must be at least 1, not 0``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, not {value}")
        return value
    return parse


#: argparse type: an integer of at least 1.
positive_int = bounded_int(1)
#: argparse type of a memory model's read latency: 0 cycles or more.
cycles_int = bounded_int(0, noun="a number of cycles")
#: argparse type of a memory model's stall probability per cycle, out of 256.
stall_int = bounded_int(0, 255)


def clock_mhz(text: str) -> float:
    """argparse type: a clock target in MHz, 1 to 2000 (the message names the value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MHz, not {text!r}") from None
    if not 1.0 <= value <= 2000.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 2000 MHz, not {text!r}")
    return value


def add_synth_options(p) -> None:
    """--seeds, --clock and --no-cache, shared by synth and synth-report."""
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="run nextpnr with seeds 1..N; Fmax is the minimum, the median and "
                        "every seed are reported too (default: 1)")
    p.add_argument("--clock", type=clock_mhz, default=None, metavar="MHZ",
                   help="clock target for nextpnr (default: the configuration's clock_mhz)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the tools even when a cached result exists (and replace it)")


# -- progress -------------------------------------------------------------------------------
def say(msg: str) -> None:
    """One progress line on stderr (stdout carries only results)."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def heartbeat(what: str, progress=say, every: float = 20.0):
    """Report ``what ...`` now, ``what: still running (N s)`` every ``every`` seconds while
    the body runs, and ``what: done in N s`` after it."""
    started = time.monotonic()
    progress(f"{what} ...")
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            progress(f"{what}: still running ({time.monotonic() - started:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    progress(f"{what}: done in {time.monotonic() - started:.1f} s")


# -- paths ----------------------------------------------------------------------------------
def _existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            return parent
    return Path("/")


def _probe_writable(folder: Path) -> str | None:
    """None if a file can be created in the existing ``folder``, else the reason."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rpaccel-probe-")
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def _check_folder(path: Path, what: str) -> Path:
    """``path`` is a folder that exists and is writable, or can be created: else one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RpaccelError(f"{what} {path} exists and is not a folder")
    base = _existing_parent(path.absolute())
    if not base.is_dir():
        raise RpaccelError(f"{what} {path} cannot be created: {base} is not a folder")
    reason = _probe_writable(base)
    if reason is not None:
        where = "" if base == path.absolute() else f" (in {base})"
        raise RpaccelError(f"{what} {path} is not writable{where}: {reason}")
    return path


def check_output_dir(path: Path, what: str = "output folder") -> Path:
    """The folder a command writes into: it may exist (as a folder) or be created."""
    return _check_folder(path, what)


def check_output_file(path: Path | None, what: str = "output file") -> Path | None:
    """A file a command writes at the end (``--json``): checked before the work, so a result
    is never lost because it cannot be written."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise RpaccelError(f"{what} {path} is a folder")
    if path.exists():
        if not os.access(path, os.W_OK) or _probe_writable(path.absolute().parent):
            raise RpaccelError(f"{what} {path} is not writable")
        return path
    _check_folder(path.absolute().parent, f"{what} {path}: folder")
    return path


def check_build_root() -> Path:
    """``$RPACCEL_BUILD`` (or ``./build``), where generated Verilog and simulator builds go."""
    from .generate import build_root
    name = "RPACCEL_BUILD" if "RPACCEL_BUILD" in os.environ else "build folder"
    return _check_folder(build_root(), f"{name}")


def check_data_root(*, models: bool, need_write: bool = False) -> Path:
    """``$RPACCEL_DATA`` (or ``./data``): writable, or already holding everything the command
    reads (the dataset and, with ``models``, every trained model), so a read-only data root
    that is complete is fine unless the command will write anyway (``need_write``)."""
    from rpaccel.sim.data import FILES, data_root, dataset_dir
    root = data_root()
    name = "RPACCEL_DATA" if "RPACCEL_DATA" in os.environ else "data folder"
    if root.exists() and not root.is_dir():
        raise RpaccelError(f"{name} {root} exists and is not a folder")
    base = _existing_parent(root)
    if not base.is_dir():
        raise RpaccelError(f"{name} {root} cannot be created: {base} is not a folder")
    reason = _probe_writable(base if base != root else root)
    if reason is None:
        return root
    missing = [n for n in FILES if not (dataset_dir(root) / n).is_file()]
    if not missing and models:
        missing = _missing_models(root)
    if need_write:
        raise RpaccelError(f"{name} {root} is not writable: {reason}")
    if missing:
        raise RpaccelError(f"{name} {root} is not writable ({reason}) and lacks "
                           f"{', '.join(missing)}: make it writable or set RPACCEL_DATA to a "
                           f"writable folder")
    return root


def _missing_models(root: Path) -> list[str]:
    from rpaccel.sim.features import SPLIT_SEED
    from rpaccel.sim.models import MODEL_NAMES, SPECS, TRAIN_CONFIGS, artifact_paths, train_hash
    missing = []
    for name in MODEL_NAMES:
        meta = artifact_paths(name, train_hash(SPECS[name], TRAIN_CONFIGS[name], SPLIT_SEED),
                              root)[1]
        if not meta.is_file():
            missing.append(f"the trained {name} model")
    return missing


# -- tools ----------------------------------------------------------------------------------
def check_simulator(sim: str) -> None:
    """``sim`` is installed and usable here (one line saying what is missing otherwise)."""
    from .simulators import unavailable_reason
    reason = unavailable_reason(sim)
    if reason is not None:
        raise RpaccelError(f"simulator {sim}: {reason}")
