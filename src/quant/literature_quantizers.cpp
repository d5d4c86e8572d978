// Weight quantizers from two papers compared in bitmix: SYQ (Faraone et al., CVPR 2018: binary
// or ternary weights with a learned symmetric scale per group) and DSConv (Nascimento et al.,
// ICCV 2019: a b-bit integer kernel with one floating scale per block of input channels).
// docs/quantization.md gives the formulas and the choices the papers left open.

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

// SYQ's threshold of the ternary dead zone, as a fraction of the group's largest |w| (the
// value of the paper's reference code, shared with TTQ).
constexpr float kSyqThreshold = 0.05f;

class Syq final : public QuantizerImpl {
 public:
  explicit Syq(const QuantizerSpec& s) : QuantizerImpl(s) {
    scale_ = Parameter("scale", Tensor::full({spec.groups()}, 1.0f));
    initialized_ = Buffer{"initialized", Tensor({1})};
    parameters = {&scale_};
    buffers = {&initialized_};
  }

  // The scale starts at the L2-optimal value for the initial weights: mean|w| over the
  // nonzero levels (all weights when binary, |w| > eta when ternary).
  void update_state(const Tensor& x) override {
    if (initialized()) return;
    const std::vector<float> init = initial_scales(x);
    for (std::size_t g = 0; g < init.size(); ++g) scale_.value[static_cast<int64_t>(g)] = init[g];
    initialized_.value[0] = 1.0f;
  }

  Plan plan(const Tensor* x) const override {
    if (ternary() && x == nullptr)
      throw ArgumentError(fmt::format("{}: the ternary threshold is computed from the weights; use params(weights)",
                                      describe(spec)));
    std::vector<float> scales;
    if (initialized()) {
      scales.assign(scale_.value.data(), scale_.value.data() + scale_.value.numel());
    } else if (x != nullptr) {
      scales = initial_scales(*x);
    } else {
      throw ArgumentError(fmt::format("{}: the scale is not initialized yet: run forward once or load a checkpoint",
                                      describe(spec)));
    }
    Plan p;
    p.grid = ternary() ? GridKind::ternary : GridKind::odd;
    const std::vector<float> eta = ternary() ? thresholds(*x) : std::vector<float>(scales.size(), 0.0f);
    for (std::size_t g = 0; g < scales.size(); ++g) {
      GroupGrid grid;
      grid.scale = safe_scale(scales[g]);
      if (ternary()) {
        grid.in_mul = eta[g];  // the ternary grid's threshold
      } else {
        grid.in_mul = 1.0f;  // floor(clamp(x, -1, 0)) is -1 for x < 0 and 0 otherwise: the sign
        grid.k_min = -1.0f;
        grid.k_max = 0.0f;
      }
      p.groups.push_back(grid);
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    if (ternary()) {
      params.encoding = CodeEncoding::twos_complement;
      params.code_bits = 2;
    } else {
      params.encoding = CodeEncoding::odd_levels;
      params.code_bits = 1;
    }
    params.min_code = -1;
    params.max_code = 1;
  }

  Gate gate(const Plan&) const override {
    Gate rule;
    rule.kind = GateKind::custom;
    return rule;
  }

  // SYQ's backward (TTQ's rule with one symmetric scale): with Q(w)_i = a_g c_i, c_i in
  // {-1, 0, 1} and I_g the elements with c_i != 0,
  //   dL/da_g = sum_{i in I_g} c_i dL/dQ_i                       (exact),
  //   dL/dw_i = a_g dL/dQ_i for i in I_g, dL/dQ_i otherwise       (straight through the sign).
  // The threshold eta is a statistic of the weights and is not differentiated.
  void backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight, bool accumulate,
                Tensor& grad_input) override {
    const Blocks blocks(static_cast<int64_t>(plan.groups.size()), x.numel());
    const float* xs = x.data();
    const float* gy = grad_output.data();
    float* gx = grad_input.data();
    for (int64_t g = 0; g < blocks.groups; ++g) {
      const GroupGrid& grid = plan.groups[static_cast<std::size_t>(g)];
      const int64_t begin = g * blocks.group_size;
      const int64_t end = begin + blocks.group_size;
      double scale_grad = 0.0;
      for (int64_t i = begin; i < end; ++i) {
        const float c = level(xs[i], grid);
        scale_grad += static_cast<double>(c) * static_cast<double>(gy[i]);
        // grad_input may alias grad_output: element i is read before it is written.
        const float d = weight * (c != 0.0f ? grid.scale : 1.0f) * gy[i];
        gx[i] = accumulate ? gx[i] + d : d;
      }
      scale_.grad[g] += static_cast<float>(static_cast<double>(weight) * scale_grad);
    }
  }

 private:
  bool ternary() const noexcept { return spec.bits == 2; }
  bool initialized() const { return initialized_.value[0] != 0.0f; }

  // The integer level of x on a group's grid, as the forward kernels compute it.
  float level(float x, const GroupGrid& grid) const noexcept {
    if (ternary()) return std::fabs(x) > grid.in_mul ? (x > 0.0f ? 1.0f : -1.0f) : 0.0f;
    return x < 0.0f ? -1.0f : 1.0f;
  }

  std::vector<float> thresholds(const Tensor& x) const {
    const std::vector<GroupStats> stats = group_stats(x.data(), Blocks(spec.groups(), x.numel()), kStatsArgMaxAbs);
    std::vector<float> eta(stats.size());
    for (std::size_t g = 0; g < stats.size(); ++g) eta[g] = kSyqThreshold * stats[g].max_abs;
    return eta;
  }

