#pragma once
// Quantizers: fake quantization (float in, float on the quantization grid out), its backward
// pass (straight-through estimators and the gradients of the quantizer's own learnable
// parameters), and the exact integer export the deploy stage and the kernels consume.
//
// One interface serves every kind: uniform affine, symmetric, DoReFa, PACT, LSQ, SAWB,
// power-of-two, binary, ternary, SYQ, DSConv, INQ and a float bypass; for weights (per tensor or per output
// channel, axis 0) and activations (per tensor). docs/quantization.md gives each kind's
// forward, backward rule, export and constants.
//
// Exactness contract: for every element, forward(x)[i] == scale[g] * float(code[i] - zero_point[g])
// bit for bit, where (code, scale, zero_point) come from quantize(x) and g is the element's
// group. Rounding is round half to even (std::nearbyint in the default rounding mode).
//
// Memory: a quantizer keeps no copy of its input. backward() takes the input again and
// recomputes what it needs, so a meta-weight quantized at several bitwidths (the EBS search)
// costs one output per candidate, not one saved input per candidate.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/parameter.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::quant {

enum class QuantizerKind : uint8_t {
  float_bypass,  // "float": identity, no integer export
  uniform,       // affine (asymmetric) with a zero point; range from observation or calibration
  symmetric,     // zero point 0; range from observation or calibration
  dorefa,        // DoReFa-Net: tanh-normalized weights, activations clipped to [0, 1]
  pact,          // PACT: activations clipped at a learnable alpha
  lsq,           // LSQ: learnable step size
  sawb,          // SAWB: weight clip from E[w^2] and E|w| with per-bit constants
  pot,           // power-of-two weight levels (INQ-style)
  binary,        // weights sign(w) * mean|w|
  ternary,       // TWN weights {-a, 0, a}
  syq,           // SYQ: binary/ternary weights with a learned symmetric scale per group
  dsconv,        // DSConv: b-bit integer kernel with one scale per block of input channels
  inq,           // INQ: a growing, frozen part of the weights on power-of-two levels (quant/incremental.hpp)
};

enum class Role : uint8_t { weight, activation };

// per_channel groups along axis 0 (the output channels of a [O, I, kh, kw] or [O, I] weight).
enum class Granularity : uint8_t { per_tensor, per_channel };

// How exported codes are to be read (the bit-serial kernels accept exactly these):
//   unsigned_int     codes in [0, 2^code_bits - 1] with a zero point (activations)
//   twos_complement  codes in [-2^(code_bits-1), 2^(code_bits-1) - 1]
//   odd_levels       odd codes in [-(2^code_bits - 1), 2^code_bits - 1], zero point 0
enum class CodeEncoding : uint8_t { unsigned_int, twos_complement, odd_levels };

inline constexpr int kMinBits = 1;
inline constexpr int kMaxBits = 8;
inline constexpr int kFloatBits = 32;  // the bitwidth a float_bypass quantizer reports

std::string_view to_string(QuantizerKind kind) noexcept;  // "float", "uniform", ..., "inq"
std::string_view to_string(Role role) noexcept;           // "weight", "activation"
std::string_view to_string(Granularity granularity) noexcept;  // "per_tensor", "per_channel"
std::string_view to_string(CodeEncoding encoding) noexcept;    // "unsigned", "twos_complement", "odd_levels"

// Parse the names above; throw ArgumentError naming the value and the accepted names.
QuantizerKind parse_quantizer_kind(std::string_view name);
Role parse_role(std::string_view name);
Granularity parse_granularity(std::string_view name);
// Every kind, in declaration order.
std::span<const QuantizerKind> all_quantizer_kinds() noexcept;

struct QuantizerSpec {
  QuantizerKind kind = QuantizerKind::lsq;
  Role role = Role::weight;
  int bits = 8;  // 1..8 (kFloatBits for float_bypass)
  Granularity granularity = Granularity::per_tensor;
  int64_t channels = 1;  // extent of axis 0 when per_channel; ignored when per_tensor
  // Activations only: the input can be negative (the network input, a pre-activation), so the
  // grid is signed. Default: non-negative inputs (after ReLU), which gain one bit of resolution.
  bool signed_activations = false;
  float pact_initial_alpha = 10.0f;  // PACT's initial clip (the PACT paper's value)
  // Weight of a new batch in the moving average of the observed activation range (uniform and
  // symmetric activation quantizers), as in PyTorch's moving-average min-max observer.
  float ema_momentum = 0.01f;
  // DSConv only: input channels (axis 1) per block; each output channel's kernel is split into
  // blocks of this many input channels (times the kernel window), one scale each. A layer with
  // at most this many input channels has one block per output channel.
  int64_t block_size = 32;
  // INQ only: elements of the weight (its per-element state is sized from it, so a checkpoint
  // restores into a quantizer that has not seen the weight yet). 0: sized on the first call.
  int64_t numel = 0;

