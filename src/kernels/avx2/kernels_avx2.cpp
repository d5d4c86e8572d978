// AVX2 path. The same layout as AVX-512 (output channels in 32-bit lanes, one broadcast
// activation word ANDed with 16 lanes of weights, here as two 8-lane halves), but without a
// vector popcount: each byte is counted with two 16-entry PSHUFB lookups (one per nibble), the
// byte counts are summed in byte accumulators for up to 31 words and then widened to 32-bit
// lanes with PMADDUBSW + PMADDWD.
#include <immintrin.h>

#include <cstring>

#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {
namespace {

constexpr int kPixelBlock = 6;       // pixels per register block: 6 byte accumulators of one half
constexpr int kFlushWords = 31;      // 31 words x at most 8 per byte keeps a byte below 256
constexpr int kMaxWindowWords = 512; // window words kept on the stack (larger windows allocate)

inline __m256i popcount_bytes(__m256i x, __m256i lut, __m256i low_nibbles) {
  const __m256i lo = _mm256_and_si256(x, low_nibbles);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// Sum of the 4 byte counts of each 32-bit lane.
inline __m256i widen(__m256i bytes) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}

// One (weight plane i, activation plane j) pair, one 8-lane half h, pixels [q0, q0 + 6): adds
// coef * counts to out. The window words are walked flat (word_offsets[w] = kh * row_stride +
// 4 * d; the weights of word w at w * weight_planes * 16), in runs of at most kFlushWords so the
// byte accumulators never wrap. 6 accumulators + weights + broadcast + lookup table + nibble
// mask + temporaries fit the 16 ymm registers without spilling.
void dense_pair(const DenseTile& t, const int64_t* word_offsets, int words, int i, int j, int h, int shift,
                bool negative, bool first, int q0, int32_t* out) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m128i count_shift = _mm_cvtsi32_si128(shift);
  const int m = t.weight_planes;
  const uint8_t* base = t.input + j * t.plane_stride;
  const int64_t* px = t.pixel_offsets + q0;
  const uint32_t* weights = t.weights + i * kLanes + 8 * h;
  for (int w0 = 0; w0 < words; w0 += kFlushWords) {
    const int w1 = scalar::min_of(words, w0 + kFlushWords);
    __m256i acc[kPixelBlock];
#pragma GCC unroll 6
    for (int q = 0; q < kPixelBlock; ++q) acc[q] = _mm256_setzero_si256();
    for (int w = w0; w < w1; ++w) {
      const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(weights + static_cast<int64_t>(w) * m * kLanes));
      const uint8_t* word = base + word_offsets[w];
#pragma GCC unroll 6
      for (int q = 0; q < kPixelBlock; ++q) {
        const __m256i b = _mm256_broadcastd_epi32(_mm_loadu_si32(word + px[q]));
        acc[q] = _mm256_add_epi8(acc[q], popcount_bytes(_mm256_and_si256(lanes, b), lut, low_nibbles));
      }
    }
#pragma GCC unroll 6
    for (int q = 0; q < kPixelBlock; ++q) {
      const __m256i c = _mm256_sll_epi32(widen(acc[q]), count_shift);
      auto* dst = reinterpret_cast<__m256i*>(out + (q0 + q) * kLanes + 8 * h);
      // the first pair's first run writes the tile (no separate clearing: REP STOS is slow to start)
      const __m256i prior = first && w0 == 0 ? _mm256_setzero_si256() : _mm256_load_si256(dst);
      _mm256_store_si256(dst, negative ? _mm256_sub_epi32(prior, c) : _mm256_add_epi32(prior, c));
    }
  }
}

void dense_tile(const DenseTile& t, int32_t* out) {
  const int m = t.weight_planes, k = t.act_planes;
  const int words = t.kernel_h * t.words_per_row;
  int64_t word_offsets[kMaxWindowWords];
  int64_t* offsets = words <= kMaxWindowWords ? word_offsets : new int64_t[static_cast<std::size_t>(words)];
  for (int kh = 0, w = 0; kh < t.kernel_h; ++kh)
    for (int d = 0; d < t.words_per_row; ++d) offsets[w++] = kh * t.row_stride + 4 * d;
  for (int q0 = 0; q0 < t.pixels; q0 += kPixelBlock) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < k; ++j)
        for (int h = 0; h < 2; ++h) {
          const bool negative = !t.odd_levels && i == m - 1;
          dense_pair(t, offsets, words, i, j, h, i + j + (t.odd_levels ? 1 : 0), negative, i == 0 && j == 0, q0, out);
        }
  }
  if (offsets != word_offsets) delete[] offsets;
}

