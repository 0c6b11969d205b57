// Simulation model of the ECP5 block RAM DP16KD, in the modes yosys's ECP5 flow produces
// (share/lattice/brams_map_16kd.v) and gen/ebr_outreg.py changes: each port 9, 18 or 36 bits
// wide (36: the pseudo-dual-port mode, port A writes {DIB, DIA}, port B reads {DOB, DOA}),
// chip selects decoded as 0b000 and tied low, the read data from the port's read latch
// (REGMODE NOREG) or through its output register (OUTREG: clocked by the port's clock when
// OCE is high), byte enables on the address pins below the word address (ADx1..ADx0 for 18
// bits, ADx3..ADx0 for 36), WRITEMODE NORMAL / WRITETHROUGH / READBEFOREWRITE for a port
// that writes and reads the same word, contents from INITVAL_00..3F (16 words of 18 bits
// at a 20-bit stride each, yosys's layout). A read of a word the other port writes on the
// same clock edge gives the old word. RST (synchronous or asynchronous) clears the read
// latch and the output register. Yosys ships only a black box of this cell
// (share/lattice/cells_sim_ecp5.v has no behaviour), so this is our reading of Lattice's
// TN1264 for the modes above; any other mode stops the simulation at time zero ($fatal).
// Test only (tests/test_ebr_outreg.py): synthesis uses the real cell.
module DP16KD(
    DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    CEA, OCEA, CLKA, WEA, RSTA,
    CSA2, CSA1, CSA0,
    DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    CEB, OCEB, CLKB, WEB, RSTB,
    CSB2, CSB1, CSB0,
    DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0);
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0;
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0;
    input CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0;
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0;
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0;
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0;
    input CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0;
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0;
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";
    parameter INIT_DATA = "STATIC";
    parameter CLKAMUX = "CLKA";
    parameter CEAMUX = "CEA";
    parameter OCEAMUX = "OCEA";
    parameter WEAMUX = "WEA";
    parameter RSTAMUX = "RSTA";
    parameter CSA2MUX = "CSA2";
    parameter CSA1MUX = "CSA1";
    parameter CSA0MUX = "CSA0";
    parameter CLKBMUX = "CLKB";
    parameter CEBMUX = "CEB";
    parameter OCEBMUX = "OCEB";
    parameter WEBMUX = "WEB";
    parameter RSTBMUX = "RSTB";
    parameter CSB2MUX = "CSB2";
    parameter CSB1MUX = "CSB1";
    parameter CSB0MUX = "CSB0";
    parameter INITVAL_00 = 320'h0;
    parameter INITVAL_01 = 320'h0;
    parameter INITVAL_02 = 320'h0;
    parameter INITVAL_03 = 320'h0;
    parameter INITVAL_04 = 320'h0;
    parameter INITVAL_05 = 320'h0;
    parameter INITVAL_06 = 320'h0;
    parameter INITVAL_07 = 320'h0;
    parameter INITVAL_08 = 320'h0;
    parameter INITVAL_09 = 320'h0;
    parameter INITVAL_0A = 320'h0;
    parameter INITVAL_0B = 320'h0;
    parameter INITVAL_0C = 320'h0;
    parameter INITVAL_0D = 320'h0;
    parameter INITVAL_0E = 320'h0;
    parameter INITVAL_0F = 320'h0;
    parameter INITVAL_10 = 320'h0;
    parameter INITVAL_11 = 320'h0;
    parameter INITVAL_12 = 320'h0;
    parameter INITVAL_13 = 320'h0;
    parameter INITVAL_14 = 320'h0;
    parameter INITVAL_15 = 320'h0;
    parameter INITVAL_16 = 320'h0;
    parameter INITVAL_17 = 320'h0;
    parameter INITVAL_18 = 320'h0;
    parameter INITVAL_19 = 320'h0;
    parameter INITVAL_1A = 320'h0;
    parameter INITVAL_1B = 320'h0;
    parameter INITVAL_1C = 320'h0;
    parameter INITVAL_1D = 320'h0;
    parameter INITVAL_1E = 320'h0;
    parameter INITVAL_1F = 320'h0;
    parameter INITVAL_20 = 320'h0;
    parameter INITVAL_21 = 320'h0;
    parameter INITVAL_22 = 320'h0;
    parameter INITVAL_23 = 320'h0;
    parameter INITVAL_24 = 320'h0;
    parameter INITVAL_25 = 320'h0;
    parameter INITVAL_26 = 320'h0;
    parameter INITVAL_27 = 320'h0;
    parameter INITVAL_28 = 320'h0;
    parameter INITVAL_29 = 320'h0;
    parameter INITVAL_2A = 320'h0;
    parameter INITVAL_2B = 320'h0;
    parameter INITVAL_2C = 320'h0;
    parameter INITVAL_2D = 320'h0;
    parameter INITVAL_2E = 320'h0;
    parameter INITVAL_2F = 320'h0;
    parameter INITVAL_30 = 320'h0;
    parameter INITVAL_31 = 320'h0;
    parameter INITVAL_32 = 320'h0;
    parameter INITVAL_33 = 320'h0;
    parameter INITVAL_34 = 320'h0;
    parameter INITVAL_35 = 320'h0;
    parameter INITVAL_36 = 320'h0;
    parameter INITVAL_37 = 320'h0;
    parameter INITVAL_38 = 320'h0;
    parameter INITVAL_39 = 320'h0;
    parameter INITVAL_3A = 320'h0;
    parameter INITVAL_3B = 320'h0;
    parameter INITVAL_3C = 320'h0;
    parameter INITVAL_3D = 320'h0;
    parameter INITVAL_3E = 320'h0;
    parameter INITVAL_3F = 320'h0;

    // 1024 words of 18 bits (two 9-bit bytes each); a 36-bit word is two of them
    reg [17:0] mem [0:1023];
    reg [35:0] latch_a, latch_b, out_a, out_b;
    integer i;

    function [319:0] initval(input integer n);
        case (n)
            0: initval = INITVAL_00;
            1: initval = INITVAL_01;
            2: initval = INITVAL_02;
            3: initval = INITVAL_03;
            4: initval = INITVAL_04;
            5: initval = INITVAL_05;
            6: initval = INITVAL_06;
            7: initval = INITVAL_07;
            8: initval = INITVAL_08;
            9: initval = INITVAL_09;
            10: initval = INITVAL_0A;
            11: initval = INITVAL_0B;
            12: initval = INITVAL_0C;
            13: initval = INITVAL_0D;
            14: initval = INITVAL_0E;
            15: initval = INITVAL_0F;
            16: initval = INITVAL_10;
            17: initval = INITVAL_11;
            18: initval = INITVAL_12;
            19: initval = INITVAL_13;
            20: initval = INITVAL_14;
            21: initval = INITVAL_15;
            22: initval = INITVAL_16;
            23: initval = INITVAL_17;
            24: initval = INITVAL_18;
            25: initval = INITVAL_19;
            26: initval = INITVAL_1A;
            27: initval = INITVAL_1B;
            28: initval = INITVAL_1C;
            29: initval = INITVAL_1D;
            30: initval = INITVAL_1E;
            31: initval = INITVAL_1F;
            32: initval = INITVAL_20;
            33: initval = INITVAL_21;
            34: initval = INITVAL_22;
            35: initval = INITVAL_23;
            36: initval = INITVAL_24;
            37: initval = INITVAL_25;
            38: initval = INITVAL_26;
            39: initval = INITVAL_27;
            40: initval = INITVAL_28;
            41: initval = INITVAL_29;
            42: initval = INITVAL_2A;
            43: initval = INITVAL_2B;
            44: initval = INITVAL_2C;
            45: initval = INITVAL_2D;
            46: initval = INITVAL_2E;
            47: initval = INITVAL_2F;
            48: initval = INITVAL_30;
            49: initval = INITVAL_31;
            50: initval = INITVAL_32;
            51: initval = INITVAL_33;
            52: initval = INITVAL_34;
            53: initval = INITVAL_35;
            54: initval = INITVAL_36;
            55: initval = INITVAL_37;
            56: initval = INITVAL_38;
            57: initval = INITVAL_39;
            58: initval = INITVAL_3A;
            59: initval = INITVAL_3B;
            60: initval = INITVAL_3C;
            61: initval = INITVAL_3D;
            62: initval = INITVAL_3E;
            63: initval = INITVAL_3F;
            default: initval = 320'h0;
        endcase
    endfunction

    initial begin
        if (DATA_WIDTH_A != 9 && DATA_WIDTH_A != 18 && DATA_WIDTH_A != 36 ||
            DATA_WIDTH_B != 9 && DATA_WIDTH_B != 18 && DATA_WIDTH_B != 36)
            $fatal(1, "DP16KD model: data widths %0d / %0d not modelled", DATA_WIDTH_A, DATA_WIDTH_B);
        if ((DATA_WIDTH_A == 36) != (DATA_WIDTH_B == 36))
            $fatal(1, "DP16KD model: a 36-bit port needs the other one 36 bits wide too");
        if (REGMODE_A != "NOREG" && REGMODE_A != "OUTREG" || REGMODE_B != "NOREG" && REGMODE_B != "OUTREG")
            $fatal(1, "DP16KD model: REGMODE %s / %s not modelled", REGMODE_A, REGMODE_B);
        if (CSDECODE_A != "0b000" || CSDECODE_B != "0b000")
            $fatal(1, "DP16KD model: chip-select decode %s / %s not modelled", CSDECODE_A, CSDECODE_B);
        if (CLKAMUX != "CLKA" || CLKBMUX != "CLKB" || CEAMUX != "CEA" || CEBMUX != "CEB" ||
            WEAMUX != "WEA" || WEBMUX != "WEB" || OCEAMUX != "OCEA" || OCEBMUX != "OCEB" ||
            RSTAMUX != "RSTA" || RSTBMUX != "RSTB")
            $fatal(1, "DP16KD model: inverted or constant control pins not modelled");
        for (i = 0; i < 1024; i = i + 1)
            mem[i] = initval(i / 16) >> ((i % 16) * 20);
        latch_a = 0; latch_b = 0; out_a = 0; out_b = 0;
    end

    wire [13:0] ad_a = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [35:0] di_a = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8,
                          DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0, DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire sel_a = {CSA2, CSA1, CSA0} == 3'b000;
    wire [13:0] ad_b = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    wire [35:0] di_b = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8,
                          DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0, DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    wire sel_b = {CSB2, CSB1, CSB0} == 3'b000;

    // port X's word (in 18-bit words) and how it reads and writes, per width
    function [35:0] read_word(input integer width, input [13:0] ad);
        case (width)
            36: read_word = {mem[{ad[13:5], 1'b1}], mem[{ad[13:5], 1'b0}]};
            18: read_word = {18'b0, mem[ad[13:4]]};
            default: read_word = {27'b0, ad[3] ? mem[ad[13:4]][17:9] : mem[ad[13:4]][8:0]};
        endcase
    endfunction

    always @(posedge CLKA or posedge (RSTA && RESETMODE == "ASYNC")) begin
        if (RSTA) begin
            latch_a <= 0;
            out_a <= 0;
        end else begin
            if (REGMODE_A == "OUTREG" && OCEA)
                out_a <= latch_a;
            if (CEA && sel_a) begin
                if (WEA) begin
                    case (DATA_WIDTH_A)
                        36: begin
                            if (ad_a[0]) mem[{ad_a[13:5], 1'b0}][8:0] <= di_a[8:0];
                            if (ad_a[1]) mem[{ad_a[13:5], 1'b0}][17:9] <= di_a[17:9];
                            if (ad_a[2]) mem[{ad_a[13:5], 1'b1}][8:0] <= di_a[26:18];
                            if (ad_a[3]) mem[{ad_a[13:5], 1'b1}][17:9] <= di_a[35:27];
                        end
                        18: begin
                            if (ad_a[0]) mem[ad_a[13:4]][8:0] <= di_a[8:0];
                            if (ad_a[1]) mem[ad_a[13:4]][17:9] <= di_a[17:9];
                        end
                        default:
                            if (ad_a[3]) mem[ad_a[13:4]][17:9] <= di_a[8:0];
                            else mem[ad_a[13:4]][8:0] <= di_a[8:0];
                    endcase
                    if (WRITEMODE_A == "WRITETHROUGH")
                        latch_a <= di_a;
                    else if (WRITEMODE_A == "READBEFOREWRITE")
                        latch_a <= read_word(DATA_WIDTH_A, ad_a);
                end else
                    latch_a <= read_word(DATA_WIDTH_A, ad_a);
            end
        end
    end

    always @(posedge CLKB or posedge (RSTB && RESETMODE == "ASYNC")) begin
        if (RSTB) begin
            latch_b <= 0;
            out_b <= 0;
        end else begin
            if (REGMODE_B == "OUTREG" && OCEB)
                out_b <= latch_b;
            if (CEB && sel_b) begin
                if (WEB) begin
                    case (DATA_WIDTH_B)
                        36: begin
                            if (ad_b[0]) mem[{ad_b[13:5], 1'b0}][8:0] <= di_b[8:0];
                            if (ad_b[1]) mem[{ad_b[13:5], 1'b0}][17:9] <= di_b[17:9];
                            if (ad_b[2]) mem[{ad_b[13:5], 1'b1}][8:0] <= di_b[26:18];
                            if (ad_b[3]) mem[{ad_b[13:5], 1'b1}][17:9] <= di_b[35:27];
                        end
                        18: begin
                            if (ad_b[0]) mem[ad_b[13:4]][8:0] <= di_b[8:0];
                            if (ad_b[1]) mem[ad_b[13:4]][17:9] <= di_b[17:9];
                        end
                        default:
                            if (ad_b[3]) mem[ad_b[13:4]][17:9] <= di_b[8:0];
                            else mem[ad_b[13:4]][8:0] <= di_b[8:0];
                    endcase
                    if (WRITEMODE_B == "WRITETHROUGH")
                        latch_b <= di_b;
                    else if (WRITEMODE_B == "READBEFOREWRITE")
                        latch_b <= read_word(DATA_WIDTH_B, ad_b);
                end else
                    latch_b <= read_word(DATA_WIDTH_B, ad_b);
            end
        end
    end

    // a 36-bit read is port B's, on DOA (low half) and DOB (high half)
    wire [35:0] word_a = REGMODE_A == "OUTREG" ? out_a : latch_a;
    wire [35:0] word_b = REGMODE_B == "OUTREG" ? out_b : latch_b;
    wire [35:0] wide = REGMODE_B == "OUTREG" ? out_b : latch_b;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
            DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = DATA_WIDTH_B == 36 ? wide[17:0] : word_a[17:0];
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
            DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = DATA_WIDTH_B == 36 ? wide[35:18] : word_b[17:0];
endmodule
