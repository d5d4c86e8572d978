#include "bitmix/search/mixture.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/quant/mixing.hpp"

namespace bitmix::search {

QuantizerMixture::QuantizerMixture(const quant::QuantizerSpec& base, std::vector<int> bits)
    : bits_(std::move(bits)), strength_("strength", Tensor({static_cast<int64_t>(bits_.size())})) {
  if (bits_.empty()) throw ArgumentError("a bitwidth mixture needs at least one candidate");
  for (std::size_t i = 0; i < bits_.size(); ++i) {
    if (i > 0 && bits_[i] <= bits_[i - 1])
      throw ArgumentError(fmt::format("mixture candidates must be ascending and distinct, got {}", fmt::join(bits_, ",")));
    quant::QuantizerSpec spec = base;
    spec.bits = bits_[i];
    quantizers_.push_back(std::make_unique<quant::Quantizer>(spec));  // validates the bits
    // Local names unique within the mixture: "b4.step", "b4.initialized".
    for (Parameter* p : quantizers_.back()->parameters()) p->name = fmt::format("b{}.{}", bits_[i], p->name);
    for (Buffer* b : quantizers_.back()->buffers()) b->name = fmt::format("b{}.{}", bits_[i], b->name);
  }
}

std::vector<Parameter*> QuantizerMixture::parameters() {
  std::vector<Parameter*> result = {&strength_};
  for (Parameter* p : quantizer_parameters()) result.push_back(p);
  return result;
}

std::vector<Parameter*> QuantizerMixture::quantizer_parameters() {
  std::vector<Parameter*> result;
  for (auto& q : quantizers_)
    for (Parameter* p : q->parameters()) result.push_back(p);
  return result;
}

std::vector<Buffer*> QuantizerMixture::buffers() {
  std::vector<Buffer*> result;
  for (auto& q : quantizers_)
    for (Buffer* b : q->buffers()) result.push_back(b);
  return result;
}

void QuantizerMixture::set_training(bool training) {
  nn::TensorTransform::set_training(training);
  for (auto& q : quantizers_) q->set_training(training);
}

void QuantizerMixture::set_temperature(double temperature) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw ArgumentError(fmt::format("softmax temperature {}: expected a positive number", temperature));
  temperature_ = temperature;
}

std::vector<double> QuantizerMixture::softmax(bool with_noise) {
  const std::size_t n = bits_.size();
  std::vector<double> z(n);
  for (std::size_t i = 0; i < n; ++i) {
    double logit = strength_.value[static_cast<int64_t>(i)];
    if (with_noise && std::isfinite(logit)) {
      // Gumbel(0, 1) = -log(-log(u)), u in (0, 1).
      const double u = std::clamp(gumbel_rng_->uniform_double(), 1e-12, 1.0 - 1e-12);
      logit += -std::log(-std::log(u));
    }
    z[i] = logit / temperature_;
  }
  double max_z = -std::numeric_limits<double>::infinity();
  for (double v : z) max_z = std::max(max_z, v);
  double sum = 0;
  for (double& v : z) sum += v = std::isfinite(v) ? std::exp(v - max_z) : 0.0;
  for (double& v : z) v /= sum;
  return z;
}

std::vector<double> QuantizerMixture::probabilities() const {
  return const_cast<QuantizerMixture*>(this)->softmax(false);
}

double QuantizerMixture::expected_bits() const {
  const std::vector<double> p = probabilities();
  double e = 0;
  for (std::size_t i = 0; i < p.size(); ++i) e += p[i] * bits_[i];
  return e;
}

int QuantizerMixture::argmax_bits() const {
  const std::vector<double> p = probabilities();
  std::size_t best = 0;
  for (std::size_t i = 1; i < p.size(); ++i)
    if (p[i] > p[best]) best = i;
  return bits_[best];
}

void QuantizerMixture::fix_to(std::size_t index) {
  if (index >= bits_.size())
    throw ArgumentError(fmt::format("mixture candidate {} of {}", index, bits_.size()));
  for (std::size_t i = 0; i < bits_.size(); ++i)
    strength_.value[static_cast<int64_t>(i)] = i == index ? 0.0f : -std::numeric_limits<float>::infinity();
}

// Forward and backward run every candidate with a nonzero probability in ONE pass over the tensor
// (quant::mix_forward / mix_backward), bit for bit the loop of forward_accumulate /
// dot_output / backward_accumulate calls in candidate order they replace.
const Tensor& QuantizerMixture::forward(const Tensor& x) {
  forward_probabilities_ = softmax(training() && gumbel_rng_ != nullptr);
  std::vector<quant::Quantizer*> active;
  std::vector<float> weights;
  for (std::size_t i = 0; i < bits_.size(); ++i)
    if (forward_probabilities_[i] != 0.0) {
      active.push_back(quantizers_[i].get());
      weights.push_back(static_cast<float>(forward_probabilities_[i]));
    }
  nn::ensure_shape(output_, x.shape());
  if (active.empty())
    output_.zero();
  else
    quant::mix_forward(active, weights, x, output_);
  return output_;
}

const Tensor& QuantizerMixture::backward(const Tensor& x, const Tensor& grad_output) {
  if (forward_probabilities_.size() != bits_.size())
    throw Error("QuantizerMixture::backward called before forward");
  const std::vector<double>& p = forward_probabilities_;
  std::vector<quant::Quantizer*> active;
  std::vector<float> weights;
  std::vector<std::size_t> index;
  for (std::size_t i = 0; i < bits_.size(); ++i)
    if (p[i] != 0.0) {
      active.push_back(quantizers_[i].get());
      weights.push_back(static_cast<float>(p[i]));
      index.push_back(i);
    }
  nn::ensure_shape(grad_input_, x.shape());
  std::vector<double> grad_p(bits_.size(), 0.0);
  if (active.empty()) {
    grad_input_.zero();
  } else {
    std::vector<double> grad_active(active.size(), 0.0);
    quant::mix_backward(active, weights, x, grad_output, grad_input_, grad_active);
    for (std::size_t k = 0; k < active.size(); ++k) grad_p[index[k]] = grad_active[k];
  }
  double mean = 0;
  for (std::size_t i = 0; i < bits_.size(); ++i)
    if (p[i] != 0.0) mean += p[i] * grad_p[i];
  for (std::size_t j = 0; j < bits_.size(); ++j)
    strength_.grad[static_cast<int64_t>(j)] += static_cast<float>(p[j] * (grad_p[j] - mean) / temperature_);
  return grad_input_;
}

void QuantizerMixture::add_probability_gradient(std::span<const double> grad_probabilities) {
  if (grad_probabilities.size() != bits_.size())
    throw ArgumentError(fmt::format("{} probability gradients for {} candidates", grad_probabilities.size(),
                                    bits_.size()));
  const std::vector<double> p = probabilities();
  double mean = 0;
  for (std::size_t i = 0; i < p.size(); ++i) mean += p[i] * grad_probabilities[i];
  for (std::size_t j = 0; j < p.size(); ++j)
    strength_.grad[static_cast<int64_t>(j)] += static_cast<float>(p[j] * (grad_probabilities[j] - mean) / temperature_);
}

}  // namespace bitmix::search
