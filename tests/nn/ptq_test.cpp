// Post-training quantization: MSE-clipped per-channel weights, calibrated activations, and bias
// correction that removes the mean output shift of weight quantization.
#include "bitmix/nn/ptq.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "nn/tiny_task.hpp"

namespace bitmix::nn {
namespace {

std::vector<Tensor> random_batches(Rng& rng, const Shape& image, int count, int batch, float mean) {
  std::vector<Tensor> out;
  for (int b = 0; b < count; ++b) {
    Shape shape{batch};
    for (int64_t d : image) shape.push_back(d);
    Tensor t(shape);
    for (float& v : t.values()) v = mean + rng.normal();
    out.push_back(std::move(t));
  }
  return out;
}

TEST(Ptq, WeightsAreSymmetricPerChannelWithTheMseClip) {
  auto model = testing::tiny_resnet8(5);
  const Shape image{1, 8, 8};
  Rng rng(1);
  const auto batches = random_batches(rng, image, 2, 8, 0.0f);
  UniformBits bits(3, 8);
  bits.policy = quant::BitPolicy::none();
  const quant::BitConfig config = uniform_bit_config(*model, image, "resnet8", bits);
  const PtqReport report = quantize_post_training(*model, image, config, batches);
  const auto layers = model->quantizable_layers(image);
  EXPECT_EQ(report.calibrated.size(), 2 * layers.size());
  model->forward(batches[0]);
  for (const LayerInfo& info : layers) {
    const Tensor& w = info.conv != nullptr ? info.conv->weight().value : info.linear->weight().value;
    const Tensor& effective = info.conv != nullptr ? info.conv->effective_weight() : info.linear->effective_weight();
    // An independent symmetric per-channel quantizer with the MSE calibrator's clip.
    quant::Quantizer reference(quant::weight_spec(quant::QuantizerKind::symmetric, 3, quant::Granularity::per_channel, w.dim(0)));
    quant::Calibrator calibrator(quant::CalibrationOptions{quant::CalibrationMethod::mse}, reference);
    calibrator.observe(w);
    calibrator.apply(reference);
    const Tensor expected = reference.forward(w);
    ASSERT_EQ(effective.numel(), expected.numel()) << info.name;
    for (int64_t i = 0; i < expected.numel(); ++i) ASSERT_EQ(effective[i], expected[i]) << info.name << " [" << i << "]";
  }
  const auto q = attached_quantizers(*model, image);
  for (const LayerQuantizers& l : q) {
    ASSERT_NE(l.input, nullptr) << l.name;
    EXPECT_EQ(l.input->spec().kind, quant::QuantizerKind::uniform) << l.name;
    EXPECT_EQ(l.weight->spec().granularity, quant::Granularity::per_channel) << l.name;
  }
}

TEST(Ptq, EightBitsStayCloseToFloatAndTwoBitsDoNot) {
  const Shape image{1, 8, 8};
  Rng rng(2);
  const auto batches = random_batches(rng, image, 2, 16, 0.0f);
  auto reference = testing::tiny_resnet8(6);
  reference->eval();
  const Tensor float_out = reference->forward(batches[1]);
  auto rel_error = [&](int w_bits) {
    auto model = testing::tiny_resnet8(6);
    UniformBits bits(w_bits, 8);
    bits.policy = quant::BitPolicy::none();
    quantize_post_training(*model, image, uniform_bit_config(*model, image, "resnet8", bits), batches);
    const Tensor& out = model->forward(batches[1]);
    double num = 0, den = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double d = static_cast<double>(out[i]) - static_cast<double>(float_out[i]);
      num += d * d;
      den += static_cast<double>(float_out[i]) * static_cast<double>(float_out[i]);
    }
    return std::sqrt(num / den);
  };
  const double e8 = rel_error(8), e2 = rel_error(2);
  EXPECT_LT(e8, 0.05);
  EXPECT_GT(e2, 4 * e8);
}

// After bias correction the mean output over the calibration data equals that of the float
// weights applied to the same (quantized) inputs.
TEST(Ptq, BiasCorrectionRemovesTheMeanShiftOfLinearAndConvLayers) {
  Rng rng(3);
  auto model = std::make_unique<Sequential>();
  model->append("conv1", std::make_unique<Conv2d>(Conv2dOptions::square(2, 3, 3, 2, 1), rng));
  auto& bn = model->append("bn1", std::make_unique<BatchNorm2d>(3));
  const Shape image{2, 5, 5};
  const auto batches = random_batches(rng, image, 3, 4, 1.0f);
  const Tensor float_weight = dynamic_cast<Conv2d&>(model->at(0)).weight().value;
  quant::BitConfig config = quant::BitConfig::uniform("toy", {"conv1"}, 2, 8, quant::QuantizerKind::symmetric,
                                                      quant::QuantizerKind::uniform, quant::BitPolicy::none());
  PtqOptions options;
  options.bias_correction = true;
  const PtqReport report = quantize_post_training(*model, image, config, batches, options);
  ASSERT_EQ(report.bias_corrected, std::vector<std::string>{"conv1"});
  // A float twin reading the same quantized inputs (the input quantizer applied by hand).
  auto& conv = dynamic_cast<Conv2d&>(model->at(0));
  auto* input_q = dynamic_cast<QuantizerTransform*>(conv.input_transform());
  ASSERT_NE(input_q, nullptr);
  Rng unused(0);
  Conv2d twin(conv.options(), unused);
  twin.weight().value = float_weight;
  twin.eval();
  BatchNorm2d twin_bn(3);
  twin_bn.eval();
  model->eval();
  std::vector<double> mean_q(3, 0.0), mean_f(3, 0.0);
  for (const Tensor& batch : batches) {
    const Tensor out = model->forward(batch);
    const Tensor xq = input_q->quantizer().forward(batch);
    const Tensor ref = twin_bn.forward(twin.forward(xq));
    const int64_t plane = out.numel() / (out.dim(0) * 3);
    for (int64_t i = 0; i < out.numel(); ++i) {
      mean_q[static_cast<std::size_t>((i / plane) % 3)] += static_cast<double>(out[i]);
      mean_f[static_cast<std::size_t>((i / plane) % 3)] += static_cast<double>(ref[i]);
    }
  }
  double shift_before = 0;
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(mean_q[c], mean_f[c], 1e-3 * (1 + std::abs(mean_f[c]))) << "channel " << c;
    shift_before += std::abs(static_cast<double>(bn.running_mean().value[c]));
  }
  EXPECT_GT(shift_before, 0);  // the correction did something: 2-bit weights shift the mean

