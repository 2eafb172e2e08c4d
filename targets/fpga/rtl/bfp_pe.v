// BFP processing element of the cnnc FPGA target (Verilog-2001, synthesizable).
//
// One output per pass, the layer rule of ir/bfp/format.ts ("layer accumulation"):
//   block product S_j = sum of L-bit mantissa products of block j, exact;
//   unit u_j = ew_j + ex_j - 2(L-2);  u_acc = max(max_j u_j, u_b) - GUARD;
//   S_j * 2^(u_j - u_acc): left shift when u_j >= u_acc (exact), else a right
//   shift with the configured rounding; the bias bm * 2^be aligned to u_acc with
//   the same rounding (saturated to A bits); the exact sum saturates ONCE to A bits.
// Rounding (ROUND, the image's code): 0 nearest-even, 1 toward-zero,
// 2 toward-positive, 3 toward-negative. Stochastic (4) is not implemented.
//
// Protocol (inputs sampled on the rising edge):
//   start                          clear; u_max <= bias_unit
//   unit_valid, unit_in            phase 1: one block unit u_j per cycle (max)
//   mac_valid, w_lanes, x_lanes    phase 2: SIMD mantissa pairs of the current block;
//   blk_last, unit_in              with blk_last the block ends: S_j is aligned by u_j - u_acc
//   finish, has_bias, bm, be       bias aligned and added, one saturation; done the cycle after

// y = round(v * 2^sh) with rounding `mode`; left shifts are exact. SAT: saturate to OW bits.
module bfp_shift_round #(
  parameter IW = 64,
  parameter OW = 64,
  parameter SAT = 0
) (
  input  wire signed [IW-1:0] v,
  input  wire signed [31:0]   sh,
  input  wire [2:0]           mode,
  output reg  signed [OW-1:0] y,
  output reg                  sat
);
  localparam XW = 128;
  reg signed [XW-1:0] vx, q, t, rem, half;
  reg up, big;
  integer s;
  localparam signed [XW-1:0] MAXV = (128'sd1 <<< (OW - 1)) - 128'sd1;
  localparam signed [XW-1:0] MINV = -(128'sd1 <<< (OW - 1));
  always @* begin
    vx = v;
    big = 1'b0;
    up = 1'b0;
    q = 0;
    rem = 0;
    half = 0;
    s = 0;
    if (sh >= 0) begin
      if (sh > XW - IW - 2) begin
        big = (v != 0);
        t = 0;
      end else begin
        t = vx <<< sh;
      end
    end else begin
      s = -sh;
      if (s > IW + 1) s = IW + 1;  // every larger shift rounds the same way (|v| < 2^IW)
      q = vx >>> s;                // floor
      rem = vx - (q <<< s);        // in [0, 2^s)
      half = 128'sd1 <<< (s - 1);
      case (mode)
        3'd0: up = (rem > half) || (rem == half && q[0]);
        3'd1: up = q[XW-1] && (rem != 0);
        3'd2: up = (rem != 0);
        default: up = 1'b0;
      endcase
      t = q + up;
    end
    sat = 1'b0;
    if (big) begin
      sat = 1'b1;
      y = v[IW-1] ? MINV[OW-1:0] : MAXV[OW-1:0];
    end else if (SAT != 0 && t > MAXV) begin
      sat = 1'b1;
      y = MAXV[OW-1:0];
    end else if (SAT != 0 && t < MINV) begin
      sat = 1'b1;
      y = MINV[OW-1:0];
    end else begin
      y = t[OW-1:0];
    end
  end
endmodule

module bfp_pe #(
  parameter L = 8,       // mantissa bits, sign included
  parameter A = 32,      // accumulator bits (<= 62)
  parameter SIMD = 8,    // mantissa pairs per cycle
  parameter GUARD = 0,   // guard bits g
  parameter ROUND = 0,   // rounding code
  parameter SW = 48      // block product width (>= bitLength(K * maxM^2) + 1)
) (
  input  wire                  clk,
  input  wire                  start,
  input  wire signed [31:0]    bias_unit,
  input  wire                  unit_valid,
  input  wire signed [31:0]    unit_in,
  input  wire                  mac_valid,
  input  wire                  blk_last,
  input  wire [SIMD*L-1:0]     w_lanes,
  input  wire [SIMD*L-1:0]     x_lanes,
  input  wire                  finish,
  input  wire                  has_bias,
  input  wire signed [31:0]    bm,
  input  wire signed [31:0]    be,
  output reg                   done,
  output reg  signed [63:0]    acc_out,
  output reg  signed [31:0]    unit_out,
  output reg                   saturated
);
  localparam signed [63:0] AMAX = (64'sd1 <<< (A - 1)) - 64'sd1;
  localparam signed [63:0] AMIN = -(64'sd1 <<< (A - 1));

  reg signed [31:0] umax;
  reg signed [SW-1:0] bsum, lsum;
  reg signed [63:0] acc;
  wire signed [31:0] uacc = umax - GUARD;
  integer i;

  // SIMD products of this cycle, exact.
  always @* begin
    lsum = 0;
    for (i = 0; i < SIMD; i = i + 1) lsum = lsum + $signed(w_lanes[i*L +: L]) * $signed(x_lanes[i*L +: L]);
  end
  wire signed [SW-1:0] btot = bsum + lsum;

  wire signed [63:0] blk_aligned, bias_aligned;
  wire blk_sat, bias_sat;
  bfp_shift_round #(.IW(SW), .OW(64), .SAT(0)) align_block (
    .v(btot), .sh(unit_in - uacc), .mode(ROUND[2:0]), .y(blk_aligned), .sat(blk_sat));
  bfp_shift_round #(.IW(32), .OW(A), .SAT(1)) align_bias (
    .v(has_bias ? bm : 32'sd0), .sh(be - uacc), .mode(ROUND[2:0]), .y(bias_aligned[A-1:0]), .sat(bias_sat));
  generate
    if (A < 64) begin : sign_extend
      assign bias_aligned[63:A] = {(64 - A){bias_aligned[A-1]}};
    end
  endgenerate

  wire signed [63:0] total = acc + bias_aligned;

  always @(posedge clk) begin
    done <= 1'b0;
    if (start) begin
      umax <= bias_unit;
      bsum <= 0;
      acc <= 0;
    end else begin
      if (unit_valid && unit_in > umax) umax <= unit_in;
      if (mac_valid) begin
        if (blk_last) begin
          acc <= acc + blk_aligned;
          bsum <= 0;
        end else begin
          bsum <= btot;
        end
      end
      if (finish) begin
        if (total > AMAX) begin
          acc_out <= AMAX;
          saturated <= 1'b1;
        end else if (total < AMIN) begin
          acc_out <= AMIN;
          saturated <= 1'b1;
        end else begin
          acc_out <= total;
          saturated <= 1'b0;
        end
        unit_out <= uacc;
        done <= 1'b1;
      end
    end
  end
endmodule