// ---------------------------------------------------------------------------------------------
// The unpacked integer path: PMADDWD of two 8-lane halves of int16 weight pairs with a
// broadcast pair of uint16 codes (two channels), 6 pixels per register block.

void integer_tile(const IntegerTile& t, int32_t* out) {
  constexpr int NR = 6;
  for (int q0 = 0; q0 < t.pixels; q0 += NR) {
    __m256i lo[NR], hi[NR];
#pragma GCC unroll 6
    for (int q = 0; q < NR; ++q) lo[q] = hi[q] = _mm256_setzero_si256();
    const int64_t* px = t.pixel_offsets + q0;
    const int16_t* w = t.weights;
    for (int kh = 0; kh < t.kernel_h; ++kh)
      for (int kw = 0; kw < t.kernel_w; ++kw) {
        const uint16_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
        for (int p = 0; p < t.pairs; ++p, w += 2 * kLanes) {
          const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
          const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + kLanes));
#pragma GCC unroll 6
          for (int q = 0; q < NR; ++q) {
            const __m256i b = _mm256_broadcastd_epi32(_mm_loadu_si32(tap + px[q] + 2 * p));
            lo[q] = _mm256_add_epi32(lo[q], _mm256_madd_epi16(w0, b));
            hi[q] = _mm256_add_epi32(hi[q], _mm256_madd_epi16(w1, b));
          }
        }
      }
#pragma GCC unroll 6
    for (int q = 0; q < NR; ++q) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + (q0 + q) * kLanes), lo[q]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + (q0 + q) * kLanes + 8), hi[q]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Epilogue: two 8-lane halves per pixel.

// In-place transpose of an 8x8 float matrix held as 8 rows.
inline void transpose8(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + m]: in 128-bit lane k, column 4k + m of rows 4g .. 4g + 3
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
    r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
  }
}

inline __m256 epilogue_values(bool relu, __m256i a, __m256 scale, __m256 bias) {
  const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(a), scale);
  __m256 y = _mm256_add_ps(t, bias);
  if (relu) y = _mm256_max_ps(y, _mm256_setzero_ps());  // MAXPS: y > 0 ? y : +0 (NaN -> +0)
  return y;
}

// `factor` is the scale, or its float reciprocal when `reciprocal` (ActivationQuant::reciprocal).
inline __m256i quantize_codes(__m256 x, __m256 factor, bool reciprocal, __m256 zero_point, __m256 top) {
  const __m256 ratio = reciprocal ? _mm256_mul_ps(x, factor) : _mm256_div_ps(x, factor);
  __m256 r = _mm256_round_ps(ratio, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_add_ps(r, zero_point);
  r = _mm256_max_ps(r, _mm256_setzero_ps());  // NaN -> 0
  r = _mm256_min_ps(r, top);
  return _mm256_cvttps_epi32(r);
}

inline __m256i accumulator(const EpilogueTile& e, int q, int h) {
  __m256i a = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(e.acc + q * kLanes + 8 * h)),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.lane_offset + 8 * h)));
  if (e.pixel_offset) a = _mm256_add_epi32(a, _mm256_set1_epi32(e.pixel_offset[q]));
  return a;
}

