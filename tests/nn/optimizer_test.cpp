// Optimizers against the update rules written out step by step in double precision (PyTorch's
// documented formulas), and learning-rate schedules at known points.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/quantization.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {

struct Fixture {
  Parameter w{"w", Tensor({1, 3}, {1.0f, -2.0f, 0.5f})};  // a weight matrix: decayed by default
  Parameter b{"b", Tensor({2}, {0.25f, -0.75f})};         // a vector: excluded from weight decay
  std::vector<NamedParameter> named() { return {{"layer.w", &w}, {"layer.b", &b}}; }
  // A fixed gradient sequence: g_t = sin(1 + t + i).
  void set_grads(int t) {
    for (int64_t i = 0; i < 3; ++i) w.grad[i] = static_cast<float>(std::sin(1.0 + t + static_cast<double>(i)));
    for (int64_t i = 0; i < 2; ++i) b.grad[i] = static_cast<float>(std::sin(2.0 + t + static_cast<double>(i)));
  }
};

double grad_at(int t, int64_t i, bool bias) { return std::sin((bias ? 2.0 : 1.0) + t + static_cast<double>(i)); }

TEST(Sgd, MomentumNesterovAndWeightDecayFollowTheUpdateRule) {
  for (bool nesterov : {false, true}) {
    for (bool decay_all : {false, true}) {
      Fixture f;
      SgdOptions o;
      o.momentum = 0.9f;
      o.nesterov = nesterov;
      o.weight_decay = 0.01f;
      o.decay_all = decay_all;
      Sgd sgd(f.named(), o);
      std::vector<double> w = {1.0, -2.0, 0.5}, b = {0.25, -0.75}, vw(3), vb(2);
      const double lr = 0.1, mu = 0.9, wd = 0.01;
      for (int t = 0; t < 4; ++t) {
        f.set_grads(t);
        sgd.step(static_cast<float>(lr));
        auto update = [&](std::vector<double>& p, std::vector<double>& v, bool bias, double decay) {
          for (std::size_t i = 0; i < p.size(); ++i) {
            const double d = grad_at(t, static_cast<int64_t>(i), bias) + decay * p[i];
            v[i] = t == 0 ? d : mu * v[i] + d;
            p[i] -= lr * (nesterov ? d + mu * v[i] : v[i]);
          }
        };
        update(w, vw, false, wd);
        update(b, vb, true, decay_all ? wd : 0.0);
      }
      for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(f.w.value[i], w[static_cast<std::size_t>(i)], 1e-5);
      for (int64_t i = 0; i < 2; ++i) EXPECT_NEAR(f.b.value[i], b[static_cast<std::size_t>(i)], 1e-5);
      EXPECT_EQ(sgd.steps(), 4);
    }
  }
}

TEST(Adam, AdamAndAdamWFollowTheUpdateRule) {
  for (bool decoupled : {false, true}) {
    Fixture f;
    AdamOptions o;
    o.weight_decay = 0.05f;
    o.decoupled = decoupled;
    o.decay_all = true;
    Adam adam(f.named(), o);
    EXPECT_EQ(adam.kind(), decoupled ? "adamw" : "adam");
    std::vector<double> w = {1.0, -2.0, 0.5}, m(3), v(3);
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
    for (int t = 0; t < 5; ++t) {
      f.set_grads(t);
      adam.step(static_cast<float>(lr));
      for (std::size_t i = 0; i < 3; ++i) {
        double g = grad_at(t, static_cast<int64_t>(i), false);
        if (decoupled) w[i] -= lr * wd * w[i];
        else g += wd * w[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        const double mhat = m[i] / (1 - std::pow(b1, t + 1)), vhat = v[i] / (1 - std::pow(b2, t + 1));
        w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
    for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(f.w.value[i], w[static_cast<std::size_t>(i)], 1e-5);
  }
}

TEST(Optimizer, StateNamesAndLrScale) {
  Fixture f;
  Sgd sgd(f.named(), SgdOptions{});
  EXPECT_EQ(sgd.policy(1), (ParameterPolicy{false, 1.0f}));
  sgd.set_policy("layer.b", ParameterPolicy{false, 0.0f});  // frozen through its scale
  EXPECT_THROW(sgd.set_policy("layer.c", ParameterPolicy{}), ArgumentError);
  EXPECT_THROW(sgd.set_policy("layer.w", ParameterPolicy{true, -1.0f}), ArgumentError);
  std::vector<std::string> names;
  for (const NamedTensor& t : sgd.state()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"layer.w.momentum", "layer.b.momentum", "step"}));
  f.set_grads(0);
  sgd.step(0.1f);
  EXPECT_FLOAT_EQ(f.b.value[0], 0.25f);
  EXPECT_NE(f.w.value[0], 1.0f);
  sgd.zero_grad();
  EXPECT_EQ(f.w.grad[0], 0.0f);
  EXPECT_THROW(Sgd(f.named(), SgdOptions{1.5f}), ArgumentError);
}

// The default policy decays exactly the weights of convolutions and linear layers: not their
// biases, BatchNorm parameters, nor the learnable parameters of the attached quantizers.
TEST(Optimizer, DefaultPolicyDecaysConvAndLinearWeightsOnly) {
  const Shape image{1, 8, 8};
  auto model = testing::tiny_resnet8(5);
  apply_bit_config(*model, image,
                   uniform_bit_config(*model, image, "resnet8", UniformBits{2, 3, quant::QuantizerKind::lsq,
                                                                              quant::QuantizerKind::pact}));
  std::set<const Parameter*> weights;
  for (Module* m : model->modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) weights.insert(&conv->weight());
    if (auto* linear = dynamic_cast<Linear*>(m)) weights.insert(&linear->weight());
  }
  int decayed = 0, quantizer_parameters = 0;
  for (const NamedParameter& p : model->named_parameters()) {
    const ParameterPolicy policy = default_policy(*p.parameter);
    EXPECT_EQ(policy.weight_decay, weights.count(p.parameter) == 1) << p.name;
    EXPECT_EQ(policy.lr_scale, 1.0f) << p.name;
    decayed += policy.weight_decay ? 1 : 0;
    quantizer_parameters += p.name.ends_with("_transform.step") || p.name.ends_with("_transform.alpha") ? 1 : 0;
  }
  EXPECT_EQ(decayed, static_cast<int>(weights.size()));
  EXPECT_GT(quantizer_parameters, 0);
}

