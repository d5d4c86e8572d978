#include "bitmix/nn/optimizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "bitmix/core/error.hpp"

namespace bitmix::nn {

ParameterPolicy default_policy(const Parameter& parameter) {
  ParameterPolicy policy;
  policy.weight_decay = parameter.value.rank() >= 2;
  return policy;
}

Optimizer::Optimizer(std::vector<NamedParameter> parameters) : parameters_(std::move(parameters)) {
  for (const NamedParameter& p : parameters_) {
    if (p.parameter == nullptr) throw ArgumentError(fmt::format("optimizer: parameter '{}' is null", p.name));
    p.parameter->grad.expect_shape(p.parameter->value.shape(), fmt::format("optimizer: gradient of '{}'", p.name));
    policies_.push_back(default_policy(*p.parameter));
  }
}

void Optimizer::set_policy(std::string_view name, ParameterPolicy policy) {
  for (std::size_t k = 0; k < parameters_.size(); ++k)
    if (parameters_[k].name == name) {
      if (!(policy.lr_scale >= 0.0f) || !std::isfinite(policy.lr_scale))
        throw ArgumentError(fmt::format("optimizer: learning-rate scale {} of '{}' must be finite and >= 0",
                                        policy.lr_scale, name));
      policies_[k] = policy;
      return;
    }
  throw ArgumentError(fmt::format("optimizer: no parameter named '{}'", name));
}

void Optimizer::zero_grad() {
  for (NamedParameter& p : parameters_) p.parameter->zero_grad();
}

// ---------------------------------------------------------------------------------------------
Sgd::Sgd(std::vector<NamedParameter> parameters, SgdOptions options)
    : Optimizer(std::move(parameters)), options_(options) {
  if (!(options.momentum >= 0.0f && options.momentum < 1.0f))
    throw ArgumentError(fmt::format("sgd: momentum = {} must be in [0, 1)", options.momentum));
  if (!(options.weight_decay >= 0.0f))
    throw ArgumentError(fmt::format("sgd: weight decay = {} must be >= 0", options.weight_decay));
  if (options.nesterov && (options.momentum == 0.0f || options.dampening != 0.0f))
    throw ArgumentError("sgd: Nesterov momentum needs momentum > 0 and dampening 0");
  for (const NamedParameter& p : parameters_) momentum_.emplace_back(p.parameter->value.shape());
}

void Sgd::step(float lr) {
  const bool first = steps() == 0;
  const float mu = options_.momentum;
  for (std::size_t k = 0; k < parameters_.size(); ++k) {
    Parameter& p = *parameters_[k].parameter;
    const ParameterPolicy& policy = policies_[k];
    const float wd = (options_.decay_all || policy.weight_decay) ? options_.weight_decay : 0.0f;
    const float rate = lr * policy.lr_scale;
    float* w = p.value.data();
    const float* g = p.grad.data();
    float* v = momentum_[k].data();
    const int64_t n = p.value.numel();
    if (mu == 0.0f) {
      for (int64_t i = 0; i < n; ++i) w[i] -= rate * (g[i] + wd * w[i]);
      continue;
    }
    const float keep = 1.0f - options_.dampening;
    for (int64_t i = 0; i < n; ++i) {
      const float d = g[i] + wd * w[i];
      v[i] = first ? d : mu * v[i] + keep * d;
      w[i] -= rate * (options_.nesterov ? d + mu * v[i] : v[i]);
    }
  }
  step_count_[0] += 1.0f;
}

std::string Sgd::describe() const {
  return fmt::format(R"({{"kind": "sgd", "momentum": {}, "nesterov": {}, "dampening": {}, "weight_decay": {}, "decay_all": {}}})",
                     options_.momentum, options_.nesterov, options_.dampening, options_.weight_decay,
                     options_.decay_all);
}

std::vector<NamedTensor> Sgd::state() {
  std::vector<NamedTensor> out;
  for (std::size_t k = 0; k < parameters_.size(); ++k)
    out.push_back({parameters_[k].name + ".momentum", &momentum_[k]});
  out.push_back({"step", &step_count_});
  return out;
}

// ---------------------------------------------------------------------------------------------
Adam::Adam(std::vector<NamedParameter> parameters, AdamOptions options)
    : Optimizer(std::move(parameters)), options_(options) {
  if (!(options.beta1 >= 0.0f && options.beta1 < 1.0f) || !(options.beta2 >= 0.0f && options.beta2 < 1.0f))
    throw ArgumentError(fmt::format("adam: betas ({}, {}) must be in [0, 1)", options.beta1, options.beta2));
  if (!(options.eps > 0.0f)) throw ArgumentError(fmt::format("adam: eps = {} must be > 0", options.eps));
  if (!(options.weight_decay >= 0.0f))
    throw ArgumentError(fmt::format("adam: weight decay = {} must be >= 0", options.weight_decay));
  for (const NamedParameter& p : parameters_) {
    exp_avg_.emplace_back(p.parameter->value.shape());
    exp_avg_sq_.emplace_back(p.parameter->value.shape());
  }
}

void Adam::step(float lr) {
  const double t = static_cast<double>(steps() + 1);
  const double b1 = options_.beta1, b2 = options_.beta2;
  const float correction1 = static_cast<float>(1.0 - std::pow(b1, t));
  const float correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
  for (std::size_t k = 0; k < parameters_.size(); ++k) {
    Parameter& p = *parameters_[k].parameter;
    const ParameterPolicy& policy = policies_[k];
    const float wd = (options_.decay_all || policy.weight_decay) ? options_.weight_decay : 0.0f;
    const float rate = lr * policy.lr_scale;
    float* w = p.value.data();
    const float* g = p.grad.data();
    float* m = exp_avg_[k].data();
    float* v = exp_avg_sq_[k].data();
    const int64_t n = p.value.numel();
    const float step_size = rate / correction1;
    for (int64_t i = 0; i < n; ++i) {
      float grad = g[i];
      if (options_.decoupled) w[i] -= rate * wd * w[i];
      else grad += wd * w[i];
      m[i] = options_.beta1 * m[i] + (1.0f - options_.beta1) * grad;
      v[i] = options_.beta2 * v[i] + (1.0f - options_.beta2) * grad * grad;
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) / correction2_sqrt + options_.eps);
    }
  }
  step_count_[0] += 1.0f;
}

