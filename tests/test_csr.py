"""The register map (hw/regmap.py), its CSR block (hw/csr.py), the host accessors
(sim/registers.py) and the exports (gen/regmap_export.py): Markdown, C header, SystemRDL."""

import subprocess

import pytest

from rpaccel.gen.generate import generate
from rpaccel.gen.regmap_export import c_header, markdown, systemrdl, write_exports
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.hw.config import PRESETS
from rpaccel.hw.csr import OKAY, SLVERR, CSRBlock
from rpaccel.hw.regmap import MAGIC, Field, Register, RegisterMap, register_map
from rpaccel.sim.registers import RegisterAccess, RegisterError, SyncRegisters
from rpaccel.tb.amaranth_axi import axil_read, axil_write
from rpaccel.tb.amaranth_sim import simulate

TINY, DEFAULT = PRESETS["tiny"], PRESETS["default"]


def test_map_is_consistent_and_config_dependent():
    tiny, default = register_map(TINY), register_map(DEFAULT)
    assert tiny.config_hash == TINY.hash and default.config_hash == DEFAULT.hash
    assert tiny["ID"].reset == MAGIC
    assert int(DEFAULT.hash, 16) == (default["CONFIG_HASH_HI"].reset << 32) | \
        default["CONFIG_HASH_LO"].reset
    assert default["CAPS"].field("PARTITIONS").reset == DEFAULT.partitions
    assert "ENGINE1_BUSY_LO" in {r.name for r in default}
    assert len([r for r in default if r.name.startswith("DYNAMIC_WAYS")]) == DEFAULT.max_stages
    with pytest.raises(ValueError, match="share offset 0x0"):
        RegisterMap("x", (Register("A", 0, "", ()), Register("B", 0, "", ())))
    with pytest.raises(ValueError, match="overlaps"):
        Register("A", 0, "", (Field("X", 0, 4, "rw", ""), Field("Y", 3, 2, "rw", "")))
    with pytest.raises(ValueError, match="access must be one of"):
        Field("X", 0, 1, "rwx", "")


def test_the_ring_start_sequence_writes_every_base_half_then_enables():
    """The writes both hosts (cocotb bench, Amaranth test) issue to start a ring: 64-bit
    bases and region split into _LO/_HI, the ring size, then CTRL last; every one encodes."""
    from rpaccel.sim.scheduler import RingState
    acc = RegisterAccess(TINY)
    ring = RingState(ring_base=0x1_2345_6780, ring_log2=4, completion_base=0x2000,
                     region_base=0x1000, region_size=0x10_0000, head=3, tail=9)
    writes = acc.ring_start(**vars(ring))
    assert writes[0] == ("RING_BASE_LO", {"VALUE": 0x2345_6780})
    assert writes[1] == ("RING_BASE_HI", {"VALUE": 1})
    assert ("REGION_SIZE_LO", {"VALUE": 0x10_0000}) in writes
    assert writes[-2:] == [("RING_ENTRIES", {"LOG2": 4}), ("CTRL", {"ENABLE": 1, "IRQ_ENABLE": 1})]
    assert len(writes) == 10 and not any(name.startswith("RING_TAIL") for name, _ in writes)
    for name, fields in writes:
        acc.encode(name, **fields)


def test_accessors_encode_and_decode_by_name():
    acc = RegisterAccess(TINY)
    assert acc.encode("CTRL", ENABLE=1, IRQ_ENABLE=1) == (0x14, 0b11)
    assert acc.decode("ERROR", 0x00_0102_05) == {"CODE": 5, "INDEX": 0x0102}
    with pytest.raises(RegisterError, match="no register 'CTLR'"):
        acc.encode("CTLR", ENABLE=1)
    with pytest.raises(RegisterError, match="no field 'ENABEL'"):
        acc.encode("CTRL", ENABEL=1)
    with pytest.raises(RegisterError, match="5 bits wide; 40 does not fit"):
        acc.encode("RING_ENTRIES", LOG2=40)
    with pytest.raises(RegisterError, match="built for configuration"):
        acc.check_identity(MAGIC, 0, 0)
    with pytest.raises(RegisterError, match="not RPAccel"):
        acc.check_identity(0, 0, 0)


