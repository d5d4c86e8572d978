// mix_forward / mix_backward (one pass for several quantizers of one tensor) against the loop of
// Quantizer calls they replace: equal bit for bit, for every kind, 1 to 12 quantizers, tensors
// with partial lane groups, several blocks per group and several threads.
#include "bitmix/quant/mixing.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::bitwise_equal;
using testing::expect_bitwise_equal;
using testing::gaussian;

struct Case {
  std::string name;
  QuantizerSpec base;
  std::vector<int> bits;  // cycled through for larger sets (repeated bits: distinct quantizers)
  Shape shape;
  float stddev = 1.0f;
  bool nonnegative = false;  // post-ReLU input
  bool fused_forward = true;
  bool fused_backward = true;
};

std::vector<Case> cases() {
  const auto w = [](QuantizerKind k, Granularity g, int64_t channels) { return weight_spec(k, 4, g, channels); };
  const auto a = [](QuantizerKind k, bool is_signed) { return activation_spec(k, 4, is_signed); };
  const Granularity pc = Granularity::per_channel, pt = Granularity::per_tensor;
  std::vector<Case> out = {
      // The EBS search's quantizers: LSQ weights per channel, activations unsigned and signed.
      {"lsq weight per_channel 3x3", w(QuantizerKind::lsq, pc, 16), {2, 3, 4, 5, 6, 7, 8}, {16, 8, 3, 3}, 0.1f},
      {"lsq weight per_channel 27/ch", w(QuantizerKind::lsq, pc, 5), {2, 3, 4, 5, 6, 7, 8}, {5, 3, 3, 3}, 0.3f},
      {"lsq weight per_tensor 3 blocks", w(QuantizerKind::lsq, pt, 1), {2, 3, 4, 5, 6, 7, 8}, {40003}, 0.05f},
      {"lsq activation unsigned", a(QuantizerKind::lsq, false), {1, 2, 3, 4, 5, 6, 7, 8}, {2, 4, 33, 35}, 1.0f, true},
      {"lsq activation signed", a(QuantizerKind::lsq, true), {2, 3, 4, 5, 6, 7, 8}, {3, 5, 21, 19}},
      {"lsq weight with a 1-bit candidate", w(QuantizerKind::lsq, pc, 4), {1, 2, 3}, {4, 2, 3, 3}, 0.2f, false,
       false, false},
      {"pact", a(QuantizerKind::pact, false), {1, 2, 3, 4, 5, 6, 7, 8}, {2, 3, 17, 19}, 2.0f, true},
      {"uniform activation", a(QuantizerKind::uniform, false), {1, 2, 3, 4, 5, 6, 7, 8}, {2, 3, 17, 19}, 1.0f, true},
      {"uniform weight per_channel", w(QuantizerKind::uniform, pc, 6), {1, 2, 3, 4, 5, 6, 7, 8}, {6, 7, 5}, 0.5f},
      {"symmetric activation signed", a(QuantizerKind::symmetric, true), {2, 3, 4, 5, 6, 7, 8}, {1000}},
      {"symmetric weight", w(QuantizerKind::symmetric, pt, 1), {2, 3, 4, 5, 6, 7, 8}, {8, 4, 3, 3}, 0.2f},
      {"dorefa activation", a(QuantizerKind::dorefa, false), {1, 2, 3, 4, 5, 6, 7, 8}, {777}, 0.6f, true},
      {"dorefa weight", w(QuantizerKind::dorefa, pc, 4), {2, 3, 4, 5, 6, 7, 8}, {4, 5, 3, 3}, 0.5f, false, true,
       false},
      {"dorefa weight 1 and 2 bits", w(QuantizerKind::dorefa, pt, 1), {1, 2}, {4, 5, 3, 3}, 0.5f, false, false,
       false},
      {"sawb weight per_channel", w(QuantizerKind::sawb, pc, 4), {1, 2, 3, 4, 5, 6, 7, 8}, {4, 5, 3, 3}, 0.3f},
      {"pot weight per_channel", w(QuantizerKind::pot, pc, 4), {2, 3, 4, 5, 6}, {4, 5, 3, 3}, 0.3f},
      {"binary weight", weight_spec(QuantizerKind::binary, 1, pc, 4), {1}, {4, 5, 3, 3}, 0.3f},
      {"ternary weight", weight_spec(QuantizerKind::ternary, 2, pt, 1), {2}, {4, 5, 3, 3}, 0.3f},
      {"float", activation_spec(QuantizerKind::float_bypass, kFloatBits), {kFloatBits}, {100}},
  };
  return out;
}

