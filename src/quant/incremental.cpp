// INQ (bitmix/quant/incremental.hpp): an `inq` weight quantizer whose output is the stored
// power-of-two code of each frozen weight and the latent weight itself elsewhere.

#include "bitmix/quant/incremental.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant::detail {
namespace {

class Inq final : public QuantizerImpl {
 public:
  explicit Inq(const QuantizerSpec& s) : QuantizerImpl(s) {
    const int64_t n = std::max<int64_t>(0, spec.numel);
    frozen_ = Buffer{"inq_frozen", Tensor({n})};
    codes_ = Buffer{"inq_codes", Tensor({n})};
    scale_ = Buffer{"inq_scale", Tensor({spec.groups()})};  // 0 until the grid is fixed
    fraction_ = Buffer{"inq_fraction", Tensor({1})};
    buffers = {&frozen_, &codes_, &scale_, &fraction_};
  }

  bool has_own_forward() const noexcept override { return true; }

  bool own_forward(const Tensor& x, Sink sink, float weight, float* out) const override {
    check_size(x);
    const float* xs = x.data();
    const float* frozen = frozen_.value.data();
    const float* codes = codes_.value.data();
    const int64_t per_group = x.numel() / spec.groups();
    for (int64_t i = 0; i < x.numel(); ++i) {
      // A frozen weight is scale * code exactly (the export contract), the others pass through.
      const float v = frozen[i] != 0.0f ? scale_.value[i / per_group] * codes[i] : xs[i];
      out[i] = sink == Sink::accumulate ? out[i] + weight * v : v;
    }
    return true;
  }

  bool own_codes(const Tensor& x, int32_t* codes) const override {
    check_size(x);
    const int64_t n = x.numel();
    const int64_t frozen = count_frozen();
    if (frozen != n)
      throw ArgumentError(fmt::format("{}: {} of {} weights are frozen ({:.4g} %): an integer export needs all of them "
                                      "(an INQ schedule that ends at 1)",
                                      describe(spec), frozen, n, 100.0 * static_cast<double>(frozen) / static_cast<double>(n)));
    for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<int32_t>(codes_.value[i]);
    return true;
  }

  // The export's scales: the fixed grid.
  Plan plan(const Tensor* x) const override {
    if (scale_.value[0] == 0.0f) {
      if (x == nullptr)
        throw ArgumentError(fmt::format("{}: no weight is frozen yet, so the grid is not fixed", describe(spec)));
      return power_of_two_plan(spec, *x);
    }
    return fixed_plan();
  }

  void describe_codes(QuantParams& params) const override {
    const int exponents = (1 << (spec.bits - 1)) - 1;
    params.encoding = CodeEncoding::twos_complement;
    params.code_bits = exponents + 1;
    params.max_code = int32_t{1} << (exponents - 1);
    params.min_code = -params.max_code;
  }

  Gate gate(const Plan&) const override {
    Gate rule;
    rule.kind = GateKind::custom;
    return rule;
  }

  // Frozen weights get no gradient (they are constants of the network); the others the
  // identity (their forward is the identity).
  void backward(const Tensor& x, const Plan&, const Tensor& grad_output, float weight, bool accumulate,
                Tensor& grad_input) override {
    check_size(x);
    const float* gy = grad_output.data();
    const float* frozen = frozen_.value.data();
    float* gx = grad_input.data();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float d = frozen[i] != 0.0f ? 0.0f : weight * gy[i];
      gx[i] = accumulate ? gx[i] + d : d;
    }
  }

