// AVX2 table-lookup tile: VPSHUFB with 16-entry tables broadcast from memory (VBROADCASTI128),
// 4 channels x 2 index registers per group step, signed byte sums widened every widen_steps
// groups by VPMADDUBSW with the plane weights [1, 2] (or [1, 2, 4, 8]) as the unsigned operand.
// The index registers are reused by the 4 channels, the tables by the 2 index registers: 6
// loads per 8 lookups and 8 adds. (Layout and bounds: lut_table.hpp.)
#include <immintrin.h>

#include "lut/lut_scalar_parts.hpp"
#include "lut/lut_table.hpp"

namespace bitmix::kernels::detail {
namespace {

// Sums of one channel quad over `Regs` index registers (starting with register `reg0`):
// sums[channel][pixel] (int32), pixel = register * (32 / slots) + position.
template <int Regs, bool Contiguous>
void quad_pass(const LutTile& t, int reg0, const int8_t* tables, int32_t* sums /* [4][kLutTilePixels] */) {
  const int slots = t.slots;
  const __m256i plane_weights = slots == 2 ? _mm256_set1_epi16(0x0201) : _mm256_set1_epi32(0x08040201);
  const uint8_t* lo[Regs];
  const uint8_t* hi[Regs];
  for (int r = 0; r < Regs; ++r) {
    lo[r] = t.run[2 * (reg0 + r)];
    hi[r] = t.run[2 * (reg0 + r) + 1];
  }
  __m256i wide[4 * Regs];
  for (auto& w : wide) w = _mm256_setzero_si256();
  for (int64_t j0 = 0; j0 < t.groups; j0 += t.widen_steps) {
    const int64_t j1 = j0 + t.widen_steps < t.groups ? j0 + t.widen_steps : t.groups;
    __m256i acc[4 * Regs];
    for (auto& a : acc) a = _mm256_setzero_si256();
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t offset = t.group_offsets[j];
      __m256i idx[Regs];
#pragma GCC unroll 2
      for (int r = 0; r < Regs; ++r) {
        if (Contiguous) {
          idx[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo[r] + offset));
        } else {
          const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo[r] + offset));
          const __m128i high = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi[r] + offset));
          idx[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
        }
      }
      const int8_t* tj = tables + j * 64;
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tj + m * 16)));
#pragma GCC unroll 2
        for (int r = 0; r < Regs; ++r)
          acc[m * Regs + r] = _mm256_add_epi8(_mm256_shuffle_epi8(table, idx[r]), acc[m * Regs + r]);
      }
      // Keeps each accumulator in its register: GCC 12 otherwise renames them every step and
      // adds a register move per lookup (measured with the lut_loop benchmark).
#pragma GCC unroll 8
      for (int k = 0; k < 4 * Regs; ++k) __asm__("" : "+x"(acc[k]));
    }
#pragma GCC unroll 8
    for (int k = 0; k < 4 * Regs; ++k) wide[k] = _mm256_add_epi16(wide[k], _mm256_maddubs_epi16(plane_weights, acc[k]));
  }
  const int reg_pixels = 32 / slots;
  for (int m = 0; m < 4; ++m)
    for (int r = 0; r < Regs; ++r) {
      int32_t* dst = sums + m * kLutTilePixels + (reg0 + r) * reg_pixels;
      const __m256i w = wide[m * Regs + r];
      if (slots == 2) {  // one int16 per pixel, in order
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(w)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(w, 1)));
      } else {  // two int16 halves per pixel
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_madd_epi16(w, _mm256_set1_epi16(1)));
      }
    }
}

template <int Regs>
void quad_pass_any(const LutTile& t, int reg0, const int8_t* tables, int32_t* sums) {
  bool contiguous = true;
  for (int r = reg0; r < reg0 + Regs; ++r) contiguous = contiguous && t.run[2 * r + 1] == t.run[2 * r] + 16;
  if (contiguous)
    quad_pass<Regs, true>(t, reg0, tables, sums);
  else
    quad_pass<Regs, false>(t, reg0, tables, sums);
}

void lut_tile_avx2(const LutTile& t, int32_t* out) {
  // 32-byte index registers per group: 3 or 6, fewer in a last tile that is not full
  const int reg_pixels = 32 / t.slots;
  const int full = 3 * t.slots / 2, needed = (t.pixels + reg_pixels - 1) / reg_pixels;
  const int registers = needed < full ? needed : full;
  alignas(32) int32_t sums[4 * kLutTilePixels];
  for (int quad = 0; quad < 4; ++quad) {
    const int8_t* tables = t.tables + quad * t.groups * 64;
    int r = 0;
    for (; r + 2 <= registers; r += 2) quad_pass_any<2>(t, r, tables, sums);
    if (r < registers) quad_pass_any<1>(t, r, tables, sums);
    // [4 channels][48 pixels] -> out[pixel][16 lanes]: 4x4 transposes, one 16-byte store per pixel
    for (int q = 0; q < kLutTilePixels; q += 4) {
      const __m128i c0 = _mm_load_si128(reinterpret_cast<const __m128i*>(sums + 0 * kLutTilePixels + q));
      const __m128i c1 = _mm_load_si128(reinterpret_cast<const __m128i*>(sums + 1 * kLutTilePixels + q));
      const __m128i c2 = _mm_load_si128(reinterpret_cast<const __m128i*>(sums + 2 * kLutTilePixels + q));
      const __m128i c3 = _mm_load_si128(reinterpret_cast<const __m128i*>(sums + 3 * kLutTilePixels + q));
      const __m128i a = _mm_unpacklo_epi32(c0, c1), b = _mm_unpackhi_epi32(c0, c1);
      const __m128i c = _mm_unpacklo_epi32(c2, c3), d = _mm_unpackhi_epi32(c2, c3);
      int32_t* dst = out + q * 16 + quad * 4;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(a, c));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi64(a, c));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi64(b, d));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi64(b, d));
    }
  }
}