TEST(LrSchedule, CosineLinearWithWarmupStepAndConstant) {
  LrScheduleOptions o;
  o.kind = ScheduleKind::cosine;
  o.base_lr = 0.1f;
  o.total_steps = 110;
  o.steps_per_epoch = 10;
  o.warmup_steps = 10;
  o.warmup_start_factor = 0.0f;
  o.min_lr = 0.001f;
  const LrSchedule cosine(o);
  EXPECT_NEAR(cosine.lr(0), 0.01, 1e-8);  // warm-up: (t + 1) / 10 of the base rate
  EXPECT_NEAR(cosine.lr(5), 0.06, 1e-7);
  EXPECT_NEAR(cosine.lr(9), 0.1, 1e-7);
  EXPECT_NEAR(cosine.lr(10), 0.1, 1e-7);
  EXPECT_NEAR(cosine.lr(60), 0.001 + 0.099 * 0.5, 1e-6);  // halfway through the cosine
  EXPECT_NEAR(cosine.lr(35), 0.001 + 0.099 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-6);
  EXPECT_NEAR(cosine.lr(110), 0.001, 1e-7);

  o.kind = ScheduleKind::linear;  // same warm-up, then a straight line from 0.1 to 0.001
  const LrSchedule linear(o);
  EXPECT_NEAR(linear.lr(9), 0.1, 1e-7);
  EXPECT_NEAR(linear.lr(10), 0.1, 1e-7);
  EXPECT_NEAR(linear.lr(35), 0.001 + 0.099 * 0.75, 1e-6);
  EXPECT_NEAR(linear.lr(60), 0.001 + 0.099 * 0.5, 1e-6);
  EXPECT_NEAR(linear.lr(109), 0.001 + 0.099 * 0.01, 1e-6);
  EXPECT_NEAR(linear.lr(110), 0.001, 1e-7);
  EXPECT_EQ(parse_schedule_kind("linear"), ScheduleKind::linear);
  EXPECT_EQ(schedule_kind_name(ScheduleKind::linear), "linear");

  o.kind = ScheduleKind::step;
  o.warmup_steps = 0;
  o.milestones = {3, 7};
  const LrSchedule step(o);
  EXPECT_FLOAT_EQ(step.lr(29), 0.1f);
  EXPECT_NEAR(step.lr(30), 0.01, 1e-8);
  EXPECT_NEAR(step.lr(75), 0.001, 1e-9);

  o.kind = ScheduleKind::constant;
  EXPECT_FLOAT_EQ(LrSchedule(o).lr(99), 0.1f);

  o.milestones = {5, 3};
  o.kind = ScheduleKind::step;
  EXPECT_THROW(LrSchedule{o}, ArgumentError);
  EXPECT_THROW(parse_schedule_kind("exponential"), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
