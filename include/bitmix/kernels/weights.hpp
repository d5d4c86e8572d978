#pragma once
// Packed M-bit weights for the bit-serial convolution and GEMM, packed once (offline) and
// serializable: words() plus spec() are everything needed to rebuild the object.
//
// Weight codes are integers per (out_channel, in_channel / groups, kh, kw) in one of two
// encodings:
//   two's complement  w in [-2^(M-1), 2^(M-1) - 1], bit planes t_i of w mod 2^M, the top plane
//                     weighted -2^(M-1);
//   odd levels        w odd in [-(2^M - 1), 2^M - 1], w = sum_i 2^i s_i with s_i in {-1, +1},
//                     stored as planes s'_i = (s_i + 1) / 2 (M = 1 gives +-1 sign weights).
//
// Dense layout (groups = 1), version 1: output channels in blocks of 16 lanes; for each block,
// each kernel row kh, each 32-bit word d of the row window, each plane i: 16 uint32 (one per
// lane). Word d of row kh holds bits [32d, 32d + 32) of the window kw * Cs + c (Cs =
// round_up(in_channels, 8)), i.e. exactly the bits a convolution reads from the activation row
// stream; bits for c >= in_channels, for window positions >= kernel_w * Cs and for lanes >=
// out_channels are zero. Depthwise layout: for each (kh, kw), each plane i, ceil(out_channels /
// 32) words with output channel oc at bit oc % 32 of word oc / 32.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/aligned.hpp"

namespace bitmix::kernels {

enum class WeightEncoding : uint8_t { twos_complement = 0, odd_levels = 1 };

std::string_view encoding_name(WeightEncoding encoding);

struct WeightSpec {
  int64_t out_channels = 0;
  int64_t in_channels = 0;   // channels of the input tensor (for depthwise: the input's channels)
  int64_t kernel_h = 1;
  int64_t kernel_w = 1;
  int bits = 1;              // M, 1..8
  WeightEncoding encoding = WeightEncoding::twos_complement;
  // groups = in_channels: output channel oc reads input channel oc / (out_channels / in_channels);
  // codes are then [out_channels][1][kernel_h][kernel_w].
  bool depthwise = false;

  // Number of codes pack() expects.
  int64_t code_count() const noexcept {
    return out_channels * (depthwise ? 1 : in_channels) * kernel_h * kernel_w;
  }
  friend bool operator==(const WeightSpec&, const WeightSpec&) = default;
};

// Throws ArgumentError naming `what` unless extents are positive, bits in 1..8, and for
// depthwise out_channels is a multiple of in_channels.
void validate(const WeightSpec& spec, std::string_view what);

// True if `code` is representable with spec.bits in spec.encoding.
bool weight_code_valid(int32_t code, int bits, WeightEncoding encoding) noexcept;

class PackedWeights {
 public:
  static constexpr uint32_t kLayoutVersion = 1;

  PackedWeights() = default;
  // Packs codes in [out][in/groups][kh][kw] order. Throws ShapeError on a count mismatch,
  // ArgumentError (naming the first offending index) on a code outside the encoding's range.
  static PackedWeights pack(std::span<const int32_t> codes, const WeightSpec& spec);
  // Rebuilds from serialized words. Throws FormatError if the word count is not the one the
  // spec implies or if any padding bit is set (a corrupt or foreign file), ArgumentError on a
  // bad spec.
  PackedWeights(const WeightSpec& spec, std::span<const uint32_t> words);

  const WeightSpec& spec() const noexcept { return spec_; }
  std::span<const uint32_t> words() const noexcept { return {words_.data(), words_.size()}; }
  bool empty() const noexcept { return words_.empty(); }

  // Checked access to one code (ic is the index within the group: 0 for depthwise).
  int32_t code_at(int64_t oc, int64_t ic, int64_t kh, int64_t kw) const;
  // All codes in [out][in/groups][kh][kw] order.
  std::vector<int32_t> codes() const;
  // Sum of each output channel's weight codes (the zero-point fold uses it).
  std::span<const int64_t> channel_sums() const noexcept { return {channel_sums_.data(), channel_sums_.size()}; }

  // --- Dense layout geometry ----------------------------------------------------------------
  int64_t pixel_bits() const noexcept { return pixel_bits_; }          // Cs
  int64_t words_per_row() const noexcept { return words_per_row_; }    // 32-bit words per kh window
  int64_t lane_blocks() const noexcept { return lane_blocks_; }        // ceil(out_channels / 16)
  // Words of one 16-lane block: kernel_h * words_per_row * bits * 16 (dense only).
  int64_t block_words() const noexcept { return block_words_; }
  // Depthwise: codes as int32 [kh * kernel_w + kw][out_channels] (derived, not serialized).
  std::span<const int32_t> depthwise_taps() const noexcept { return {depthwise_taps_.data(), depthwise_taps_.size()}; }
  // Dense, for the unpacked integer path of wide bitwidths (derived, not serialized): codes as
  // int16 pairs [block][kh][kw][channel pair][16 lanes][2], zero past in_channels/out_channels.
  std::span<const int16_t> integer_pairs() const noexcept { return {integer_pairs_.data(), integer_pairs_.size()}; }
  int64_t channel_pairs() const noexcept { return (spec_.in_channels + 1) / 2; }
  // Dense, for the int8 kernel family (derived, not serialized): int8_weight_value() of each code
  // as quads [block][kh][kw][channel quad][16 lanes][4], zero past in_channels/out_channels.
  std::span<const int8_t> int8_quads() const noexcept { return {int8_quads_.data(), int8_quads_.size()}; }
  int64_t channel_quads() const noexcept { return (spec_.in_channels + 3) / 4; }

  // The word count a spec implies.
  static int64_t word_count(const WeightSpec& spec);

 private:
  void derive();  // geometry, channel sums, depthwise taps, integer pairs, int8 quads

  WeightSpec spec_{};
  int64_t pixel_bits_ = 0, words_per_row_ = 0, lane_blocks_ = 0, block_words_ = 0;
  AlignedVector<uint32_t> words_;
  std::vector<int64_t> channel_sums_;
  std::vector<int32_t> depthwise_taps_;
  AlignedVector<int16_t> integer_pairs_;
  AlignedVector<int8_t> int8_quads_;
};

// The int8 family's byte for a weight code: the code itself, except for 8-bit odd levels, whose
// range +-255 does not fit a signed byte: there w = 2 v + 1 is stored as v = (w - 1) / 2 in
// [-128, 127], and the family adds up 2 * sum(v * code) + sum(code).
constexpr bool int8_halves_weights(const WeightSpec& spec) noexcept {
  return spec.encoding == WeightEncoding::odd_levels && spec.bits == 8;
}
constexpr int8_t int8_weight_value(int32_t code, const WeightSpec& spec) noexcept {
  return static_cast<int8_t>(int8_halves_weights(spec) ? (code - 1) / 2 : code);
}

}  // namespace bitmix::kernels