struct Set {
  std::vector<std::unique_ptr<Quantizer>> owned;
  std::vector<Quantizer*> pointers;
  Set(const Case& c, int count) {
    for (int k = 0; k < count; ++k) {
      QuantizerSpec spec = c.base;
      spec.bits = c.bits[static_cast<std::size_t>(k) % c.bits.size()];
      owned.push_back(std::make_unique<Quantizer>(spec));
      pointers.push_back(owned.back().get());
    }
  }
};

Tensor input_of(const Case& c, uint64_t seed) {
  Tensor x = gaussian(c.shape, seed, c.stddev);
  if (c.nonnegative) x = testing::relu(std::move(x));
  return x;
}

std::vector<float> mixing_weights(int count, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w;
  for (int k = 0; k < count; ++k) w.push_back(static_cast<float>(rng.uniform_double()) / static_cast<float>(count));
  return w;
}

// Learned parameters moved away from their initial values (identically in both sets), so that
// repeated bitwidths differ and clipping happens on both sides.
void perturb(Set& set, uint64_t seed) {
  Rng rng(seed);
  for (Quantizer* q : set.pointers)
    for (Parameter* p : q->parameters())
      for (int64_t i = 0; i < p->value.numel(); ++i)
        p->value[i] *= 1.0f + 0.3f * static_cast<float>(rng.uniform_double() - 0.5);
}

void expect_same_state(Set& a, Set& b, const std::string& what) {
  for (std::size_t k = 0; k < a.pointers.size(); ++k) {
    const std::vector<Buffer*> ba = a.pointers[k]->buffers(), bb = b.pointers[k]->buffers();
    for (std::size_t i = 0; i < ba.size(); ++i)
      expect_bitwise_equal(ba[i]->value, bb[i]->value, what + " buffer " + ba[i]->name);
    const std::vector<Parameter*> pa = a.pointers[k]->parameters(), pb = b.pointers[k]->parameters();
    for (std::size_t i = 0; i < pa.size(); ++i) {
      expect_bitwise_equal(pa[i]->value, pb[i]->value, what + " " + pa[i]->name);
      expect_bitwise_equal(pa[i]->grad, pb[i]->grad, what + " gradient of " + pa[i]->name);
    }
  }
}

// Two forward steps and one backward step of the fused functions on `fused` and of the
// Quantizer loop on `loop`; everything compared bit for bit.
void expect_fused_equals_loop(const Case& c, int count, uint64_t seed) {
  const std::string what = c.name + " x" + std::to_string(count);
  Set fused(c, count), loop(c, count);
  const std::vector<float> w = mixing_weights(count, seed);
  for (int step = 0; step < 2; ++step) {  // step 0 initializes data-driven state, step 1 updates it
    const Tensor x = input_of(c, seed + 10 + static_cast<uint64_t>(step));
    Tensor y_fused;
    mix_forward(fused.pointers, w, x, y_fused);
    Tensor y_loop(x.shape());
    for (int k = 0; k < count; ++k) loop.pointers[static_cast<std::size_t>(k)]->forward_accumulate(x, w[k], y_loop);
    expect_bitwise_equal(y_fused, y_loop, what + " forward, step " + std::to_string(step));
    expect_same_state(fused, loop, what + " after forward " + std::to_string(step));
    if (step == 0) {
      perturb(fused, seed + 20);
      perturb(loop, seed + 20);
    }
  }
  const Tensor x = input_of(c, seed + 11);
  const Tensor g = gaussian(c.shape, seed + 30);
  for (Quantizer* q : fused.pointers) q->zero_grad();
  for (Quantizer* q : loop.pointers) q->zero_grad();
  Tensor gx_fused;
  std::vector<double> dw_fused(static_cast<std::size_t>(count), -1.0);
  mix_backward(fused.pointers, w, x, g, gx_fused, dw_fused);
  Tensor gx_loop(x.shape());
  std::vector<double> dw_loop;
  for (int k = 0; k < count; ++k) {
    Quantizer& q = *loop.pointers[static_cast<std::size_t>(k)];
    dw_loop.push_back(q.dot_output(x, g));
    q.backward_accumulate(x, g, w[k], gx_loop);
  }
  expect_bitwise_equal(gx_fused, gx_loop, what + " grad_input");
  for (int k = 0; k < count; ++k)
    EXPECT_EQ(dw_fused[static_cast<std::size_t>(k)], dw_loop[static_cast<std::size_t>(k)])
        << what << " weight gradient " << k;
  expect_same_state(fused, loop, what + " after backward");

  // The cases meant to exercise the fused kernels do.
  const MixPasses passes = mix_passes(fused.pointers, x);
  if (c.fused_forward) {
    EXPECT_TRUE(passes.forward) << what;
  }
  if (c.fused_backward) {
    EXPECT_TRUE(passes.backward) << what;
  }
}

