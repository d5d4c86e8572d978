#include "bitmix/kernels/weights.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "bitmix/core/error.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels {
namespace {

// The unsigned plane pattern of a code: bit i of the result is plane i.
uint32_t planes_of(int32_t code, int bits, WeightEncoding encoding) noexcept {
  const int32_t top = (1 << bits) - 1;
  if (encoding == WeightEncoding::twos_complement) return static_cast<uint32_t>(code) & static_cast<uint32_t>(top);
  return static_cast<uint32_t>((code + top) / 2);  // s'_i = (s_i + 1) / 2
}

int32_t code_of(uint32_t planes, int bits, WeightEncoding encoding) noexcept {
  const auto u = static_cast<int32_t>(planes);
  if (encoding == WeightEncoding::twos_complement) return (u >> (bits - 1)) != 0 ? u - (1 << bits) : u;
  return 2 * u - ((1 << bits) - 1);
}

constexpr int64_t kMaxExtent = int64_t{1} << 24;

}  // namespace

std::string_view encoding_name(WeightEncoding encoding) {
  return encoding == WeightEncoding::twos_complement ? "twos_complement" : "odd_levels";
}

void validate(const WeightSpec& spec, std::string_view what) {
  if (spec.bits < 1 || spec.bits > 8)
    throw ArgumentError(fmt::format("{}: weight bits {} outside 1..8", what, spec.bits));
  if (spec.encoding != WeightEncoding::twos_complement && spec.encoding != WeightEncoding::odd_levels)
    throw ArgumentError(fmt::format("{}: unknown weight encoding {}", what, static_cast<int>(spec.encoding)));
  const int64_t extents[] = {spec.out_channels, spec.in_channels, spec.kernel_h, spec.kernel_w};
  for (int64_t e : extents)
    if (e < 1 || e > kMaxExtent)
      throw ArgumentError(fmt::format("{}: weight extents [out {}, in {}, kh {}, kw {}] must be in 1..{}", what,
                                      spec.out_channels, spec.in_channels, spec.kernel_h, spec.kernel_w, kMaxExtent));
  if (spec.kernel_h * spec.kernel_w > 4096)
    throw ArgumentError(fmt::format("{}: kernel {}x{} larger than 4096 taps", what, spec.kernel_h, spec.kernel_w));
  if (spec.depthwise && spec.out_channels % spec.in_channels != 0)
    throw ArgumentError(fmt::format("{}: depthwise out_channels {} must be a multiple of in_channels {}", what,
                                    spec.out_channels, spec.in_channels));
  if (static_cast<double>(spec.code_count()) > static_cast<double>(int64_t{1} << 34))
    throw ArgumentError(fmt::format("{}: {} weight codes is too many", what, spec.code_count()));
}

bool weight_code_valid(int32_t code, int bits, WeightEncoding encoding) noexcept {
  if (bits < 1 || bits > 8) return false;
  if (encoding == WeightEncoding::twos_complement)
    return code >= -(1 << (bits - 1)) && code <= (1 << (bits - 1)) - 1;
  const int32_t top = (1 << bits) - 1;
  return code >= -top && code <= top && (code % 2 != 0);
}

int64_t PackedWeights::word_count(const WeightSpec& spec) {
  validate(spec, "PackedWeights");
  if (spec.depthwise)
    return spec.kernel_h * spec.kernel_w * spec.bits * detail::ceil_div(spec.out_channels, 32);
  const int64_t pixel_bits = detail::round_up(spec.in_channels, 8);
  const int64_t words_per_row = detail::ceil_div(spec.kernel_w * pixel_bits, 32);
  return detail::ceil_div(spec.out_channels, detail::kLanes) * spec.kernel_h * words_per_row * spec.bits *
         detail::kLanes;
}

