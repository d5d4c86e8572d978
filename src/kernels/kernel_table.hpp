#pragma once
// The internal interface between the checked driver (conv.cpp) and the per-ISA kernels
// (scalar/, avx2/, avx512/, neon/). Nothing here is public: the API never names an ISA.
//
// The per-ISA translation units include this header: it holds only plain structs, function
// pointer types and the extern tables (their rules: src/core/isa_dispatch.hpp).

#include <cstdint>

#include "bitmix/kernels/activations.hpp"

namespace bitmix::detail {
class IsaDispatchBase;
}

namespace bitmix::kernels::detail {

// Output channels per weight block: one 512-bit register of 32-bit lanes.
inline constexpr int kLanes = 16;
// Output pixels per driver tile: a multiple of every ISA's register-block width (8, 12, 16).
inline constexpr int kTilePixels = 48;

// One tile of the dense (groups = 1) bit-serial convolution for one 16-lane weight block.
// For each pixel q the kernel reads, for every kernel row kh < kernel_h, window word
// d < words_per_row and activation plane j < act_planes, the little-endian uint32 at
//   input + pixel_offsets[q] + kh * row_stride + j * plane_stride + 4 * d
// (unaligned), and the weight words weights[((kh * words_per_row + d) * weight_planes + i) * 16 + lane],
// and writes out[q * 16 + lane] = sum over (i, j) of coef(i, j) * popcount-sum, where
// coef = 2^(i + j), negated for the top plane of two's complement weights and doubled for odd
// levels (whose -(2^M - 1) * window-code-sum term the driver adds).
struct DenseTile {
  const uint32_t* weights = nullptr;
  const uint8_t* input = nullptr;
  const int64_t* pixel_offsets = nullptr;  // kTilePixels entries; unused ones repeat a valid one
  int pixels = 0;                          // valid pixels, 1..kTilePixels
  int64_t plane_stride = 0;
  int64_t row_stride = 0;
  int kernel_h = 0;
  int words_per_row = 0;
  int weight_planes = 0;
  int act_planes = 0;
  bool odd_levels = false;
};

// The epilogue of one tile for one 16-lane block: acc_int = acc[q*16 + l] + lane_offset[l]
// (+ pixel_offset[q] when not null), then the definition in epilogue.hpp.
struct EpilogueTile {
  const int32_t* acc = nullptr;          // [pixels][16]
  int pixels = 0;
  int lanes = 0;                         // valid lanes of this block (1..16)
  const int32_t* lane_offset = nullptr;  // [16]
  const int32_t* pixel_offset = nullptr; // [pixels] or nullptr
  const float* scale = nullptr;          // [16]
  const float* bias = nullptr;           // [16]
  bool relu = false;
  // Float output: element (q, l) goes to out_float[out_offsets[q] + l * lane_stride].
  float* out_float = nullptr;
  // Packed output: plane j of pixel q's 16 lanes goes to the bytes at
  // out_packed + out_offsets[q] + j * plane_stride (2 bytes, or ceil(lanes / 8) when lanes < 16).
  uint8_t* out_packed = nullptr;
  const int64_t* out_offsets = nullptr;
  int64_t lane_stride = 0;
  int64_t plane_stride = 0;
  ActivationQuant out_quant{};
  const int32_t* thresholds = nullptr;   // Epilogue::threshold_block() or nullptr (float path)
};

// Depthwise accumulators (before the zero-point fold) of one tile for one 16-lane block:
// acc[q * 16 + l] = sum over taps t of taps[t * out_channels + oc0 + l] * code of input channel
// (oc0 + l) / multiplier at window position t of pixel q. Codes are [stored pixel][channel] bytes.
struct DepthwiseTile {
  const uint8_t* codes = nullptr;
  const int32_t* taps = nullptr;          // [kh * kernel_w + kw][out_channels]
  const int64_t* window_rows = nullptr;   // n * stored_height + first stored row, per pixel
  const int64_t* window_cols = nullptr;   // first stored column, per pixel
  int64_t stored_width = 0, channels = 0, out_channels = 0, multiplier = 1;
  int64_t kernel_h = 0, kernel_w = 0, oc0 = 0;
  int pixels = 0, lanes = 0;
};

// The unpacked integer path of a dense tile (wide bitwidths, where M * K bit-plane products cost
// more than multiplying the codes): out[q * 16 + l] = sum over (kh, kw, c) of w * code, with
// codes as uint16 [stored pixel][round_up(C, 2)] and weights as PackedWeights::integer_pairs().
// Pixel q's window starts at codes + pixel_offsets[q] (in elements); tap (kh, kw) adds
// kh * row_stride + kw * pixel_stride. Exact: |w * code| < 2^16, pair sums fit int32.
struct IntegerTile {
  const int16_t* weights = nullptr;       // this block's pairs: [kh][kw][pair][16][2]
  const uint16_t* codes = nullptr;
  const int64_t* pixel_offsets = nullptr; // kTilePixels entries; unused ones repeat a valid one
  int pixels = 0;
  int64_t row_stride = 0, pixel_stride = 0;
  int kernel_h = 0, kernel_w = 0, pairs = 0;
};

// Quantizes `count` floats with a stride into codes (quantize_code, exactly).
using QuantizeFn = void (*)(const float* x, int64_t stride, int64_t count, const ActivationQuant& q,
                            uint8_t* codes);
// Packs `pixels` pixels of `channels` codes each (codes[p * channels + c]) into `bits` planes:
// plane j goes to out + j * plane_stride, pixel p at bit (first_pixel + p) * pixel_bits.
// The Cs - C padding bits are written as zero; bytes outside the pixels are untouched.
using PackPixelsFn = void (*)(const uint8_t* codes, int64_t pixels, int64_t channels, int64_t pixel_bits,
                              int bits, int64_t first_pixel, uint8_t* out, int64_t plane_stride);

// Quantizes one image row of a float NCHW tensor (x points at channel 0 of the row; channel c at
// x + c * channel_stride, `width` pixels) and packs it: plane j of pixel w goes to
// out + j * plane_stride + w * pixel_bytes (out is the row's first interior pixel). `scratch`
// holds 2 * channels * width bytes the kernel may use (the caller owns the memory: an ISA's
// translation unit allocates nothing itself).
using QuantizePackRowFn = void (*)(const float* x, int64_t channel_stride, int64_t channels, int64_t width,
                                   const ActivationQuant& q, uint8_t* out, int64_t plane_stride, int64_t pixel_bytes,
                                   uint8_t* scratch);

// Adds (popcount of pixel x's bytes) << plane to sums[x] for `pixels` pixels of one plane row,
// pixel x starting at row + x * pixel_stride.
using PixelCodeSumsFn = void (*)(const uint8_t* row, int64_t pixels, int64_t pixel_stride, int64_t pixel_bytes,
                                 int plane, int32_t* sums);

struct KernelTable {
  void (*dense_tile)(const DenseTile& tile, int32_t* out);
  void (*epilogue_tile)(const EpilogueTile& tile);
  void (*depthwise_tile)(const DepthwiseTile& tile, int32_t* acc);
  void (*integer_tile)(const IntegerTile& tile, int32_t* out);
  // Relative cost of one bit-plane pair over one 32-bit window word, and of one channel pair on
  // the integer path, both for 16 output channels: picks the cheaper path per layer.
  int bit_pair_word_cost;
  int integer_pair_cost;
  QuantizeFn quantize;
  PackPixelsFn pack_pixels;
  QuantizePackRowFn quantize_pack_row;
  PixelCodeSumsFn pixel_code_sums;
};

// The table for the current cap (chosen once per cap, dispatch.cpp; a changed cap takes effect
// at the next call).
const KernelTable& kernel_table();
// Its dispatcher (which ISA it reports, how often it chose): for tests.
const bitmix::detail::IsaDispatchBase& kernel_dispatch();

// Per-ISA tables (defined only when compiled in), one per translation unit.
extern const KernelTable kScalarTable;
#if defined(BITMIX_HAVE_AVX2)
extern const KernelTable kAvx2Table;
#endif
#if defined(BITMIX_HAVE_AVX512)
extern const KernelTable kAvx512Table;
#endif
#if defined(BITMIX_HAVE_NEON)
extern const KernelTable kNeonTable;
#endif

}  // namespace bitmix::kernels::detail