void epilogue_tile(const EpilogueTile& tile) {
  // A local copy: the byte stores below may alias anything reachable through a pointer, which
  // would make the compiler reload every field of the caller's struct after each store.
  const EpilogueTile e = tile;
  const uint32_t valid = e.lanes >= 16 ? 0xffffu : (1u << e.lanes) - 1;
  if (e.out_float) {
    alignas(64) float y[kTilePixels][kLanes];
    for (int h = 0; h < 2; ++h) {
      const __m256 scale = _mm256_loadu_ps(e.scale + 8 * h), bias = _mm256_loadu_ps(e.bias + 8 * h);
      for (int q = 0; q < e.pixels; ++q) _mm256_store_ps(y[q] + 8 * h, epilogue_values(e.relu, accumulator(e, q, h), scale, bias));
    }
    if (e.lane_stride == 1 && e.lanes == kLanes) {
      for (int q = 0; q < e.pixels; ++q) std::memcpy(e.out_float + e.out_offsets[q], y[q], sizeof y[q]);
      return;
    }
    // NCHW: runs of 8 pixels with consecutive destinations go through 8x8 transposes.
    int q = 0;
    while (q < e.pixels) {
      int run = 1;
      while (q + run < e.pixels && run < 8 && e.out_offsets[q + run] == e.out_offsets[q] + run) ++run;
      if (run == 8) {
        for (int h = 0; h * 8 < e.lanes; ++h) {
          __m256 rows[8];
          for (int r = 0; r < 8; ++r) rows[r] = _mm256_load_ps(y[q + r] + 8 * h);
          transpose8(rows);
          for (int l = 0; l < 8 && 8 * h + l < e.lanes; ++l)
            _mm256_storeu_ps(e.out_float + e.out_offsets[q] + (8 * h + l) * e.lane_stride, rows[l]);
        }
      } else {
        for (int r = 0; r < run; ++r)
          for (int l = 0; l < e.lanes; ++l) e.out_float[e.out_offsets[q + r] + l * e.lane_stride] = y[q + r][l];
      }
      q += run;
    }
    return;
  }
  if (e.thresholds && scalar::max_code(e.out_quant) == 1) {  // one output bit: the comparison is the plane
    const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds));
    const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds + 8));
    const __m256i t0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds + kLanes));
    const __m256i t1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds + kLanes + 8));
    for (int q = 0; q < e.pixels; ++q) {
      // bit = a >= t = !(t > a)
      const auto above0 = static_cast<uint32_t>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t0, _mm256_sign_epi32(accumulator(e, q, 0), d0)))));
      const auto above1 = static_cast<uint32_t>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t1, _mm256_sign_epi32(accumulator(e, q, 1), d1)))));
      const auto plane = static_cast<uint16_t>(~(above0 | (above1 << 8)) & valid);
      uint8_t* dst = e.out_packed + e.out_offsets[q];
      if (e.lanes > 8)
        std::memcpy(dst, &plane, 2);
      else
        dst[0] = static_cast<uint8_t>(plane);
    }
    return;
  }
  if (e.thresholds) {
    // Sorted thresholds: the code bit by bit from the top (a binary search); each comparison is
    // a plane. "above" masks are -1 where the threshold is above a, i.e. where the bit is 0.
    const int bits = e.out_quant.bits;  // 2..3 here (1 bit is handled above)
    __m256i th[2][8];
    __m256i direction[2];
    for (int h = 0; h < 2; ++h) {
      direction[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds + 8 * h));
      for (int k = 1; k < (1 << bits); ++k)
        th[h][k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.thresholds + k * kLanes + 8 * h));
    }
    auto plane_bits = [](__m256i above0, __m256i above1) {
      const auto lo = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(above0)));
      const auto hi = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(above1)));
      return ~(lo | (hi << 8));
    };
    for (int q = 0; q < e.pixels; ++q) {
      __m256i above[3][2];  // [bit][half]
      for (int h = 0; h < 2; ++h) {
        const __m256i a = _mm256_sign_epi32(accumulator(e, q, h), direction[h]);  // direction is +-1
        if (bits == 2) {
          above[1][h] = _mm256_cmpgt_epi32(th[h][2], a);
          above[0][h] = _mm256_cmpgt_epi32(_mm256_blendv_epi8(th[h][3], th[h][1], above[1][h]), a);
        } else {
          above[2][h] = _mm256_cmpgt_epi32(th[h][4], a);
          above[1][h] = _mm256_cmpgt_epi32(_mm256_blendv_epi8(th[h][6], th[h][2], above[2][h]), a);
          const __m256i low = _mm256_blendv_epi8(th[h][3], th[h][1], above[1][h]);
          const __m256i high = _mm256_blendv_epi8(th[h][7], th[h][5], above[1][h]);
          above[0][h] = _mm256_cmpgt_epi32(_mm256_blendv_epi8(high, low, above[2][h]), a);
        }
      }
      uint8_t* dst = e.out_packed + e.out_offsets[q];
      for (int j = 0; j < bits; ++j) {
        const auto plane = static_cast<uint16_t>(plane_bits(above[j][0], above[j][1]) & valid);
        if (e.lanes > 8)
          std::memcpy(dst + j * e.plane_stride, &plane, 2);
        else
          dst[j * e.plane_stride] = static_cast<uint8_t>(plane);
      }
    }
    return;
  }
  alignas(32) int32_t codes[kTilePixels][kLanes];
  {
    const __m256 out_scale = _mm256_set1_ps(e.out_quant.reciprocal ? 1.0f / e.out_quant.scale : e.out_quant.scale);
    const __m256 zero_point = _mm256_set1_ps(static_cast<float>(e.out_quant.zero_point));
    const __m256 top = _mm256_set1_ps(static_cast<float>(scalar::max_code(e.out_quant)));
    for (int h = 0; h < 2; ++h) {
      const __m256 scale = _mm256_loadu_ps(e.scale + 8 * h), bias = _mm256_loadu_ps(e.bias + 8 * h);
      for (int q = 0; q < e.pixels; ++q) {
        const __m256 y = epilogue_values(e.relu, accumulator(e, q, h), scale, bias);
        _mm256_store_si256(reinterpret_cast<__m256i*>(codes[q] + 8 * h), quantize_codes(y, out_scale, e.out_quant.reciprocal, zero_point, top));
      }
    }
  }
  for (int q = 0; q < e.pixels; ++q) {
    const __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes[q]));
    const __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes[q] + 8));
    uint8_t* dst = e.out_packed + e.out_offsets[q];
    for (int j = 0; j < e.out_quant.bits; ++j) {
      // bit j moved to the sign bit, then MOVMSKPS collects one bit per lane
      const auto lo = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c0, 31 - j))));
      const auto hi = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c1, 31 - j))));
      const auto plane = static_cast<uint16_t>((lo | (hi << 8)) & valid);
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
  const __m256 scale = _mm256_set1_ps(q.reciprocal ? 1.0f / q.scale : q.scale);
  const __m256 zero_point = _mm256_set1_ps(static_cast<float>(q.zero_point));
  const __m256 top = _mm256_set1_ps(static_cast<float>(scalar::max_code(q)));
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i c = quantize_codes(_mm256_loadu_ps(x + i), scale, q.reciprocal, zero_point, top);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    const __m128i narrowed = _mm_packus_epi16(words, words);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), narrowed);
  }
  scalar::quantize(x + i, 1, count - i, q, codes + i);
}

