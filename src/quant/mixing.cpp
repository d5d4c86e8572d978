// Quantizers of one tensor mixed in one pass (bitmix/quant/mixing.hpp): the checks, the plans
// and gates of every quantizer, then one run of the fused kernels (engine.cpp), or the
// per-quantizer loop for sets the kernels do not cover.
#include "bitmix/quant/mixing.hpp"

#include <fmt/format.h>

#include <vector>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant {
namespace {

using detail::QuantizerAccess;
using detail::QuantizerImpl;

std::vector<QuantizerImpl*> checked_set(std::span<Quantizer* const> quantizers, std::size_t weights,
                                        const Tensor& x, std::string_view what) {
  if (quantizers.empty()) throw ArgumentError(fmt::format("{}: no quantizers to mix", what));
  if (weights != quantizers.size())
    throw ArgumentError(
        fmt::format("{}: {} weights for {} quantizers: expected one per quantizer", what, weights, quantizers.size()));
  std::vector<QuantizerImpl*> impls;
  for (std::size_t i = 0; i < quantizers.size(); ++i) {
    if (quantizers[i] == nullptr) throw ArgumentError(fmt::format("{}: quantizer {} is null", what, i));
    QuantizerImpl& q = QuantizerAccess::impl(*quantizers[i]);
    if (q.has_own_forward())
      throw ArgumentError(fmt::format("{}: quantizer {} ({}) keeps per-weight state and cannot be mixed", what, i,
                                      describe(q.spec)));
    for (std::size_t j = 0; j < i; ++j)
      if (impls[j] == &q)
        throw ArgumentError(fmt::format("{}: quantizer {} is quantizer {} again: expected distinct quantizers", what,
                                        i, j));
    const QuantizerSpec& a = impls.empty() ? q.spec : impls[0]->spec;
    const QuantizerSpec& b = q.spec;
    if (a.kind != b.kind || a.role != b.role || a.granularity != b.granularity || a.groups() != b.groups() ||
        (a.role == Role::activation && a.signed_activations != b.signed_activations))
      throw ArgumentError(fmt::format("{}: quantizer {} is {}, quantizer 0 is {}: expected the same kind, role, "
                                      "granularity and signedness (bits may differ)",
                                      what, i, describe(b), describe(a)));
    if (b.granularity == Granularity::per_channel && (x.rank() < 1 || x.shape()[0] != b.channels))
      throw ShapeError(fmt::format("{}: {}: input of shape {}: expected axis 0 of extent {} (one scale per output "
                                   "channel)",
                                   what, describe(b), shape_to_string(x.shape()), b.channels));
    impls.push_back(&q);
  }
  return impls;
}

bool same_grid(const std::vector<detail::Plan>& plans) {
  for (const detail::Plan& p : plans)
    if (p.grid != plans[0].grid || p.tanh_input != plans[0].tanh_input) return false;
  return true;
}

std::vector<detail::Plan> plans_of(const std::vector<QuantizerImpl*>& impls, const Tensor& x) {
  std::vector<detail::Plan> plans;
  plans.reserve(impls.size());
  for (const QuantizerImpl* q : impls) plans.push_back(q->plan(&x));
  return plans;
}

std::vector<detail::Gate> gates_of(const std::vector<QuantizerImpl*>& impls, const std::vector<detail::Plan>& plans) {
  std::vector<detail::Gate> gates;
  gates.reserve(impls.size());
  for (std::size_t i = 0; i < impls.size(); ++i) gates.push_back(impls[i]->gate(plans[i]));
  return gates;
}

std::vector<detail::BackwardTerm> terms_of(const std::vector<detail::Plan>& plans,
                                           const std::vector<detail::Gate>& gates, std::span<const float> weights) {
  std::vector<detail::BackwardTerm> terms;
  for (std::size_t i = 0; i < plans.size(); ++i) terms.push_back({&plans[i], &gates[i], weights[i]});
  return terms;
}

}  // namespace

