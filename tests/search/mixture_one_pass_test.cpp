// QuantizerMixture runs its candidates in one pass (quant::mix_forward / mix_backward); here it is
// compared, bit for bit, with the loop of plain Quantizer calls it replaced, including candidates
// with probability exactly 0 (skipped) between active ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/search/mixture.hpp"

namespace bitmix::search {
namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed, float scale, bool nonnegative) {
  Rng rng(seed);
  Tensor t(shape);
  for (float& v : t.values()) v = nonnegative ? std::abs(scale * rng.normal()) : scale * rng.normal();
  return t;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_same_bits(const Tensor& a, const Tensor& b, const char* what) {
  ASSERT_TRUE(a.same_shape(b)) << what;
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_TRUE(same_bits(a[i], b[i])) << what << " element " << i;
}

TEST(QuantizerMixtureOnePass, EqualsTheLoopOfQuantizerCallsWithSkippedCandidates) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
  struct Case {
    quant::QuantizerSpec base;
    Shape shape;
    bool nonnegative;
  };
  const Case cases[] = {
      {quant::weight_spec(quant::QuantizerKind::lsq, 4, quant::Granularity::per_channel, 6), {6, 4, 3, 3}, false},
      {quant::activation_spec(quant::QuantizerKind::lsq, 4), {2, 4, 9, 9}, true},
      {quant::activation_spec(quant::QuantizerKind::lsq, 4, true), {2, 4, 9, 9}, false},
  };
  const std::vector<int> bits = {2, 3, 4, 5, 6};
  for (const Case& c : cases) {
    QuantizerMixture mixture(c.base, bits);
    const std::vector<float> logits = {0.3f, minus_inf, -0.2f, minus_inf, 0.9f};
    for (std::size_t i = 0; i < logits.size(); ++i) mixture.strength().value[static_cast<int64_t>(i)] = logits[i];
    std::vector<std::unique_ptr<quant::Quantizer>> plain;
    for (int b : bits) {
      quant::QuantizerSpec spec = c.base;
      spec.bits = b;
      plain.push_back(std::make_unique<quant::Quantizer>(spec));
    }
    const Tensor x = random_tensor(c.shape, 1, 0.5f, c.nonnegative);
    const Tensor g = random_tensor(c.shape, 2, 1.0f, false);
    const std::vector<double> p = mixture.probabilities();
    ASSERT_EQ(p[1], 0.0);
    ASSERT_EQ(p[3], 0.0);

    const Tensor& y = mixture.forward(x);
    Tensor y_loop(x.shape());
    for (std::size_t i = 0; i < bits.size(); ++i)
      if (p[i] != 0.0) plain[i]->forward_accumulate(x, static_cast<float>(p[i]), y_loop);
    expect_same_bits(y, y_loop, "forward");

    for (Parameter* q : mixture.parameters()) q->zero_grad();
    const Tensor& gx = mixture.backward(x, g);
    Tensor gx_loop(x.shape());
    std::vector<double> grad_p(bits.size(), 0.0);
    double mean = 0.0;
    for (std::size_t i = 0; i < bits.size(); ++i) {
      if (p[i] == 0.0) continue;
      grad_p[i] = plain[i]->dot_output(x, g);
      mean += p[i] * grad_p[i];
      plain[i]->backward_accumulate(x, g, static_cast<float>(p[i]), gx_loop);
    }
    expect_same_bits(gx, gx_loop, "grad_input");
    for (std::size_t j = 0; j < bits.size(); ++j) {
      // The mixture adds into a zeroed gradient.
      const float expected = 0.0f + static_cast<float>(p[j] * (grad_p[j] - mean) / mixture.temperature());
      EXPECT_TRUE(same_bits(mixture.strength().grad[static_cast<int64_t>(j)], expected)) << "strength " << j;
      const Parameter* step = mixture.quantizer(j).parameters().at(0);
      const Parameter* step_loop = plain[j]->parameters().at(0);
      expect_same_bits(step->value, step_loop->value, "step");
      expect_same_bits(step->grad, step_loop->grad, "step gradient");
    }
  }
}

}  // namespace
}  // namespace bitmix::search
