#include "quant/engine.hpp"

#include <fmt/format.h>

#include <limits>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "core/isa_dispatch.hpp"

namespace bitmix::quant::detail {
namespace {

struct BlockStats {
  double sum_abs = 0.0;
  double sum_sq = 0.0;
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();
  float max_abs = -1.0f;
  int64_t max_abs_index = 0;
  int64_t count = 0;
};

void block_min_max(const float* x, int64_t begin, int64_t end, float& out_min, float& out_max) {
  // NaN never wins a comparison, so it is skipped (the lanes never hold NaN).
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(min : lo) reduction(max : hi)
  for (int64_t i = begin; i < end; ++i) {
    const float v = x[i];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  out_min = lo < out_min ? lo : out_min;
  out_max = hi > out_max ? hi : out_max;
}

BlockStats block_stats(const float* x, int64_t begin, int64_t end, unsigned wanted) {
  BlockStats s;
  s.count = end - begin;
  if (wanted & kStatsMinMax) block_min_max(x, begin, end, s.min, s.max);
  if (wanted & (kStatsAbs | kStatsSquares)) {
    double sum_abs = 0.0, sum_sq = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const auto v = static_cast<double>(x[i]);
      sum_abs += std::fabs(v);
      sum_sq += v * v;
    }
    s.sum_abs = sum_abs;
    s.sum_sq = sum_sq;
  }
  if (wanted & kStatsArgMaxAbs) {
    float best = -1.0f;
    int64_t best_index = begin;
    for (int64_t i = begin; i < end; ++i) {
      const float a = std::fabs(x[i]);
      if (a > best) {
        best = a;
        best_index = i;
      }
    }
    s.max_abs = best;
    s.max_abs_index = best_index;
  }
  return s;
}

template <GridKind G, bool Tanh>
inline int32_t level_code(const GroupGrid& p, float x) noexcept {
  if constexpr (G == GridKind::uniform) {
    return static_cast<int32_t>(round_half_even(clamp_nan_low(x * p.in_mul, p.k_min, p.k_max))) + p.zero_point;
  } else if constexpr (G == GridKind::odd) {
    const float t = Tanh ? std::tanh(x) : x;
    const float k = floor_small(clamp_nan_low(t * p.in_mul, p.k_min, p.k_max));
    return 2 * static_cast<int32_t>(k) + 1;
  } else if constexpr (G == GridKind::power_of_two) {
    const auto c = static_cast<int32_t>(power_of_two_level(std::fabs(x) * p.in_mul, p.k_max));
    return x < 0.0f ? -c : c;
  } else if constexpr (G == GridKind::ternary) {
    return std::fabs(x) > p.in_mul ? (x < 0.0f ? -1 : 1) : 0;
  } else {
    return 0;
  }
}

// Calls body.template operator()<G, Tanh>() for the plan's grid.
template <class Body>
void dispatch(const Plan& plan, Body&& body) {
  switch (plan.grid) {
    case GridKind::identity: body.template operator()<GridKind::identity, false>(); return;
    case GridKind::uniform: body.template operator()<GridKind::uniform, false>(); return;
    case GridKind::odd:
      if (plan.tanh_input)
        body.template operator()<GridKind::odd, true>();
      else
        body.template operator()<GridKind::odd, false>();
      return;
    case GridKind::power_of_two: body.template operator()<GridKind::power_of_two, false>(); return;
    case GridKind::ternary: body.template operator()<GridKind::ternary, false>(); return;
  }
}

void check_plan(const Plan& plan, int64_t numel) {
  const auto groups = static_cast<int64_t>(plan.groups.size());
  if (groups < 1 || numel % groups != 0)
    throw Error(fmt::format("quantizer plan with {} groups for {} elements", groups, numel));
}

// The constant a pass starts from (Sink::accumulate starts from the output instead).
float base_value(Sink sink) noexcept { return sink == Sink::store ? -0.0f : 0.0f; }

void check_same_layout(const Plan& first, const Plan& other) {
  if (other.grid != first.grid || other.tanh_input != first.tanh_input || other.groups.size() != first.groups.size())
    throw Error("quantizer plans mixed in one pass differ in grid or groups");
}

constinit bitmix::detail::IsaDispatch<ElementKernels> g_element_kernels{"quant", {
#if defined(BITMIX_HAVE_AVX512)
    {Isa::avx512, &kElementKernelsAvx512},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &kElementKernelsAvx2},
#endif
    {Isa::scalar, &kElementKernelsScalar},
}};
[[maybe_unused]] const bool g_element_kernels_listed = g_element_kernels.list();

}  // namespace

const ElementKernels& element_kernels() { return g_element_kernels.active(); }
const bitmix::detail::IsaDispatchBase& element_kernels_dispatch() { return g_element_kernels; }