  InqFreezeReport freeze(const Tensor& w, double fraction) {
    if (!(fraction >= 0.0 && fraction <= 1.0))
      throw ArgumentError(fmt::format("{}: INQ fraction {}: expected a value in [0, 1]", describe(spec), fraction));
    const double current = static_cast<double>(fraction_.value[0]);
    if (fraction < current)
      throw ArgumentError(fmt::format("{}: INQ fraction {} is below the {} already frozen: frozen weights stay frozen",
                                      describe(spec), fraction, current));
    size_state(w);
    check_size(w);
    const int64_t n = w.numel();
    if (scale_.value[0] == 0.0f) {  // the first freeze fixes the grid, from the weights as they are now
      const Plan p = power_of_two_plan(spec, w);
      for (std::size_t g = 0; g < p.groups.size(); ++g) scale_.value[static_cast<int64_t>(g)] = p.groups[g].scale;
    }
    const auto target = static_cast<int64_t>(std::floor(fraction * static_cast<double>(n) + 0.5));
    const int64_t already = count_frozen();
    InqFreezeReport report;
    report.total = n;
    if (target > already) {
      std::vector<int64_t> order;
      order.reserve(static_cast<std::size_t>(n - already));
      for (int64_t i = 0; i < n; ++i)
        if (frozen_.value[i] == 0.0f) order.push_back(i);
      const auto magnitude = [&](int64_t i) {
        const float a = std::fabs(w[i]);
        return std::isnan(a) ? 0.0f : a;
      };
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return magnitude(a) > magnitude(b); });
      std::vector<int32_t> codes(static_cast<std::size_t>(n));
      codes_of_plan(fixed_plan(), w.data(), n, codes.data());
      for (int64_t k = 0; k < target - already; ++k) {
        const int64_t i = order[static_cast<std::size_t>(k)];
        frozen_.value[i] = 1.0f;
        codes_.value[i] = static_cast<float>(codes[static_cast<std::size_t>(i)]);
      }
      report.newly_frozen = target - already;
    }
    fraction_.value[0] = static_cast<float>(fraction);
    report.frozen = count_frozen();
    return report;
  }

  double frozen_fraction() const { return static_cast<double>(fraction_.value[0]); }

 private:
  Plan fixed_plan() const {
    const int exponents = (1 << (spec.bits - 1)) - 1;
    Plan p;
    p.grid = GridKind::power_of_two;
    for (int64_t g = 0; g < spec.groups(); ++g) {
      GroupGrid grid;
      grid.scale = scale_.value[g];
      grid.in_mul = 1.0f / scale_.value[g];  // a power of two: exact
      grid.k_min = 0.0f;
      grid.k_max = static_cast<float>(exponents - 1);
      p.groups.push_back(grid);
    }
    return p;
  }

  int64_t count_frozen() const {
    int64_t c = 0;
    for (int64_t i = 0; i < frozen_.value.numel(); ++i) c += frozen_.value[i] != 0.0f ? 1 : 0;
    return c;
  }

  // A quantizer built without the weight's size takes it from the first weight it sees.
  void size_state(const Tensor& w) {
    if (frozen_.value.numel() == 0 && w.numel() > 0) {
      frozen_.value = Tensor({w.numel()});
      codes_.value = Tensor({w.numel()});
    }
  }

  void check_size(const Tensor& x) const {
    if (x.numel() != frozen_.value.numel() && !(frozen_.value.numel() == 0 && fraction_.value[0] == 0.0f))
      throw ShapeError(fmt::format("{}: weight of shape {} ({} elements): the quantizer's state is for {} weights",
                                   describe(spec), shape_to_string(x.shape()), x.numel(), frozen_.value.numel()));
    if (x.numel() % spec.groups() != 0)
      throw ShapeError(fmt::format("{}: weight of shape {}: not divisible into {} groups", describe(spec),
                                   shape_to_string(x.shape()), spec.groups()));
  }

  Buffer frozen_, codes_, scale_, fraction_;
};

Inq& inq_impl(const Quantizer& q) {
  QuantizerImpl& impl = QuantizerAccess::impl(q);
  auto* inq = dynamic_cast<Inq*>(&impl);
  if (inq == nullptr)
    throw ArgumentError(fmt::format("{}: INQ freezing applies to inq weight quantizers only", describe(impl.spec)));
  return *inq;
}

}  // namespace

std::unique_ptr<QuantizerImpl> make_inq(const QuantizerSpec& spec) { return std::make_unique<Inq>(spec); }

}  // namespace bitmix::quant::detail

namespace bitmix::quant {

InqFreezeReport inq_freeze(Quantizer& q, const Tensor& weight, double fraction) {
  detail::Inq& inq = detail::inq_impl(q);
  if (q.spec().granularity == Granularity::per_channel && (weight.rank() < 1 || weight.shape()[0] != q.spec().channels))
    throw ShapeError(fmt::format("{}: weight of shape {}: expected axis 0 of extent {}", q.describe(),
                                 shape_to_string(weight.shape()), q.spec().channels));
  return inq.freeze(weight, fraction);
}

double inq_frozen_fraction(const Quantizer& q) { return detail::inq_impl(q).frozen_fraction(); }

}  // namespace bitmix::quant
