#include "bitmix/quant/quantizer.hpp"

#include <fmt/format.h>

#include <array>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant {
namespace {

constexpr std::array<QuantizerKind, 13> kAllKinds = {
    QuantizerKind::float_bypass, QuantizerKind::uniform, QuantizerKind::symmetric, QuantizerKind::dorefa,
    QuantizerKind::pact,         QuantizerKind::lsq,     QuantizerKind::sawb,      QuantizerKind::pot,
    QuantizerKind::binary,       QuantizerKind::ternary, QuantizerKind::syq,       QuantizerKind::dsconv,
    QuantizerKind::inq};

std::string kind_list() {
  std::string out;
  for (QuantizerKind k : kAllKinds) {
    if (!out.empty()) out += ", ";
    out += to_string(k);
  }
  return out;
}

bool supports_role(QuantizerKind kind, Role role) {
  switch (kind) {
    case QuantizerKind::pact: return role == Role::activation;
    case QuantizerKind::sawb:
    case QuantizerKind::pot:
    case QuantizerKind::binary:
    case QuantizerKind::ternary:
    case QuantizerKind::syq:
    case QuantizerKind::dsconv:
    case QuantizerKind::inq: return role == Role::weight;
    default: return true;
  }
}

// The kinds that accept a role, for error messages.
std::string kinds_for(Role role) {
  std::string out;
  for (QuantizerKind k : kAllKinds) {
    if (!supports_role(k, role)) continue;
    if (!out.empty()) out += ", ";
    out += to_string(k);
  }
  return out;
}

bool signed_grid(const QuantizerSpec& spec) { return spec.role == Role::weight || spec.signed_activations; }

}  // namespace

std::string_view to_string(QuantizerKind kind) noexcept {
  switch (kind) {
    case QuantizerKind::float_bypass: return "float";
    case QuantizerKind::uniform: return "uniform";
    case QuantizerKind::symmetric: return "symmetric";
    case QuantizerKind::dorefa: return "dorefa";
    case QuantizerKind::pact: return "pact";
    case QuantizerKind::lsq: return "lsq";
    case QuantizerKind::sawb: return "sawb";
    case QuantizerKind::pot: return "pot";
    case QuantizerKind::binary: return "binary";
    case QuantizerKind::ternary: return "ternary";
    case QuantizerKind::syq: return "syq";
    case QuantizerKind::dsconv: return "dsconv";
    case QuantizerKind::inq: return "inq";
  }
  return "?";
}

std::string_view to_string(Role role) noexcept { return role == Role::weight ? "weight" : "activation"; }

std::string_view to_string(Granularity granularity) noexcept {
  return granularity == Granularity::per_tensor ? "per_tensor" : "per_channel";
}

std::string_view to_string(CodeEncoding encoding) noexcept {
  switch (encoding) {
    case CodeEncoding::unsigned_int: return "unsigned";
    case CodeEncoding::twos_complement: return "twos_complement";
    case CodeEncoding::odd_levels: return "odd_levels";
  }
  return "?";
}

QuantizerKind parse_quantizer_kind(std::string_view name) {
  for (QuantizerKind k : kAllKinds)
    if (to_string(k) == name) return k;
  throw ArgumentError(fmt::format("unknown quantizer '{}': expected one of {}", name, kind_list()));
}

Role parse_role(std::string_view name) {
  if (name == "weight") return Role::weight;
  if (name == "activation") return Role::activation;
  throw ArgumentError(fmt::format("unknown quantizer role '{}': expected weight or activation", name));
}

Granularity parse_granularity(std::string_view name) {
  if (name == "per_tensor") return Granularity::per_tensor;
  if (name == "per_channel") return Granularity::per_channel;
  throw ArgumentError(fmt::format("unknown granularity '{}': expected per_tensor or per_channel", name));
}

std::span<const QuantizerKind> all_quantizer_kinds() noexcept { return kAllKinds; }

QuantizerSpec weight_spec(QuantizerKind kind, int bits, Granularity granularity, int64_t channels) {
  QuantizerSpec spec;
  spec.kind = kind;
  spec.role = Role::weight;
  spec.bits = bits;
  spec.granularity = granularity;
  spec.channels = channels;
  return spec;
}

