// Quantizers whose scale is a function of the tensor quantized: DoReFa (weights through tanh,
// activations clipped to [0, 1]), SAWB, power-of-two (INQ-style), binary and ternary (TWN).
// They keep no state: forward, backward and export all derive the scale from the same input.

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

ArgumentError data_dependent(const QuantizerSpec& spec) {
  return ArgumentError(
      fmt::format("{}: the scale is computed from the weights; use params(weights)", describe(spec)));
}

double mean_abs(const GroupStats& s) {
  return s.count > 0 ? s.sum_abs / static_cast<double>(s.count) : 0.0;
}

// Levels +-alpha (odd grid with k in {-1, 0}): sign(x) * alpha with sign(0) = +1.
GroupGrid binary_grid(float alpha) {
  GroupGrid p;
  p.scale = alpha;
  p.in_mul = alpha > 0.0f && std::isfinite(alpha) ? 1.0f / (2.0f * alpha) : 0.0f;
  p.k_min = -1.0f;
  p.k_max = 0.0f;
  return p;
}

// Binary weights (XNOR-Net/BWN): alpha = mean|w| per group, the L2-optimal scale of sign(w).
Plan binary_plan(const QuantizerSpec& spec, const Tensor& x) {
  const std::vector<GroupStats> stats = group_stats(x.data(), Blocks(spec.groups(), x.numel()), kStatsAbs);
  Plan p;
  p.grid = GridKind::odd;
  for (const GroupStats& s : stats) p.groups.push_back(binary_grid(static_cast<float>(mean_abs(s))));
  return p;
}

void describe_odd_levels(QuantParams& params, int bits) {
  params.encoding = CodeEncoding::odd_levels;
  params.code_bits = bits;
  params.max_code = unsigned_max(bits);
  params.min_code = -params.max_code;
}

class Binary final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;
  Plan plan(const Tensor* x) const override {
    if (x == nullptr) throw data_dependent(spec);
    return binary_plan(spec, *x);
  }
  void describe_codes(QuantParams& params) const override { describe_odd_levels(params, 1); }
  Gate gate(const Plan&) const override { return {}; }  // identity STE (the scale is a constant)
};