void mix_forward(std::span<Quantizer* const> quantizers, std::span<const float> weights, const Tensor& x, Tensor& y) {
  const std::vector<QuantizerImpl*> impls = checked_set(quantizers, weights.size(), x, "mix_forward");
  if (&y == &x) throw ArgumentError("mix_forward: the output must be another tensor than the input");
  if (!y.same_shape(x)) y = Tensor(x.shape());
  if (x.numel() == 0) return;
  // The loop updates quantizer i's state just before planning it; the quantizers are distinct,
  // so updating all first and then planning all is the same.
  for (QuantizerImpl* q : impls) q->update_state(x);
  const std::vector<detail::Plan> plans = plans_of(impls, x);
  if (same_grid(plans)) {
    std::vector<const detail::Plan*> pointers;
    for (const detail::Plan& p : plans) pointers.push_back(&p);
    detail::mix_plans(pointers, weights, x.data(), x.numel(), detail::Sink::zero, y.data());
    return;
  }
  y.zero();
  for (std::size_t i = 0; i < plans.size(); ++i)
    detail::run_plan(plans[i], x.data(), x.numel(), detail::Sink::accumulate, weights[i], y.data());
}

void mix_backward(std::span<Quantizer* const> quantizers, std::span<const float> weights, const Tensor& x,
                  const Tensor& grad_output, Tensor& grad_input, std::span<double> grad_weights) {
  const std::vector<QuantizerImpl*> impls = checked_set(quantizers, weights.size(), x, "mix_backward");
  if (!grad_output.same_shape(x))
    throw ShapeError(fmt::format("mix_backward: grad_output has shape {}, the input has {}",
                                 shape_to_string(grad_output.shape()), shape_to_string(x.shape())));
  if (grad_weights.size() != impls.size())
    throw ArgumentError(fmt::format("mix_backward: {} weight gradients for {} quantizers: expected one per quantizer",
                                    grad_weights.size(), impls.size()));
  if (&grad_input == &x || &grad_input == &grad_output)
    throw ArgumentError("mix_backward: grad_input must be another tensor than the input and grad_output");
  if (!grad_input.same_shape(x)) grad_input = Tensor(x.shape());
  for (double& g : grad_weights) g = 0.0;
  if (x.numel() == 0) return;
  const std::vector<detail::Plan> plans = plans_of(impls, x);
  const std::vector<detail::Gate> gates = gates_of(impls, plans);
  const std::vector<detail::BackwardTerm> terms = terms_of(plans, gates, weights);
  if (detail::can_backward_together(terms, true)) {
    std::vector<detail::BackwardSums> sums(terms.size());
    detail::backward_plans(terms, true, x.data(), grad_output.data(), x.numel(), detail::Sink::zero,
                           grad_input.data(), sums);
    const detail::Blocks blocks(static_cast<int64_t>(plans[0].groups.size()), x.numel());
    for (std::size_t i = 0; i < impls.size(); ++i) {
      impls[i]->add_parameter_gradient(x, blocks, sums[i].block_param, weights[i]);
      grad_weights[i] = sums[i].dot;
    }
    return;
  }
  grad_input.zero();
  for (std::size_t i = 0; i < impls.size(); ++i) {
    grad_weights[i] = detail::dot_plan(plans[i], x.data(), grad_output.data(), x.numel());
    impls[i]->backward(x, plans[i], grad_output, weights[i], true, grad_input);
  }
}

MixPasses mix_passes(std::span<Quantizer* const> quantizers, const Tensor& x) {
  const std::vector<QuantizerImpl*> impls = checked_set(quantizers, quantizers.size(), x, "mix_passes");
  if (x.numel() == 0) return {true, true};
  const std::vector<detail::Plan> plans = plans_of(impls, x);
  const std::vector<detail::Gate> gates = gates_of(impls, plans);
  const std::vector<float> weights(impls.size(), 1.0f);
  return {same_grid(plans), detail::can_backward_together(terms_of(plans, gates, weights), true)};
}

}  // namespace bitmix::quant