std::string Adam::describe() const {
  return fmt::format(R"({{"kind": "{}", "beta1": {}, "beta2": {}, "eps": {}, "weight_decay": {}, "decay_all": {}}})",
                     kind(), options_.beta1, options_.beta2, options_.eps, options_.weight_decay, options_.decay_all);
}

std::vector<NamedTensor> Adam::state() {
  std::vector<NamedTensor> out;
  for (std::size_t k = 0; k < parameters_.size(); ++k) {
    out.push_back({parameters_[k].name + ".exp_avg", &exp_avg_[k]});
    out.push_back({parameters_[k].name + ".exp_avg_sq", &exp_avg_sq_[k]});
  }
  out.push_back({"step", &step_count_});
  return out;
}

// ---------------------------------------------------------------------------------------------
ScheduleKind parse_schedule_kind(std::string_view text) {
  if (text == "constant") return ScheduleKind::constant;
  if (text == "step") return ScheduleKind::step;
  if (text == "cosine") return ScheduleKind::cosine;
  if (text == "linear") return ScheduleKind::linear;
  throw ArgumentError(fmt::format("schedule '{}': expected constant, step, cosine or linear", text));
}

std::string_view schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::step: return "step";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::linear: return "linear";
  }
  return "unknown";
}

LrSchedule::LrSchedule(LrScheduleOptions options) : options_(std::move(options)) {
  const LrScheduleOptions& o = options_;
  if (!(o.base_lr >= 0.0f) || !std::isfinite(o.base_lr))
    throw ArgumentError(fmt::format("learning rate {} must be finite and >= 0", o.base_lr));
  if (o.total_steps < 1 || o.steps_per_epoch < 1)
    throw ArgumentError(fmt::format("schedule: {} total steps and {} steps per epoch must be positive", o.total_steps,
                                    o.steps_per_epoch));
  if (o.warmup_steps < 0 || o.warmup_steps > o.total_steps)
    throw ArgumentError(fmt::format("schedule: warm-up of {} steps must be within the {} steps of the run",
                                    o.warmup_steps, o.total_steps));
  if (!(o.min_lr >= 0.0f) || o.min_lr > o.base_lr)
    throw ArgumentError(fmt::format("schedule: minimum rate {} must be in [0, base rate {}]", o.min_lr, o.base_lr));
  if (!(o.gamma > 0.0f)) throw ArgumentError(fmt::format("schedule: gamma = {} must be > 0", o.gamma));
  if (!(o.warmup_start_factor >= 0.0f && o.warmup_start_factor <= 1.0f))
    throw ArgumentError(fmt::format("schedule: warm-up start factor {} must be in [0, 1]", o.warmup_start_factor));
  for (std::size_t i = 0; i < o.milestones.size(); ++i)
    if (o.milestones[i] < 1 || (i > 0 && o.milestones[i] <= o.milestones[i - 1]))
      throw ArgumentError("schedule: milestones must be increasing positive epochs");
}

float LrSchedule::lr(int64_t step) const {
  const LrScheduleOptions& o = options_;
  const double base = o.base_lr;
  if (step < o.warmup_steps) {
    // Linear from base * start_factor towards base, reaching it at the last warm-up step (so
    // the first step already moves when the start factor is 0).
    const double f = double{o.warmup_start_factor} + (1.0 - double{o.warmup_start_factor}) *
                                                          static_cast<double>(step + 1) /
                                                          static_cast<double>(o.warmup_steps);
    return static_cast<float>(base * f);
  }
  switch (o.kind) {
    case ScheduleKind::constant: return o.base_lr;
    case ScheduleKind::step: {
      const int64_t epoch = step / o.steps_per_epoch;
      double rate = base;
      for (int m : o.milestones)
        if (epoch >= m) rate *= double{o.gamma};
      return static_cast<float>(rate);
    }
    case ScheduleKind::cosine:
    case ScheduleKind::linear: {
      const int64_t span = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
      const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(span));
      const double floor = o.min_lr;
      const double remaining =
          o.kind == ScheduleKind::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
      return static_cast<float>(floor + (base - floor) * remaining);
    }
  }
  return o.base_lr;
}

std::string LrSchedule::describe() const {
  const LrScheduleOptions& o = options_;
  return fmt::format(
      R"({{"kind": "{}", "base_lr": {}, "total_steps": {}, "steps_per_epoch": {}, "warmup_steps": {}, "warmup_start_factor": {}, "min_lr": {}, "milestones": [{}], "gamma": {}}})",
      schedule_kind_name(o.kind), o.base_lr, o.total_steps, o.steps_per_epoch, o.warmup_steps, o.warmup_start_factor,
      o.min_lr, fmt::join(o.milestones, ", "), o.gamma);
}

}  // namespace bitmix::nn