class Dorefa final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;

  Plan plan(const Tensor* x) const override {
    const int b = spec.bits;
    Plan p;
    if (spec.role == Role::activation) {
      // Clip to [0, 1], then round to the grid k / (2^b - 1).
      const auto n = static_cast<float>(unsigned_max(b));
      GroupGrid g;
      g.in_mul = n;
      g.scale = 1.0f / n;
      g.k_min = 0.0f;
      g.k_max = n;
      p.grid = GridKind::uniform;
      p.groups.assign(1, g);
      return p;
    }
    if (x == nullptr) throw data_dependent(spec);
    if (b == 1) return binary_plan(spec, *x);  // DoReFa's 1-bit weights: sign(w) * E|w|
    // w_q = 2 * round((2^b - 1) * (tanh(w) / (2 M) + 1/2)) / (2^b - 1) - 1 with M = max|tanh(w)|,
    // i.e. the odd levels c / n (n = 2^b - 1) with c = 2k + 1, k = floor(n tanh(w) / (2M)).
    const std::vector<GroupStats> stats = group_stats(x->data(), Blocks(spec.groups(), x->numel()), kStatsArgMaxAbs);
    const auto n = static_cast<float>(unsigned_max(b));
    p.grid = GridKind::odd;
    p.tanh_input = true;
    for (const GroupStats& s : stats) {
      const float m = std::tanh(s.max_abs);  // tanh is odd and increasing: max|tanh(w)| = tanh(max|w|)
      GroupGrid g;
      g.in_mul = m > 0.0f ? n / (2.0f * m) : 0.0f;
      g.scale = 1.0f / n;
      g.k_min = static_cast<float>(-signed_half(b));
      g.k_max = static_cast<float>(signed_half(b) - 1);
      p.groups.push_back(g);
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    if (spec.role == Role::activation) {
      params.encoding = CodeEncoding::unsigned_int;
      params.code_bits = spec.bits;
      params.min_code = 0;
      params.max_code = unsigned_max(spec.bits);
    } else {
      describe_odd_levels(params, spec.bits);
    }
  }

  Gate gate(const Plan& plan) const override {
    Gate rule;
    if (spec.role == Role::activation) {
      // STE through the rounding, clip's derivative: 1 on [0, 1] (t = x * n in [0, n]).
      const float n = plan.groups[0].in_mul;
      rule.kind = GateKind::clip;
      rule.groups.push_back({n, 0.0f, n});
    } else if (spec.bits > 1) {
      rule.kind = GateKind::custom;  // through tanh and the max: weight_backward
    }
    return rule;  // 1-bit weights: identity STE
  }

  void backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight, bool accumulate,
                Tensor& grad_input) override {
    if (spec.role == Role::weight && spec.bits > 1)
      weight_backward(x, grad_output, weight, accumulate, grad_input);
    else
      QuantizerImpl::backward(x, plan, grad_output, weight, accumulate, grad_input);
  }

 private:
  // With the rounding replaced by the identity (STE) the weight path is y = tanh(w) / M with
  // M = max_j |tanh(w_j)|, and the gradient flows through M as well (as in the reference
  // implementation, which differentiates through the max):
  //   dL/dt_i = g_i / M - [i = j*] sign(t_j*) sum_k g_k t_k / M^2,   dL/dw_i = (1 - t_i^2) dL/dt_i
  // where j* is the (first) element of largest magnitude in the group.
  void weight_backward(const Tensor& x, const Tensor& grad_output, float weight, bool accumulate,
                       Tensor& grad_input) {
    const Blocks blocks(spec.groups(), x.numel());
    const std::vector<GroupStats> stats = group_stats(x.data(), blocks, kStatsArgMaxAbs);
    const float* xs = x.data();
    const float* gy = grad_output.data();
    float* gx = grad_input.data();
    // Pass 1: sum_k g_k t_k per group (before grad_input, which may alias grad_output, is written).
    std::vector<double> partial(static_cast<std::size_t>(blocks.count), 0.0);
    for_each_block(blocks, [&](int64_t, int64_t begin, int64_t end, int64_t b) {
      double acc = 0.0;
      for (int64_t i = begin; i < end; ++i) acc += static_cast<double>(gy[i]) * static_cast<double>(std::tanh(xs[i]));
      partial[static_cast<std::size_t>(b)] = acc;
    });
    const std::vector<double> g_dot_t = combine_per_group(blocks, partial);
    // The max term of each group, computed before grad_input is overwritten.
    std::vector<float> max_term(stats.size(), 0.0f);
    for (std::size_t g = 0; g < stats.size(); ++g) {
      const double m = std::tanh(static_cast<double>(stats[g].max_abs));
      if (m <= 0.0) continue;
      const double t = std::tanh(static_cast<double>(xs[stats[g].max_abs_index]));
      const double sign = t < 0.0 ? -1.0 : 1.0;
      max_term[g] = static_cast<float>((1.0 - t * t) * (-sign) * g_dot_t[g] / (m * m));
    }
    // Pass 2: the direct term.
    for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t) {
      const float m = std::tanh(stats[static_cast<std::size_t>(g)].max_abs);
      const float inv_m = m > 0.0f ? 1.0f / m : 1.0f;
      for (int64_t i = begin; i < end; ++i) {
        const float t = std::tanh(xs[i]);
        const float d = weight * (1.0f - t * t) * gy[i] * inv_m;
        if (accumulate)
          gx[i] += d;
        else
          gx[i] = d;
      }
    });
    for (std::size_t g = 0; g < stats.size(); ++g) gx[stats[g].max_abs_index] += weight * max_term[g];
  }
};