  int64_t groups() const noexcept { return granularity == Granularity::per_channel ? channels : 1; }
};

QuantizerSpec weight_spec(QuantizerKind kind, int bits, Granularity granularity = Granularity::per_tensor,
                          int64_t channels = 1);
QuantizerSpec activation_spec(QuantizerKind kind, int bits, bool signed_activations = false);

// Throws ArgumentError unless the combination makes sense (bits 1..8 that the kind supports,
// a kind that supports the role, per-channel only for weights, positive channels, ...). The
// message names the value at fault and the accepted ones.
void validate(const QuantizerSpec& spec);
// Same checks, returning the message ("" when valid).
std::string check(const QuantizerSpec& spec);
// "lsq weight 4-bit per_channel(64)"
std::string describe(const QuantizerSpec& spec);
// Bits one exported code needs in its encoding (more than spec.bits for power-of-two levels;
// kFloatBits for float_bypass).
int code_bits(const QuantizerSpec& spec);

// The integer form of a quantization: how to read codes and turn them back into values.
struct QuantParams {
  QuantizerKind kind = QuantizerKind::uniform;
  CodeEncoding encoding = CodeEncoding::unsigned_int;
  int bits = 0;       // nominal bitwidth (the spec's)
  int code_bits = 0;  // bits every code needs in `encoding`
  int32_t min_code = 0;  // the codes this quantizer can produce lie in [min_code, max_code]
  int32_t max_code = 0;
  Granularity granularity = Granularity::per_tensor;
  std::vector<float> scales;         // one per group
  std::vector<int32_t> zero_points;  // one per group (0 except for affine grids)

  int64_t groups() const noexcept { return static_cast<int64_t>(scales.size()); }
  // scale[g] * float(code - zero_point[g]): the fake-quant value of a code.
  float value(int32_t code, int64_t group = 0) const noexcept {
    const auto g = static_cast<std::size_t>(group);
    return scales[g] * static_cast<float>(code - zero_points[g]);
  }
};

struct QuantizedTensor {
  Shape shape;
  QuantParams params;
  std::vector<int32_t> codes;  // row-major like the input; element i belongs to group i / (numel / groups)

  int64_t group_size() const noexcept {
    return params.groups() == 0 ? 0 : static_cast<int64_t>(codes.size()) / params.groups();
  }
  // Exactly the fake-quant output the codes came from.
  Tensor dequantize() const;
};

// The level grid a range-calibrated quantizer uses for a clip range: levels step * (k + offset)
// for integers k in [k_min, k_max]; values go to the nearest level. Calibrators search over it.
struct LevelGrid {
  float step = 1.0f;
  int32_t k_min = 0;
  int32_t k_max = 0;
  float offset = 0.0f;  // 0 for integer grids, 0.5 for odd-level grids (levels +-step/2, +-3step/2, ...)
};

// Which clip ranges a range-calibrated quantizer can use: any [lo, hi] containing 0 (affine),
// [-a, a] (symmetric) or [0, a] (nonnegative).
enum class RangeShape : uint8_t { affine, symmetric, nonnegative };

namespace detail {
class QuantizerImpl;
struct QuantizerAccess;  // lets the library's own code (mixing.cpp) reach the implementation
}

// A quantizer of one kind, role, bitwidth and granularity. Move-only; a moved-from Quantizer
// may only be assigned to or destroyed. Not thread-safe: one quantizer belongs to one layer.
class Quantizer {
 public:
  // Validates the spec (ArgumentError on a bad one).
  explicit Quantizer(const QuantizerSpec& spec);
  ~Quantizer();
  Quantizer(Quantizer&&) noexcept;
  Quantizer& operator=(Quantizer&&) noexcept;