  std::vector<float> initial_scales(const Tensor& x) const {
    const Blocks blocks(spec.groups(), x.numel());
    const std::vector<float> eta = ternary() ? thresholds(x) : std::vector<float>(static_cast<std::size_t>(blocks.groups), -1.0f);
    std::vector<float> out(static_cast<std::size_t>(blocks.groups), 1.0f);
    const float* xs = x.data();
    for (int64_t g = 0; g < blocks.groups; ++g) {
      double sum = 0.0;
      int64_t count = 0;
      for (int64_t i = g * blocks.group_size; i < (g + 1) * blocks.group_size; ++i) {
        const float a = std::fabs(xs[i]);
        if (a > eta[static_cast<std::size_t>(g)]) {
          sum += static_cast<double>(a);
          ++count;
        }
      }
      const double s = count > 0 ? sum / static_cast<double>(count) : 0.0;
      if (s > 0.0 && std::isfinite(s)) out[static_cast<std::size_t>(g)] = static_cast<float>(s);
    }
    return out;
  }

  Parameter scale_;
  Buffer initialized_;
};

// DSConv: the weight [O, I, ...] is split per output channel into blocks of block_size input
// channels (with the whole kernel window: a contiguous run of the row-major tensor, which the
// export's group layout needs). Per block, the variable-quantized kernel (VQK) is
//   q = clamp(round(w / s0), -2^(b-1), 2^(b-1) - 1),  s0 = max|w| / (2^(b-1) - 1),
// and the kernel distribution shift (KDS) is the L2-optimal scale for those integers,
//   xi = sum(w q) / sum(q^2),
// so Q(w) = xi * q. Both are recomputed from the weights on every call (post-training and QAT
// use the same forward); the backward is the straight-through estimator.
class DsConv final : public QuantizerImpl {
 public:
  using QuantizerImpl::QuantizerImpl;

  Plan plan(const Tensor* x) const override {
    if (x == nullptr)
      throw ArgumentError(
          fmt::format("{}: the scales are computed from the weights; use params(weights)", describe(spec)));
    const int64_t blocks_per_channel = blocks_per_output_channel(*x);
    const Blocks blocks(spec.channels * blocks_per_channel, x->numel());
    const std::vector<GroupStats> stats = group_stats(x->data(), blocks, kStatsArgMaxAbs);
    const auto k_max = static_cast<float>(signed_half(spec.bits) - 1);
    const auto k_min = static_cast<float>(-signed_half(spec.bits));
    Plan p;
    p.grid = GridKind::uniform;
    p.groups.resize(stats.size());
    const float* xs = x->data();
    for (std::size_t g = 0; g < stats.size(); ++g) {
      GroupGrid& grid = p.groups[g];
      grid.k_min = k_min;
      grid.k_max = k_max;
      const float s0 = stats[g].max_abs / k_max;
      if (!(s0 >= kMinScale) || !std::isfinite(s0)) {  // an all-zero block: codes 0, any scale
        grid.in_mul = 0.0f;
        grid.scale = 1.0f;
        continue;
      }
      grid.in_mul = 1.0f / s0;
      double wq = 0.0, qq = 0.0;
      const int64_t begin = static_cast<int64_t>(g) * blocks.group_size;
      for (int64_t i = begin; i < begin + blocks.group_size; ++i) {
        const float q = round_half_even(clamp_nan_low(xs[i] * grid.in_mul, k_min, k_max));
        wq += static_cast<double>(xs[i]) * static_cast<double>(q);
        qq += static_cast<double>(q) * static_cast<double>(q);
      }
      const double xi = qq > 0.0 ? wq / qq : static_cast<double>(s0);
      grid.scale = safe_scale(static_cast<float>(xi));
    }
    return p;
  }

  void describe_codes(QuantParams& params) const override {
    params.encoding = CodeEncoding::twos_complement;
    params.code_bits = spec.bits;
    params.min_code = -signed_half(spec.bits);
    params.max_code = signed_half(spec.bits) - 1;
  }

  // STE inside the integer range (every weight is, since s0 comes from max|w|); the scales are
  // statistics of the weights and are not differentiated.
  Gate gate(const Plan& plan) const override {
    Gate rule;
    rule.kind = GateKind::clip;
    for (const GroupGrid& g : plan.groups) rule.groups.push_back({g.in_mul, g.k_min - 0.5f, g.k_max + 0.5f});
    return rule;
  }

 private:
  int64_t blocks_per_output_channel(const Tensor& x) const {
    const int64_t in_channels = x.rank() >= 2 ? x.shape()[1] : (spec.channels > 0 ? x.numel() / spec.channels : 0);
    const int64_t block = spec.block_size;
    if (in_channels <= block) return 1;
    if (in_channels % block != 0)
      throw ShapeError(fmt::format("{}: weight of shape {}: {} input channels are not a multiple of the block size {} "
                                   "(choose a block size that divides the input channels, or one at least as large)",
                                   describe(spec), shape_to_string(x.shape()), in_channels, block));
    return in_channels / block;
  }
};

}  // namespace

std::unique_ptr<QuantizerImpl> make_syq(const QuantizerSpec& spec) { return std::make_unique<Syq>(spec); }
std::unique_ptr<QuantizerImpl> make_dsconv(const QuantizerSpec& spec) { return std::make_unique<DsConv>(spec); }

}  // namespace bitmix::quant::detail