class Sawb final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;

  Plan plan(const Tensor* x) const override {
    if (x == nullptr) throw data_dependent(spec);
    // alpha = c1 sqrt(E[w^2]) + c2 E|w|, kept within [E|w|, max|w|]: the formula assumes a large
    // bell-shaped sample; clipping above the largest weight or below the 1-bit optimum E|w| only
    // adds error. Levels: the 2^b odd multiples of alpha / (2^b - 1).
    const int b = spec.bits;
    const SawbCoefficients c = sawb_coefficients(b);
    const std::vector<GroupStats> stats =
        group_stats(x->data(), Blocks(spec.groups(), x->numel()), kStatsAbs | kStatsSquares | kStatsArgMaxAbs);
    const auto n = static_cast<float>(unsigned_max(b));
    Plan p;
    p.grid = GridKind::odd;
    for (const GroupStats& s : stats) {
      const double count = std::max<double>(1.0, static_cast<double>(s.count));
      const double e_abs = s.sum_abs / count;
      const double rms = std::sqrt(s.sum_sq / count);
      double alpha = c.c1 * rms + c.c2 * e_abs;
      alpha = std::min(alpha, static_cast<double>(s.max_abs));
      alpha = std::max(alpha, e_abs);
      const auto step = static_cast<float>(alpha / static_cast<double>(n));  // level spacing / 2
      GroupGrid g;
      g.scale = step;
      g.in_mul = step > 0.0f && std::isfinite(step) ? 1.0f / (2.0f * step) : 0.0f;
      g.k_min = static_cast<float>(-signed_half(b));
      g.k_max = static_cast<float>(signed_half(b) - 1);
      p.groups.push_back(g);
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override { describe_odd_levels(params, spec.bits); }

  // STE inside the clip range |w| <= alpha (alpha = n * scale), zero outside; alpha is a
  // statistic of the weights and is not differentiated.
  Gate gate(const Plan& plan) const override {
    const auto n = static_cast<float>(unsigned_max(spec.bits));
    Gate rule;
    rule.kind = GateKind::abs_clip;
    for (const GroupGrid& p : plan.groups) rule.groups.push_back({1.0f, 0.0f, n * p.scale});
    return rule;
  }
};

class PowerOfTwo final : public QuantizerImpl {
 public:
  explicit PowerOfTwo(const QuantizerSpec& s) : QuantizerImpl(s), exponents_((1 << (s.bits - 1)) - 1) {}

  Plan plan(const Tensor* x) const override {
    if (x == nullptr) throw data_dependent(spec);
    return grid_of(*x);
  }

  Plan grid_of(const Tensor& t) const {
    const Tensor* x = &t;
    // Levels {0, +-2^(n1 - E + 1), ..., +-2^n1} with E = 2^(b-1) - 1 exponents and n1 the power
    // of two nearest max|w| (INQ: n1 = floor(log2(4 max|w| / 3))).
    const std::vector<GroupStats> stats = group_stats(x->data(), Blocks(spec.groups(), x->numel()), kStatsArgMaxAbs);
    Plan p;
    p.grid = GridKind::power_of_two;
    for (const GroupStats& s : stats) {
      int top = exponents_ - 1;  // all-zero (or non-finite) weights: any grid quantizes them to 0
      if (s.max_abs > 0.0f && std::isfinite(s.max_abs)) {
        int e = 0;
        const float mant = std::frexp(s.max_abs, &e);  // max = mant * 2^e, mant in [0.5, 1)
        top = mant >= 0.75f ? e : e - 1;
      }
      // Keep 2^lowest and its inverse normal floats.
      int lowest = top - exponents_ + 1;
      lowest = std::clamp(lowest, -126, 127 - (exponents_ - 1));
      GroupGrid g;
      g.scale = std::ldexp(1.0f, lowest);
      g.in_mul = std::ldexp(1.0f, -lowest);
      g.k_min = 0.0f;
      g.k_max = static_cast<float>(exponents_ - 1);
      p.groups.push_back(g);
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    params.encoding = CodeEncoding::twos_complement;
    params.code_bits = exponents_ + 1;  // codes +-2^(E-1) need E + 1 bits
    params.max_code = int32_t{1} << (exponents_ - 1);
    params.min_code = -params.max_code;
  }

  // STE inside the largest level's magnitude, zero beyond it: |x| * in_mul (in units of the
  // smallest level) <= 2^k_max.
  Gate gate(const Plan& plan) const override {
    Gate rule;
    rule.kind = GateKind::abs_clip;
    for (const GroupGrid& p : plan.groups) rule.groups.push_back({p.in_mul, 0.0f, std::ldexp(1.0f, static_cast<int>(p.k_max))});
    return rule;
  }

 private:
  int exponents_;
};

class Ternary final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;

  Plan plan(const Tensor* x) const override {
    if (x == nullptr) throw data_dependent(spec);
    // TWN (Li & Liu 2016): threshold delta = 0.7 E|w|, alpha = mean of |w| over |w| > delta.
    const Blocks blocks(spec.groups(), x->numel());
    const std::vector<GroupStats> stats = group_stats(x->data(), blocks, kStatsAbs);
    std::vector<float> delta(stats.size());
    for (std::size_t g = 0; g < stats.size(); ++g) delta[g] = static_cast<float>(0.7 * mean_abs(stats[g]));
    std::vector<double> sum_partial(static_cast<std::size_t>(blocks.count), 0.0);
    std::vector<double> count_partial(static_cast<std::size_t>(blocks.count), 0.0);
    const float* xs = x->data();
    for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t b) {
      const float d = delta[static_cast<std::size_t>(g)];
      double sum = 0.0, count = 0.0;
      for (int64_t i = begin; i < end; ++i) {
        const float a = std::fabs(xs[i]);
        if (a > d) {
          sum += static_cast<double>(a);
          count += 1.0;
        }
      }
      sum_partial[static_cast<std::size_t>(b)] = sum;
      count_partial[static_cast<std::size_t>(b)] = count;
    });
    const std::vector<double> sums = combine_per_group(blocks, sum_partial);
    const std::vector<double> counts = combine_per_group(blocks, count_partial);
    Plan p;
    p.grid = GridKind::ternary;
    for (std::size_t g = 0; g < stats.size(); ++g) {
      GroupGrid grid;
      grid.in_mul = delta[g];
      grid.scale = counts[g] > 0.0 ? static_cast<float>(sums[g] / counts[g]) : 0.0f;
      p.groups.push_back(grid);
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    params.encoding = CodeEncoding::twos_complement;
    params.code_bits = 2;
    params.min_code = -1;
    params.max_code = 1;
  }

  Gate gate(const Plan&) const override { return {}; }  // identity STE
};

}  // namespace

std::unique_ptr<QuantizerImpl> make_dorefa(const QuantizerSpec& spec) { return std::make_unique<Dorefa>(spec); }
std::unique_ptr<QuantizerImpl> make_sawb(const QuantizerSpec& spec) { return std::make_unique<Sawb>(spec); }
std::unique_ptr<QuantizerImpl> make_power_of_two(const QuantizerSpec& spec) {
  return std::make_unique<PowerOfTwo>(spec);
}
std::unique_ptr<QuantizerImpl> make_binary(const QuantizerSpec& spec) { return std::make_unique<Binary>(spec); }

Plan power_of_two_plan(const QuantizerSpec& spec, const Tensor& x) {
  QuantizerSpec pot = spec;
  pot.kind = QuantizerKind::pot;
  return PowerOfTwo(pot).grid_of(x);
}
std::unique_ptr<QuantizerImpl> make_ternary(const QuantizerSpec& spec) { return std::make_unique<Ternary>(spec); }

}  // namespace bitmix::quant::detail