PackedWeights PackedWeights::pack(std::span<const int32_t> codes, const WeightSpec& spec) {
  validate(spec, "PackedWeights::pack");
  if (static_cast<int64_t>(codes.size()) != spec.code_count())
    throw ShapeError(fmt::format("PackedWeights::pack: {} codes given, [{}, {}, {}, {}] needs {}", codes.size(),
                                 spec.out_channels, spec.depthwise ? 1 : spec.in_channels, spec.kernel_h,
                                 spec.kernel_w, spec.code_count()));
  const int64_t group_in = spec.depthwise ? 1 : spec.in_channels;
  for (std::size_t i = 0; i < codes.size(); ++i)
    if (!weight_code_valid(codes[i], spec.bits, spec.encoding)) {
      const auto idx = static_cast<int64_t>(i);
      const int64_t kw = idx % spec.kernel_w, kh = idx / spec.kernel_w % spec.kernel_h;
      const int64_t ic = idx / (spec.kernel_w * spec.kernel_h) % group_in;
      const int64_t oc = idx / (spec.kernel_w * spec.kernel_h * group_in);
      const std::string range = spec.encoding == WeightEncoding::twos_complement
                                    ? fmt::format("[{}, {}]", -(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1)
                                    : fmt::format("odd in [{}, {}]", -((1 << spec.bits) - 1), (1 << spec.bits) - 1);
      throw ArgumentError(fmt::format("PackedWeights::pack: code {} at [{}, {}, {}, {}] outside {} for {}-bit {}",
                                      codes[i], oc, ic, kh, kw, range, spec.bits, encoding_name(spec.encoding)));
    }

  PackedWeights w;
  w.spec_ = spec;
  w.words_.assign(static_cast<std::size_t>(word_count(spec)), 0u);
  const int m = spec.bits;
  if (spec.depthwise) {
    const int64_t per_plane = detail::ceil_div(spec.out_channels, 32);
    for (int64_t oc = 0; oc < spec.out_channels; ++oc)
      for (int64_t kh = 0; kh < spec.kernel_h; ++kh)
        for (int64_t kw = 0; kw < spec.kernel_w; ++kw) {
          const uint32_t u =
              planes_of(codes[static_cast<std::size_t>((oc * spec.kernel_h + kh) * spec.kernel_w + kw)], m, spec.encoding);
          for (int i = 0; i < m; ++i)
            if ((u >> i) & 1u)
              w.words_[static_cast<std::size_t>(((kh * spec.kernel_w + kw) * m + i) * per_plane + oc / 32)] |=
                  1u << (oc % 32);
        }
  } else {
    const int64_t cs = detail::round_up(spec.in_channels, 8);
    const int64_t wd = detail::ceil_div(spec.kernel_w * cs, 32);
    const int64_t block_words = spec.kernel_h * wd * m * detail::kLanes;
    for (int64_t oc = 0; oc < spec.out_channels; ++oc) {
      const int64_t block = oc / detail::kLanes, lane = oc % detail::kLanes;
      for (int64_t ic = 0; ic < spec.in_channels; ++ic)
        for (int64_t kh = 0; kh < spec.kernel_h; ++kh)
          for (int64_t kw = 0; kw < spec.kernel_w; ++kw) {
            const uint32_t u = planes_of(
                codes[static_cast<std::size_t>(((oc * spec.in_channels + ic) * spec.kernel_h + kh) * spec.kernel_w + kw)],
                m, spec.encoding);
            const int64_t pos = kw * cs + ic;
            for (int i = 0; i < m; ++i)
              if ((u >> i) & 1u)
                w.words_[static_cast<std::size_t>(block * block_words + ((kh * wd + pos / 32) * m + i) * detail::kLanes +
                                                  lane)] |= 1u << (pos % 32);
          }
    }
  }
  w.derive();
  return w;
}

PackedWeights::PackedWeights(const WeightSpec& spec, std::span<const uint32_t> words) {
  const int64_t expected = word_count(spec);
  if (static_cast<int64_t>(words.size()) != expected)
    throw FormatError(fmt::format("PackedWeights: {} words given, a {}-bit {} [{}, {}, {}, {}]{} layout needs {}",
                                  words.size(), spec.bits, encoding_name(spec.encoding), spec.out_channels,
                                  spec.in_channels, spec.kernel_h, spec.kernel_w, spec.depthwise ? " depthwise" : "",
                                  expected));
  spec_ = spec;
  words_.assign(words.begin(), words.end());
  derive();
  // Canonical form: re-packing the decoded codes must give the same words, i.e. no padding bit
  // is set. A set padding bit would silently corrupt results, so a file carrying one is refused.
  const PackedWeights canonical = pack(codes(), spec_);
  if (!std::equal(canonical.words_.begin(), canonical.words_.end(), words_.begin()))
    throw FormatError("PackedWeights: padding bits are set in the serialized words (corrupt or foreign data)");
}

void PackedWeights::derive() {
  const WeightSpec& s = spec_;
  if (s.depthwise) {
    pixel_bits_ = words_per_row_ = lane_blocks_ = block_words_ = 0;
  } else {
    pixel_bits_ = detail::round_up(s.in_channels, 8);
    words_per_row_ = detail::ceil_div(s.kernel_w * pixel_bits_, 32);
    lane_blocks_ = detail::ceil_div(s.out_channels, detail::kLanes);
    block_words_ = s.kernel_h * words_per_row_ * s.bits * detail::kLanes;
  }
  const std::vector<int32_t> all = codes();
  const int64_t per_oc = (s.depthwise ? 1 : s.in_channels) * s.kernel_h * s.kernel_w;
  channel_sums_.assign(static_cast<std::size_t>(s.out_channels), 0);
  for (int64_t oc = 0; oc < s.out_channels; ++oc)
    for (int64_t k = 0; k < per_oc; ++k) channel_sums_[static_cast<std::size_t>(oc)] += all[static_cast<std::size_t>(oc * per_oc + k)];
  integer_pairs_.clear();
  if (!s.depthwise) {
    const int64_t pairs = channel_pairs(), taps = s.kernel_h * s.kernel_w;
    integer_pairs_.assign(static_cast<std::size_t>(lane_blocks_ * taps * pairs * detail::kLanes * 2), 0);
    for (int64_t oc = 0; oc < s.out_channels; ++oc)
      for (int64_t ic = 0; ic < s.in_channels; ++ic)
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t index =
              (((oc / detail::kLanes * taps + t) * pairs + ic / 2) * detail::kLanes + oc % detail::kLanes) * 2 + ic % 2;
          integer_pairs_[static_cast<std::size_t>(index)] =
              static_cast<int16_t>(all[static_cast<std::size_t>((oc * s.in_channels + ic) * taps + t)]);
        }
  }
  int8_quads_.clear();
  if (!s.depthwise) {
    const int64_t quads = channel_quads(), taps = s.kernel_h * s.kernel_w;
    int8_quads_.assign(static_cast<std::size_t>(lane_blocks_ * taps * quads * detail::kLanes * 4), 0);
    for (int64_t oc = 0; oc < s.out_channels; ++oc)
      for (int64_t ic = 0; ic < s.in_channels; ++ic)
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t index =
              (((oc / detail::kLanes * taps + t) * quads + ic / 4) * detail::kLanes + oc % detail::kLanes) * 4 + ic % 4;
          int8_quads_[static_cast<std::size_t>(index)] =
              int8_weight_value(all[static_cast<std::size_t>((oc * s.in_channels + ic) * taps + t)], s);
        }
  }
  depthwise_taps_.clear();
  if (s.depthwise) {
    const int64_t taps = s.kernel_h * s.kernel_w;
    depthwise_taps_.assign(static_cast<std::size_t>(taps * s.out_channels), 0);
    for (int64_t oc = 0; oc < s.out_channels; ++oc)
      for (int64_t t = 0; t < taps; ++t)
        depthwise_taps_[static_cast<std::size_t>(t * s.out_channels + oc)] = all[static_cast<std::size_t>(oc * taps + t)];
  }
}

