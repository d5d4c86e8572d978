// Quantizers with learnable parameters: LSQ (step size, Esser et al. 2020) and PACT (clip,
// Choi et al. 2018). Their gradients are reduced per block (by the elementwise kernels, in 16
// fixed lanes) and combined in block order, so they depend neither on the number of threads nor
// on the ISA.

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

class Lsq final : public QuantizerImpl {
 public:
  explicit Lsq(const QuantizerSpec& s) : QuantizerImpl(s) {
    const int b = spec.bits;
    binary_ = spec.role == Role::weight && b == 1;
    if (binary_) {
      q_neg_ = 1;
      q_pos_ = 1;
    } else if (spec.role == Role::weight || spec.signed_activations) {
      q_neg_ = signed_half(b);
      q_pos_ = signed_half(b) - 1;
    } else {
      q_neg_ = 0;
      q_pos_ = unsigned_max(b);
    }
    step_ = Parameter("step", Tensor::full({spec.groups()}, 1.0f));
    initialized_ = Buffer{"initialized", Tensor({1})};
    parameters = {&step_};
    buffers = {&initialized_};
  }

  void update_state(const Tensor& x) override {
    if (initialized()) return;
    const std::vector<float> init = initial_steps(x);
    for (std::size_t g = 0; g < init.size(); ++g) step_.value[static_cast<int64_t>(g)] = init[g];
    initialized_.value[0] = 1.0f;
  }

  Plan plan(const Tensor* x) const override {
    std::vector<float> steps;
    if (initialized()) {
      steps.assign(step_.value.data(), step_.value.data() + step_.value.numel());
    } else if (x != nullptr) {
      steps = initial_steps(*x);  // what the first forward would set
    } else {
      throw ArgumentError(fmt::format("{}: the step size is not initialized yet: run forward once, calibrate, or "
                                      "load a checkpoint",
                                      describe(spec)));
    }
    Plan p;
    p.grid = binary_ ? GridKind::odd : GridKind::uniform;
    p.groups.resize(steps.size());
    for (std::size_t g = 0; g < steps.size(); ++g) p.groups[g] = grid(steps[g]);
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    const int b = spec.bits;
    if (binary_) {
      params.encoding = CodeEncoding::odd_levels;
      params.code_bits = 1;
      params.min_code = -1;
      params.max_code = 1;
    } else if (spec.role == Role::weight) {
      params.encoding = CodeEncoding::twos_complement;
      params.code_bits = b;
      params.min_code = -q_neg_;
      params.max_code = q_pos_;
    } else {
      params.encoding = CodeEncoding::unsigned_int;
      params.code_bits = b;
      params.min_code = 0;
      params.max_code = unsigned_max(b);
    }
  }

  // LSQ (Esser et al. 2020, eq. 3 and 5), with v = x / s:
  //   dQ/dx = 1 if -Q_N < v < Q_P, else 0
  //   dQ/ds = round(v) - v inside, -Q_N if v <= -Q_N, Q_P if v >= Q_P
  // and the step gradient scaled by g = 1 / sqrt(N * Q_P). For 1-bit weights (levels +-s) the
  // rounding is sign(v), so inside |v| < 1 the step gradient is sign(v) - v. The kernels sum
  // dQ/ds * dL/dQ per block (GateKind::lsq); add_parameter_gradient scales it.
  Gate gate(const Plan& plan) const override {
    Gate rule;
    rule.kind = binary_ ? GateKind::lsq_binary : GateKind::lsq;
    const auto qn = static_cast<float>(-q_neg_);
    const auto qp = static_cast<float>(q_pos_);
    for (const GroupGrid& p : plan.groups)
      rule.groups.push_back({binary_ ? 2.0f * p.in_mul : p.in_mul, qn, qp});  // the odd grid's in_mul is 1/(2s)
    return rule;
  }

  void add_parameter_gradient(const Tensor& x, const Blocks& blocks, const std::vector<double>& block_sums,
                              float weight) override {
    const std::vector<double> per_group = combine_per_group(blocks, block_sums);
    const double n = static_cast<double>(spec.role == Role::weight ? blocks.group_size : features_per_example(x));
    const double grad_scale = 1.0 / std::sqrt(std::max(1.0, n) * static_cast<double>(q_pos_));
    for (std::size_t g = 0; g < per_group.size(); ++g)
      step_.grad[static_cast<int64_t>(g)] += static_cast<float>(static_cast<double>(weight) * grad_scale * per_group[g]);
  }

  bool accepts_range() const noexcept override { return true; }
  RangeShape range_shape() const override {
    return q_neg_ > 0 ? RangeShape::symmetric : RangeShape::nonnegative;
  }
  LevelGrid grid_for_range(float lo, float hi) const override {
    const float s = step_for_range(lo, hi);
    if (binary_) return {2.0f * s, -1, 0, 0.5f};  // levels +-s = 2s * (k + 1/2)
    return {s, -q_neg_, q_pos_};
  }
  void set_range(std::span<const float> lo, std::span<const float> hi) override {
    for (std::size_t g = 0; g < lo.size(); ++g) step_.value[static_cast<int64_t>(g)] = step_for_range(lo[g], hi[g]);
    initialized_.value[0] = 1.0f;
  }

