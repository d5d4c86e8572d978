#pragma once
// Portable scalar kernels. The scalar path uses them whole; the SIMD paths reuse pieces for
// remainders. Header-only so every ISA's translation unit inlines them with its own flags.

#include <cstdint>
#include <cstring>

#include "bitmix/kernels/activations.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels::detail::scalar {
// Internal linkage on purpose: each ISA's translation unit compiles these with its own flags,
// and one shared (inline) definition would let the linker hand AVX-512 code to the scalar path.
namespace {

// What the ISA translation units use instead of std:: templates and the inline members of public
// types (src/core/isa_dispatch.hpp: nothing with external linkage may be emitted there).
template <class T>
constexpr T min_of(T a, T b) noexcept {
  return b < a ? b : a;
}
// ActivationQuant::max_code().
constexpr int32_t max_code(const ActivationQuant& q) noexcept { return (int32_t{1} << q.bits) - 1; }

// Bit-twiddling popcount: baseline x86-64 has no POPCNT instruction, and std::popcount would
// become a libgcc call there.
inline uint32_t popcount32(uint32_t x) noexcept {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0f0f0f0fu;
  return (x * 0x01010101u) >> 24;
}

inline int32_t plane_coefficient(int i, int j, int weight_planes, bool odd_levels) noexcept {
  int32_t c = int32_t{1} << (i + j);
  if (odd_levels) return 2 * c;
  return i == weight_planes - 1 ? -c : c;
}

inline void dense_tile(const DenseTile& t, int32_t* out) {
  const int m = t.weight_planes, k = t.act_planes;
  for (int q = 0; q < t.pixels; ++q) {
    int32_t acc[kLanes] = {};
    const uint8_t* pixel = t.input + t.pixel_offsets[q];
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < k; ++j) {
        int32_t counts[kLanes] = {};
        for (int kh = 0; kh < t.kernel_h; ++kh)
          for (int d = 0; d < t.words_per_row; ++d) {
            const uint32_t a = load_u32(pixel + kh * t.row_stride + j * t.plane_stride + 4 * d);
            const uint32_t* w = t.weights + ((kh * t.words_per_row + d) * m + i) * kLanes;
            for (int l = 0; l < kLanes; ++l) counts[l] += static_cast<int32_t>(popcount32(w[l] & a));
          }
        const int32_t coef = plane_coefficient(i, j, m, t.odd_levels);
        for (int l = 0; l < kLanes; ++l) acc[l] += coef * counts[l];
      }
    std::memcpy(out + q * kLanes, acc, sizeof acc);
  }
}

// Depthwise: not bit-serial (one input channel per output channel, nothing to reduce over in a
// word); exact integer products, written so each ISA's compiler vectorizes the lane loop.
inline void depthwise_tile(const DepthwiseTile& t, int32_t* acc) {
  for (int q = 0; q < t.pixels; ++q) {
    int32_t sums[kLanes] = {};
    for (int64_t kh = 0; kh < t.kernel_h; ++kh)
      for (int64_t kw = 0; kw < t.kernel_w; ++kw) {
        const uint8_t* pixel = t.codes + ((t.window_rows[q] + kh) * t.stored_width + t.window_cols[q] + kw) * t.channels;
        const int32_t* w = t.taps + (kh * t.kernel_w + kw) * t.out_channels + t.oc0;
        if (t.multiplier == 1 && t.lanes == kLanes) {
          const uint8_t* c = pixel + t.oc0;
          for (int l = 0; l < kLanes; ++l) sums[l] += w[l] * static_cast<int32_t>(c[l]);
        } else {
          for (int l = 0; l < t.lanes; ++l) sums[l] += w[l] * static_cast<int32_t>(pixel[(t.oc0 + l) / t.multiplier]);
        }
      }
    std::memcpy(acc + q * kLanes, sums, sizeof sums);
  }
}

// The integer path, portable form (each ISA's compiler vectorizes the lane loop).
inline void integer_tile(const IntegerTile& t, int32_t* out) {
  for (int q = 0; q < t.pixels; ++q) {
    int32_t sums[kLanes] = {};
    const uint16_t* window = t.codes + t.pixel_offsets[q];
    const int16_t* w = t.weights;
    for (int kh = 0; kh < t.kernel_h; ++kh)
      for (int kw = 0; kw < t.kernel_w; ++kw) {
        const uint16_t* pixel = window + kh * t.row_stride + kw * t.pixel_stride;
        for (int p = 0; p < t.pairs; ++p, w += 2 * kLanes) {
          const int32_t c0 = pixel[2 * p], c1 = pixel[2 * p + 1];
          for (int l = 0; l < kLanes; ++l) sums[l] += w[2 * l] * c0 + w[2 * l + 1] * c1;
        }
      }
    std::memcpy(out + q * kLanes, sums, sizeof sums);
  }
}

// acc_int of (pixel q, lane l) as the epilogue definition starts it.
inline int32_t accumulator(const EpilogueTile& e, int q, int l) noexcept {
  return e.acc[q * kLanes + l] + e.lane_offset[l] + (e.pixel_offset ? e.pixel_offset[q] : 0);
}

inline float epilogue_value(const EpilogueTile& e, int32_t acc, int l) noexcept {
  const float t = static_cast<float>(acc) * e.scale[l];
  float y = t + e.bias[l];
  if (e.relu) y = y > 0.0f ? y : 0.0f;
  return y;
}

