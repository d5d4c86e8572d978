#include "bitmix/search/dnas.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/rng.hpp"
#include "bitmix/search/mixture.hpp"

namespace bitmix::search {
namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.0f, bool non_negative = false) {
  Rng rng(seed);
  Tensor t(shape);
  for (float& v : t.values()) v = scale * (non_negative ? std::abs(rng.normal()) : rng.normal());
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double{a[i]} * double{b[i]};
  return s;
}

const quant::QuantizerSpec kWeightBase = quant::weight_spec(quant::QuantizerKind::lsq, 4, quant::Granularity::per_channel, 6);
const quant::QuantizerSpec kInputBase = quant::activation_spec(quant::QuantizerKind::lsq, 4);

std::unique_ptr<nn::Conv2d> make_conv(uint64_t seed) {
  Rng rng(seed);
  return std::make_unique<nn::Conv2d>(nn::Conv2dOptions::square(3, 6, 3, 1, 1), rng);
}

// One candidate pair: DNAS is exactly the QAT convolution (quantized weight copy, quantized
// input), forward and backward.
TEST(Dnas, SinglePairEqualsTheQuantizedConvolution) {
  auto dnas_conv = make_conv(1), qat_conv = make_conv(1);
  dnas_conv->set_compute_override(std::make_unique<DnasConvolution>(*dnas_conv, kWeightBase, std::vector<int>{3},
                                                                     kInputBase, std::vector<int>{4}));
  qat_conv->set_weight_transform(std::make_unique<QuantizerMixture>(kWeightBase, std::vector<int>{3}));
  qat_conv->set_input_transform(std::make_unique<QuantizerMixture>(kInputBase, std::vector<int>{4}));
  const Tensor x = random_tensor({2, 3, 7, 7}, 2, 1.0f, true);
  const Tensor g = random_tensor({2, 6, 7, 7}, 3);
  const Tensor y_dnas = dnas_conv->forward(x);
  const Tensor y_qat = qat_conv->forward(x);
  for (int64_t i = 0; i < y_qat.numel(); ++i) ASSERT_EQ(y_dnas[i], y_qat[i]);
  const Tensor dx_dnas = dnas_conv->backward(g);
  const Tensor dx_qat = qat_conv->backward(g);
  for (int64_t i = 0; i < dx_qat.numel(); ++i) ASSERT_EQ(dx_dnas[i], dx_qat[i]);
  auto& dnas = dynamic_cast<DnasConvolution&>(*dnas_conv->compute_override());
  const Tensor& dw_dnas = dnas.weight_copy(0).grad;
  const Tensor& dw_qat = qat_conv->weight().grad;
  for (int64_t i = 0; i < dw_qat.numel(); ++i) ASSERT_EQ(dw_dnas[i], dw_qat[i]);
  // The layer's own weight is left alone: the copy carries the gradient.
  for (float v : dnas_conv->weight().grad.values()) EXPECT_EQ(v, 0.0f);
}

TEST(Dnas, StrengthGradientsMatchFiniteDifferences) {
  auto conv = make_conv(4);
  conv->set_compute_override(std::make_unique<DnasConvolution>(*conv, kWeightBase, std::vector<int>{2, 4},
                                                                kInputBase, std::vector<int>{2, 3, 5}));
  auto& dnas = dynamic_cast<DnasConvolution&>(*conv->compute_override());
  const Tensor x = random_tensor({2, 3, 6, 6}, 5, 1.0f, true);
  const Tensor r = random_tensor({2, 6, 6, 6}, 6);
  std::vector<Parameter*> params = dnas.parameters();
  Parameter* sw = params[0];
  Parameter* sa = params[1];
  sw->value[0] = 0.4f;
  sa->value[2] = -0.3f;
  conv->forward(x);  // data-driven quantizer initialization
  conv->zero_grad();
  conv->forward(x);
  conv->backward(r);
  for (Parameter* s : {sw, sa})
    for (int64_t k = 0; k < s->value.numel(); ++k) {
      const float saved = s->value[k], h = 1e-2f;
      s->value[k] = saved + h;
      const double up = dot(r, conv->forward(x));
      s->value[k] = saved - h;
      const double down = dot(r, conv->forward(x));
      s->value[k] = saved;
      const double fd = (up - down) / (2.0 * double{h});
      EXPECT_NEAR(s->grad[k], fd, 2e-3 * std::max(1.0, std::abs(fd))) << s->name << " " << k;
    }
}

// The design EBS improves on: DNAS keeps a weight copy per candidate bitwidth.
TEST(Dnas, ParametersGrowWithCandidates) {
  auto bytes = [](std::vector<int> bits) {
    auto conv = make_conv(7);
    conv->set_compute_override(std::make_unique<DnasConvolution>(*conv, kWeightBase, bits, kInputBase, bits));
    std::size_t total = 0;
    for (const NamedParameter& p : conv->named_parameters()) total += p.parameter->value.bytes();
    return total;
  };
  const std::size_t weight_bytes = 6 * 3 * 9 * sizeof(float);
  EXPECT_GE(bytes({2, 3, 4, 5}) - bytes({4}), 3 * weight_bytes);
}

}  // namespace
}  // namespace bitmix::search
