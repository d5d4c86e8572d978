#pragma once
// Internal machinery shared by every quantizer kind.
//
// A quantizer turns its state and (for data-dependent kinds) the input into a Plan: one level
// grid per group. The forward pass, the integer export and the dot product then run the same
// element function over the plan, so fake-quant values and exported codes cannot disagree.
//
// Work is split into fixed blocks that never cross a group boundary. Reductions produce one
// partial per block and combine them in block order, so results do not depend on the number
// of threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "bitmix/core/thread_pool.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant::detail {

// ---------------------------------------------------------------------------------------------
// Rounding.

// Round half to even for |v| <= 2^22 (callers clamp to the code range first). Equals
// std::nearbyint in the default rounding mode: adding 1.5 * 2^23 leaves no fraction bits, so the
// FPU rounds to an integer with ties to even; subtracting gives it back exactly. Unlike a libm
// call it vectorizes on baseline x86-64. (Requires no -ffast-math, which bitmix never uses.)
inline float round_half_even(float v) noexcept {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// Floor for |v| <= 2^22, exact, vectorizable.
inline float floor_small(float v) noexcept {
  const float r = round_half_even(v);
  return r > v ? r - 1.0f : r;
}

// Clamp that maps NaN to `lo` (a NaN input then yields a defined code instead of undefined
// behaviour in the integer conversion).
inline float clamp_nan_low(float v, float lo, float hi) noexcept {
  v = v >= lo ? v : lo;
  return v <= hi ? v : hi;
}

// ---------------------------------------------------------------------------------------------
// Plans.

enum class GridKind : uint8_t {
  identity,      // y = x (float bypass)
  uniform,       // k = round_half_even(clamp(x * in_mul, k_min, k_max)), y = scale * k, code = k + zero_point
  odd,           // k = floor(clamp(t * in_mul, k_min, k_max)), c = 2k + 1, y = scale * c, code = c
  power_of_two,  // m = |x| * in_mul; c = sign(x) * (0 or 2^j, j <= k_max), y = scale * c, code = c
  ternary,       // c = sign(x) if |x| > in_mul else 0, y = scale * c, code = c
};

struct GroupGrid {
  float in_mul = 1.0f;  // multiplier applied to the input (uniform, odd, power_of_two) or threshold (ternary)
  float scale = 1.0f;   // output = scale * integer level
  float k_min = 0.0f;   // integer bounds (uniform, odd); power_of_two: unused
  float k_max = 0.0f;   // power_of_two: the largest exponent index
  int32_t zero_point = 0;
};

struct Plan {
  GridKind grid = GridKind::identity;
  bool tanh_input = false;  // odd grid on tanh(x) (DoReFa weights)
  std::vector<GroupGrid> groups;
};

// A power-of-two level's integer for m = |x| / smallest_level: 0 below 1/2, otherwise the
// power of two nearest to m in the linear domain (ties to the larger, as INQ), at most 2^max_exp.
inline float power_of_two_level(float m, float max_exp) noexcept {
  if (!(m >= 0.5f)) return 0.0f;  // also NaN
  if (m < 1.5f) return 1.0f;
  const int cap = static_cast<int>(max_exp);
  if (std::isinf(m)) return std::ldexp(1.0f, cap);
  int e = 0;
  const float mant = std::frexp(m, &e);  // m = mant * 2^e, mant in [0.5, 1): m in [2^(e-1), 2^e)
  int j = e - 1;
  if (mant >= 0.75f) ++j;  // m >= 1.5 * 2^(e-1): nearer to (or tied with) 2^e
  if (j > cap) j = cap;
  return std::ldexp(1.0f, j);
}

// ---------------------------------------------------------------------------------------------
// Blocks.

inline constexpr int64_t kBlock = 16384;            // elements per block
inline constexpr int64_t kParallelMinElements = 65536;  // below this, one thread

struct Blocks {
  int64_t groups = 1;
  int64_t group_size = 0;
  int64_t per_group = 1;  // blocks per group
  int64_t count = 1;

  Blocks(int64_t group_count, int64_t numel) : groups(group_count) {
    group_size = groups > 0 ? numel / groups : 0;
    per_group = std::max<int64_t>(1, (group_size + kBlock - 1) / kBlock);
    count = groups * per_group;
  }
  int64_t numel() const noexcept { return groups * group_size; }
};

// Calls fn(group, begin, end, block) for every block, in parallel for large tensors.
template <class Fn>
void for_each_block(const Blocks& blocks, Fn&& fn) {
  auto run = [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t g = b / blocks.per_group;
      const int64_t j = b % blocks.per_group;
      const int64_t group_begin = g * blocks.group_size;
      const int64_t begin = group_begin + j * kBlock;
      const int64_t end = std::min(begin + kBlock, group_begin + blocks.group_size);
      fn(g, begin, end, b);
    }
  };
  if (blocks.numel() < kParallelMinElements || blocks.count == 1)
    run(0, blocks.count);
  else
    parallel_for(blocks.count, 1, run);
}