bool has_backward(GridKind grid, GateKind gate, bool want_dot) noexcept {
  if (gate == GateKind::custom) return false;
  if (!want_dot) return true;
  switch (gate) {
    case GateKind::lsq:
    case GateKind::pact:
    case GateKind::clip: return grid == GridKind::uniform;
    case GateKind::lsq_binary: return grid == GridKind::odd;
    case GateKind::abs_clip: return grid == GridKind::odd || grid == GridKind::power_of_two;
    case GateKind::everything:
      return grid == GridKind::odd || grid == GridKind::ternary || grid == GridKind::identity;
    case GateKind::custom: return false;
  }
  return false;
}

std::vector<GroupStats> group_stats(const float* x, const Blocks& blocks, unsigned wanted) {
  std::vector<BlockStats> partial(static_cast<std::size_t>(blocks.count));
  for_each_block(blocks, [&](int64_t, int64_t begin, int64_t end, int64_t b) {
    partial[static_cast<std::size_t>(b)] = block_stats(x, begin, end, wanted);
  });
  std::vector<GroupStats> out(static_cast<std::size_t>(blocks.groups));
  for (int64_t g = 0; g < blocks.groups; ++g) {
    BlockStats acc;
    acc.max_abs_index = g * blocks.group_size;
    for (int64_t j = 0; j < blocks.per_group; ++j) {
      const BlockStats& s = partial[static_cast<std::size_t>(g * blocks.per_group + j)];
      acc.sum_abs += s.sum_abs;
      acc.sum_sq += s.sum_sq;
      acc.min = s.min < acc.min ? s.min : acc.min;
      acc.max = s.max > acc.max ? s.max : acc.max;
      if (s.max_abs > acc.max_abs) {  // strict: the first block wins ties
        acc.max_abs = s.max_abs;
        acc.max_abs_index = s.max_abs_index;
      }
      acc.count += s.count;
    }
    GroupStats& o = out[static_cast<std::size_t>(g)];
    o.sum_abs = acc.sum_abs;
    o.sum_sq = acc.sum_sq;
    const bool any = acc.min <= acc.max;  // false for an empty or all-NaN group
    o.min = any ? acc.min : 0.0f;
    o.max = any ? acc.max : 0.0f;
    o.max_abs = acc.max_abs < 0.0f ? 0.0f : acc.max_abs;
    o.max_abs_index = acc.max_abs_index;
    o.count = acc.count;
  }
  return out;
}

void mix_plans(std::span<const Plan* const> plans, std::span<const float> weights, const float* x, int64_t numel,
               Sink sink, float* out) {
  if (plans.empty() || plans.size() != weights.size()) throw Error("mix_plans: one weight per plan expected");
  const Plan& first = *plans[0];
  check_plan(first, numel);
  for (const Plan* p : plans) check_same_layout(first, *p);
  const auto count = static_cast<int64_t>(plans.size());
  const Blocks blocks(static_cast<int64_t>(first.groups.size()), numel);
  const ElementKernels& kernels = element_kernels();
  for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t) {
    CandidateBlock c[kMaxCandidatesPerCall];
    // More candidates than one call takes: the next call continues from the running sum in out.
    for (int64_t k0 = 0; k0 < count; k0 += kMaxCandidatesPerCall) {
      const int64_t k1 = std::min<int64_t>(count, k0 + kMaxCandidatesPerCall);
      for (int64_t k = k0; k < k1; ++k) {
        c[k - k0].grid = plans[static_cast<std::size_t>(k)]->groups[static_cast<std::size_t>(g)];
        c[k - k0].weight = weights[static_cast<std::size_t>(k)];
      }
      const bool from_out = k0 > 0 || sink == Sink::accumulate;
      kernels.forward(first.grid, first.tanh_input, c, static_cast<int>(k1 - k0), x + begin, end - begin,
                      from_out ? out + begin : nullptr, base_value(sink), out + begin);
    }
  });
}

void run_plan(const Plan& plan, const float* x, int64_t numel, Sink sink, float weight, float* out) {
  const Plan* plans[] = {&plan};
  const float weights[] = {sink == Sink::store ? 1.0f : weight};
  mix_plans(plans, weights, x, numel, sink, out);
}

