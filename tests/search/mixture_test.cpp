#include "bitmix/search/mixture.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/layers.hpp"

namespace bitmix::search {
namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  Tensor t(shape);
  for (float& v : t.values()) v = scale * rng.normal();
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double{a[i]} * double{b[i]};
  return s;
}

quant::QuantizerSpec weight_base(int64_t channels) {
  return quant::weight_spec(quant::QuantizerKind::lsq, 4, quant::Granularity::per_channel, channels);
}
quant::QuantizerSpec activation_base() { return quant::activation_spec(quant::QuantizerKind::lsq, 4); }

TEST(QuantizerMixture, OneHotEqualsThePlainQuantizerExactly) {
  const Tensor w = random_tensor({8, 4, 3, 3}, 1, 0.2f);
  const Tensor g = random_tensor({8, 4, 3, 3}, 2);
  Tensor x = random_tensor({2, 3, 5, 5}, 3);
  for (float& v : x.values()) v = std::abs(v);  // post-ReLU activations
  const Tensor gx = random_tensor({2, 3, 5, 5}, 4);
  struct Case {
    quant::QuantizerSpec base;
    const Tensor* input;
    const Tensor* grad;
  };
  for (const Case& c : {Case{weight_base(8), &w, &g}, Case{activation_base(), &x, &gx}}) {
    for (std::size_t pick = 0; pick < 4; ++pick) {
      QuantizerMixture mixture(c.base, {2, 3, 4, 5});
      mixture.fix_to(pick);
      quant::QuantizerSpec spec = c.base;
      spec.bits = mixture.bits()[pick];
      quant::Quantizer plain(spec);
      const Tensor y_plain = plain.forward(*c.input);
      const Tensor& y_mix = mixture.forward(*c.input);
      ASSERT_TRUE(y_mix.same_shape(y_plain));
      for (int64_t i = 0; i < y_plain.numel(); ++i) ASSERT_EQ(y_mix[i], y_plain[i]) << "element " << i;
      const Tensor dx_plain = plain.backward(*c.input, *c.grad);
      const Tensor& dx_mix = mixture.backward(*c.input, *c.grad);
      for (int64_t i = 0; i < dx_plain.numel(); ++i) ASSERT_EQ(dx_mix[i], dx_plain[i]);
      const Parameter* step_plain = plain.parameters().at(0);
      const Parameter* step_mix = mixture.quantizer(pick).parameters().at(0);
      for (int64_t i = 0; i < step_plain->grad.numel(); ++i) EXPECT_EQ(step_mix->grad[i], step_plain->grad[i]);
    }
  }
}

// L(α) = <R, y(α)>: y depends on α only through p, so finite differences on α are exact up to
// float noise.
TEST(QuantizerMixture, StrengthGradientMatchesFiniteDifferences) {
  for (bool activations : {false, true}) {
    Tensor x = random_tensor({4, 3, 4, 4}, 10, activations ? 1.0f : 0.3f);
    if (activations)
      for (float& v : x.values()) v = std::abs(v);
    const Tensor r = random_tensor(x.shape(), 11);
    QuantizerMixture mixture(activations ? activation_base() : weight_base(4), {2, 3, 5, 8});
    Rng rng(12);
    for (int64_t i = 0; i < 4; ++i) mixture.strength().value[i] = rng.normal();
    mixture.forward(x);  // data-driven initialization of every step
    mixture.strength().zero_grad();
    mixture.forward(x);
    mixture.backward(x, r);
    for (int64_t j = 0; j < 4; ++j) {
      const float saved = mixture.strength().value[j];
      const float h = 1e-2f;
      mixture.strength().value[j] = saved + h;
      const double up = dot(r, mixture.forward(x));
      mixture.strength().value[j] = saved - h;
      const double down = dot(r, mixture.forward(x));
      mixture.strength().value[j] = saved;
      const double fd = (up - down) / (2.0 * double{h});
      EXPECT_NEAR(mixture.strength().grad[j], fd, 2e-3 * std::max(1.0, std::abs(fd)))
          << (activations ? "activations" : "weights") << " logit " << j;
    }
  }
}

TEST(QuantizerMixture, TemperatureScalesTheGradient) {
  const Tensor x = random_tensor({3, 2, 3, 3}, 20, 0.3f);
  const Tensor r = random_tensor(x.shape(), 21);
  QuantizerMixture mixture(weight_base(3), {2, 4});
  mixture.strength().value[0] = 0.3f;
  mixture.set_temperature(0.5);
  mixture.forward(x);
  mixture.forward(x);
  mixture.backward(x, r);
  const float h = 1e-2f;
  mixture.strength().value[0] = 0.3f + h;
  const double up = dot(r, mixture.forward(x));
  mixture.strength().value[0] = 0.3f - h;
  const double down = dot(r, mixture.forward(x));
  EXPECT_NEAR(mixture.strength().grad[0], (up - down) / (2.0 * double{h}), 2e-3);
  EXPECT_THROW(mixture.set_temperature(0.0), ArgumentError);
}