 private:
  bool initialized() const { return initialized_.value[0] != 0.0f; }

  GroupGrid grid(float step) const {
    GroupGrid p;
    const float s = safe_scale(step);
    p.scale = s;
    if (binary_) {
      p.in_mul = 1.0f / (2.0f * s);
      p.k_min = -1.0f;
      p.k_max = 0.0f;
    } else {
      p.in_mul = 1.0f / s;
      p.k_min = static_cast<float>(-q_neg_);
      p.k_max = static_cast<float>(q_pos_);
      // Signed activations are exported as unsigned codes k + 2^(b-1).
      p.zero_point = (spec.role == Role::activation && q_neg_ > 0) ? q_neg_ : 0;
    }
    return p;
  }

  // The step whose grid reaches both ends of [lo, hi] (the larger of the two requirements).
  float step_for_range(float lo, float hi) const {
    if (binary_) return safe_scale(std::max(std::fabs(lo), std::fabs(hi)));
    float s = std::max(hi, 0.0f) / static_cast<float>(q_pos_);
    if (q_neg_ > 0) s = std::max(s, std::max(-lo, 0.0f) / static_cast<float>(q_neg_));
    return safe_scale(s);
  }

  // LSQ's data-driven initialization, s = 2 mean|x| / sqrt(Q_P), per group. For 1-bit weights
  // mean|x| itself, the scale that minimizes the L2 error of sign(x) * s.
  std::vector<float> initial_steps(const Tensor& x) const {
    const Blocks blocks(spec.groups(), x.numel());
    const std::vector<GroupStats> stats = group_stats(x.data(), blocks, kStatsAbs);
    std::vector<float> out(stats.size());
    for (std::size_t g = 0; g < stats.size(); ++g) {
      const double mean_abs = stats[g].count > 0 ? stats[g].sum_abs / static_cast<double>(stats[g].count) : 0.0;
      const double s = binary_ ? mean_abs : 2.0 * mean_abs / std::sqrt(static_cast<double>(q_pos_));
      out[g] = s > 0.0 && std::isfinite(s) ? static_cast<float>(s) : 1.0f;
    }
    return out;
  }

  bool binary_ = false;
  int32_t q_neg_ = 0;  // Q_N: levels reach -Q_N * s
  int32_t q_pos_ = 0;  // Q_P: levels reach  Q_P * s
  Parameter step_;
  Buffer initialized_;
};

class Pact final : public QuantizerImpl {
 public:
  explicit Pact(const QuantizerSpec& s) : QuantizerImpl(s) {
    alpha_ = Parameter("alpha", Tensor::full({1}, spec.pact_initial_alpha));
    parameters = {&alpha_};
  }

  Plan plan(const Tensor*) const override {
    Plan p;
    p.grid = GridKind::uniform;
    p.groups.assign(1, grid(alpha_.value[0]));
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    params.encoding = CodeEncoding::unsigned_int;
    params.code_bits = spec.bits;
    params.min_code = 0;
    params.max_code = unsigned_max(spec.bits);
  }

  // PACT: y = clip(x, 0, alpha) then quantized with the STE, so dy/dx = 1 for 0 <= x < alpha
  // and dy/dalpha = 1 where x >= alpha, 0 elsewhere (GateKind::pact sums dL/dQ there).
  Gate gate(const Plan&) const override {
    Gate rule;
    rule.kind = GateKind::pact;
    rule.groups.push_back({1.0f, 0.0f, safe_scale(alpha_.value[0])});
    return rule;
  }

  void add_parameter_gradient(const Tensor&, const Blocks&, const std::vector<double>& block_sums,
                              float weight) override {
    double sum = 0.0;
    for (double v : block_sums) sum += v;
    alpha_.grad[0] += static_cast<float>(static_cast<double>(weight) * sum);
  }

  bool accepts_range() const noexcept override { return true; }
  RangeShape range_shape() const override { return RangeShape::nonnegative; }
  LevelGrid grid_for_range(float, float hi) const override {
    const GroupGrid p = grid(hi);
    return {p.scale, 0, unsigned_max(spec.bits)};
  }
  void set_range(std::span<const float>, std::span<const float> hi) override {
    alpha_.value[0] = safe_scale(hi[0]);
  }

 private:
  GroupGrid grid(float alpha) const {
    const float a = safe_scale(alpha);
    const auto n = static_cast<float>(unsigned_max(spec.bits));
    GroupGrid p;
    p.scale = a / n;
    p.in_mul = n / a;
    p.k_min = 0.0f;
    p.k_max = n;
    return p;
  }

  Parameter alpha_;
};

}  // namespace

std::unique_ptr<QuantizerImpl> make_lsq(const QuantizerSpec& spec) { return std::make_unique<Lsq>(spec); }
std::unique_ptr<QuantizerImpl> make_pact(const QuantizerSpec& spec) { return std::make_unique<Pact>(spec); }

}  // namespace bitmix::quant::detail
