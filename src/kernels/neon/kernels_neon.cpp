// NEON path (AArch64 Advanced SIMD). The AVX-512 layout in four 128-bit quarters: 16 output
// channels in 32-bit lanes, one broadcast activation word ANDed with the weights, counted per
// byte with CNT, summed in byte accumulators for up to 31 words and widened with pairwise adds
// (UADDLP) into the 32-bit lanes.
#include <arm_neon.h>

#include <cstring>

#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {
namespace {

constexpr int kPixelBlock = 4;   // 4 pixels x 4 quarters of byte accumulators = 16 registers
constexpr int kFlushWords = 31;  // 31 words x at most 8 per byte keeps a byte below 256

void dense_pair(const DenseTile& t, int i, int j, int shift, bool negative, bool first, int q0, int32_t* out) {
  uint8x16_t bytes[kPixelBlock][4];
  auto clear = [&] {
    for (int q = 0; q < kPixelBlock; ++q)
      for (int h = 0; h < 4; ++h) bytes[q][h] = vdupq_n_u8(0);
  };
  auto flush = [&] {
    const int32x4_t count_shift = vdupq_n_s32(shift);
    for (int q = 0; q < kPixelBlock; ++q)
      for (int h = 0; h < 4; ++h) {
        const uint32x4_t sums = vpaddlq_u16(vpaddlq_u8(bytes[q][h]));
        const int32x4_t c = vshlq_s32(vreinterpretq_s32_u32(sums), count_shift);
        int32_t* dst = out + (q0 + q) * kLanes + 4 * h;
        const int32x4_t prior = first ? vdupq_n_s32(0) : vld1q_s32(dst);
        vst1q_s32(dst, negative ? vsubq_s32(prior, c) : vaddq_s32(prior, c));
      }
  };
  clear();
  const int m = t.weight_planes;
  const int64_t* offsets = t.pixel_offsets + q0;
  int pending = 0;
  for (int kh = 0; kh < t.kernel_h; ++kh) {
    const uint8_t* row = t.input + kh * t.row_stride + j * t.plane_stride;
    const uint32_t* wk = t.weights + (static_cast<int64_t>(kh) * t.words_per_row * m + i) * kLanes;
    for (int d = 0; d < t.words_per_row; ++d) {
      const uint32_t* wd = wk + d * m * kLanes;
      const uint32x4_t w[4] = {vld1q_u32(wd), vld1q_u32(wd + 4), vld1q_u32(wd + 8), vld1q_u32(wd + 12)};
      for (int q = 0; q < kPixelBlock; ++q) {
        const uint32x4_t b = vdupq_n_u32(load_u32(row + offsets[q] + 4 * d));
        for (int h = 0; h < 4; ++h)
          bytes[q][h] = vaddq_u8(bytes[q][h], vcntq_u8(vreinterpretq_u8_u32(vandq_u32(w[h], b))));
      }
      if (++pending == kFlushWords) {
        flush();
        clear();
        first = false;  // the first flush wrote the tile; later ones accumulate
        pending = 0;
      }
    }
  }
  if (pending > 0) flush();
}

void dense_tile(const DenseTile& t, int32_t* out) {
  const int m = t.weight_planes, k = t.act_planes;
  for (int q0 = 0; q0 < t.pixels; q0 += kPixelBlock) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < k; ++j)
        dense_pair(t, i, j, i + j + (t.odd_levels ? 1 : 0), !t.odd_levels && i == m - 1, i == 0 && j == 0, q0, out);
  }
}

// ---------------------------------------------------------------------------------------------
// Epilogue: four 4-lane quarters per pixel.

// y > 0 ? y : +0, exactly (FMAX would keep a NaN).
inline float32x4_t relu(float32x4_t y) { return vbslq_f32(vcgtq_f32(y, vdupq_n_f32(0.0f)), y, vdupq_n_f32(0.0f)); }

inline int32x4_t accumulator(const EpilogueTile& e, int q, int h) {
  int32x4_t a = vaddq_s32(vld1q_s32(e.acc + q * kLanes + 4 * h), vld1q_s32(e.lane_offset + 4 * h));
  if (e.pixel_offset) a = vaddq_s32(a, vdupq_n_s32(e.pixel_offset[q]));
  return a;
}

inline float32x4_t epilogue_values(const EpilogueTile& e, int32x4_t a, int h) {
  const float32x4_t t = vmulq_f32(vcvtq_f32_s32(a), vld1q_f32(e.scale + 4 * h));
  const float32x4_t y = vaddq_f32(t, vld1q_f32(e.bias + 4 * h));
  return e.relu ? relu(y) : y;
}

// quantize_code() for 4 lanes, operation by operation.
// `factor` is the scale, or its float reciprocal when `reciprocal` (ActivationQuant::reciprocal).
inline int32x4_t quantize_codes(float32x4_t x, float32x4_t factor, bool reciprocal, float32x4_t zero_point,
                                float32x4_t top) {
  const float32x4_t ratio = reciprocal ? vmulq_f32(x, factor) : vdivq_f32(x, factor);
  float32x4_t r = vaddq_f32(vrndnq_f32(ratio), zero_point);
  r = vbslq_f32(vcgtq_f32(r, vdupq_n_f32(0.0f)), r, vdupq_n_f32(0.0f));  // !(r > 0) -> 0, NaN included
  r = vbslq_f32(vcltq_f32(r, top), r, top);
  return vcvtq_s32_f32(r);
}