double dot_plan(const Plan& plan, const float* x, const float* g, int64_t numel) {
  check_plan(plan, numel);
  const Blocks blocks(static_cast<int64_t>(plan.groups.size()), numel);
  const ElementKernels& kernels = element_kernels();
  std::vector<double> partial(static_cast<std::size_t>(blocks.count), 0.0);
  for_each_block(blocks, [&](int64_t group, int64_t begin, int64_t end, int64_t b) {
    CandidateBlock c[1];
    c[0].grid = plan.groups[static_cast<std::size_t>(group)];
    CandidateSums sums[1];
    kernels.backward(plan.grid, GateKind::everything, c, 1, true, plan.tanh_input, x + begin, g + begin, end - begin,
                     nullptr, 0.0f, nullptr, sums);
    partial[static_cast<std::size_t>(b)] = sums[0].dot;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

bool can_backward_together(std::span<const BackwardTerm> terms, bool want_dot) {
  if (terms.empty()) return false;
  const Plan& first = *terms[0].plan;
  const GateKind kind = terms[0].gate->kind;
  for (const BackwardTerm& t : terms) {
    if (t.plan->grid != first.grid || t.plan->tanh_input != first.tanh_input ||
        t.plan->groups.size() != first.groups.size() || t.gate->kind != kind)
      return false;
    if (kind != GateKind::everything && kind != GateKind::custom && t.gate->groups.size() != first.groups.size())
      return false;
  }
  return has_backward(first.grid, kind, want_dot);
}

void backward_plans(std::span<const BackwardTerm> terms, bool want_dot, const float* x, const float* g,
                    int64_t numel, Sink sink, float* grad_input, std::span<BackwardSums> sums) {
  if (!can_backward_together(terms, want_dot) || sums.size() != terms.size())
    throw Error("backward_plans: quantizers without a common elementwise backward");
  const Plan& first = *terms[0].plan;
  check_plan(first, numel);
  const GateKind kind = terms[0].gate->kind;
  const bool fused_lsq = want_dot && kind == GateKind::lsq;
  for (const BackwardTerm& t : terms) {
    if (!fused_lsq) break;
    // The fused LSQ kernel takes the dot product's levels from the gate: they must be the grid's.
    for (std::size_t i = 0; i < t.plan->groups.size(); ++i) {
      const GroupGrid& p = t.plan->groups[i];
      const GroupGate& q = t.gate->groups[i];
      if (p.in_mul != q.mul || p.k_min != q.lo || p.k_max != q.hi)
        throw Error("backward_plans: an LSQ gate that differs from its grid");
    }
  }
  const auto count = static_cast<int64_t>(terms.size());
  const Blocks blocks(static_cast<int64_t>(first.groups.size()), numel);
  for (BackwardSums& s : sums) {
    s.dot = 0.0;
    s.block_param.assign(static_cast<std::size_t>(blocks.count), 0.0);
  }
  std::vector<double> block_dot(static_cast<std::size_t>(blocks.count * count), 0.0);
  const ElementKernels& kernels = element_kernels();
  const bool has_groups = kind != GateKind::everything;
  for_each_block(blocks, [&](int64_t grp, int64_t begin, int64_t end, int64_t b) {
    CandidateBlock c[kMaxCandidatesPerCall];
    CandidateSums block_sums[kMaxCandidatesPerCall];
    for (int64_t k0 = 0; k0 < count; k0 += kMaxCandidatesPerCall) {
      const int64_t k1 = std::min<int64_t>(count, k0 + kMaxCandidatesPerCall);
      for (int64_t k = k0; k < k1; ++k) {
        const BackwardTerm& t = terms[static_cast<std::size_t>(k)];
        c[k - k0].grid = t.plan->groups[static_cast<std::size_t>(grp)];
        if (has_groups) c[k - k0].gate = t.gate->groups[static_cast<std::size_t>(grp)];
        c[k - k0].weight = t.weight;
      }
      const bool from_out = k0 > 0 || sink == Sink::accumulate;
      kernels.backward(first.grid, kind, c, static_cast<int>(k1 - k0), want_dot, first.tanh_input, x + begin,
                       g + begin, end - begin, from_out ? grad_input + begin : nullptr, base_value(sink),
                       grad_input + begin, block_sums);
      for (int64_t k = k0; k < k1; ++k) {
        block_dot[static_cast<std::size_t>(b * count + k)] = block_sums[k - k0].dot;
        sums[static_cast<std::size_t>(k)].block_param[static_cast<std::size_t>(b)] = block_sums[k - k0].param;
      }
    }
  });
  if (want_dot)
    for (int64_t b = 0; b < blocks.count; ++b)
      for (int64_t k = 0; k < count; ++k)
        sums[static_cast<std::size_t>(k)].dot += block_dot[static_cast<std::size_t>(b * count + k)];
}

void codes_of_plan(const Plan& plan, const float* x, int64_t numel, int32_t* codes) {
  check_plan(plan, numel);
  if (plan.grid == GridKind::identity) throw ArgumentError("a float quantizer has no integer codes");
  const Blocks blocks(static_cast<int64_t>(plan.groups.size()), numel);
  dispatch(plan, [&]<GridKind G, bool Tanh>() {
    for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t) {
      const GroupGrid p = plan.groups[static_cast<std::size_t>(g)];
      for (int64_t i = begin; i < end; ++i) codes[i] = level_code<G, Tanh>(p, x[i]);
    });
  });
}

void QuantizerImpl::backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight,
                             bool accumulate, Tensor& grad_input) {
  const Gate rule = gate(plan);
  if (rule.kind == GateKind::custom)
    throw Error(describe(spec) + ": a custom backward rule without its own backward()");
  const BackwardTerm terms[] = {{&plan, &rule, weight}};
  BackwardSums sums[1];
  backward_plans(terms, false, x.data(), grad_output.data(), x.numel(), accumulate ? Sink::accumulate : Sink::store,
                 grad_input.data(), sums);
  add_parameter_gradient(x, Blocks(static_cast<int64_t>(plan.groups.size()), x.numel()), sums[0].block_param, weight);
}

}  // namespace bitmix::quant::detail
