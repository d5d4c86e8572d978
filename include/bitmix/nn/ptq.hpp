#pragma once
// Post-training quantization (PTQ): a float network quantized at any BitConfig without training.
//
//   nn::PtqOptions options;                               // MSE activations, no bias correction
//   const quant::BitConfig config = nn::ptq_bit_config(bits);   // the kinds PTQ uses
//   nn::quantize_post_training(*model, image, config, calibration_batches, options);
//   // the model now evaluates (and exports) quantized, like a QAT model at `config`
//
// Weights: symmetric, per output channel, each channel's clip chosen by the MSE calibrator on
// the weights themselves (quant::Calibrator, method mse: the clip minimizing the quantization
// MSE on the exact level grid). Activations: per tensor, uniform (affine) grids whose range is
// calibrated on the float network's activations over the calibration batches with the MSE or
// percentile calibrator. Bias correction (optional; Nagel et al. 2019, "Data-Free Quantization",
// empirical form): the expected output shift a layer's weight quantization causes,
// E[(Q(W) - W) * x] per output channel with x the layer's quantized input averaged over the
// calibration batches (one pass, every layer at once), is subtracted from the layer's bias or,
// for a bias-free convolution followed by its BatchNorm, added to that BatchNorm's running mean.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/quant/calibrator.hpp"

namespace bitmix::nn {

class QuantizerTransform;

struct PtqOptions {
  // Activations: mse or percentile (both are accepted; any CalibrationMethod works).
  quant::CalibrationOptions activations{quant::CalibrationMethod::mse};
  // Weights: per channel; mse by default.
  quant::CalibrationOptions weights{quant::CalibrationMethod::mse};
  bool bias_correction = false;
};

// The configuration PTQ applies: every quantized entry gets symmetric per-channel weights and a
// uniform (affine) activation grid, bits unchanged; float entries stay float.
quant::BitConfig ptq_bit_config(quant::BitConfig config);

struct PtqReport {
  int64_t batches = 0;
  std::vector<std::string> calibrated;      // "<layer>.weight_transform", "<layer>.input_transform"
  std::vector<std::string> bias_corrected;  // layers whose bias or BatchNorm mean was corrected
  std::vector<std::string> not_corrected;   // bias correction asked, but no bias or BatchNorm found
};

// Attaches ptq_bit_config(config) (validated against the model, see apply_bit_config),
// calibrates every quantizer, and applies bias correction when asked. The model is left in
// evaluation mode. ArgumentError if `batches` is empty or the config does not fit the model.
PtqReport quantize_post_training(Module& model, const Shape& image_shape, const quant::BitConfig& config,
                                 std::span<const Tensor> batches, const PtqOptions& options = {});

// The building block the allocators share with PTQ: sets a symmetric (or any range-taking)
// weight quantizer's per-channel range from the weights by `options` (the quantizer then keeps
// that range). ArgumentError if the quantizer takes no range.
void calibrate_weight_quantizer(QuantizerTransform& quantizer, const Tensor& weight,
                                const quant::CalibrationOptions& options);

}  // namespace bitmix::nn