TEST(QuantizerMixture, ExternalProbabilityGradientMatchesFiniteDifferences) {
  QuantizerMixture mixture(activation_base(), {2, 3, 4});
  mixture.strength().value[0] = 0.5f;
  mixture.strength().value[2] = -0.25f;
  const std::vector<double> c = {3.0, -1.0, 7.0};  // f(p) = <c, p>
  mixture.strength().zero_grad();
  mixture.add_probability_gradient(c);
  for (int64_t j = 0; j < 3; ++j) {
    const float saved = mixture.strength().value[j];
    const float h = 1e-3f;
    auto f = [&] {
      const auto p = mixture.probabilities();
      return std::inner_product(p.begin(), p.end(), c.begin(), 0.0);
    };
    mixture.strength().value[j] = saved + h;
    const double up = f();
    mixture.strength().value[j] = saved - h;
    const double down = f();
    mixture.strength().value[j] = saved;
    EXPECT_NEAR(mixture.strength().grad[j], (up - down) / (2.0 * double{h}), 1e-4);
  }
  EXPECT_THROW(mixture.add_probability_gradient(std::vector<double>{1.0}), ArgumentError);
}

TEST(QuantizerMixture, ExpectedAndArgmaxBits) {
  QuantizerMixture mixture(activation_base(), {2, 4});
  EXPECT_DOUBLE_EQ(mixture.expected_bits(), 3.0);
  mixture.strength().value[1] = 5.0f;
  EXPECT_EQ(mixture.argmax_bits(), 4);
  EXPECT_GT(mixture.expected_bits(), 3.9);
  EXPECT_THROW(QuantizerMixture(activation_base(), {4, 2}), ArgumentError);
  EXPECT_THROW(QuantizerMixture(activation_base(), {}), ArgumentError);
  EXPECT_THROW(QuantizerMixture(activation_base(), {2, 9}), ArgumentError);
}

TEST(QuantizerMixture, GumbelNoiseOnlyInTrainingAndSeeded) {
  const Tensor x = random_tensor({2, 2, 3, 3}, 30, 0.5f);
  Rng rng_a(7), rng_b(7);
  QuantizerMixture a(weight_base(2), {2, 3, 4}), b(weight_base(2), {2, 3, 4});
  a.set_gumbel(&rng_a);
  b.set_gumbel(&rng_b);
  a.set_temperature(0.1);
  b.set_temperature(0.1);
  const Tensor ya = a.forward(x);
  const Tensor yb = b.forward(x);
  for (int64_t i = 0; i < ya.numel(); ++i) ASSERT_EQ(ya[i], yb[i]);
  // Noisy draws at a low temperature are nearly one-hot, so outputs differ across draws.
  bool differs = false;
  for (int k = 0; k < 10 && !differs; ++k) {
    const Tensor y = a.forward(x);
    for (int64_t i = 0; i < y.numel() && !differs; ++i) differs = y[i] != ya[i];
  }
  EXPECT_TRUE(differs);
  a.set_training(false);
  const Tensor e1 = a.forward(x);
  const Tensor e2 = a.forward(x);
  for (int64_t i = 0; i < e1.numel(); ++i) ASSERT_EQ(e1[i], e2[i]);
}

// EBS's memory claim: a searched layer's parameters are the meta weight plus O(candidates)
// scalars, however many candidates there are.
TEST(QuantizerMixture, ParameterMemoryDoesNotGrowWithCandidates) {
  auto parameter_bytes = [](std::vector<int> bits) {
    Rng rng(1);
    nn::Conv2d conv(nn::Conv2dOptions::square(64, 64, 3, 1, 1), rng);
    conv.set_weight_transform(std::make_unique<QuantizerMixture>(weight_base(64), bits));
    conv.set_input_transform(std::make_unique<QuantizerMixture>(activation_base(), bits));
    std::size_t bytes = 0;
    for (const NamedParameter& p : conv.named_parameters()) bytes += p.parameter->value.bytes();
    return bytes;
  };
  const std::size_t one = parameter_bytes({4});
  const std::size_t four = parameter_bytes({2, 3, 4, 5});
  const std::size_t eight = parameter_bytes({1, 2, 3, 4, 5, 6, 7, 8});
  const std::size_t weight_bytes = 64 * 64 * 9 * sizeof(float);
  EXPECT_GE(one, weight_bytes);
  // Per extra candidate: one strength logit per transform, one per-channel step (64 floats)
  // for the weights and one step for the activations.
  const std::size_t per_candidate = (1 + 64 + 1 + 1) * sizeof(float);
  EXPECT_EQ(four - one, 3 * per_candidate);
  EXPECT_EQ(eight - one, 7 * per_candidate);
  EXPECT_LT(static_cast<double>(eight) / static_cast<double>(one), 1.02);
}

}  // namespace
}  // namespace bitmix::search