// Sums one double per block into one per group, in block order (thread-count independent).
inline std::vector<double> combine_per_group(const Blocks& blocks, const std::vector<double>& partials) {
  std::vector<double> totals(static_cast<std::size_t>(blocks.groups), 0.0);
  for (int64_t b = 0; b < blocks.count; ++b)
    totals[static_cast<std::size_t>(b / blocks.per_group)] += partials[static_cast<std::size_t>(b)];
  return totals;
}

// Per-group statistics of a tensor, for data-driven scales.
struct GroupStats {
  double sum_abs = 0.0;
  double sum_sq = 0.0;
  float min = 0.0f;   // NaN values are ignored
  float max = 0.0f;
  float max_abs = 0.0f;
  int64_t max_abs_index = 0;  // first element (flat index) with |x| == max_abs
  int64_t count = 0;
};
enum StatsWanted : unsigned { kStatsMinMax = 1, kStatsAbs = 2, kStatsSquares = 4, kStatsArgMaxAbs = 8 };
std::vector<GroupStats> group_stats(const float* x, const Blocks& blocks, unsigned wanted);

// ---------------------------------------------------------------------------------------------
// Running a plan.

enum class Sink : uint8_t { store, accumulate };
// out[i] = Q(x)[i] (store) or out[i] += weight * Q(x)[i] (accumulate). `out` may equal `x`.
void run_plan(const Plan& plan, const float* x, int64_t numel, Sink sink, float weight, float* out);
// sum_i g[i] * Q(x)[i] in double.
double dot_plan(const Plan& plan, const float* x, const float* g, int64_t numel);
// Integer codes; fake-quant value of element i == scale * float(code - zero_point).
void codes_of_plan(const Plan& plan, const float* x, int64_t numel, int32_t* codes);

// Backward helpers. `pass(group, index)` decides whether the gradient flows to x[index].
// Writes grad_input = grad (or += weight * grad when accumulating) where pass, else 0 (or nothing).
template <class Pass>
void masked_backward(const Blocks& blocks, const float* grad_output, float weight, bool accumulate,
                     float* grad_input, Pass&& pass) {
  for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t) {
    if (accumulate) {
      for (int64_t i = begin; i < end; ++i)
        grad_input[i] += pass(g, i) ? weight * grad_output[i] : 0.0f;
    } else {
      for (int64_t i = begin; i < end; ++i) grad_input[i] = pass(g, i) ? weight * grad_output[i] : 0.0f;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The implementation behind quant::Quantizer.

class QuantizerImpl {
 public:
  explicit QuantizerImpl(const QuantizerSpec& quantizer_spec) : spec(quantizer_spec) {}
  virtual ~QuantizerImpl() = default;
  QuantizerImpl(const QuantizerImpl&) = delete;
  QuantizerImpl& operator=(const QuantizerImpl&) = delete;

  // Forward only, before planning: data-driven initialization and range observers.
  virtual void update_state(const Tensor& x) { (void)x; }
  // The grids for quantizing `x` with the current state; x == nullptr asks for parameters that
  // do not depend on the data (throws ArgumentError if they do).
  virtual Plan plan(const Tensor* x) const = 0;
  // Encoding, code bits and code range of the export (scales and zero points come from the plan).
  virtual void describe_codes(QuantParams& params) const = 0;
  // dL/dx into grad_input (= or += weight *) and weight * parameter gradients into Parameter::grad.
  virtual void backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight,
                        bool accumulate, Tensor& grad_input) = 0;

  virtual bool accepts_range() const noexcept { return false; }
  virtual RangeShape range_shape() const;
  virtual LevelGrid grid_for_range(float lo, float hi) const;
  virtual void set_range(std::span<const float> lo, std::span<const float> hi);
  virtual void unfreeze_range() {}

  QuantizerSpec spec;
  bool training = true;
  std::vector<Parameter*> parameters;
  std::vector<Buffer*> buffers;
};

std::unique_ptr<QuantizerImpl> make_impl(const QuantizerSpec& spec);

// Factories of the kinds (one source file each family).
std::unique_ptr<QuantizerImpl> make_float_bypass(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_range_quantizer(const QuantizerSpec& spec);  // uniform, symmetric
std::unique_ptr<QuantizerImpl> make_lsq(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_pact(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_dorefa(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_sawb(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_power_of_two(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_binary(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_ternary(const QuantizerSpec& spec);

// Guards for scales computed from data or learned: a non-positive or non-finite scale would
// make the input multiplier infinite or NaN.
inline constexpr float kMinScale = 1e-12f;
inline float safe_scale(float s) noexcept { return (s >= kMinScale && std::isfinite(s)) ? s : kMinScale; }

// Integer range helpers.
inline int32_t unsigned_max(int bits) noexcept { return (int32_t{1} << bits) - 1; }  // 2^b - 1
inline int32_t signed_half(int bits) noexcept { return int32_t{1} << (bits - 1); }    // 2^(b-1)

// Number of elements per example (dimension 0 is the batch) for activation statistics.
inline int64_t features_per_example(const Tensor& x) noexcept {
  if (x.rank() < 2 || x.shape()[0] == 0) return x.numel();
  return x.numel() / x.shape()[0];
}

}  // namespace bitmix::quant::detail