TEST(QuantizerMixing, OnePassEqualsTheQuantizerLoopBitForBit) {
  uint64_t seed = 100;
  for (const Case& c : cases()) {
    // 1..8 candidates as the search uses them, and more than one kernel call takes (9, 12).
    for (int count : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12}) {
      if (c.bits.size() == 1 && count > 3) continue;  // one valid bitwidth: a few repeats suffice
      expect_fused_equals_loop(c, count, seed += 7);
      if (::testing::Test::HasFailure()) return;  // one case's report is enough
    }
  }
}

TEST(QuantizerMixing, OnePassDoesNotDependOnTheThreadCount) {
  // Large enough to be split over threads (two blocks per thread at 2 threads).
  const Case c{"lsq activation", activation_spec(QuantizerKind::lsq, 4), {2, 3, 4, 5}, {4, 16, 32, 32}, 1.0f, true};
  const int saved = num_threads();
  std::vector<Tensor> ys, gxs;
  std::vector<std::vector<double>> dws;
  std::vector<float> steps;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Set set(c, 4);
    const std::vector<float> w = mixing_weights(4, 5);
    const Tensor x = input_of(c, 6);
    const Tensor g = gaussian(c.shape, 7);
    Tensor y, gx;
    mix_forward(set.pointers, w, x, y);
    std::vector<double> dw(4);
    mix_backward(set.pointers, w, x, g, gx, dw);
    ys.push_back(y);
    gxs.push_back(gx);
    dws.push_back(dw);
    steps.push_back(set.pointers[2]->parameters()[0]->grad[0]);
  }
  set_num_threads(saved);
  for (std::size_t i = 1; i < ys.size(); ++i) {
    expect_bitwise_equal(ys[i], ys[0], "forward");
    expect_bitwise_equal(gxs[i], gxs[0], "grad_input");
    EXPECT_EQ(dws[i], dws[0]);
    EXPECT_TRUE(bitwise_equal(steps[i], steps[0]));
  }
}

TEST(QuantizerMixing, WeightGradientsAreTheDotProductsOfTheOutputs) {
  // An independent check of what the fused pass computes: dL/dw_k = <g, Q_k(x)> with Q_k(x) from
  // each quantizer's own forward, and dL/dx = Σ_k w_k STE_k(x) g (LSQ: g inside the range).
  const Case c{"lsq weight", weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 8), {2, 3, 4, 5},
               {8, 3, 3, 3}, 0.2f};
  Set set(c, 4);
  const Tensor x = input_of(c, 1);
  const Tensor g = gaussian(c.shape, 2);
  const std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f};
  Tensor y, gx;
  mix_forward(set.pointers, w, x, y);
  std::vector<double> dw(4);
  mix_backward(set.pointers, w, x, g, gx, dw);
  Tensor expected_gx(x.shape());
  for (std::size_t k = 0; k < 4; ++k) {
    const Tensor q = set.pointers[k]->forward(x);
    double dot = 0.0;
    for (int64_t i = 0; i < x.numel(); ++i) dot += static_cast<double>(g[i]) * static_cast<double>(q[i]);
    EXPECT_NEAR(dw[k], dot, 1e-9 * (1.0 + std::fabs(dot))) << "candidate " << k;
    const QuantParams p = set.pointers[k]->params();
    const int64_t per_channel = x.numel() / 8;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float s = p.scales[static_cast<std::size_t>(i / per_channel)];
      const float v = x[i] * (1.0f / s);  // LSQ's grid multiplies by 1/s
      const int qn = 1 << (c.bits[k] - 1);
      if (v > static_cast<float>(-qn) && v < static_cast<float>(qn - 1)) expected_gx[i] += w[k] * g[i];
    }
  }
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(gx[i], expected_gx[i], 1e-6f) << "element " << i;
}

