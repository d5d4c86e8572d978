// AVX-512 path (F/BW/VL/DQ + VPOPCNTDQ). Output channels sit in the 16 dword lanes of a zmm
// (one weight word per lane); each activation word is broadcast to all lanes, ANDed with the
// weights and counted with VPOPCNTD, so no horizontal reduction is ever needed and the result
// of a tile is already the per-channel vector the epilogue works on.
#include <immintrin.h>

#include <cstring>

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -Wuninitialized
// then reports at every inlined use (GCC bug 105593); the values are fully overwritten.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {
namespace {

// Pixels per register block for a pass over MP weight planes and KP activation planes:
// (MP + KP - 1) diagonal accumulators per pixel, kept with the MP weight registers in 32 zmm.
template <int MP, int KP>
constexpr int block_pixels() {
  return MP + KP - 1 == 1 ? 16 : MP + KP - 1 == 2 ? 12 : 8;
}

// One pass: weight planes [i0, i0 + MP), activation planes [j0, j0 + KP), pixels
// [q0, q0 + NR) of the tile; adds its weighted counts to out.
template <int MP, int KP, bool NegTop>
void dense_pass(const DenseTile& t, int i0, int j0, int q0, bool first, int32_t* out) {
  constexpr int NR = block_pixels<MP, KP>();
  constexpr int D = MP + KP - 1;
  __m512i acc[D][NR];
#pragma GCC unroll 16
  for (int d = 0; d < D; ++d)
#pragma GCC unroll 16
    for (int q = 0; q < NR; ++q) acc[d][q] = _mm512_setzero_si512();

  const int m = t.weight_planes;
  const int64_t* offsets = t.pixel_offsets + q0;
  for (int kh = 0; kh < t.kernel_h; ++kh) {
    const uint8_t* row = t.input + kh * t.row_stride + j0 * t.plane_stride;
    const uint32_t* wk = t.weights + (static_cast<int64_t>(kh) * t.words_per_row * m + i0) * kLanes;
    for (int d = 0; d < t.words_per_row; ++d) {
      __m512i w[MP];
#pragma GCC unroll 2
      for (int i = 0; i < MP; ++i) w[i] = _mm512_load_si512(wk + (d * m + i) * kLanes);
      const uint8_t* word = row + 4 * d;
#pragma GCC unroll 16
      for (int q = 0; q < NR; ++q) {
        const uint8_t* p = word + offsets[q];
#pragma GCC unroll 2
        for (int j = 0; j < KP; ++j) {
          const __m512i b = _mm512_set1_epi32(static_cast<int>(load_u32(p + j * t.plane_stride)));
#pragma GCC unroll 2
          for (int i = 0; i < MP; ++i) {
            const __m512i c = _mm512_popcnt_epi32(_mm512_and_si512(w[i], b));
            if (NegTop && i == MP - 1)
              acc[i + j][q] = _mm512_sub_epi32(acc[i + j][q], c);
            else
              acc[i + j][q] = _mm512_add_epi32(acc[i + j][q], c);
          }
        }
      }
    }
  }
  const int base_shift = i0 + j0 + (t.odd_levels ? 1 : 0);
#pragma GCC unroll 16
  for (int q = 0; q < NR; ++q) {
    __m512i sum = first ? _mm512_setzero_si512() : _mm512_load_si512(out + (q0 + q) * kLanes);
#pragma GCC unroll 16
    for (int d = 0; d < D; ++d)
      sum = _mm512_add_epi32(sum, _mm512_sll_epi32(acc[d][q], _mm_cvtsi32_si128(base_shift + d)));
    _mm512_store_si512(out + (q0 + q) * kLanes, sum);
  }
}

template <int MP, int KP>
void dense_pass_dispatch(const DenseTile& t, int i0, int j0, bool neg_top, int32_t* out) {
  constexpr int NR = block_pixels<MP, KP>();
  const bool first = i0 == 0 && j0 == 0;  // the first pass writes, later ones accumulate
  for (int q0 = 0; q0 < t.pixels; q0 += NR) {
    if (neg_top)
      dense_pass<MP, KP, true>(t, i0, j0, q0, first, out);
    else
      dense_pass<MP, KP, false>(t, i0, j0, q0, first, out);
  }
}

void dense_tile(const DenseTile& t, int32_t* out) {
  const int m = t.weight_planes, k = t.act_planes;
  for (int i0 = 0; i0 < m; i0 += 2) {
    const int mp = scalar::min_of(2, m - i0);
    const bool neg_top = !t.odd_levels && i0 + mp == m;
    for (int j0 = 0; j0 < k; j0 += 2) {
      const int kp = scalar::min_of(2, k - j0);
      if (mp == 1 && kp == 1) dense_pass_dispatch<1, 1>(t, i0, j0, neg_top, out);
      else if (mp == 1) dense_pass_dispatch<1, 2>(t, i0, j0, neg_top, out);
      else if (kp == 1) dense_pass_dispatch<2, 1>(t, i0, j0, neg_top, out);
      else dense_pass_dispatch<2, 2>(t, i0, j0, neg_top, out);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The unpacked integer path: VPMADDWD of 16 lanes of int16 weight pairs with a broadcast pair of
// uint16 codes (two channels), 12 pixels per register block.

void integer_tile(const IntegerTile& t, int32_t* out) {
  constexpr int NR = 12;
  for (int q0 = 0; q0 < t.pixels; q0 += NR) {
    __m512i acc[NR];
#pragma GCC unroll 12
    for (int q = 0; q < NR; ++q) acc[q] = _mm512_setzero_si512();
    const int64_t* px = t.pixel_offsets + q0;
    const int16_t* w = t.weights;
    for (int kh = 0; kh < t.kernel_h; ++kh)
      for (int kw = 0; kw < t.kernel_w; ++kw) {
        const uint16_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
        for (int p = 0; p < t.pairs; ++p, w += 2 * kLanes) {
          const __m512i wv = _mm512_load_si512(w);
#pragma GCC unroll 12
          for (int q = 0; q < NR; ++q) {
            const __m512i b = _mm512_set1_epi32(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(tap + px[q] + 2 * p))));
            acc[q] = _mm512_add_epi32(acc[q], _mm512_madd_epi16(wv, b));
          }
        }
      }
#pragma GCC unroll 12
    for (int q = 0; q < NR; ++q) _mm512_store_si512(out + (q0 + q) * kLanes, acc[q]);
  }
}

// ---------------------------------------------------------------------------------------------
// Epilogue

// In-place transpose of a 16x16 float matrix held as 16 rows.
inline void transpose16(__m512* r) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + m] holds, in 128-bit lane k, column 4k + m of rows 4g .. 4g + 3
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
    const __m512 w = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 w2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
    r[m] = _mm512_shuffle_f32x4(v, v2, 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(v, v2, 0xdd);
    r[4 + m] = _mm512_shuffle_f32x4(w, w2, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(w, w2, 0xdd);
  }
}

inline __m512 epilogue_values(const EpilogueTile& e, __m512i a, __m512 scale, __m512 bias) {
  const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(a), scale);
  __m512 y = _mm512_add_ps(t, bias);
  // MAXPS returns its second operand when either is NaN or both are zero: y > 0 ? y : +0.
  if (e.relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
  return y;
}

// quantize_code() for 16 lanes, operation by operation.
// `factor` is the scale, or its float reciprocal when `reciprocal` (ActivationQuant::reciprocal).
inline __m512i quantize_codes(__m512 x, __m512 factor, bool reciprocal, __m512 zero_point, __m512 top) {
  const __m512 ratio = reciprocal ? _mm512_mul_ps(x, factor) : _mm512_div_ps(x, factor);
  __m512 r = _mm512_roundscale_ps(ratio, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_add_ps(r, zero_point);
  r = _mm512_max_ps(r, _mm512_setzero_ps());  // NaN -> 0
  r = _mm512_min_ps(r, top);
  return _mm512_cvttps_epi32(r);
}

inline void store_planes(const EpilogueTile& e, int q, __m512i codes, __mmask16 valid) {
  uint8_t* dst = e.out_packed + e.out_offsets[q];
  const int bits = e.out_quant.bits;
  for (int j = 0; j < bits; ++j) {
    const __mmask16 plane = _mm512_mask_test_epi32_mask(valid, codes, _mm512_set1_epi32(1 << j));
    const auto v = static_cast<uint16_t>(plane);
    if (e.lanes > 8)
      std::memcpy(dst + j * e.plane_stride, &v, 2);
    else
      dst[j * e.plane_stride] = static_cast<uint8_t>(v);
  }
}

// store_planes() for the four pixels q .. q + 3 at once. Their codes, narrowed to bytes, fill one
// register, so one VPTESTMB per plane yields the plane bits of all four pixels (pixel i in mask
// bits 16i .. 16i + 15), and the mask leaves through a general register instead of one KMOVW
// store per pixel and plane (the bound of the requantizing epilogue: KMOV to memory is slow).
// When the four destinations are consecutive 2-byte slots of one row (a 16-channel tensor),
// each plane is a single 8-byte store. The bytes written are exactly store_planes()'s.
inline void store_planes4(const EpilogueTile& e, int q, const __m512i* codes, __mmask64 valid4) {
  const __m256i lo = _mm256_set_m128i(_mm512_cvtepi32_epi8(codes[1]), _mm512_cvtepi32_epi8(codes[0]));
  const __m256i hi = _mm256_set_m128i(_mm512_cvtepi32_epi8(codes[3]), _mm512_cvtepi32_epi8(codes[2]));
  const __m512i bytes = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  const int64_t* off = e.out_offsets + q;
  uint8_t* dst = e.out_packed + off[0];
  const bool wide = e.lanes > 8;
  const bool contiguous = wide && off[1] == off[0] + 2 && off[2] == off[0] + 4 && off[3] == off[0] + 6;
  const int bits = e.out_quant.bits;
  for (int j = 0; j < bits; ++j) {
    const uint64_t m = _mm512_mask_test_epi8_mask(valid4, bytes, _mm512_set1_epi8(static_cast<char>(1 << j)));
    if (contiguous) {
      std::memcpy(dst + j * e.plane_stride, &m, 8);
      continue;
    }
    for (int i = 0; i < 4; ++i) {
      uint8_t* d = e.out_packed + off[i] + j * e.plane_stride;
      const auto v = static_cast<uint16_t>(m >> (16 * i));
      if (wide)
        std::memcpy(d, &v, 2);
      else
        d[0] = static_cast<uint8_t>(v);
    }
  }
}

void epilogue_tile(const EpilogueTile& tile) {
  // A local copy: the byte stores below may alias anything reachable through a pointer, which
  // would make the compiler reload every field of the caller's struct after each store.
  const EpilogueTile e = tile;
  const __m512i lane_offset = _mm512_loadu_si512(e.lane_offset);
  const __m512 scale = _mm512_loadu_ps(e.scale);
  const __m512 bias = _mm512_loadu_ps(e.bias);
  const __mmask16 valid = static_cast<__mmask16>(e.lanes >= 16 ? 0xffff : (1u << e.lanes) - 1);
  if (e.out_float) {
    alignas(64) float y[kTilePixels][kLanes];
    for (int q = 0; q < e.pixels; ++q) {
      __m512i a = _mm512_add_epi32(_mm512_load_si512(e.acc + q * kLanes), lane_offset);
      if (e.pixel_offset) a = _mm512_add_epi32(a, _mm512_set1_epi32(e.pixel_offset[q]));
      _mm512_store_ps(y[q], epilogue_values(e, a, scale, bias));
    }
    if (e.lane_stride == 1) {  // channels contiguous (GEMM output): one store per pixel
      // (masked stores are slow on some CPUs: only the partial last block uses them)
      if (e.lanes == kLanes) {
        for (int q = 0; q < e.pixels; ++q) _mm512_storeu_ps(e.out_float + e.out_offsets[q], _mm512_load_ps(y[q]));
      } else {
        for (int q = 0; q < e.pixels; ++q) _mm512_mask_storeu_ps(e.out_float + e.out_offsets[q], valid, _mm512_load_ps(y[q]));
      }
      return;
    }
    // NCHW: each channel is a row of consecutive pixels. Runs of 16 pixels with consecutive
    // destinations go through an in-register 16x16 transpose, the rest element by element.
    int q = 0;
    while (q < e.pixels) {
      int run = 1;
      while (q + run < e.pixels && run < 16 && e.out_offsets[q + run] == e.out_offsets[q] + run) ++run;
      if (run == 16) {
        __m512 rows[16];
        for (int r = 0; r < 16; ++r) rows[r] = _mm512_load_ps(y[q + r]);
        transpose16(rows);
        for (int l = 0; l < e.lanes; ++l) _mm512_storeu_ps(e.out_float + e.out_offsets[q] + l * e.lane_stride, rows[l]);
      } else {
        for (int r = 0; r < run; ++r)
          for (int l = 0; l < e.lanes; ++l) e.out_float[e.out_offsets[q + r] + l * e.lane_stride] = y[q + r][l];
      }
      q += run;
    }
    return;
  }
  if (e.thresholds) {
    const __m512i direction = _mm512_loadu_si512(e.thresholds);
    const __mmask16 negate = _mm512_cmplt_epi32_mask(direction, _mm512_setzero_si512());
    // The thresholds are sorted, so the code is found bit by bit from the top, as a binary
    // search whose comparison masks are the output planes themselves: 2^K' - 1 compares become
    // K', and the candidate threshold of each lane is picked with mask blends.
    const int bits = e.out_quant.bits;  // 1..3 (Epilogue::kMaxThresholdBits)
    __m512i th[8];
    for (int k = 1; k < (1 << bits); ++k) th[k] = _mm512_loadu_si512(e.thresholds + k * kLanes);
    auto store_plane = [&](uint8_t* dst, __mmask16 plane) {
      const auto v = static_cast<uint16_t>(plane);
      if (e.lanes > 8)
        std::memcpy(dst, &v, 2);
      else
        dst[0] = static_cast<uint8_t>(v);
    };
    for (int q = 0; q < e.pixels; ++q) {
      __m512i a = _mm512_add_epi32(_mm512_load_si512(e.acc + q * kLanes), lane_offset);
      if (e.pixel_offset) a = _mm512_add_epi32(a, _mm512_set1_epi32(e.pixel_offset[q]));
      a = _mm512_mask_sub_epi32(a, negate, _mm512_setzero_si512(), a);
      uint8_t* dst = e.out_packed + e.out_offsets[q];
      if (bits == 1) {
        store_plane(dst, _mm512_mask_cmpge_epi32_mask(valid, a, th[1]));
      } else if (bits == 2) {
        const __mmask16 b1 = _mm512_cmpge_epi32_mask(a, th[2]);
        const __mmask16 b0 = _mm512_cmpge_epi32_mask(a, _mm512_mask_blend_epi32(b1, th[1], th[3]));
        store_plane(dst, b0 & valid);
        store_plane(dst + e.plane_stride, b1 & valid);
      } else {
        const __mmask16 b2 = _mm512_cmpge_epi32_mask(a, th[4]);
        const __mmask16 b1 = _mm512_cmpge_epi32_mask(a, _mm512_mask_blend_epi32(b2, th[2], th[6]));
        const __m512i low = _mm512_mask_blend_epi32(b1, th[1], th[3]);
        const __m512i high = _mm512_mask_blend_epi32(b1, th[5], th[7]);
        const __mmask16 b0 = _mm512_cmpge_epi32_mask(a, _mm512_mask_blend_epi32(b2, low, high));
        store_plane(dst, b0 & valid);
        store_plane(dst + e.plane_stride, b1 & valid);
        store_plane(dst + 2 * e.plane_stride, b2 & valid);
      }
    }
    return;
  }
  const __m512 out_scale = _mm512_set1_ps(e.out_quant.reciprocal ? 1.0f / e.out_quant.scale : e.out_quant.scale);
  const __m512 zero_point = _mm512_set1_ps(static_cast<float>(e.out_quant.zero_point));
  const __m512 top = _mm512_set1_ps(static_cast<float>(scalar::max_code(e.out_quant)));
  auto codes_at = [&](int q) {
    __m512i a = _mm512_add_epi32(_mm512_load_si512(e.acc + q * kLanes), lane_offset);
    if (e.pixel_offset) a = _mm512_add_epi32(a, _mm512_set1_epi32(e.pixel_offset[q]));
    return quantize_codes(epilogue_values(e, a, scale, bias), out_scale, e.out_quant.reciprocal, zero_point, top);
  };
  const __mmask64 valid4 = static_cast<__mmask64>(uint64_t{valid} * 0x0001000100010001ull);
  int q = 0;
  for (; q + 4 <= e.pixels; q += 4) {
    const __m512i codes[4] = {codes_at(q), codes_at(q + 1), codes_at(q + 2), codes_at(q + 3)};
    store_planes4(e, q, codes, valid4);
  }
  for (; q < e.pixels; ++q) store_planes(e, q, codes_at(q), valid);
}

// ---------------------------------------------------------------------------------------------
// Activation packing

void quantize(const float* x, int64_t stride, int64_t count, const ActivationQuant& q, uint8_t* codes) {
  if (stride != 1) {
    scalar::quantize(x, stride, count, q, codes);
    return;
  }
  const __m512 scale = _mm512_set1_ps(q.reciprocal ? 1.0f / q.scale : q.scale);
  const __m512 zero_point = _mm512_set1_ps(static_cast<float>(q.zero_point));
  const __m512 top = _mm512_set1_ps(static_cast<float>(scalar::max_code(q)));
  for (int64_t i = 0; i < count; i += 16) {
    const int64_t n = scalar::min_of<int64_t>(16, count - i);
    const auto mask = static_cast<__mmask16>(n == 16 ? 0xffff : (1u << n) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    _mm_mask_storeu_epi8(codes + i, mask, _mm512_cvtepi32_epi8(quantize_codes(v, scale, q.reciprocal, zero_point, top)));
  }
}

void pack_pixels(const uint8_t* codes, int64_t pixels, int64_t channels, int64_t pixel_bits, int bits,
                 int64_t first_pixel, uint8_t* out, int64_t plane_stride) {
  const int64_t pixel_bytes = pixel_bits / 8;
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* c = codes + p * channels;
    for (int64_t c0 = 0; c0 < channels; c0 += 64) {
      const int64_t n = scalar::min_of<int64_t>(64, channels - c0);
      const __mmask64 mask = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
      const __m512i v = _mm512_maskz_loadu_epi8(mask, c + c0);
      const int64_t bytes = (n + 7) / 8;
      for (int j = 0; j < bits; ++j) {
        const uint64_t plane = _mm512_mask_test_epi8_mask(mask, v, _mm512_set1_epi8(static_cast<char>(1 << j)));
        std::memcpy(out + j * plane_stride + (first_pixel + p) * pixel_bytes + c0 / 8, &plane,
                    static_cast<std::size_t>(bytes));
      }
    }
  }
}

// Float NCHW row to packed planes without a byte transpose: 16 channels x 16 pixels of floats
// are transposed in registers, so each register holds one pixel's 16 channels; its codes' bit
// planes are then 16-bit masks, exactly the pixel's bytes in each plane.
void quantize_pack_row(const float* x, int64_t channel_stride, int64_t channels, int64_t width, const ActivationQuant& q,
                       uint8_t* out, int64_t plane_stride, int64_t pixel_bytes, uint8_t* /*scratch: unused*/) {
  const __m512 scale = _mm512_set1_ps(q.reciprocal ? 1.0f / q.scale : q.scale);
  const __m512 zero_point = _mm512_set1_ps(static_cast<float>(q.zero_point));
  const __m512 top = _mm512_set1_ps(static_cast<float>(scalar::max_code(q)));
  for (int64_t c0 = 0; c0 < channels; c0 += 16) {
    const int nc = static_cast<int>(scalar::min_of<int64_t>(16, channels - c0));
    const auto cmask = static_cast<__mmask16>(nc == 16 ? 0xffff : (1u << nc) - 1);
    const int bytes = (nc + 7) / 8;
    for (int64_t w0 = 0; w0 < width; w0 += 16) {
      const int nw = static_cast<int>(scalar::min_of<int64_t>(16, width - w0));
      const auto wmask = static_cast<__mmask16>(nw == 16 ? 0xffff : (1u << nw) - 1);
      __m512 rows[16];
      for (int r = 0; r < 16; ++r)
        rows[r] = r < nc ? _mm512_maskz_loadu_ps(wmask, x + (c0 + r) * channel_stride + w0) : _mm512_setzero_ps();
      transpose16(rows);
      for (int p = 0; p < nw; ++p) {
        const __m512i codes = quantize_codes(rows[p], scale, q.reciprocal, zero_point, top);
        uint8_t* dst = out + (w0 + p) * pixel_bytes + c0 / 8;
        for (int j = 0; j < q.bits; ++j) {
          const auto plane = static_cast<uint16_t>(_mm512_mask_test_epi32_mask(cmask, codes, _mm512_set1_epi32(1 << j)));
          if (bytes == 2)
            std::memcpy(dst + j * plane_stride, &plane, 2);
          else
            dst[j * plane_stride] = static_cast<uint8_t>(plane);
        }
      }
    }
  }
}

uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(_mm_popcnt_u64(x)); }

}  // namespace

constinit const KernelTable kAvx512Table = {
    dense_tile, epilogue_tile, scalar::depthwise_tile, integer_tile, 3, 2, quantize, pack_pixels, quantize_pack_row, scalar::pixel_code_sums<popcount64>,
};

}  // namespace bitmix::kernels::detail
