#include "quant/engine.hpp"

#include <fmt/format.h>

#include <limits>

#include "bitmix/core/error.hpp"

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
inline float level_value(const GroupGrid& p, float x) noexcept {
  if constexpr (G == GridKind::identity) {
    return x;
  } else if constexpr (G == GridKind::uniform) {
    return p.scale * round_half_even(clamp_nan_low(x * p.in_mul, p.k_min, p.k_max));
  } else if constexpr (G == GridKind::odd) {
    const float t = Tanh ? std::tanh(x) : x;
    const float k = floor_small(clamp_nan_low(t * p.in_mul, p.k_min, p.k_max));
    return p.scale * (2.0f * k + 1.0f);
  } else if constexpr (G == GridKind::power_of_two) {
    const float c = power_of_two_level(std::fabs(x) * p.in_mul, p.k_max);
    return p.scale * (x < 0.0f ? 0.0f - c : c);  // 0 - 0 is +0, as the export's scale * (0 - 0)
  } else {
    const float c = std::fabs(x) > p.in_mul ? (x < 0.0f ? -1.0f : 1.0f) : 0.0f;
    return p.scale * c;
  }
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

}  // namespace

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

void run_plan(const Plan& plan, const float* x, int64_t numel, Sink sink, float weight, float* out) {
  check_plan(plan, numel);
  const Blocks blocks(static_cast<int64_t>(plan.groups.size()), numel);
  dispatch(plan, [&]<GridKind G, bool Tanh>() {
    for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t) {
      const GroupGrid p = plan.groups[static_cast<std::size_t>(g)];
      if (sink == Sink::store) {
        for (int64_t i = begin; i < end; ++i) out[i] = level_value<G, Tanh>(p, x[i]);
      } else {
        for (int64_t i = begin; i < end; ++i) out[i] += weight * level_value<G, Tanh>(p, x[i]);
      }
    });
  });
}

double dot_plan(const Plan& plan, const float* x, const float* g, int64_t numel) {
  check_plan(plan, numel);
  const Blocks blocks(static_cast<int64_t>(plan.groups.size()), numel);
  std::vector<double> partial(static_cast<std::size_t>(blocks.count), 0.0);
  dispatch(plan, [&]<GridKind G, bool Tanh>() {
    for_each_block(blocks, [&](int64_t group, int64_t begin, int64_t end, int64_t b) {
      const GroupGrid p = plan.groups[static_cast<std::size_t>(group)];
      double acc = 0.0;
      for (int64_t i = begin; i < end; ++i)
        acc += static_cast<double>(g[i]) * static_cast<double>(level_value<G, Tanh>(p, x[i]));
      partial[static_cast<std::size_t>(b)] = acc;
    });
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
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

}  // namespace bitmix::quant::detail
