#pragma once
// Small layout helpers shared by the driver, the packers and every ISA's kernels.
//
// Internal linkage (an anonymous namespace) on purpose: the per-ISA translation units include
// this too, and an inline function with external linkage that one of them emits out of line
// could be the copy the linker keeps for everyone (the rule in src/core/isa_dispatch.hpp).

#include <bit>
#include <cstdint>
#include <cstring>

#include "bitmix/kernels/activations.hpp"

namespace bitmix::kernels::detail {
namespace {

static_assert(std::endian::native == std::endian::little,
              "packed planes are read as little-endian words; big-endian targets are not supported");

constexpr int64_t round_up(int64_t value, int64_t multiple) noexcept {
  return (value + multiple - 1) / multiple * multiple;
}

// How far the reads of one window row go past the window: the kernels read it as
// ceil(KW·Cs / 32) 32-bit words from its first byte, and KW·Cs / 8 is a whole number of bytes
// (Cs is a multiple of 8), so the words end at most 3 bytes after the window's last byte (the
// weights' zero bits cancel whatever is there). A window lies inside its row, so only the last
// row of a PackedActivations can be read past, by at most that much.
constexpr int64_t window_overread_bytes(int64_t window_bytes) noexcept {
  return round_up(window_bytes, 4) - window_bytes;
}

// Bytes allocated after the last row of every PackedActivations, so that those reads stay
// inside the allocation (AddressSanitizer checks it in CI: the kernels' suites run under it).
inline constexpr int64_t kInputSlackBytes = 64;
static_assert([] {
  for (int64_t window_bytes = 1; window_bytes <= 4096; ++window_bytes)
    if (window_overread_bytes(window_bytes) > 3 || window_overread_bytes(window_bytes) > kInputSlackBytes) return false;
  return true;
}(), "a window row's word reads must stay within the slack after the last row");
constexpr int64_t ceil_div(int64_t value, int64_t divisor) noexcept { return (value + divisor - 1) / divisor; }

inline uint32_t load_u32(const uint8_t* p) noexcept {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Writes the code `code` into plane `plane` of pixels [x_begin, x_end) of stored row `row`.
// Pixels start on byte boundaries (Cs is a multiple of 8), so whole bytes are written. (Called
// for every border pixel of every output: plain byte stores, no memset call per pixel.)
inline void fill_pixels_with_code(PackedActivations& a, int64_t n, int64_t row, int plane, int64_t x_begin,
                                  int64_t x_end, int32_t code) {
  const bool bit = ((code >> plane) & 1) != 0;
  const int64_t channels = a.channels(), pixel_bytes = a.pixel_bits() / 8;
  uint8_t* p = a.data() + a.row_offset(n, row, plane) + x_begin * pixel_bytes;
  const int64_t bytes = (x_end - x_begin) * pixel_bytes;
  if (!bit) {
    for (int64_t i = 0; i < bytes; ++i) p[i] = 0;
    return;
  }
  // Set bits for the channels, zero for the Cs - C padding bits of each pixel.
  const auto last = static_cast<uint8_t>(channels % 8 == 0 ? 0xff : (1u << (channels % 8)) - 1);
  for (int64_t i = 0; i < bytes; ++i) p[i] = (i % pixel_bytes == pixel_bytes - 1) ? last : uint8_t{0xff};
}

}  // namespace
}  // namespace bitmix::kernels::detail