void pack_pixels(const uint8_t* codes, int64_t pixels, int64_t channels, int64_t pixel_bits, int bits,
                 int64_t first_pixel, uint8_t* out, int64_t plane_stride) {
  const int64_t pixel_bytes = pixel_bits / 8;
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* c = codes + p * channels;
    for (int64_t c0 = 0; c0 < channels; c0 += 32) {
      const int64_t n = scalar::min_of<int64_t>(32, channels - c0);
      alignas(32) uint8_t chunk[32] = {};
      std::memcpy(chunk, c + c0, static_cast<std::size_t>(n));
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(chunk));
      const int64_t bytes = (n + 7) / 8;
      for (int j = 0; j < bits; ++j) {
        // bit j of each byte to its top bit; 16-bit shifts are fine since MOVMSK reads bit 7 only
        const auto plane = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(v, 7 - j)));
        std::memcpy(out + j * plane_stride + (first_pixel + p) * pixel_bytes + c0 / 8, &plane,
                    static_cast<std::size_t>(bytes));
      }
    }
  }
}

// Float NCHW row to packed planes: 8 channels x 8 pixels transposed in registers, so each
// register holds one pixel's 8 channels and MOVMSKPS of a shifted code gives the plane byte.
void quantize_pack_row(const float* x, int64_t channel_stride, int64_t channels, int64_t width, const ActivationQuant& q,
                       uint8_t* out, int64_t plane_stride, int64_t pixel_bytes, uint8_t* /*scratch: unused*/) {
  const __m256 scale = _mm256_set1_ps(q.reciprocal ? 1.0f / q.scale : q.scale);
  const __m256 zero_point = _mm256_set1_ps(static_cast<float>(q.zero_point));
  const __m256 top = _mm256_set1_ps(static_cast<float>(scalar::max_code(q)));
  for (int64_t c0 = 0; c0 < channels; c0 += 8) {
    const int nc = static_cast<int>(scalar::min_of<int64_t>(8, channels - c0));
    const uint32_t cmask = (1u << nc) - 1;
    for (int64_t w0 = 0; w0 < width; w0 += 8) {
      const int nw = static_cast<int>(scalar::min_of<int64_t>(8, width - w0));
      __m256 rows[8];
      for (int r = 0; r < 8; ++r) {
        if (r >= nc) {
          rows[r] = _mm256_setzero_ps();
        } else if (nw == 8) {
          rows[r] = _mm256_loadu_ps(x + (c0 + r) * channel_stride + w0);
        } else {
          alignas(32) float part[8] = {};
          std::memcpy(part, x + (c0 + r) * channel_stride + w0, static_cast<std::size_t>(nw) * sizeof(float));
          rows[r] = _mm256_load_ps(part);
        }
      }
      transpose8(rows);
      for (int p = 0; p < nw; ++p) {
        const __m256i codes = quantize_codes(rows[p], scale, q.reciprocal, zero_point, top);
        uint8_t* dst = out + (w0 + p) * pixel_bytes + c0 / 8;
        for (int j = 0; j < q.bits; ++j)
          dst[j * plane_stride] = static_cast<uint8_t>(
              static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(codes, 31 - j)))) & cmask);
      }
    }
  }
}

uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(_mm_popcnt_u64(x)); }

}  // namespace

constinit const KernelTable kAvx2Table = {
    dense_tile, epilogue_tile, scalar::depthwise_tile, integer_tile, 16, 4, quantize, pack_pixels, quantize_pack_row,
    scalar::pixel_code_sums<popcount64>,
};

}  // namespace bitmix::kernels::detail