def _axil_transactions(dut, ops, results):
    """A testbench running ``ops`` on the AXI4-Lite port: ("w", offset, value, strb) or
    ("r", offset); ``results`` gets (resp, data) per op (data None for a write)."""
    async def bench(ctx):
        for op in ops:
            if op[0] == "w":
                results.append((await axil_write(ctx, dut.s_axil, op[1], op[2], op[3]), None))
            else:
                results.append(await axil_read(ctx, dut.s_axil, op[1]))
    return bench


def test_csr_block_in_the_amaranth_simulator():
    dut = CSRBlock(TINY)
    acc = RegisterAccess(TINY)
    o = acc.offset
    results = []
    ops = [("r", o("ID")), ("w", o("RING_BASE_LO"), 0x11223344, 0xF),
           ("w", o("RING_BASE_LO"), 0xAABBCCDD, 0b0110), ("r", o("RING_BASE_LO")),
           ("r", o("DYNAMIC_WAYS0")), ("r", 0x0FC), ("w", 0x0FC, 0xFFFFFFFF, 0xF),
           ("w", o("CTRL"), 0b101, 0xF), ("r", o("CTRL"))]
    pulse = []

    async def watch(ctx):
        async for _, _, p in ctx.tick().sample(dut.regs.CTRL__CLEAR_COUNTERS):
            pulse.append(p)

    simulate(dut, [_axil_transactions(dut, ops, results)], background=[watch],
             max_cycles=400, name="csr")
    assert results[0] == (OKAY, MAGIC)
    assert results[3] == (OKAY, 0x11BBCC44)
    assert results[4] == (OKAY, (1 << TINY.dynamic_cache_ways) - 1)
    assert results[5] == (SLVERR, 0) and results[6][0] == SLVERR
    assert results[8] == (OKAY, 0b001)     # CLEAR_COUNTERS reads 0
    assert sum(pulse) == 1                 # ... and pulsed once


def test_sync_registers_over_a_python_bus():
    """The sync accessors over a dict-backed bus (the arithmetic a board driver uses)."""
    acc = RegisterAccess(DEFAULT)
    words = {r.offset: r.reset for r in acc.map}
    regs = SyncRegisters(DEFAULT, words.__getitem__, words.__setitem__)
    regs.check_identity()
    regs.write("RING_ENTRIES", LOG2=6)
    assert regs.read("RING_ENTRIES") == {"LOG2": 6}
    words[acc.offset("CYCLES_LO")], words[acc.offset("CYCLES_HI")] = 5, 2
    assert regs.counter("CYCLES") == (2 << 32) | 5


def test_exports_are_stamped_and_the_rdl_compiles(tmp_path):
    from systemrdl import RDLCompiler
    paths = write_exports(DEFAULT, tmp_path)
    regmap = register_map(DEFAULT)
    for path in paths:
        assert DEFAULT.hash in path.read_text()
    compiler = RDLCompiler()
    compiler.compile_file(str(paths[2]))
    root = compiler.elaborate()
    rdl = {r.inst_name: r.absolute_address for r in root.top.registers()}
    assert rdl == {r.name: r.offset for r in regmap}
    assert "| 0x014 | CTRL | ENABLE |" in markdown(regmap)
    assert "#define RPACCEL_CTRL_ENABLE_MASK 0x00000001u" in c_header(regmap)
    # the header is valid C
    c = tmp_path / "check.c"
    c.write_text(f'#include "{paths[1].name}"\nint main(void) {{ return '
                 f'RPACCEL_CTRL_OFFSET == 0x14u ? 0 : 1; }}\n')
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(tmp_path / "check"), str(c)],
                   check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0
    assert systemrdl(regmap) == paths[2].read_text()


def test_lint_clean():
    proc = lint(generate(TINY, "csr").verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_csr(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "csr"), simulator, "rpaccel.tb.test_csr")


def test_the_register_table_in_the_docs_is_current():
    """docs/registers.md is `rpaccel regmap --preset default`'s Markdown, regenerated when
    the register map or the default configuration changes."""
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "registers.md"
    assert doc.read_text() == markdown(register_map(DEFAULT)), \
        "docs/registers.md is stale: rpaccel regmap --preset default --out docs/ (then " \
        "rename rpaccel_regs.md)"
