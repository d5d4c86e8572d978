#pragma once
// Table-lookup convolution: a dense kernel family beside those of family.hpp (popcount, int8),
// for narrow weights and activations, fastest on CPUs without a fast 8-bit dot product (AVX2).
// It keeps per-layer tables (LutWeights, built once per layer: runtime::Session does so for
// every layer resolved to KernelFamily::lut). conv2d on packed weights with that family builds
// them for the one call: correct, but slow.
//
// For each output channel m and each group j of 4 consecutive input channels at one kernel
// position (kh, kw), a 16-entry table T[m][j][idx] = sum over the set bits i of idx of
// w[m][4 * (j mod ceil(C/4)) + i][kh][kw] is built once from the weights (LutWeights, signed bytes).
// At run time the index of a lookup is one 4-bit group of one activation bit plane; one byte
// shuffle (AVX2 VPSHUFB) then does 4 one-bit-activation x M-bit-weight products for 32 lanes,
// (pixel, plane) pairs. Byte sums are widened with the plane weights 2^k in one multiply-add,
// so the result is sum over the window of w * code, exactly, in int32, and the epilogue is the
// one every dense path shares (float or requantized packed output, identical bits).
//
// Accepted: dense (groups = 1) weights of 1 to 4 bits in either encoding, activations of 1 to
// 4 bits, any kernel size, stride and padding, as long as every partial sum fits int16
// (lut_supported()). docs/kernels.md ("Table-lookup kernels") has the layout and the costs.
#include <cstdint>
#include <span>

#include "bitmix/core/aligned.hpp"
#include "bitmix/core/tensor.hpp"
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/epilogue.hpp"
#include "bitmix/kernels/weights.hpp"

namespace bitmix::kernels {

// True if the table-lookup kernels can run a layer with these weights on `act_bits`-bit
// activations: dense, weights 1..4 bits, activations 1..4 bits, and
// reduction * max|w| * (2^act_bits - 1) <= 32767 (the byte sums are widened into int16).
bool lut_supported(const WeightSpec& spec, int act_bits) noexcept;

// The lookup tables of one layer, built from its packed weights (at model load: the tables are
// derived data, 16 bytes per output channel and 4 input channels per kernel position, i.e. 16x
// the size of 2-bit weights; they are not stored in model files).
class LutWeights {
 public:
  LutWeights() = default;
  // Throws ArgumentError if the weights are empty or depthwise or have more than 4 bits.
  explicit LutWeights(const PackedWeights& weights);

  const PackedWeights& weights() const noexcept { return weights_; }
  bool empty() const noexcept { return tables_.empty(); }
  // Groups of 4 input channels per window: kernel_h * kernel_w * ceil(in_channels / 4).
  int64_t groups() const noexcept { return groups_; }
  // [out_channel / 4][group][out_channel % 4][16] signed bytes, channels padded to 16 (zero).
  std::span<const int8_t> tables() const noexcept { return {tables_.data(), tables_.size()}; }
  // The largest |w| of any weight: bounds the byte sums (how often they are widened).
  int max_abs_weight() const noexcept { return max_abs_; }

 private:
  PackedWeights weights_;
  int64_t groups_ = 0;
  int max_abs_ = 0;
  AlignedVector<int8_t> tables_;
};

// The convolution of conv.hpp on the table-lookup kernels: the same checks, the same exact
// results (identical floats and codes). Throws ArgumentError if !lut_supported(weights.spec(),
// input.bits()).
void conv2d(const PackedActivations& input, const LutWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out);
void conv2d(const PackedActivations& input, const LutWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out);

// gemm (conv.hpp) on the table-lookup kernels: the same checks and exact results.
void gemm(const PackedActivations& input, const LutWeights& weights, const Epilogue& epilogue, Tensor& out);
void gemm(const PackedActivations& input, const LutWeights& weights, const Epilogue& epilogue,
          PackedActivations& out);

// Estimated vector operations (AVX2 ymm) of the table-lookup kernels per output pixel, all
// channels: the lookups and adds, the widening, the index copies and the output transpose; 0
// when !lut_supported(). A prior for the per-layer kernel choice, which should prefer measured
// latencies; docs/kernels.md gives the measured rate per operation.
double lut_ops_per_pixel(const WeightSpec& spec, int act_bits) noexcept;

}  // namespace bitmix::kernels
