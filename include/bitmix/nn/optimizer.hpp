#pragma once
// Optimizers (SGD with momentum / Nesterov / weight decay, Adam, AdamW) and learning-rate
// schedules (constant, step, cosine with linear warm-up), with PyTorch's update rules so that
// recipes carry over.
//
// An optimizer updates a fixed list of named parameters from their accumulated gradients. Its
// state (momentum buffers, moment estimates, step count) is exposed as named tensors so that a
// checkpoint can save it and a resumed run continues bit for bit.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/parameter.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::nn {

// A tensor owned elsewhere, with a name (optimizer state, checkpoint entries).
struct NamedTensor {
  std::string name;
  Tensor* tensor;
};

// How an optimizer treats one parameter. This is optimizer policy, so it lives here and not in
// core's Parameter, which quant's quantizers and search's mixtures create too.
struct ParameterPolicy {
  bool weight_decay = true;  // SgdOptions / AdamOptions::weight_decay applies (unless decay_all)
  float lr_scale = 1.0f;     // learning-rate multiplier
  friend bool operator==(const ParameterPolicy&, const ParameterPolicy&) = default;
};

// The policy every parameter starts with: weight decay for weight matrices and convolution
// kernels (rank >= 2) and for nothing of rank 1 (biases, BatchNorm scales and shifts,
// quantizer steps and clipping levels, bitwidth strengths); learning-rate multiplier 1.
ParameterPolicy default_policy(const Parameter& parameter);

class Optimizer {
 public:
  // Every parameter gets default_policy(); set_policy() overrides it.
  explicit Optimizer(std::vector<NamedParameter> parameters);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // "sgd", "adam", "adamw".
  virtual std::string kind() const = 0;
  // One update with learning rate lr (times each parameter's ParameterPolicy::lr_scale).
  virtual void step(float lr) = 0;
  // Hyper-parameters as a JSON object text, for logs and checkpoints.
  virtual std::string describe() const = 0;
  // State tensors named "<parameter>.<state>" ("layer1.0.conv1.weight.momentum") plus "step".
  virtual std::vector<NamedTensor> state() = 0;

  void zero_grad();
  const std::vector<NamedParameter>& parameters() const { return parameters_; }
  // The policy of the parameter listed as `name`; ArgumentError if none is. The policy is not
  // saved with the state: whoever builds the optimizer sets it again before resuming.
  void set_policy(std::string_view name, ParameterPolicy policy);
  const ParameterPolicy& policy(std::size_t index) const { return policies_.at(index); }
  // Updates applied so far.
  int64_t steps() const { return static_cast<int64_t>(step_count_[0]); }

 protected:
  std::vector<NamedParameter> parameters_;
  std::vector<ParameterPolicy> policies_;  // one per parameter
  Tensor step_count_{Shape{1}};  // a float tensor so that it is saved with the state (exact below 2^24)
};

struct SgdOptions {
  float momentum = 0.9f;
  bool nesterov = false;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  // false: weight decay only on parameters whose policy asks for it (by default conv / linear
  // weights; not BatchNorm parameters, biases or quantizer parameters); true: on every parameter.
  bool decay_all = false;
};

// v = momentum * v + (1 - dampening) * (g + wd * w)   (v = g + wd * w on the first step)
// w -= lr * (nesterov ? g + wd * w + momentum * v : v)
class Sgd : public Optimizer {
 public:
  Sgd(std::vector<NamedParameter> parameters, SgdOptions options);
  std::string kind() const override { return "sgd"; }
  void step(float lr) override;
  std::string describe() const override;
  std::vector<NamedTensor> state() override;
  const SgdOptions& options() const { return options_; }

 private:
  SgdOptions options_;
  std::vector<Tensor> momentum_;
};

struct AdamOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // AdamW: w -= lr * wd * w before the Adam step, instead of g += wd * w
  bool decay_all = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<NamedParameter> parameters, AdamOptions options);
  std::string kind() const override { return options_.decoupled ? "adamw" : "adam"; }
  void step(float lr) override;
  std::string describe() const override;
  std::vector<NamedTensor> state() override;
  const AdamOptions& options() const { return options_; }

 private:
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

// ---------------------------------------------------------------------------------------------
// After the warm-up: constant; step (x gamma at each milestone); cosine from the base rate down to
// min_lr; linear from the base rate down to min_lr (reported to suit short training budgets
// better than the cosine: Li, Yumer and Ramanan, "Budgeted Training", ICLR 2020).
enum class ScheduleKind { constant, step, cosine, linear };
// "constant" | "step" | "cosine" | "linear"; throws ArgumentError.
ScheduleKind parse_schedule_kind(std::string_view text);
std::string_view schedule_kind_name(ScheduleKind kind);

struct LrScheduleOptions {
  ScheduleKind kind = ScheduleKind::cosine;
  float base_lr = 0.1f;
  int64_t total_steps = 1;       // iterations of the whole run (epochs x batches per epoch)
  int64_t steps_per_epoch = 1;
  // Linear warm-up: lr(t) = base_lr * (f + (1 - f) * (t + 1) / warmup_steps) for t < warmup_steps,
  // f = warmup_start_factor.
  int64_t warmup_steps = 0;
  float warmup_start_factor = 0.0f;
  float min_lr = 0.0f;           // cosine, linear: the value at the last step
  std::vector<int> milestones;   // step: epochs at which the rate is multiplied by gamma
  float gamma = 0.1f;
};

// The learning rate as a function of the iteration (0-based), evaluated per iteration.
class LrSchedule {
 public:
  LrSchedule() = default;
  explicit LrSchedule(LrScheduleOptions options);  // validates (ArgumentError)
  float lr(int64_t step) const;
  const LrScheduleOptions& options() const { return options_; }
  std::string describe() const;  // JSON object text

 private:
  LrScheduleOptions options_;
};

}  // namespace bitmix::nn