// Byte b of 16 consecutive pixels of one plane row (pixel_bytes 1, 2, 4 or 8 per pixel):
// out[b] for b < pixel_bytes. A byte shuffle groups each 16-byte chunk's bytes by position,
// then a transpose of 32-, 16- or 8-bit units gathers the chunks.
inline void gather_byte_columns(const uint8_t* p, int64_t pixel_bytes, __m128i* out) {
  auto load = [p](int i) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)); };
  if (pixel_bytes == 1) {
    out[0] = load(0);
  } else if (pixel_bytes == 2) {
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i t0 = _mm_shuffle_epi8(load(0), order), t1 = _mm_shuffle_epi8(load(1), order);
    out[0] = _mm_unpacklo_epi64(t0, t1);
    out[1] = _mm_unpackhi_epi64(t0, t1);
  } else if (pixel_bytes == 4) {
    const __m128i order = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m128i t[4];
    for (int i = 0; i < 4; ++i) t[i] = _mm_shuffle_epi8(load(i), order);
    const __m128i u0 = _mm_unpacklo_epi32(t[0], t[1]), u1 = _mm_unpackhi_epi32(t[0], t[1]);
    const __m128i u2 = _mm_unpacklo_epi32(t[2], t[3]), u3 = _mm_unpackhi_epi32(t[2], t[3]);
    out[0] = _mm_unpacklo_epi64(u0, u2);
    out[1] = _mm_unpackhi_epi64(u0, u2);
    out[2] = _mm_unpacklo_epi64(u1, u3);
    out[3] = _mm_unpackhi_epi64(u1, u3);
  } else {  // 8
    const __m128i order = _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    __m128i t[8], a[8], b[8];
    for (int i = 0; i < 8; ++i) t[i] = _mm_shuffle_epi8(load(i), order);
    for (int i = 0; i < 8; i += 2) {
      a[i] = _mm_unpacklo_epi16(t[i], t[i + 1]);
      a[i + 1] = _mm_unpackhi_epi16(t[i], t[i + 1]);
    }
    for (int g = 0; g < 8; g += 4)
      for (int h = 0; h < 2; ++h) {
        b[g + 2 * h] = _mm_unpacklo_epi32(a[g + h], a[g + h + 2]);
        b[g + 2 * h + 1] = _mm_unpackhi_epi32(a[g + h], a[g + h + 2]);
      }
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = _mm_unpacklo_epi64(b[i], b[i + 4]);
      out[2 * i + 1] = _mm_unpackhi_epi64(b[i], b[i + 4]);
    }
  }
}

void lut_expand_row_avx2(const uint8_t* const* planes, int bits, int64_t pixels, int64_t pixel_bytes, int slots,
                         uint8_t* out, int64_t quad_stride) {
  int64_t x0 = 0;
  if (pixel_bytes == 1 || pixel_bytes == 2 || pixel_bytes == 4 || pixel_bytes == 8) {
    const __m128i nibble = _mm_set1_epi8(0x0f);
    for (; x0 + 16 <= pixels; x0 += 16) {
      __m128i columns[4][8];
      for (int k = 0; k < slots; ++k) {
        if (k < bits)
          gather_byte_columns(planes[k] + x0 * pixel_bytes, pixel_bytes, columns[k]);
        else
          for (int b = 0; b < 8; ++b) columns[k][b] = _mm_setzero_si128();
      }
      for (int64_t b = 0; b < pixel_bytes; ++b)
        for (int half = 0; half < 2; ++half) {
          __m128i v[4];
          for (int k = 0; k < slots; ++k)
            v[k] = half == 0 ? _mm_and_si128(columns[k][b], nibble)
                             : _mm_and_si128(_mm_srli_epi16(columns[k][b], 4), nibble);
          auto* dst = reinterpret_cast<__m128i*>(out + (2 * b + half) * quad_stride + x0 * slots);
          if (slots == 2) {
            _mm_storeu_si128(dst, _mm_unpacklo_epi8(v[0], v[1]));
            _mm_storeu_si128(dst + 1, _mm_unpackhi_epi8(v[0], v[1]));
          } else {
            const __m128i a = _mm_unpacklo_epi8(v[0], v[1]), c = _mm_unpackhi_epi8(v[0], v[1]);
            const __m128i e = _mm_unpacklo_epi8(v[2], v[3]), f = _mm_unpackhi_epi8(v[2], v[3]);
            _mm_storeu_si128(dst, _mm_unpacklo_epi16(a, e));
            _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(a, e));
            _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(c, f));
            _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(c, f));
          }
        }
    }
  }
  lut_expand_pixels_scalar(planes, bits, x0, pixels, pixel_bytes, slots, out, quad_stride);
}

}  // namespace

constinit const LutTable kLutAvx2Table{lut_tile_avx2, lut_expand_row_avx2};

}  // namespace bitmix::kernels::detail