inline uint8_t epilogue_code(const EpilogueTile& e, int32_t acc, int l) noexcept {
  if (e.thresholds) {
    const int32_t a = e.thresholds[l] * acc;
    const int count = max_code(e.out_quant);
    int code = 0;
    for (int k = 1; k <= count; ++k) code += a >= e.thresholds[k * kLanes + l] ? 1 : 0;
    return static_cast<uint8_t>(code);
  }
  return quantize_code(epilogue_value(e, acc, l), e.out_quant);
}

// Stores the codes of pixel q (lanes >= e.lanes must be 0) as plane bytes.
inline void store_code_planes(const EpilogueTile& e, int q, const uint8_t* codes) noexcept {
  const int bytes = e.lanes >= kLanes ? 2 : (e.lanes + 7) / 8;
  uint8_t* dst = e.out_packed + e.out_offsets[q];
  for (int j = 0; j < e.out_quant.bits; ++j) {
    uint32_t bits = 0;
    for (int l = 0; l < kLanes; ++l) bits |= static_cast<uint32_t>((codes[l] >> j) & 1) << l;
    for (int b = 0; b < bytes; ++b) dst[j * e.plane_stride + b] = static_cast<uint8_t>(bits >> (8 * b));
  }
}

inline void epilogue_pixels(const EpilogueTile& e, int q_begin, int q_end) {
  for (int q = q_begin; q < q_end; ++q) {
    if (e.out_float) {
      for (int l = 0; l < e.lanes; ++l)
        e.out_float[e.out_offsets[q] + l * e.lane_stride] = epilogue_value(e, accumulator(e, q, l), l);
    } else {
      uint8_t codes[kLanes] = {};
      for (int l = 0; l < e.lanes; ++l) codes[l] = epilogue_code(e, accumulator(e, q, l), l);
      store_code_planes(e, q, codes);
    }
  }
}

inline void epilogue_tile(const EpilogueTile& e) { epilogue_pixels(e, 0, e.pixels); }

inline void quantize(const float* x, int64_t stride, int64_t count, const ActivationQuant& q, uint8_t* codes) {
  for (int64_t i = 0; i < count; ++i) codes[i] = quantize_code(x[i * stride], q);
}

inline void pack_pixels(const uint8_t* codes, int64_t pixels, int64_t channels, int64_t pixel_bits, int bits,
                        int64_t first_pixel, uint8_t* out, int64_t plane_stride) {
  const int64_t pixel_bytes = pixel_bits / 8;
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* c = codes + p * channels;
    for (int j = 0; j < bits; ++j) {
      uint8_t* dst = out + j * plane_stride + (first_pixel + p) * pixel_bytes;
      for (int64_t b = 0; b < pixel_bytes; ++b) {
        uint32_t byte = 0;
        for (int64_t t = 0; t < 8 && 8 * b + t < channels; ++t) byte |= ((c[8 * b + t] >> j) & 1u) << t;
        dst[b] = static_cast<uint8_t>(byte);
      }
    }
  }
}

// Generic row packer on top of an ISA's quantize and pack_pixels: quantize channel rows, transpose
// the codes to pixel order (both in the caller's scratch), pack.
template <QuantizeFn Quantize, PackPixelsFn Pack>
void quantize_pack_row(const float* x, int64_t channel_stride, int64_t channels, int64_t width, const ActivationQuant& q,
                       uint8_t* out, int64_t plane_stride, int64_t pixel_bytes, uint8_t* scratch) {
  uint8_t* planar = scratch;
  uint8_t* pixels = scratch + channels * width;
  for (int64_t c = 0; c < channels; ++c) Quantize(x + c * channel_stride, 1, width, q, planar + c * width);
  for (int64_t w = 0; w < width; ++w)
    for (int64_t c = 0; c < channels; ++c) pixels[w * channels + c] = planar[c * width + w];
  Pack(pixels, width, channels, pixel_bytes * 8, q.bits, 0, out, plane_stride);
}

// Popcount of each pixel's bytes (pixel x at row + x * pixel_stride), added as count << plane to
// sums[x]; Popcount64 is the ISA's popcount.
template <uint32_t (*Popcount64)(uint64_t)>
void pixel_code_sums(const uint8_t* row, int64_t pixels, int64_t pixel_stride, int64_t pixel_bytes, int plane,
                     int32_t* sums) {
  // Narrow pixels (up to 64 channels, the common case) take one fixed-size load each.
  auto narrow = [&](auto word) {
    using Word = decltype(word);
    for (int64_t x = 0; x < pixels; ++x) {
      Word v;
      std::memcpy(&v, row + x * pixel_stride, sizeof(Word));
      sums[x] += static_cast<int32_t>(Popcount64(v) << plane);
    }
  };
  switch (pixel_bytes) {
    case 1: narrow(uint8_t{}); return;
    case 2: narrow(uint16_t{}); return;
    case 4: narrow(uint32_t{}); return;
    case 8: narrow(uint64_t{}); return;
    default: break;
  }
  for (int64_t x = 0; x < pixels; ++x) {
    const uint8_t* p = row + x * pixel_stride;
    uint32_t count = 0;
    int64_t b = 0;
    for (; b + 8 <= pixel_bytes; b += 8) {
      uint64_t v;
      std::memcpy(&v, p + b, 8);
      count += Popcount64(v);
    }
    for (; b < pixel_bytes; ++b) count += Popcount64(p[b]);
    sums[x] += static_cast<int32_t>(count << plane);
  }
}

inline uint32_t popcount64(uint64_t x) noexcept {
  return popcount32(static_cast<uint32_t>(x)) + popcount32(static_cast<uint32_t>(x >> 32));
}

}  // namespace
}  // namespace bitmix::kernels::detail::scalar
