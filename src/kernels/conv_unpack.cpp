// The driver's operand preparation for the popcount family: the integral image of the window
// code sums, and the codes unpacked for the depthwise and int16 paths (conv.cpp runs the tiles).
#include <algorithm>
#include <cstring>
#include <vector>

#include "bitmix/core/thread_pool.hpp"
#include "conv_internal.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels::detail {

// The integral image of the per-pixel code sums (all channels) of every stored image:
// prefix[n][r][x] = sum over stored rows < r and columns < x, (SH + 1) x (SW + 1) per image.
// It wraps modulo 2^32; the window sums taken from it fit int32 (conv2d checks the range), so
// the wrapped differences are exact.
void code_sum_prefix(const PackedActivations& input, const KernelTable& table, uint32_t* prefix) {
  const int64_t sh = input.stored_height(), sw = input.stored_width();
  const int64_t pixel_bytes = input.pixel_bits() / 8;
  parallel_for(input.batch(), 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> row_sums(static_cast<std::size_t>(sw));
    for (int64_t n = begin; n < end; ++n) {
      uint32_t* image = prefix + n * (sh + 1) * (sw + 1);
      std::fill(image, image + sw + 1, 0u);
      for (int64_t r = 0; r < sh; ++r) {
        std::fill(row_sums.begin(), row_sums.end(), 0);
        for (int j = 0; j < input.bits(); ++j)
          table.pixel_code_sums(input.data() + input.row_offset(n, r, j), sw, pixel_bytes, pixel_bytes, j,
                                row_sums.data());
        const uint32_t* above = image + r * (sw + 1);
        uint32_t* line = image + (r + 1) * (sw + 1);
        uint32_t running = 0;
        line[0] = 0;
        for (int64_t x = 0; x < sw; ++x) {
          running += static_cast<uint32_t>(row_sums[static_cast<std::size_t>(x)]);
          line[x + 1] = above[x + 1] + running;
        }
      }
    }
  });
}

namespace {

// spread[b] has bit t of byte b at bit 0 of byte t: ORing spread[b] << j into 8 codes sets
// plane j of 8 channels at once.
struct ByteSpread {
  uint64_t table[256];
  constexpr ByteSpread() : table() {
    for (int b = 0; b < 256; ++b) {
      uint64_t v = 0;
      for (int t = 0; t < 8; ++t) v |= static_cast<uint64_t>((b >> t) & 1) << (8 * t);
      table[b] = v;
    }
  }
};
constexpr ByteSpread kByteSpread;

}  // namespace

// All codes of the stored input (border included) as [n][stored row][stored col][channel].
std::vector<uint8_t> unpack_codes(const PackedActivations& input) {
  const int64_t sh = input.stored_height(), sw = input.stored_width(), c = input.channels();
  const int64_t pixel_bytes = input.pixel_bits() / 8;
  std::vector<uint8_t> codes(static_cast<std::size_t>(input.batch() * sh * sw * c + 8), 0);
  parallel_for(input.batch() * sh, 16, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> pixel(static_cast<std::size_t>(pixel_bytes));
    for (int64_t nr = begin; nr < end; ++nr) {
      const int64_t n = nr / sh, r = nr % sh;
      uint8_t* out = codes.data() + nr * sw * c;
      for (int64_t x = 0; x < sw; ++x) {
        std::fill(pixel.begin(), pixel.end(), uint64_t{0});
        for (int j = 0; j < input.bits(); ++j) {
          const uint8_t* bytes = input.data() + input.row_offset(n, r, j) + x * pixel_bytes;
          for (int64_t b = 0; b < pixel_bytes; ++b) pixel[static_cast<std::size_t>(b)] |= kByteSpread.table[bytes[b]] << j;
        }
        // channels 8b .. 8b + 7 are the bytes of pixel[b]; the last group may be partial
        for (int64_t b = 0; b < pixel_bytes; ++b) {
          const int64_t count = std::min<int64_t>(8, c - 8 * b);
          std::memcpy(out + x * c + 8 * b, &pixel[static_cast<std::size_t>(b)], static_cast<std::size_t>(count));
        }
      }
    }
  });
  return codes;
}

namespace {
// spread16[b] = bits 0..3 (first word) and 4..7 (second word) of byte b as four uint16 lanes
// each: ORing them shifted by j sets plane j of 8 uint16 codes at once.
struct ByteSpread16 {
  uint64_t table[256][2];
  constexpr ByteSpread16() : table() {
    for (int b = 0; b < 256; ++b)
      for (int t = 0; t < 8; ++t) table[b][t / 4] |= static_cast<uint64_t>((b >> t) & 1) << (16 * (t % 4));
  }
};
constexpr ByteSpread16 kByteSpread16;
}  // namespace

// The codes as uint16 with the channels padded to an even count (zero), for the integer path:
// [n][stored row][stored col][round_up(C, 2)].
void unpack_codes16(const PackedActivations& input, uint16_t* codes) {
  const int64_t sh = input.stored_height(), sw = input.stored_width(), c = input.channels();
  const int64_t c2 = round_up(c, 2), pixel_bytes = input.pixel_bits() / 8;
  parallel_for(input.batch() * sh, 16, [&](int64_t begin, int64_t end) {
    // One row at a time: 8 uint16 lanes (two uint64) per packed byte, built in registers over
    // the planes (the plane rows are read side by side, each sequentially).
    const int64_t row_bytes = sw * pixel_bytes;
    const int planes = input.bits();
    std::vector<uint64_t> row(static_cast<std::size_t>(2 * row_bytes));
    const uint8_t* plane_rows[8] = {};
    for (int64_t nr = begin; nr < end; ++nr) {
      const int64_t n = nr / sh, r = nr % sh;
      for (int j = 0; j < planes; ++j) plane_rows[j] = input.data() + input.row_offset(n, r, j);
      uint16_t* out = codes + nr * sw * c2;
      // With C a multiple of 8 the lanes are the output itself; otherwise pixel x's first c2 of
      // its 8 * pixel_bytes lanes are kept (a padding channel is zero in the planes).
      const bool direct = c2 == 8 * pixel_bytes;
      uint64_t* lanes = row.data();
      for (int64_t b = 0; b < row_bytes; ++b) {
        uint64_t lo = 0, hi = 0;
        for (int j = 0; j < planes; ++j) {
          const uint8_t byte = plane_rows[j][b];
          lo |= kByteSpread16.table[byte][0] << j;
          hi |= kByteSpread16.table[byte][1] << j;
        }
        if (direct) {
          std::memcpy(out + 8 * b, &lo, 8);
          std::memcpy(out + 8 * b + 4, &hi, 8);
        } else {
          lanes[2 * b] = lo;
          lanes[2 * b + 1] = hi;
        }
      }
      if (!direct) {
        for (int64_t x = 0; x < sw; ++x) {
          const uint64_t* src = row.data() + 2 * x * pixel_bytes;
          for (int64_t k = 0; k < c2; ++k)
            out[x * c2 + k] = static_cast<uint16_t>(src[k / 4] >> (16 * (k % 4)));
        }
      }
    }
  });
}


}  // namespace bitmix::kernels::detail