int32_t PackedWeights::code_at(int64_t oc, int64_t ic, int64_t kh, int64_t kw) const {
  const WeightSpec& s = spec_;
  const int64_t group_in = s.depthwise ? 1 : s.in_channels;
  if (words_.empty() || oc < 0 || oc >= s.out_channels || ic < 0 || ic >= group_in || kh < 0 || kh >= s.kernel_h ||
      kw < 0 || kw >= s.kernel_w)
    throw ShapeError(fmt::format("PackedWeights::code_at: index ({}, {}, {}, {}) outside [{}, {}, {}, {}]", oc, ic, kh,
                                 kw, s.out_channels, group_in, s.kernel_h, s.kernel_w));
  const int m = s.bits;
  uint32_t u = 0;
  if (s.depthwise) {
    const int64_t per_plane = detail::ceil_div(s.out_channels, 32);
    for (int i = 0; i < m; ++i)
      u |= ((words_[static_cast<std::size_t>(((kh * s.kernel_w + kw) * m + i) * per_plane + oc / 32)] >> (oc % 32)) & 1u)
           << i;
  } else {
    const int64_t pos = kw * pixel_bits_ + ic;
    const int64_t base = oc / detail::kLanes * block_words_ + oc % detail::kLanes;
    for (int i = 0; i < m; ++i)
      u |= ((words_[static_cast<std::size_t>(base + ((kh * words_per_row_ + pos / 32) * m + i) * detail::kLanes)] >>
             (pos % 32)) &
            1u)
           << i;
  }
  return code_of(u, m, s.encoding);
}

std::vector<int32_t> PackedWeights::codes() const {
  const WeightSpec& s = spec_;
  const int64_t group_in = s.depthwise ? 1 : s.in_channels;
  std::vector<int32_t> out(static_cast<std::size_t>(s.code_count()));
  std::size_t k = 0;
  for (int64_t oc = 0; oc < s.out_channels; ++oc)
    for (int64_t ic = 0; ic < group_in; ++ic)
      for (int64_t kh = 0; kh < s.kernel_h; ++kh)
        for (int64_t kw = 0; kw < s.kernel_w; ++kw) out[k++] = code_at(oc, ic, kh, kw);
  return out;
}

}  // namespace bitmix::kernels