QuantizerSpec activation_spec(QuantizerKind kind, int bits, bool signed_activations) {
  QuantizerSpec spec;
  spec.kind = kind;
  spec.role = Role::activation;
  spec.bits = bits;
  spec.signed_activations = signed_activations;
  return spec;
}

std::string check(const QuantizerSpec& spec) {
  const std::string who = fmt::format("{} {} quantizer", to_string(spec.kind), to_string(spec.role));
  const auto bad_bits = [&](int lo, int hi, std::string_view why) {
    return fmt::format("{}: bits = {}: expected an integer from {} to {}{}", who, spec.bits, lo, hi, why);
  };
  if (static_cast<unsigned>(spec.kind) >= kAllKinds.size()) return "quantizer kind out of range";

  if (spec.kind == QuantizerKind::float_bypass) {
    if (spec.bits != kFloatBits)
      return fmt::format("{}: bits = {}: a float (unquantized) tensor has {} bits", who, spec.bits, kFloatBits);
  } else if (spec.bits < kMinBits || spec.bits > kMaxBits) {
    return bad_bits(kMinBits, kMaxBits, "");
  }

  if (!supports_role(spec.kind, spec.role)) {
    if (spec.kind == QuantizerKind::pact)
      return fmt::format("{}: pact learns a clip for non-negative activations and does not quantize weights; "
                         "for weights use one of {}",
                         who, kinds_for(Role::weight));
    return fmt::format("{}: {} quantizes weights only; for activations use one of {}", who, to_string(spec.kind),
                       kinds_for(Role::activation));
  }

  if (spec.role == Role::activation && spec.granularity == Granularity::per_channel)
    return fmt::format("{}: granularity = per_channel: activation quantizers are per_tensor (the kernels take one "
                       "scale and zero point per activation tensor)",
                       who);
  if (spec.granularity == Granularity::per_channel && spec.channels < 1)
    return fmt::format("{}: channels = {}: a per_channel quantizer needs the extent of axis 0 (at least 1)", who,
                       spec.channels);

  if (spec.role == Role::activation && spec.signed_activations &&
      (spec.kind == QuantizerKind::dorefa || spec.kind == QuantizerKind::pact))
    return fmt::format("{}: signed_activations: {} clips activations at 0; for signed inputs use uniform, symmetric "
                       "or lsq",
                       who, to_string(spec.kind));

  const bool is_signed = signed_grid(spec);
  switch (spec.kind) {
    case QuantizerKind::symmetric:
      if (is_signed && spec.bits < 2)
        return bad_bits(2, kMaxBits, ": a signed symmetric grid with 1 bit has only the level 0 (use binary for "
                                     "1-bit weights)");
      break;
    case QuantizerKind::lsq:
      if (spec.role == Role::activation && spec.signed_activations && spec.bits < 2)
        return bad_bits(2, kMaxBits, " for signed activations");
      break;
    case QuantizerKind::pot:
    case QuantizerKind::inq:
      if (spec.bits < 2 || spec.bits > 6)
        return bad_bits(2, 6, ": b-bit power-of-two levels {0, +-2^e} have 2^(b-1)-1 exponents, whose integer codes "
                              "need 2^(b-1) bits (7 and 8 bits would need 64- and 128-bit codes; 1 bit: use binary)");
      break;
    case QuantizerKind::binary:
      if (spec.bits != 1) return bad_bits(1, 1, ": binary weights are sign(w) * scale");
      break;
    case QuantizerKind::ternary:
      if (spec.bits != 2) return bad_bits(2, 2, ": ternary weights {-a, 0, a} are stored in 2 bits");
      break;
    case QuantizerKind::syq:
      if (spec.bits > 2)
        return bad_bits(1, 2, ": SYQ weights are binary (1 bit, +-a) or ternary (2 bits, {-a, 0, a})");
      break;
    case QuantizerKind::dsconv:
      if (spec.bits < 2)
        return bad_bits(2, kMaxBits, ": a 1-bit two's complement kernel has only the levels -1 and 0 (use binary)");
      if (spec.granularity != Granularity::per_channel)
        return fmt::format("{}: granularity = {}: DSConv's scales are per block of input channels within each output "
                           "channel; use per_channel",
                           who, to_string(spec.granularity));
      if (spec.block_size < 1)
        return fmt::format("{}: block_size = {}: expected at least 1 input channel per block", who, spec.block_size);
      break;
    default: break;
  }

  if (!(spec.pact_initial_alpha > 0.0f) || !std::isfinite(spec.pact_initial_alpha))
    return fmt::format("{}: pact_initial_alpha = {}: expected a positive finite value", who, spec.pact_initial_alpha);
  if (!(spec.ema_momentum > 0.0f && spec.ema_momentum <= 1.0f))
    return fmt::format("{}: ema_momentum = {}: expected a value in (0, 1]", who, spec.ema_momentum);
  return {};
}

