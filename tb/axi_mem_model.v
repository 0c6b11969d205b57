// AXI4 memory model for long cosimulations (test only): a subordinate with INCR read bursts,
// several reads outstanding (answered in order), single-outstanding write bursts, a
// configurable read latency and random backpressure, and an error-address window.
//
// Contents: a pulse on `load` reads the hex file named by the plusarg +AXI_MEM_FILE=<path>
// (default "axi_mem.hex", relative to the simulator's working directory) with $readmemh:
// one DATA_WIDTH-bit word per line, "@<word index>" lines to jump. Words not in the file
// keep their contents (0 after the start of simulation). A pulse on `dump` writes the
// words dump_lo..dump_hi (word indices, inclusive) with $writememh to the file named by
// +AXI_MEM_DUMP=<path> (default "axi_mem_dump.hex"), so a bench reads results back
// without walking the array through the simulator's interface.
//
// Timing: an accepted AR (arready is high while fewer than OUTSTANDING bursts are queued and
// the random AR stall is off) becomes eligible `latency` cycles after its handshake; bursts
// are answered in order, one beat per cycle unless the random R stall holds rvalid low.
// Stalls: each cycle arready (rvalid) is dropped with probability stall_ar/256
// (stall_r/256), from a xorshift32 generator seeded by `seed` at reset.
// Errors: a read burst whose start address is in [err_lo, err_hi) answers SLVERR on every
// beat (data 0); one whose word index is beyond WORDS answers DECERR.
// Writes: AW, then its W beats (wstrb honoured, INCR), then B (OKAY); one burst at a time.
`default_nettype none
module rpaccel_axi_mem #(
    parameter ADDR_WIDTH = 32,
    parameter DATA_WIDTH = 64,
    parameter ID_WIDTH = 1,
    parameter WORDS = 65536,
    parameter OUTSTANDING = 16
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    load,
    input  wire                    dump,
    input  wire [31:0]             dump_lo,
    input  wire [31:0]             dump_hi,
    input  wire [15:0]             latency,
    input  wire [7:0]              stall_ar,
    input  wire [7:0]              stall_r,
    input  wire [31:0]             seed,
    input  wire [ADDR_WIDTH-1:0]   err_lo,
    input  wire [ADDR_WIDTH-1:0]   err_hi,
    // read address / data
    input  wire [ID_WIDTH-1:0]     arid,
    input  wire [ADDR_WIDTH-1:0]   araddr,
    input  wire [7:0]              arlen,
    input  wire [2:0]              arsize,
    input  wire [1:0]              arburst,
    input  wire                    arvalid,
    output wire                    arready,
    output wire [ID_WIDTH-1:0]     rid,
    output wire [DATA_WIDTH-1:0]   rdata,
    output wire [1:0]              rresp,
    output wire                    rlast,
    output wire                    rvalid,
    input  wire                    rready,
    // write address / data / response
    input  wire [ID_WIDTH-1:0]     awid,
    input  wire [ADDR_WIDTH-1:0]   awaddr,
    input  wire [7:0]              awlen,
    input  wire [2:0]              awsize,
    input  wire [1:0]              awburst,
    input  wire                    awvalid,
    output wire                    awready,
    input  wire [DATA_WIDTH-1:0]   wdata,
    input  wire [DATA_WIDTH/8-1:0] wstrb,
    input  wire                    wlast,
    input  wire                    wvalid,
    output wire                    wready,
    output wire [ID_WIDTH-1:0]     bid,
    output wire [1:0]              bresp,
    output wire                    bvalid,
    input  wire                    bready
);
    localparam BYTES = DATA_WIDTH / 8;
    localparam SHIFT = $clog2(BYTES);
    localparam QBITS = $clog2(OUTSTANDING) > 0 ? $clog2(OUTSTANDING) : 1;

    reg [DATA_WIDTH-1:0] mem [0:WORDS-1];
    reg [8*256-1:0] file_name, dump_name;
    integer i;
    initial begin
        if (!$value$plusargs("AXI_MEM_FILE=%s", file_name))
            file_name = "axi_mem.hex";
        if (!$value$plusargs("AXI_MEM_DUMP=%s", dump_name))
            dump_name = "axi_mem_dump.hex";
        for (i = 0; i < WORDS; i = i + 1)
            mem[i] = {DATA_WIDTH{1'b0}};
    end
    always @(posedge clk) begin
        if (load)
            $readmemh(file_name, mem);
        if (dump)
            $writememh(dump_name, mem, dump_lo, dump_hi);
    end

    reg [31:0] now;
    reg [31:0] rnd;
    wire [31:0] rnd1 = rnd ^ (rnd << 13);
    wire [31:0] rnd2 = rnd1 ^ (rnd1 >> 17);
    wire [31:0] rnd_next = rnd2 ^ (rnd2 << 5);
    wire ar_stall = rnd[7:0] < stall_ar;
    wire r_stall = rnd[15:8] < stall_r;

    // -- reads: a queue of accepted bursts, answered in order ------------------------------
    reg [ADDR_WIDTH-1:0] q_addr [0:OUTSTANDING-1];
    reg [7:0]            q_len  [0:OUTSTANDING-1];
    reg [ID_WIDTH-1:0]   q_id   [0:OUTSTANDING-1];
    reg [31:0]           q_due  [0:OUTSTANDING-1];
    reg [QBITS-1:0] q_head, q_tail;
    reg [QBITS:0]   q_count;
    reg [7:0]       beat;

    wire ar_fire = arvalid & arready;
    wire r_fire = rvalid & rready;
    assign arready = (q_count < OUTSTANDING) & ~ar_stall;
    wire r_eligible = (q_count != 0) && (now >= q_due[q_head]);
    assign rvalid = r_eligible & ~r_stall;
    wire [ADDR_WIDTH-1:0] head_addr = q_addr[q_head];
    wire [ADDR_WIDTH-SHIFT-1:0] word = (head_addr >> SHIFT) + beat;
    wire slverr = (head_addr >= err_lo) && (head_addr < err_hi);
    wire decerr = word >= WORDS;
    assign rresp = slverr ? 2'b10 : decerr ? 2'b11 : 2'b00;
    assign rdata = (slverr || decerr) ? {DATA_WIDTH{1'b0}} : mem[word];
    assign rlast = beat == q_len[q_head];
    assign rid = q_id[q_head];

    always @(posedge clk) begin
        if (rst) begin
            now <= 0;
            rnd <= (seed == 0) ? 32'h2545F491 : seed;
            q_head <= 0;
            q_tail <= 0;
            q_count <= 0;
            beat <= 0;
        end else begin
            now <= now + 1;
            rnd <= rnd_next;
            if (ar_fire) begin
                q_addr[q_tail] <= araddr;
                q_len[q_tail] <= arlen;
                q_id[q_tail] <= arid;
                q_due[q_tail] <= now + latency;
                q_tail <= (q_tail == OUTSTANDING - 1) ? 0 : q_tail + 1;
            end
            if (r_fire) begin
                if (rlast) begin
                    beat <= 0;
                    q_head <= (q_head == OUTSTANDING - 1) ? 0 : q_head + 1;
                end else begin
                    beat <= beat + 1;
                end
            end
            q_count <= q_count + ar_fire - (r_fire & rlast);
        end
    end

    // -- writes: one burst at a time ---------------------------------------------------------
    reg                    w_active, b_pending;
    reg [ADDR_WIDTH-SHIFT-1:0] w_word;
    reg [ID_WIDTH-1:0]     w_id;
    integer b;
    assign awready = ~w_active & ~b_pending;
    assign wready = w_active;
    assign bvalid = b_pending;
    assign bresp = 2'b00;
    assign bid = w_id;
    always @(posedge clk) begin
        if (rst) begin
            w_active <= 0;
            b_pending <= 0;
        end else begin
            if (awvalid & awready) begin
                w_active <= 1;
                w_word <= awaddr >> SHIFT;
                w_id <= awid;
            end
            if (wvalid & wready) begin
                for (b = 0; b < BYTES; b = b + 1)
                    if (wstrb[b] && w_word < WORDS)
                        mem[w_word][b*8 +: 8] <= wdata[b*8 +: 8];
                w_word <= w_word + 1;
                if (wlast) begin
                    w_active <= 0;
                    b_pending <= 1;
                end
            end
            if (bvalid & bready)
                b_pending <= 0;
        end
    end
endmodule
`default_nettype wire