TEST(QuantizerMixing, PassesReportWhichSetsAreFused) {
  const Tensor w = gaussian({4, 2, 3, 3}, 1, 0.3f);
  const auto passes = [&](QuantizerKind kind, std::vector<int> bits) {
    std::vector<std::unique_ptr<Quantizer>> owned;
    std::vector<Quantizer*> set;
    for (int b : bits) {
      owned.push_back(std::make_unique<Quantizer>(weight_spec(kind, b, Granularity::per_channel, 4)));
      set.push_back(owned.back().get());
    }
    const MixPasses p = mix_passes(set, w);
    return std::pair<bool, bool>(p.forward, p.backward);
  };
  EXPECT_EQ(passes(QuantizerKind::lsq, {2, 3, 4, 5}), std::make_pair(true, true));
  EXPECT_EQ(passes(QuantizerKind::lsq, {1}), std::make_pair(true, true));
  EXPECT_EQ(passes(QuantizerKind::lsq, {1, 2}), std::make_pair(false, false));  // sign grid vs integer grid
  EXPECT_EQ(passes(QuantizerKind::sawb, {1, 2, 8}), std::make_pair(true, true));
  EXPECT_EQ(passes(QuantizerKind::dorefa, {2, 3}), std::make_pair(true, false));  // backward through tanh and max
  EXPECT_EQ(passes(QuantizerKind::dorefa, {1}), std::make_pair(true, true));
  EXPECT_EQ(passes(QuantizerKind::dorefa, {1, 2}), std::make_pair(false, false));
}

TEST(QuantizerMixing, BadSetsAreRejected) {
  Quantizer a(activation_spec(QuantizerKind::lsq, 2)), b(activation_spec(QuantizerKind::lsq, 4));
  Quantizer other_kind(activation_spec(QuantizerKind::pact, 4));
  Quantizer signed_lsq(activation_spec(QuantizerKind::lsq, 4, true));
  Quantizer per_channel(weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 3));
  const Tensor x = testing::relu(gaussian({2, 3, 4}, 1));
  const Tensor g = gaussian({2, 3, 4}, 2);
  Tensor y, gx;
  std::vector<double> dw(2);
  const std::vector<float> two = {0.5f, 0.5f};
  const auto forward = [&](std::vector<Quantizer*> set, std::vector<float> w) { mix_forward(set, w, x, y); };
  EXPECT_THROW(forward({}, {}), ArgumentError);
  EXPECT_THROW(forward({&a, &b}, {1.0f}), ArgumentError);
  EXPECT_THROW(forward({&a, &a}, two), ArgumentError);
  EXPECT_THROW(forward({&a, &other_kind}, two), ArgumentError);
  EXPECT_THROW(forward({&a, &signed_lsq}, two), ArgumentError);
  EXPECT_THROW(forward({&a, nullptr}, two), ArgumentError);
  std::vector<Quantizer*> pc = {&per_channel};
  EXPECT_THROW(mix_forward(pc, std::vector<float>{1.0f}, x, y), ShapeError);  // axis 0 is 2, not 3
  std::vector<Quantizer*> set = {&a, &b};
  Tensor x_copy = x;
  EXPECT_THROW(mix_forward(set, two, x_copy, x_copy), ArgumentError);
  mix_forward(set, two, x, y);
  EXPECT_THROW(mix_backward(set, two, x, gaussian({3, 2, 4}, 3), gx, dw), ShapeError);
  std::vector<double> one(1);
  EXPECT_THROW(mix_backward(set, two, x, g, gx, one), ArgumentError);
  Tensor g_copy = g;
  EXPECT_THROW(mix_backward(set, two, x, g_copy, g_copy, dw), ArgumentError);
  mix_backward(set, two, x, g, gx, dw);  // and the good call works
  EXPECT_TRUE(gx.same_shape(x));
}

TEST(QuantizerMixing, EmptyTensors) {
  Quantizer a(activation_spec(QuantizerKind::lsq, 2)), b(activation_spec(QuantizerKind::lsq, 4));
  std::vector<Quantizer*> set = {&a, &b};
  const std::vector<float> w = {0.5f, 0.5f};
  const Tensor x({0, 3});
  Tensor y, gx;
  mix_forward(set, w, x, y);
  EXPECT_EQ(y.shape(), x.shape());
  std::vector<double> dw = {7.0, 7.0};
  mix_backward(set, w, x, Tensor({0, 3}), gx, dw);
  EXPECT_EQ(gx.shape(), x.shape());
  EXPECT_EQ(dw, (std::vector<double>{0.0, 0.0}));
}

}  // namespace
}  // namespace bitmix::quant
