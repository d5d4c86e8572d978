// Kernel families: names, the cost model that picks one per layer, and the int8 family's
// operand preparation (what the driver in conv.cpp needs beyond the tiles).
#include "bitmix/kernels/family.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels/lut.hpp"
#include "conv_internal.hpp"
#include "core/isa_dispatch.hpp"
#include "family_internal.hpp"
#include "layout.hpp"
#include "lut/lut_table.hpp"

namespace bitmix::kernels {

std::string_view kernel_family_name(KernelFamily family) {
  if (family == KernelFamily::automatic) return "auto";
  for (const KernelFamilyInfo& f : kKernelFamilies)
    if (f.family == family) return f.name;
  return "unknown";
}

KernelFamily parse_kernel_family(std::string_view text, std::string_view what) {
  if (text == "auto") return KernelFamily::automatic;
  std::string names = "auto";
  for (const KernelFamilyInfo& f : kKernelFamilies) {
    if (text == f.name) return f.family;
    names += ", ";
    names += f.name;
  }
  throw ArgumentError(fmt::format("{}='{}': expected one of {}", what, text, names));
}

KernelFamily choose_kernel_family(const WeightSpec& weights, int activation_bits) {
  validate(weights, "choose_kernel_family");
  if (activation_bits < 1 || activation_bits > 8)
    throw ArgumentError(fmt::format("choose_kernel_family: activation bits {} outside 1..8", activation_bits));
  return detail::resolve_family(KernelFamily::automatic, weights, activation_bits, detail::kernel_table(),
                                detail::int8_table());
}

namespace detail {

DenseCosts dense_costs(const WeightSpec& spec, int act_bits, const KernelTable& table, const Int8Table& int8) {
  DenseCosts c;
  const int64_t words_per_row = ceil_div(spec.kernel_w * round_up(spec.in_channels, 8), 32);
  const int64_t taps = spec.kernel_h * spec.kernel_w;
  c.bit_serial = int64_t{spec.bits} * act_bits * spec.kernel_h * words_per_row * table.bit_pair_word_cost;
  c.integer16 = taps * ((spec.in_channels + 1) / 2) * table.integer_pair_cost;
  const bool split = int8_tile_settings(spec, act_bits).split_nibbles;
  c.int8 = taps * ((spec.in_channels + 3) / 4) * (split ? int8.split_quad_cost : int8.quad_cost);
  return c;
}

double lut_cost(const WeightSpec& spec, int act_bits) {
  // The table-lookup figures are AVX2 ymm operations, the unit of the AVX2 KernelTable and
  // Int8Table costs; they were measured only there (and the family loses to the AVX-512
  // popcount kernels), so on every other path the family is not a candidate.
  if (spec.depthwise || !lut_supported(spec, act_bits) || kernel_dispatch().active_variant().isa != Isa::avx2 ||
      lut_dispatch().active_variant().isa != Isa::avx2)
    return -1;
  // With 3-4 bit activations (4 index bytes per pixel) the operation count overstates the
  // kernels against int8: measured on AVX2 (Zen 4, whole ResNet-20 layers, `bitmix bench
  // --kernel-family lut|int8`), stride-1 W2-4 A3-4 layers ran at 0.6-0.8x of int8's time while
  // the count said 1.0-1.3x. 0.75 brings the count to the slow end of that range.
  const double calibration = act_bits > 2 ? 0.75 : 1.0;
  return calibration * lut_ops_per_pixel(spec, act_bits) / static_cast<double>(ceil_div(spec.out_channels, 16));
}

KernelFamily resolve_family(KernelFamily requested, const WeightSpec& spec, int act_bits, const KernelTable& table,
                            const Int8Table& int8) {
  if (spec.depthwise) return KernelFamily::popcount;
  // A forced lut falls back to the automatic choice where it cannot run (so that forcing it is
  // valid for every model).
  if (requested == KernelFamily::lut && !lut_supported(spec, act_bits)) requested = KernelFamily::automatic;
  if (requested != KernelFamily::automatic) return requested;
  const DenseCosts c = dense_costs(spec, act_bits, table, int8);
  const int64_t popcount = std::min(c.bit_serial, c.integer16);
  const double lut = lut_cost(spec, act_bits);
  if (lut >= 0 && lut < static_cast<double>(std::min(popcount, c.int8))) return KernelFamily::lut;
  return c.int8 < popcount ? KernelFamily::int8 : KernelFamily::popcount;
}

KernelFamily conv_family(KernelFamily requested, const WeightSpec& spec, int act_bits) {
  // A forced dense path, the tests' hook into the popcount family, makes `automatic` popcount.
  if (requested == KernelFamily::automatic && dense_path() != DensePath::automatic) return KernelFamily::popcount;
  if (requested == KernelFamily::lut && !lut_supported(spec, act_bits) && dense_path() != DensePath::automatic)
    return KernelFamily::popcount;
  return resolve_family(requested, spec, act_bits, kernel_table(), int8_table());
}

bool runs_lut(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params) {
  if (input.empty() || weights.empty()) return false;
  return conv_family(params.family, weights.spec(), input.bits()) == KernelFamily::lut;
}

Int8Tile int8_tile_settings(const WeightSpec& spec, int act_bits) {
  // Largest |stored weight byte| and activation code: a VPMADDUBSW pair sum is at most
  // 2 * a_max * w_max, and int16 lanes may add up 32767 / that many of them exactly.
  const int64_t w_max = spec.encoding == WeightEncoding::twos_complement ? int64_t{1} << (spec.bits - 1)
                        : int8_halves_weights(spec)                      ? 128
                                                                         : (int64_t{1} << spec.bits) - 1;
  int64_t a_max = (int64_t{1} << act_bits) - 1;
  Int8Tile t;
  t.split_nibbles = 2 * a_max * w_max > 32767;
  if (t.split_nibbles) a_max = 15;
  t.int16_quads = static_cast<int>(std::min<int64_t>(32767 / (2 * a_max * w_max), int64_t{1} << 20));
  t.shift = int8_halves_weights(spec) ? 1 : 0;
  return t;
}

void unpack_codes8(const PackedActivations& input, const Int8Table& table, uint8_t* codes) {
  const int64_t sh = input.stored_height(), sw = input.stored_width(), c = input.channels();
  const int64_t c4 = round_up(c, 4), pixel_bytes = input.pixel_bits() / 8;
  const int planes = input.bits();
  // A row stream of pixels of Cs = 8 * pixel_bytes channels expands into [pixel][Cs] bytes; when
  // Cs == C4 that is the output row itself, otherwise each pixel keeps its first C4 bytes (the
  // padding channels are zero bits in the planes).
  const bool direct = c4 == 8 * pixel_bytes;
  const int64_t row_bytes = sw * pixel_bytes;
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(1, row_bytes * 8 * planes));
  parallel_for(input.batch() * sh, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> wide(direct ? 0 : static_cast<std::size_t>(row_bytes * 8));
    const uint8_t* plane_rows[8] = {};
    for (int64_t nr = begin; nr < end; ++nr) {
      const int64_t n = nr / sh, r = nr % sh;
      for (int j = 0; j < planes; ++j) plane_rows[j] = input.data() + input.row_offset(n, r, j);
      uint8_t* out = codes + nr * sw * c4;
      table.expand_planes(plane_rows, planes, row_bytes, direct ? out : wide.data());
      if (!direct)
        for (int64_t x = 0; x < sw; ++x)
          std::memcpy(out + x * c4, wide.data() + x * 8 * pixel_bytes, static_cast<std::size_t>(c4));
    }
  });
}

}  // namespace detail
}  // namespace bitmix::kernels