// One bit per byte lane: bit j of each of 16 codes, as 16 bits.
inline uint16_t plane_bits(uint8x16_t codes, int j) {
  static const uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t set = vandq_u8(vtstq_u8(codes, vdupq_n_u8(static_cast<uint8_t>(1u << j))), vld1q_u8(kWeights));
  return static_cast<uint16_t>(vaddv_u8(vget_low_u8(set)) | (vaddv_u8(vget_high_u8(set)) << 8));
}

inline uint8x16_t narrow_codes(const int32x4_t c[4]) {
  const uint16x8_t lo = vcombine_u16(vqmovun_s32(c[0]), vqmovun_s32(c[1]));
  const uint16x8_t hi = vcombine_u16(vqmovun_s32(c[2]), vqmovun_s32(c[3]));
  return vcombine_u8(vqmovn_u16(lo), vqmovn_u16(hi));
}

void epilogue_tile(const EpilogueTile& tile) {
  // A local copy: the byte stores below may alias anything reachable through a pointer, which
  // would make the compiler reload every field of the caller's struct after each store.
  const EpilogueTile e = tile;
  const uint16_t valid = static_cast<uint16_t>(e.lanes >= 16 ? 0xffffu : (1u << e.lanes) - 1);
  if (e.out_float) {
    for (int q = 0; q < e.pixels; ++q) {
      alignas(16) float y[kLanes];
      for (int h = 0; h < 4; ++h) vst1q_f32(y + 4 * h, epilogue_values(e, accumulator(e, q, h), h));
      for (int l = 0; l < e.lanes; ++l) e.out_float[e.out_offsets[q] + l * e.lane_stride] = y[l];
    }
    return;
  }
  const float32x4_t out_scale = vdupq_n_f32(e.out_quant.reciprocal ? 1.0f / e.out_quant.scale : e.out_quant.scale);
  const float32x4_t zero_point = vdupq_n_f32(static_cast<float>(e.out_quant.zero_point));
  const float32x4_t top = vdupq_n_f32(static_cast<float>(scalar::max_code(e.out_quant)));
  const int count = scalar::max_code(e.out_quant);
  for (int q = 0; q < e.pixels; ++q) {
    int32x4_t codes[4];
    for (int h = 0; h < 4; ++h) {
      const int32x4_t a = accumulator(e, q, h);
      if (e.thresholds) {
        const int32x4_t directed = vmulq_s32(a, vld1q_s32(e.thresholds + 4 * h));
        int32x4_t code = vdupq_n_s32(0);
        for (int k = 1; k <= count; ++k)  // the compare is all ones (-1) where a >= threshold
          code = vsubq_s32(code, vreinterpretq_s32_u32(vcgeq_s32(directed, vld1q_s32(e.thresholds + k * kLanes + 4 * h))));
        codes[h] = code;
      } else {
        codes[h] = quantize_codes(epilogue_values(e, a, h), out_scale, e.out_quant.reciprocal, zero_point, top);
      }
    }
    const uint8x16_t narrow = narrow_codes(codes);
    uint8_t* dst = e.out_packed + e.out_offsets[q];
    for (int j = 0; j < e.out_quant.bits; ++j) {
      const auto plane = static_cast<uint16_t>(plane_bits(narrow, j) & valid);
      if (e.lanes > 8)
        std::memcpy(dst + j * e.plane_stride, &plane, 2);
      else
        dst[j * e.plane_stride] = static_cast<uint8_t>(plane);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activation packing

void quantize(const float* x, int64_t stride, int64_t count, const ActivationQuant& q, uint8_t* codes) {
  if (stride != 1) {
    scalar::quantize(x, stride, count, q, codes);
    return;
  }
  const float32x4_t scale = vdupq_n_f32(q.reciprocal ? 1.0f / q.scale : q.scale);
  const float32x4_t zero_point = vdupq_n_f32(static_cast<float>(q.zero_point));
  const float32x4_t top = vdupq_n_f32(static_cast<float>(scalar::max_code(q)));
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    int32x4_t c[4];
    for (int h = 0; h < 4; ++h) c[h] = quantize_codes(vld1q_f32(x + i + 4 * h), scale, q.reciprocal, zero_point, top);
    vst1q_u8(codes + i, narrow_codes(c));
  }
  scalar::quantize(x + i, 1, count - i, q, codes + i);
}

void pack_pixels(const uint8_t* codes, int64_t pixels, int64_t channels, int64_t pixel_bits, int bits,
                 int64_t first_pixel, uint8_t* out, int64_t plane_stride) {
  const int64_t pixel_bytes = pixel_bits / 8;
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* c = codes + p * channels;
    for (int64_t c0 = 0; c0 < channels; c0 += 16) {
      const int64_t n = scalar::min_of<int64_t>(16, channels - c0);
      uint8_t chunk[16] = {};
      std::memcpy(chunk, c + c0, static_cast<std::size_t>(n));
      const uint8x16_t v = vld1q_u8(chunk);
      const int64_t bytes = (n + 7) / 8;
      for (int j = 0; j < bits; ++j) {
        const uint16_t plane = plane_bits(v, j);
        std::memcpy(out + j * plane_stride + (first_pixel + p) * pixel_bytes + c0 / 8, &plane,
                    static_cast<std::size_t>(bytes));
      }
    }
  }
}

uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(__builtin_popcountll(x)); }

}  // namespace

constinit const KernelTable kNeonTable = {
    dense_tile, epilogue_tile, scalar::depthwise_tile, scalar::integer_tile, 12, 16, quantize, pack_pixels, scalar::quantize_pack_row<quantize, pack_pixels>,
    scalar::pixel_code_sums<popcount64>,
};

}  // namespace bitmix::kernels::detail
