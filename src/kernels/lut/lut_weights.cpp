// The lookup tables of the table-lookup kernels, built from packed weights, and what they accept.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "bitmix/core/error.hpp"
#include "bitmix/kernels/lut.hpp"
#include "layout.hpp"

namespace bitmix::kernels {

namespace {
int max_abs_code(int bits, WeightEncoding encoding) {
  return encoding == WeightEncoding::odd_levels ? (1 << bits) - 1 : 1 << (bits - 1);
}
}  // namespace

bool lut_supported(const WeightSpec& spec, int act_bits) noexcept {
  if (spec.depthwise || spec.bits < 1 || spec.bits > 4 || act_bits < 1 || act_bits > 4) return false;
  // Each int16 lane sums, over the window, w * (its planes' share of the code) <= |w| * code.
  const int64_t reduction = spec.in_channels * spec.kernel_h * spec.kernel_w;
  return reduction * max_abs_code(spec.bits, spec.encoding) * ((1 << act_bits) - 1) <= 32767;
}

LutWeights::LutWeights(const PackedWeights& weights) : weights_(weights) {
  if (weights.empty()) throw ArgumentError("LutWeights: the weights are empty");
  const WeightSpec& s = weights.spec();
  if (s.depthwise) throw ArgumentError("LutWeights: depthwise weights have no channel reduction to tabulate");
  if (s.bits > 4)
    throw ArgumentError(fmt::format("LutWeights: {}-bit weights are too wide for byte tables (at most 4 bits)", s.bits));
  // Only quads holding a channel: the index image also has the all-padding quad of a pixel
  // whose channel count leaves one (C mod 8 in 1..4), which would only look up zeros.
  const int64_t quads_per_position = detail::ceil_div(s.in_channels, 4);
  groups_ = s.kernel_h * s.kernel_w * quads_per_position;
  const int64_t channel_quads = weights.lane_blocks() * 4;
  tables_.assign(static_cast<std::size_t>(channel_quads * groups_ * 64), 0);
  const std::vector<int32_t> codes = weights.codes();
  for (int32_t c : codes) max_abs_ = std::max(max_abs_, std::abs(c));
  for (int64_t m = 0; m < s.out_channels; ++m)
    for (int64_t kh = 0; kh < s.kernel_h; ++kh)
      for (int64_t kw = 0; kw < s.kernel_w; ++kw)
        for (int64_t quad = 0; quad < quads_per_position; ++quad) {
          int32_t w[4] = {0, 0, 0, 0};  // channels past in_channels weigh nothing
          for (int i = 0; i < 4; ++i) {
            const int64_t c = 4 * quad + i;
            if (c < s.in_channels)
              w[i] = codes[static_cast<std::size_t>(((m * s.in_channels + c) * s.kernel_h + kh) * s.kernel_w + kw)];
          }
          const int64_t j = (kh * s.kernel_w + kw) * quads_per_position + quad;
          int8_t* entry = tables_.data() + (((m / 4) * groups_ + j) * 4 + m % 4) * 16;
          for (int idx = 0; idx < 16; ++idx) {
            int32_t sum = 0;
            for (int i = 0; i < 4; ++i)
              if ((idx >> i) & 1) sum += w[i];
            entry[idx] = static_cast<int8_t>(sum);  // |sum| <= 4 * 15
          }
        }
}

double lut_ops_per_pixel(const WeightSpec& spec, int act_bits) noexcept {
  if (!lut_supported(spec, act_bits)) return 0;
  const double slots = act_bits <= 2 ? 2 : 4;
  const double groups = static_cast<double>(spec.kernel_h * spec.kernel_w * detail::ceil_div(spec.in_channels, 4));
  const double channels = static_cast<double>(detail::round_up(spec.out_channels, 16));
  const int widen = 127 / (4 * max_abs_code(spec.bits, spec.encoding));
  // per channel and 32-byte index register (32 / slots pixels): a lookup and an add per group,
  // a multiply-add and an add per widening, the int32 conversion; the index copies (one
  // 16-byte load and store per group and run, shared by all channels); the 4x4 transposes.
  const double per_register = 2 * groups + 2 * std::ceil(groups / widen) + 2;
  return channels * per_register * slots / 32 + groups * 2 * slots / 16 + channels * 0.75;
}

}  // namespace bitmix::kernels