void validate(const QuantizerSpec& spec) {
  std::string message = check(spec);
  if (!message.empty()) throw ArgumentError(message);
}

std::string describe(const QuantizerSpec& spec) {
  std::string out = fmt::format("{} {}", to_string(spec.kind), to_string(spec.role));
  if (spec.kind != QuantizerKind::float_bypass) out += fmt::format(" {}-bit", spec.bits);
  if (spec.granularity == Granularity::per_channel) out += fmt::format(" per_channel({})", spec.channels);
  if (spec.kind == QuantizerKind::dsconv) out += fmt::format(" block {}", spec.block_size);
  if (spec.role == Role::activation && spec.signed_activations) out += " signed";
  return out;
}

int code_bits(const QuantizerSpec& spec) {
  switch (spec.kind) {
    case QuantizerKind::float_bypass: return kFloatBits;
    case QuantizerKind::pot:
    case QuantizerKind::inq: return 1 << (spec.bits - 1);  // 2^(b-1)-1 exponents plus a sign
    default: return spec.bits;
  }
}

SawbCoefficients sawb_coefficients(int bits) {
  // 2 and 4 bits: the published constants (Choi et al. 2018, as quoted in issue 4). The others:
  // least-squares fits of the MSE-optimal clip of the 2^b odd-level grid over the uniform,
  // Gaussian and Laplace distributions, the method that reproduces the published 2-bit pair
  // (3.101, -2.059); docs/quantization.md has the derivation. 1 bit: alpha = E|w| exactly.
  switch (bits) {
    case 1: return {0.0, 1.0};
    case 2: return {3.12, -2.064};
    case 3: return {7.186, -6.509};
    case 4: return {12.68, -12.80};
    case 5: return {16.171, -16.693};
    case 6: return {20.845, -22.072};
    case 7: return {25.606, -27.577};
    case 8: return {30.438, -33.182};
    default:
      throw ArgumentError(fmt::format("sawb_coefficients: bits = {}: expected an integer from {} to {}", bits,
                                      kMinBits, kMaxBits));
  }
}

