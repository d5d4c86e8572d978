// The float bypass and the range-based quantizers: uniform (affine, with a zero point) and
// symmetric (zero point 0). Their range comes from the data (weights: the current tensor;
// activations: a moving average of batch ranges) or from a calibrator, which freezes it.

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

class FloatBypass final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;

  Plan plan(const Tensor*) const override {
    Plan p;
    p.grid = GridKind::identity;
    p.groups.assign(static_cast<std::size_t>(spec.groups()), GroupGrid{});
    return p;
  }
  void describe_codes(QuantParams&) const override {
    throw ArgumentError(fmt::format("{}: a float quantizer has no integer export", describe(spec)));
  }
  Gate gate(const Plan&) const override { return {}; }  // identity: everything passes
};

class RangeQuantizer final : public QuantizerImpl {
 public:
  explicit RangeQuantizer(const QuantizerSpec& s) : QuantizerImpl(s) {
    const Shape group_shape{spec.groups()};
    range_min_ = Buffer{"range_min", Tensor(group_shape)};
    range_max_ = Buffer{"range_max", Tensor(group_shape)};
    initialized_ = Buffer{"initialized", Tensor({1})};
    range_frozen_ = Buffer{"range_frozen", Tensor({1})};
    buffers = {&range_min_, &range_max_, &initialized_, &range_frozen_};
  }

  void update_state(const Tensor& x) override {
    if (frozen()) return;
    const bool first = !initialized();
    if (spec.role == Role::activation && !first && !training) return;
    const std::vector<GroupStats> stats = observe(x);
    const float m = spec.ema_momentum;
    for (std::size_t g = 0; g < stats.size(); ++g) {
      float& lo = range_min_.value[static_cast<int64_t>(g)];
      float& hi = range_max_.value[static_cast<int64_t>(g)];
      if (spec.role == Role::weight || first) {
        lo = stats[g].min;
        hi = stats[g].max;
      } else {
        lo += m * (stats[g].min - lo);
        hi += m * (stats[g].max - hi);
      }
    }
    initialized_.value[0] = 1.0f;
  }

  Plan plan(const Tensor* x) const override {
    Plan p;
    p.grid = GridKind::uniform;
    p.groups.resize(static_cast<std::size_t>(spec.groups()));
    // Weights follow the tensor they quantize (unless a calibrator fixed the range);
    // activations use the observed range once there is one.
    const bool use_stored = frozen() || (spec.role == Role::activation && initialized());
    if (use_stored) {
      for (std::size_t g = 0; g < p.groups.size(); ++g)
        p.groups[g] = grid(range_min_.value[static_cast<int64_t>(g)], range_max_.value[static_cast<int64_t>(g)]);
      return p;
    }
    if (x == nullptr) {
      if (spec.role == Role::weight)
        throw ArgumentError(fmt::format("{}: the scale follows the weights; use params(weights)", describe(spec)));
      throw ArgumentError(fmt::format("{}: no range observed or calibrated yet: run forward once or calibrate",
                                      describe(spec)));
    }
    const std::vector<GroupStats> stats = observe(*x);
    for (std::size_t g = 0; g < p.groups.size(); ++g) p.groups[g] = grid(stats[g].min, stats[g].max);
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    const int b = spec.bits;
    if (spec.role == Role::weight) {
      params.encoding = CodeEncoding::twos_complement;
      params.code_bits = b;
      if (spec.kind == QuantizerKind::uniform) {
        params.min_code = -signed_half(b);
        params.max_code = signed_half(b) - 1;
      } else {
        params.min_code = -(signed_half(b) - 1);
        params.max_code = signed_half(b) - 1;
      }
    } else {
      params.encoding = CodeEncoding::unsigned_int;
      params.code_bits = b;
      params.min_code = (spec.kind == QuantizerKind::symmetric && spec.signed_activations) ? 1 : 0;
      params.max_code = unsigned_max(b);
    }
  }

  // Straight-through estimator with clipping: dQ/dx = 1 where x lies inside the grid's range
  // (before rounding), 0 where it was clipped.
  Gate gate(const Plan& plan) const override {
    Gate rule;
    rule.kind = GateKind::clip;
    for (const GroupGrid& p : plan.groups) rule.groups.push_back({p.in_mul, p.k_min, p.k_max});
    return rule;
  }

