#pragma once
// The fused output stage of a convolution or GEMM, per output channel oc:
//
//   acc   = sum over the window of w * (code - z)          (exact int32)
//   t     = float(acc) * scale[oc]                         (rounded to float)
//   y     = t + bias[oc]                                   (rounded to float; never an fma)
//   y     = y > 0 ? y : 0                                  (only with relu; NaN and -0 give +0)
//   then either y is stored as float (NCHW), or requantized straight into the next layer's
//   packed planes: code' = quantize_code(y, out_quant)   (see activations.hpp).
//
// Every kernel path computes exactly this, so float outputs and codes are bit-identical across
// paths. For small output bitwidths the requantization is evaluated through per-channel
// integer thresholds on acc; they are derived from this very definition (the map acc -> code'
// is monotone), so the result is the same.

#include <cstdint>
#include <span>
#include <vector>

#include "bitmix/kernels/activations.hpp"

namespace bitmix::kernels {

class Epilogue {
 public:
  // Output bitwidths up to this use integer thresholds instead of the float division.
  static constexpr int kMaxThresholdBits = 3;

  Epilogue() = default;

  // Float output. scale and bias need one entry per output channel (same length), all finite;
  // throws ArgumentError otherwise.
  static Epilogue float_output(std::vector<float> scale, std::vector<float> bias, bool relu);
  // scale 1, bias 0, no ReLU: the output is float(acc).
  static Epilogue identity(int64_t channels);
  // Requantized output into packed planes with `out_quant` and `out_border` border pixels
  // (the next layer's padding).
  static Epilogue requantize(std::vector<float> scale, std::vector<float> bias, bool relu,
                             const ActivationQuant& out_quant, int out_border = 0);

  int64_t channels() const noexcept { return channels_; }
  bool relu() const noexcept { return relu_; }
  bool requantizes() const noexcept { return requantize_; }
  const ActivationQuant& out_quant() const noexcept { return out_quant_; }
  int out_border() const noexcept { return out_border_; }
  std::span<const float> scale() const noexcept { return {scale_.data(), static_cast<std::size_t>(channels_)}; }
  std::span<const float> bias() const noexcept { return {bias_.data(), static_cast<std::size_t>(channels_)}; }

  // The definition above, for one value (the reference path uses these).
  float value(int64_t oc, int32_t acc) const noexcept;
  uint8_t code(int64_t oc, int32_t acc) const noexcept;

  // --- For kernels: per-lane data padded to a multiple of 16 channels ---------------------
  const float* padded_scale() const noexcept { return scale_.data(); }
  const float* padded_bias() const noexcept { return bias_.data(); }
  bool uses_thresholds() const noexcept { return !thresholds_.empty(); }
  // For block b (16 lanes): direction[16] (+1 or -1) then thresholds[k][16] for k = 1 ..
  // 2^bits - 1: code' = #{k : direction * acc >= threshold_k}.
  const int32_t* threshold_block(int64_t block) const noexcept {
    return thresholds_.data() + block * 16 * (1 + threshold_count());
  }
  int threshold_count() const noexcept { return out_quant_.max_code(); }

 private:
  static Epilogue make(std::vector<float> scale, std::vector<float> bias, bool relu);
  void build_thresholds();

  int64_t channels_ = 0;
  bool relu_ = false;
  bool requantize_ = false;
  ActivationQuant out_quant_{};
  int out_border_ = 0;
  std::vector<float> scale_, bias_;   // padded with scale 0, bias 0
  std::vector<int32_t> thresholds_;
};

}  // namespace bitmix::kernels