Tensor QuantizedTensor::dequantize() const {
  Tensor out(shape);
  if (static_cast<int64_t>(codes.size()) != out.numel())
    throw ShapeError(fmt::format("QuantizedTensor: {} codes for shape {}", codes.size(), shape_to_string(shape)));
  const int64_t per_group = group_size();
  for (int64_t i = 0; i < out.numel(); ++i)
    out[i] = params.value(codes[static_cast<std::size_t>(i)], per_group == 0 ? 0 : i / per_group);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Default range behaviour of the implementations: refuse, naming the kinds that accept it.

namespace detail {

static ArgumentError no_range(const QuantizerSpec& spec) {
  return ArgumentError(fmt::format("{}: {} derives its scale itself; calibrated ranges apply to uniform, "
                                   "symmetric, pact and lsq quantizers",
                                   describe(spec), to_string(spec.kind)));
}

RangeShape QuantizerImpl::range_shape() const { throw no_range(spec); }
LevelGrid QuantizerImpl::grid_for_range(float, float) const { throw no_range(spec); }
void QuantizerImpl::set_range(std::span<const float>, std::span<const float>) { throw no_range(spec); }

std::unique_ptr<QuantizerImpl> make_impl(const QuantizerSpec& spec) {
  validate(spec);
  switch (spec.kind) {
    case QuantizerKind::float_bypass: return make_float_bypass(spec);
    case QuantizerKind::uniform:
    case QuantizerKind::symmetric: return make_range_quantizer(spec);
    case QuantizerKind::dorefa: return make_dorefa(spec);
    case QuantizerKind::pact: return make_pact(spec);
    case QuantizerKind::lsq: return make_lsq(spec);
    case QuantizerKind::sawb: return make_sawb(spec);
    case QuantizerKind::pot: return make_power_of_two(spec);
    case QuantizerKind::binary: return make_binary(spec);
    case QuantizerKind::ternary: return make_ternary(spec);
    case QuantizerKind::syq: return make_syq(spec);
    case QuantizerKind::dsconv: return make_dsconv(spec);
    case QuantizerKind::inq: return make_inq(spec);
  }
  throw ArgumentError("quantizer kind out of range");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Quantizer.

Quantizer::Quantizer(const QuantizerSpec& spec) : impl_(detail::make_impl(spec)) {}
Quantizer::~Quantizer() = default;
Quantizer::Quantizer(Quantizer&&) noexcept = default;
Quantizer& Quantizer::operator=(Quantizer&&) noexcept = default;

detail::QuantizerImpl& Quantizer::impl() const {
  if (!impl_) throw Error("use of a moved-from bitmix::quant::Quantizer");
  return *impl_;
}

const QuantizerSpec& Quantizer::spec() const noexcept { return impl_->spec; }
void Quantizer::set_training(bool training) noexcept { impl_->training = training; }
bool Quantizer::training() const noexcept { return impl_->training; }

namespace {

void check_input(const detail::QuantizerImpl& impl, const Tensor& x, std::string_view what) {
  const QuantizerSpec& spec = impl.spec;
  if (spec.granularity != Granularity::per_channel) return;
  if (x.rank() < 1 || x.shape()[0] != spec.channels)
    throw ShapeError(fmt::format("{}: {} of shape {}: expected axis 0 of extent {} (one scale per output channel)",
                                 describe(spec), what, shape_to_string(x.shape()), spec.channels));
}

void check_same_shape(const detail::QuantizerImpl& impl, const Tensor& x, const Tensor& other, std::string_view what) {
  if (!other.same_shape(x))
    throw ShapeError(fmt::format("{}: {} has shape {}, the input has {}", describe(impl.spec), what,
                                 shape_to_string(other.shape()), shape_to_string(x.shape())));
}

}  // namespace

Tensor Quantizer::forward(const Tensor& x) {
  Tensor y(x.shape());
  forward(x, y);
  return y;
}

void Quantizer::forward(const Tensor& x, Tensor& y) {
  detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  if (&y != &x && !y.same_shape(x)) y = Tensor(x.shape());
  if (x.numel() == 0) return;
  q.update_state(x);
  if (q.own_forward(x, detail::Sink::store, 1.0f, y.data())) return;
  const detail::Plan plan = q.plan(&x);
  detail::run_plan(plan, x.data(), x.numel(), detail::Sink::store, 1.0f, y.data());
}

void Quantizer::forward_accumulate(const Tensor& x, float weight, Tensor& y) {
  detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  check_same_shape(q, x, y, "forward_accumulate output");
  if (x.numel() == 0) return;
  q.update_state(x);
  if (q.own_forward(x, detail::Sink::accumulate, weight, y.data())) return;
  const detail::Plan plan = q.plan(&x);
  detail::run_plan(plan, x.data(), x.numel(), detail::Sink::accumulate, weight, y.data());
}

double Quantizer::dot_output(const Tensor& x, const Tensor& grad) const {
  const detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  check_same_shape(q, x, grad, "gradient");
  if (x.numel() == 0) return 0.0;
  if (q.has_own_forward()) {
    Tensor y(x.shape());
    q.own_forward(x, detail::Sink::store, 1.0f, y.data());
    double sum = 0.0;
    for (int64_t i = 0; i < x.numel(); ++i) sum += static_cast<double>(grad[i]) * static_cast<double>(y[i]);
    return sum;
  }
  const detail::Plan plan = q.plan(&x);
  return detail::dot_plan(plan, x.data(), grad.data(), x.numel());
}

Tensor Quantizer::backward(const Tensor& x, const Tensor& grad_output) {
  Tensor grad_input(x.shape());
  backward(x, grad_output, grad_input);
  return grad_input;
}

void Quantizer::backward(const Tensor& x, const Tensor& grad_output, Tensor& grad_input) {
  detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  check_same_shape(q, x, grad_output, "grad_output");
  if (&grad_input != &grad_output && !grad_input.same_shape(x)) grad_input = Tensor(x.shape());
  if (x.numel() == 0) return;
  const detail::Plan plan = q.plan(&x);
  q.backward(x, plan, grad_output, 1.0f, false, grad_input);
}

void Quantizer::backward_accumulate(const Tensor& x, const Tensor& grad_output, float weight, Tensor& grad_input) {
  detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  check_same_shape(q, x, grad_output, "grad_output");
  check_same_shape(q, x, grad_input, "grad_input");
  if (x.numel() == 0) return;
  const detail::Plan plan = q.plan(&x);
  q.backward(x, plan, grad_output, weight, true, grad_input);
}

namespace {

QuantParams params_from_plan(const detail::QuantizerImpl& q, const detail::Plan& plan) {
  if (plan.grid == detail::GridKind::identity)
    throw ArgumentError(fmt::format("{}: a float quantizer has no integer export", describe(q.spec)));
  QuantParams p;
  p.kind = q.spec.kind;
  p.bits = q.spec.bits;
  p.granularity = q.spec.granularity;
  p.scales.reserve(plan.groups.size());
  p.zero_points.reserve(plan.groups.size());
  for (const detail::GroupGrid& g : plan.groups) {
    p.scales.push_back(g.scale);
    p.zero_points.push_back(g.zero_point);
  }
  q.describe_codes(p);
  return p;
}

}  // namespace

QuantParams Quantizer::params(const Tensor& x) const {
  const detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  return params_from_plan(q, q.plan(&x));
}

QuantParams Quantizer::params() const {
  const detail::QuantizerImpl& q = impl();
  return params_from_plan(q, q.plan(nullptr));
}

QuantizedTensor Quantizer::quantize(const Tensor& x) const {
  const detail::QuantizerImpl& q = impl();
  check_input(q, x, "input");
  const detail::Plan plan = q.plan(&x);
  QuantizedTensor out;
  out.shape = x.shape();
  out.params = params_from_plan(q, plan);
  out.codes.resize(static_cast<std::size_t>(x.numel()));
  if (x.numel() > 0 && !q.own_codes(x, out.codes.data())) detail::codes_of_plan(plan, x.data(), x.numel(), out.codes.data());
  return out;
}

std::vector<Parameter*> Quantizer::parameters() { return impl().parameters; }
std::vector<Buffer*> Quantizer::buffers() { return impl().buffers; }
void Quantizer::zero_grad() {
  for (Parameter* p : impl().parameters) p->zero_grad();
}

bool Quantizer::accepts_range() const noexcept { return impl_ && impl_->accepts_range(); }
RangeShape Quantizer::range_shape() const { return impl().range_shape(); }
LevelGrid Quantizer::grid_for_range(float lo, float hi) const { return impl().grid_for_range(lo, hi); }

void Quantizer::set_range(std::span<const float> lo, std::span<const float> hi) {
  detail::QuantizerImpl& q = impl();
  if (!q.accepts_range()) q.set_range(lo, hi);  // throws the explanation
  const auto groups = static_cast<std::size_t>(q.spec.groups());
  if (lo.size() != groups || hi.size() != groups)
    throw ArgumentError(fmt::format("{}: set_range with {} lower and {} upper bounds: expected {} of each (one per "
                                    "group)",
                                    quant::describe(q.spec), lo.size(), hi.size(), groups));
  for (std::size_t g = 0; g < groups; ++g) {
    if (!std::isfinite(lo[g]) || !std::isfinite(hi[g]) || lo[g] > hi[g])
      throw ArgumentError(fmt::format("{}: set_range group {}: [{}, {}]: expected finite bounds with lo <= hi",
                                      quant::describe(q.spec), g, lo[g], hi[g]));
  }
  q.set_range(lo, hi);
}

void Quantizer::unfreeze_range() { impl().unfreeze_range(); }

Quantizer make_quantizer(std::string_view kind, Role role, int bits, Granularity granularity, int64_t channels) {
  QuantizerSpec spec;
  spec.kind = parse_quantizer_kind(kind);
  spec.role = role;
  spec.bits = bits;
  spec.granularity = granularity;
  spec.channels = granularity == Granularity::per_channel ? channels : 1;
  return Quantizer(spec);
}

}  // namespace bitmix::quant
