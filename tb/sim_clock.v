// Free-running clock generator for long cosimulations (test only): the clock toggles inside
// the simulated design, so no simulator callback into cocotb's GPI (or Python) runs per
// clock edge. Verilator needs `--timing` for the delay; Icarus runs it as it is.
`default_nettype none
module rpaccel_sim_clock #(
    parameter HALF_PERIOD = 5   // in the time unit of the build (1 ns)
) (
    output reg clk
);
    initial clk = 1'b0;
    always #(HALF_PERIOD) clk = ~clk;
endmodule
`default_nettype wire
