#pragma once
// The internal interface between the table-lookup driver (lut_conv.cpp) and its per-ISA tile
// kernels (lut_scalar.cpp, lut_avx2.cpp). Plain structs, function pointer types and the extern
// tables only: the ISA translation units include it (their rules: src/core/isa_dispatch.hpp).
#include <cstdint>

namespace bitmix::detail {
class IsaDispatchBase;
}

namespace bitmix::kernels::detail {

// Pixels of one driver tile (kTilePixels of kernel_table.hpp, restated here so the ISA units
// need nothing else).
inline constexpr int kLutTilePixels = 48;

// One 16-lane output block of one tile. Its indices come in 3 * slots runs of 16 bytes per
// table group j: run h covers pixels [h * 16 / slots, (h + 1) * 16 / slots), and byte
// i * slots + k of it, at run[h] + group_offsets[j], is the 4-bit index of pixel
// (h * 16 / slots + i), activation plane k (0 for k >= act_bits). Runs 2r and 2r + 1 form one
// 32-byte index register (one load when run[2r + 1] == run[2r] + 16). The tables are
// [4 channel quads][groups][4][16] signed bytes. The kernel writes
// out[q * 16 + l] = sum over groups j and planes k of 2^k * T[l][j][index(q, j, k)].
struct LutTile {
  const uint8_t* run[12] = {};
  const int64_t* group_offsets = nullptr;
  const int8_t* tables = nullptr;  // this block's 4 channel quads
  int64_t groups = 0;
  int slots = 2;                   // 2 (activations of 1-2 bits) or 4 (3-4 bits)
  int widen_steps = 1;             // groups summed in bytes before widening (|sum| <= 127)
  int pixels = kLutTilePixels;     // valid pixels: registers past them may be skipped
};

// Index bytes of one stored row of `pixels` pixels: for each group of 4 channels (quad), the
// pixels' `slots` bytes, byte k = the quad's bits of plane k (planes[k], the row's bit stream of
// pixel_bytes bytes per pixel; 0 for k >= bits): out + quad * quad_stride + x * slots + k.
using LutExpandRowFn = void (*)(const uint8_t* const* planes, int bits, int64_t pixels, int64_t pixel_bytes,
                                int slots, uint8_t* out, int64_t quad_stride);

struct LutTable {
  void (*tile)(const LutTile& tile, int32_t* out);
  LutExpandRowFn expand_row;
};

// The table for the current cap (lut_conv.cpp, through the one ISA-dispatch mechanism).
const LutTable& lut_table();
const bitmix::detail::IsaDispatchBase& lut_dispatch();

extern const LutTable kLutScalarTable;
#if defined(BITMIX_HAVE_AVX2)
extern const LutTable kLutAvx2Table;
#endif
#if defined(BITMIX_HAVE_NEON)
extern const LutTable kLutNeonTable;
#endif

}  // namespace bitmix::kernels::detail