  // Linear with a bias.
  auto fc = std::make_unique<Sequential>();
  fc->append("fc", std::make_unique<Linear>(6, 4, true, rng));
  const Shape features{6};
  const auto fc_batches = random_batches(rng, features, 2, 8, 0.5f);
  auto& linear = dynamic_cast<Linear&>(fc->at(0));
  const Tensor w0 = linear.weight().value, b0 = linear.bias()->value;
  quant::BitConfig fc_config = quant::BitConfig::uniform("toy", {"fc"}, 2, 8, quant::QuantizerKind::symmetric,
                                                         quant::QuantizerKind::uniform, quant::BitPolicy::none());
  quantize_post_training(*fc, features, fc_config, fc_batches, options);
  auto* fc_input = dynamic_cast<QuantizerTransform*>(linear.input_transform());
  std::vector<double> got(4, 0.0), want(4, 0.0);
  for (const Tensor& batch : fc_batches) {
    const Tensor out = fc->forward(batch);
    const Tensor xq = fc_input->quantizer().forward(batch);
    for (int64_t n = 0; n < batch.dim(0); ++n)
      for (int64_t o = 0; o < 4; ++o) {
        double y = static_cast<double>(b0[o]);
        for (int64_t f = 0; f < 6; ++f) y += static_cast<double>(w0[o * 6 + f]) * static_cast<double>(xq[n * 6 + f]);
        want[static_cast<std::size_t>(o)] += y;
        got[static_cast<std::size_t>(o)] += static_cast<double>(out[n * 4 + o]);
      }
  }
  for (int o = 0; o < 4; ++o) EXPECT_NEAR(got[o], want[o], 1e-3 * (1 + std::abs(want[o]))) << "output " << o;
}

TEST(Ptq, RejectsMissingCalibrationData) {
  auto model = testing::tiny_resnet8(7);
  const Shape image{1, 8, 8};
  const quant::BitConfig config = uniform_bit_config(*model, image, "resnet8", UniformBits{4, 8});
  EXPECT_THROW(quantize_post_training(*model, image, config, {}), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