  const QuantizerSpec& spec() const noexcept;
  QuantizerKind kind() const noexcept { return spec().kind; }
  Role role() const noexcept { return spec().role; }
  int bits() const noexcept { return spec().bits; }
  int64_t groups() const noexcept { return spec().groups(); }
  std::string describe() const { return quant::describe(spec()); }

  // Training mode (the default) lets activation range observers follow the data; evaluation
  // mode freezes them. Learnable parameters are used the same way in both.
  void set_training(bool training) noexcept;
  bool training() const noexcept;

  // ---- Fake quantization. The first call initializes data-driven state (LSQ's step, an
  // activation range) unless a checkpoint or a calibrator already set it. Weights are
  // per_channel along axis 0, whose extent must equal spec().channels.
  Tensor forward(const Tensor& x);
  // Into `y` (reshaped if needed); `y` may be `x` itself.
  void forward(const Tensor& x, Tensor& y);
  // y += weight * Q(x), for mixing several quantizations of one tensor without temporaries.
  // `y` must already have the shape of `x`.
  void forward_accumulate(const Tensor& x, float weight, Tensor& y);
  // sum_i grad[i] * Q(x)[i] in double, with the current state (no state update): the
  // gradient of a mixing strength that multiplies Q(x).
  double dot_output(const Tensor& x, const Tensor& grad) const;

  // ---- Backward. `x` is the input given to forward, `grad_output` = dL/dQ(x). Returns or
  // writes dL/dx and accumulates (+=) into the gradients of this quantizer's parameters.
  Tensor backward(const Tensor& x, const Tensor& grad_output);
  // `grad_input` may be `grad_output` itself.
  void backward(const Tensor& x, const Tensor& grad_output, Tensor& grad_input);
  // grad_input += weight * dL/dx; parameter gradients receive weight times their gradient.
  // `grad_input` must already have the shape of `x`.
  void backward_accumulate(const Tensor& x, const Tensor& grad_output, float weight, Tensor& grad_input);

  // ---- Integer export with the current state (no state update).
  QuantizedTensor quantize(const Tensor& x) const;
  // The parameters forward(x) would use now.
  QuantParams params(const Tensor& x) const;
  // The parameters, for quantizers whose parameters do not depend on the tensor quantized
  // (activation quantizers once initialized, LSQ, PACT, frozen ranges). Throws ArgumentError
  // for the others (DoReFa/SAWB/binary/... weights derive their scale from the weights).
  QuantParams params() const;

  // ---- Learnable parameters ("step", "alpha") and persistent state ("initialized",
  // "range_min", ...), with local names the owning layer prefixes. The pointers stay valid
  // while the quantizer lives (also across moves).
  std::vector<Parameter*> parameters();
  std::vector<Buffer*> buffers();
  void zero_grad();

  // ---- Post-training calibration of range-based quantizers (uniform, symmetric, pact, lsq).
  bool accepts_range() const noexcept;
  // Throws ArgumentError for quantizers that do not accept a range.
  RangeShape range_shape() const;
  // The grid set_range({lo}, {hi}) would give a group.
  LevelGrid grid_for_range(float lo, float hi) const;
  // One (lo, hi) per group. Fixes the range (uniform, symmetric: observers stop updating it),
  // sets PACT's alpha to hi, or LSQ's step so that the grid covers [lo, hi].
  void set_range(std::span<const float> lo, std::span<const float> hi);
  // Lets the observers of uniform/symmetric quantizers follow the data again.
  void unfreeze_range();

 private:
  friend struct detail::QuantizerAccess;
  detail::QuantizerImpl& impl() const;
  std::unique_ptr<detail::QuantizerImpl> impl_;
};

// The factory the CLI and BitConfig readers use: a kind by name ("lsq", "pact", ...; see
// parse_quantizer_kind), a role, bits and granularity. ArgumentError names the value at fault.
Quantizer make_quantizer(std::string_view kind, Role role, int bits, Granularity granularity = Granularity::per_tensor,
                         int64_t channels = 1);

// ---- Published and derived constants (docs/quantization.md says where each comes from).

// SAWB clip alpha = c1 * sqrt(E[w^2]) + c2 * E|w| for `bits` in 1..8.
struct SawbCoefficients {
  double c1;
  double c2;
};
SawbCoefficients sawb_coefficients(int bits);

}  // namespace bitmix::quant
