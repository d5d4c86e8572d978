#pragma once
// Internal machinery shared by every quantizer kind.
//
// A quantizer turns its state and (for data-dependent kinds) the input into a Plan: one level
// grid per group, and a Gate: its straight-through rule per group. The forward pass, the dot
// product and the backward pass run the per-ISA elementwise kernels (elementwise.hpp) over them,
// for one quantizer or several mixed in one pass; the integer export runs the same element
// functions in scalar form here, so fake-quant values and exported codes cannot disagree.
//
// Work is split into fixed blocks that never cross a group boundary. Reductions produce one
// partial per block and combine them in block order, so results do not depend on the number
// of threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "bitmix/core/thread_pool.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant/elementwise.hpp"
#include "quant/rounding.hpp"

namespace bitmix::detail {
class IsaDispatchBase;
}

namespace bitmix::quant::detail {

// ---------------------------------------------------------------------------------------------
// Plans.

// GridKind and GroupGrid live in elementwise.hpp (the kernels read them).

struct Plan {
  GridKind grid = GridKind::identity;
  bool tanh_input = false;  // odd grid on tanh(x) (DoReFa weights)
  std::vector<GroupGrid> groups;
};

// The straight-through rule of a backward pass: one GroupGate per group of the plan (unused for
// GateKind::everything and custom).
struct Gate {
  GateKind kind = GateKind::everything;
  std::vector<GroupGate> groups;
};

// A power-of-two level's integer for m = |x| / smallest_level: 0 below 1/2, otherwise the
// power of two nearest to m in the linear domain (ties to the larger, as INQ), at most 2^max_exp
// (max_exp <= 30). Works on the float's bits, branch-free, so that it vectorizes: for m in
// [2^e, 2^(e+1)) the nearer power is 2^(e+1) iff the mantissa is >= 1.5, i.e. its top fraction
// bit is set.
inline float power_of_two_level(float m, float max_exp) noexcept {
  uint32_t bits = 0;
  std::memcpy(&bits, &m, sizeof bits);
  const int32_t e = static_cast<int32_t>((bits >> 23) & 0xFFu) - 127;  // floor(log2 m) for normal m
  int32_t j = e + static_cast<int32_t>((bits >> 22) & 1u);               // round in the linear domain
  const auto cap = static_cast<int32_t>(max_exp);
  j = j < 0 ? 0 : (j > cap ? cap : j);
  const uint32_t level_bits = static_cast<uint32_t>(j + 127) << 23;
  float level = 0.0f;
  std::memcpy(&level, &level_bits, sizeof level);
  return m >= 0.5f ? level : 0.0f;  // also 0 for NaN; +inf has e = 128 and is capped
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
// Running plans (through the kernels of the active ISA).

// The kernels for the current cap (chosen once per cap through src/core/isa_dispatch.hpp).
const ElementKernels& element_kernels();
// Their dispatcher (which ISA it reports, how often it chose): for tests.
const bitmix::detail::IsaDispatchBase& element_kernels_dispatch();

// Where a pass starts: store (out = result; the constant -0, which adds to any v as v), zero
// (out = 0 + result, the sum a zeroed output accumulates) or accumulate (out += result).
enum class Sink : uint8_t { store, zero, accumulate };

// out[i] = Q(x)[i] (store) or out[i] += weight * Q(x)[i] (accumulate). `out` may equal `x`.
void run_plan(const Plan& plan, const float* x, int64_t numel, Sink sink, float weight, float* out);
// sum_i g[i] * Q(x)[i] in double (16 lanes per block, blocks in order).
double dot_plan(const Plan& plan, const float* x, const float* g, int64_t numel);
// Integer codes; fake-quant value of element i == scale * float(code - zero_point).
void codes_of_plan(const Plan& plan, const float* x, int64_t numel, int32_t* codes);

// out[i] = base + Σ_k weights[k] * Q_k(x)[i], candidates summed in order (base: see Sink).
// Every plan has the same grid kind, tanh flag and group count; `out` may equal `x`.
void mix_plans(std::span<const Plan* const> plans, std::span<const float> weights, const float* x, int64_t numel,
               Sink sink, float* out);

// One quantizer in a backward pass.
struct BackwardTerm {
  const Plan* plan = nullptr;
  const Gate* gate = nullptr;
  float weight = 1.0f;
};
struct BackwardSums {
  double dot = 0.0;                 // sum_i g[i] * Q(x)[i] (when asked for)
  std::vector<double> block_param;  // per block: the gate's parameter term summed
};
// True if backward_plans can run these terms (all with the same grid, tanh flag, gate kind and
// group count, a gate other than custom, a fused kernel for the pair when want_dot).
bool can_backward_together(std::span<const BackwardTerm> terms, bool want_dot);
// grad_input[i] = base + Σ_k (gate_k passes ? weight_k * g[i] : 0) (base: see Sink), and per
// term the dot product (want_dot) and the per-block parameter sums. grad_input may equal g.
void backward_plans(std::span<const BackwardTerm> terms, bool want_dot, const float* x, const float* g,
                    int64_t numel, Sink sink, float* grad_input, std::span<BackwardSums> sums);

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
  // The straight-through rule for `plan` (which plan(&x) returned). GateKind::custom: the
  // backward is not elementwise and the quantizer overrides backward().
  virtual Gate gate(const Plan& plan) const = 0;
  // Adds weight * the gradient of the learnable parameters into Parameter::grad, given the sums
  // of the gate's parameter term per block of Blocks(groups, x.numel()).
  virtual void add_parameter_gradient(const Tensor& x, const Blocks& blocks, const std::vector<double>& block_sums,
                                      float weight) {
    (void)x, (void)blocks, (void)block_sums, (void)weight;
  }
  // dL/dx into grad_input (= or += weight *) and weight * parameter gradients into Parameter::grad.
  // The default runs the gate and add_parameter_gradient.
  virtual void backward(const Tensor& x, const Plan& plan, const Tensor& grad_output, float weight,
                        bool accumulate, Tensor& grad_input);

  // Quantizers whose output is not a level grid of the input (INQ, while part of the weights is
  // still float) compute it themselves: own_forward writes out = Q(x) (Sink::store) or adds
  // weight * Q(x) (Sink::accumulate) and returns true; own_codes writes the export's codes.
  // The plan then only gives the export's scales.
  virtual bool has_own_forward() const noexcept { return false; }
  virtual bool own_forward(const Tensor& x, Sink sink, float weight, float* out) const {
    (void)x, (void)sink, (void)weight, (void)out;
    return false;
  }
  virtual bool own_codes(const Tensor& x, int32_t* codes) const {
    (void)x, (void)codes;
    return false;
  }

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

struct QuantizerAccess {
  static QuantizerImpl& impl(const Quantizer& q) { return q.impl(); }
};

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
std::unique_ptr<QuantizerImpl> make_syq(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_dsconv(const QuantizerSpec& spec);
std::unique_ptr<QuantizerImpl> make_inq(const QuantizerSpec& spec);
// The power-of-two grid of the `pot` kind for x (per group, from max|w|), for INQ.
Plan power_of_two_plan(const QuantizerSpec& spec, const Tensor& x);

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