  bool accepts_range() const noexcept override { return true; }

  RangeShape range_shape() const override {
    if (spec.kind == QuantizerKind::uniform) return RangeShape::affine;
    return signed_values() ? RangeShape::symmetric : RangeShape::nonnegative;
  }

  LevelGrid grid_for_range(float lo, float hi) const override {
    const GroupGrid p = grid(lo, hi);
    return {p.scale, static_cast<int32_t>(p.k_min), static_cast<int32_t>(p.k_max)};
  }

  void set_range(std::span<const float> lo, std::span<const float> hi) override {
    for (std::size_t g = 0; g < lo.size(); ++g) {
      range_min_.value[static_cast<int64_t>(g)] = lo[g];
      range_max_.value[static_cast<int64_t>(g)] = hi[g];
    }
    initialized_.value[0] = 1.0f;
    range_frozen_.value[0] = 1.0f;
  }

  void unfreeze_range() override { range_frozen_.value[0] = 0.0f; }

 private:
  bool frozen() const { return range_frozen_.value[0] != 0.0f; }
  bool initialized() const { return initialized_.value[0] != 0.0f; }
  bool signed_values() const { return spec.role == Role::weight || spec.signed_activations; }

  std::vector<GroupStats> observe(const Tensor& x) const {
    return group_stats(x.data(), Blocks(spec.groups(), x.numel()), kStatsMinMax);
  }

  // The grid of one group for the range [lo, hi].
  GroupGrid grid(float lo, float hi) const {
    const int b = spec.bits;
    GroupGrid p;
    if (spec.kind == QuantizerKind::uniform) {
      // Affine: the range is widened to contain 0, so that 0 (zero padding, ReLU zeros) is
      // exactly representable; the zero point is the code of 0.
      const int32_t q_min = spec.role == Role::weight ? -signed_half(b) : 0;
      const int32_t q_max = spec.role == Role::weight ? signed_half(b) - 1 : unsigned_max(b);
      const double lo0 = std::min(0.0, static_cast<double>(lo));
      const double hi0 = std::max(0.0, static_cast<double>(hi));
      p.scale = safe_scale(static_cast<float>((hi0 - lo0) / static_cast<double>(q_max - q_min)));
      const double zero = std::nearbyint(lo0 / static_cast<double>(p.scale));
      const double zp = std::clamp(static_cast<double>(q_min) - zero, static_cast<double>(q_min),
                                   static_cast<double>(q_max));
      p.zero_point = static_cast<int32_t>(zp);
      p.k_min = static_cast<float>(q_min - p.zero_point);
      p.k_max = static_cast<float>(q_max - p.zero_point);
    } else if (signed_values()) {
      // Symmetric, restricted to [-(2^(b-1)-1), 2^(b-1)-1] so that +a and -a are both levels.
      const int32_t q = signed_half(b) - 1;
      const float a = std::max(std::fabs(lo), std::fabs(hi));
      p.scale = safe_scale(a / static_cast<float>(q));
      p.k_min = static_cast<float>(-q);
      p.k_max = static_cast<float>(q);
      // Signed activations are exported as unsigned codes k + 2^(b-1) with that zero point.
      p.zero_point = spec.role == Role::activation ? signed_half(b) : 0;
    } else {
      const float a = std::max(hi, 0.0f);
      p.scale = safe_scale(a / static_cast<float>(unsigned_max(b)));
      p.k_min = 0.0f;
      p.k_max = static_cast<float>(unsigned_max(b));
    }
    p.in_mul = 1.0f / p.scale;
    return p;
  }

  Buffer range_min_, range_max_, initialized_, range_frozen_;
};

}  // namespace

std::unique_ptr<QuantizerImpl> make_float_bypass(const QuantizerSpec& spec) {
  return std::make_unique<FloatBypass>(spec);
}

std::unique_ptr<QuantizerImpl> make_range_quantizer(const QuantizerSpec& spec) {
  return std::make_unique<RangeQuantizer>(spec);
}

}  // namespace bitmix::quant::detail
