// DoubleQ: two levels of weight quantization. Level one is 8-bit symmetric integers; level two
// replaces each 8-bit code by a power of two (or zero), so hardware that holds the 8-bit model can
// derive the second level from the codes alone. docs/quantization.md has the formulas and the
// choices the paper left open.

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

constexpr float kLevelOneMax = 127.0f;  // level-one codes in [-127, 127]

class DoubleQ final : public QuantizerImpl {
 public:
  explicit DoubleQ(const QuantizerSpec& s)
      : QuantizerImpl(s), exponents_(s.bits == 8 ? 0 : (1 << (s.bits - 1)) - 1) {}

  bool has_own_forward() const noexcept override { return level_two(); }

  bool own_forward(const Tensor& x, Sink sink, float weight, float* out) const override {
    if (!level_two()) return false;
    const Grids grids = grids_of(x);
    const int64_t per_group = x.numel() / spec.groups();
    const float* xs = x.data();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const std::size_t g = static_cast<std::size_t>(i / per_group);
      const float v = grids.two.groups[g].scale * static_cast<float>(code_two(xs[i], grids, g));
      out[i] = sink == Sink::accumulate ? out[i] + weight * v : v;
    }
    return true;
  }

  bool own_codes(const Tensor& x, int32_t* codes) const override {
    if (!level_two()) return false;
    const Grids grids = grids_of(x);
    const int64_t per_group = x.numel() / spec.groups();
    for (int64_t i = 0; i < x.numel(); ++i) codes[i] = code_two(x[i], grids, static_cast<std::size_t>(i / per_group));
    return true;
  }

  Plan plan(const Tensor* x) const override {
    if (x == nullptr)
      throw ArgumentError(fmt::format("{}: the scale is computed from the weights; use params(weights)", describe(spec)));
    const Grids grids = grids_of(*x);
    return level_two() ? grids.two : grids.one;
  }

  void describe_codes(QuantParams& params) const override {
    params.encoding = CodeEncoding::twos_complement;
    if (level_two()) {
      params.code_bits = exponents_ + 1;
      params.max_code = int32_t{1} << (exponents_ - 1);
    } else {
      params.code_bits = 8;
      params.max_code = 127;
    }
    params.min_code = -params.max_code;
  }

  Gate gate(const Plan&) const override {
    Gate rule;
    if (level_two()) rule.kind = GateKind::custom;  // the identity STE, in backward() below
    return rule;  // level one: every weight lies inside the max-scaled range; identity STE
  }

  void backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight, bool accumulate,
                Tensor& grad_input) override {
    if (!level_two()) {
      QuantizerImpl::backward(x, plan, grad_output, weight, accumulate, grad_input);
      return;
    }
    const float* gy = grad_output.data();
    float* gx = grad_input.data();
    for (int64_t i = 0; i < x.numel(); ++i) gx[i] = accumulate ? gx[i] + weight * gy[i] : weight * gy[i];
  }

 private:
  struct Grids {
    Plan one;  // level one: uniform, s = max|w| / 127
    Plan two;  // level two: power-of-two levels of the level-one codes, scale s * 2^lowest
    std::vector<float> code_mul;  // 2^-lowest per group: level-one code to the level-two grid's units
  };

  bool level_two() const noexcept { return exponents_ > 0; }

  Grids grids_of(const Tensor& x) const {
    const std::vector<GroupStats> stats = group_stats(x.data(), Blocks(spec.groups(), x.numel()), kStatsArgMaxAbs);
    Grids out;
    out.one.grid = GridKind::uniform;
    out.two.grid = GridKind::power_of_two;
    for (const GroupStats& st : stats) {
      GroupGrid one;
      const float s = st.max_abs / kLevelOneMax;
      const bool empty = !(s >= kMinScale) || !std::isfinite(s);
      one.scale = empty ? 1.0f : s;
      one.in_mul = empty ? 0.0f : 1.0f / s;
      one.k_min = -kLevelOneMax;
      one.k_max = kLevelOneMax;
      out.one.groups.push_back(one);
      // The largest level-one code is 127 (the max-scaled weight), whose nearest power of two
      // is 2^7: the top level; the E exponents below it end at 2^(8 - E).
      const int lowest = 8 - exponents_;
      GroupGrid two;
      two.scale = std::ldexp(one.scale, lowest);
      two.in_mul = std::ldexp(one.in_mul, -lowest);
      two.k_min = 0.0f;
      two.k_max = static_cast<float>(exponents_ - 1);
      out.two.groups.push_back(two);
      out.code_mul.push_back(std::ldexp(1.0f, -lowest));
    }
    return out;
  }

  // The level-two code of x: the level-one code q, then sign(q) times the power of two nearest
  // |q| in the grid's units (0 below half its smallest level; ties to the larger, as `pot`).
  int32_t code_two(float x, const Grids& grids, std::size_t g) const {
    const GroupGrid& one = grids.one.groups[g];
    const float q = round_half_even(clamp_nan_low(x * one.in_mul, one.k_min, one.k_max));
    const float level = power_of_two_level(std::fabs(q) * grids.code_mul[g], static_cast<float>(exponents_ - 1));
    const auto c = static_cast<int32_t>(level);
    return q < 0.0f ? -c : c;
  }

  int exponents_;  // level two: 2^(b-1) - 1; level one: 0
};

}  // namespace

std::unique_ptr<QuantizerImpl> make_doubleq(const QuantizerSpec& spec) { return std::make_unique<DoubleQ>(spec); }

}  // namespace bitmix::quant::detail
