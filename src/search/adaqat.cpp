#include "bitmix/search/adaqat.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/search/search.hpp"

namespace bitmix::search {

int adaqat_bits(double relaxed, int min_bits, int max_bits) {
  const double up = std::ceil(relaxed);
  if (!(up >= min_bits)) return min_bits;  // also NaN
  if (up >= max_bits) return max_bits;
  return static_cast<int>(up);
}

AdaQat::AdaQat(std::vector<SearchedLayer>& layers, const CostModel& cost, double budget, double penalty_weight,
               const AdaQatOptions& options)
    : layers_(layers), cost_(cost), budget_(budget), lambda_(penalty_weight), options_(options) {
  if (options.min_bits < 1 || options.max_bits > 8 || options.min_bits >= options.max_bits)
    throw ArgumentError(fmt::format("AdaQAT bit range {}..{}: expected 1 <= min < max <= 8", options.min_bits,
                                    options.max_bits));
  if (!(options.init_bits >= options.min_bits && options.init_bits <= options.max_bits))
    throw ArgumentError(fmt::format("--adaqat-init {}: expected a bitwidth in [{}, {}]", options.init_bits,
                                    options.min_bits, options.max_bits));
  if (!(options.bit_lr > 0)) throw ArgumentError("--bit-lr must be > 0");
  if (options.every < 1) throw ArgumentError("--adaqat-every must be >= 1");
  if (cost.layers().size() != layers.size()) throw ArgumentError("AdaQAT: cost model and layers differ");
  const std::size_t n = layers.size();
  w_.assign(n, options.init_bits);
  a_.assign(n, options.init_bits);
  for (std::size_t l = 0; l < n; ++l) {
    const SearchedLayer& layer = layers[l];
    if (layer.pinned) {
      w_[l] = layer.w_bits()[0];
      a_[l] = layer.a_bits()[0];
      continue;
    }
    if (layer.weights == nullptr) throw ArgumentError("AdaQAT needs EBS mixtures on every layer");
    for (const std::vector<int>* bits : {&layer.w_bits(), &layer.a_bits()}) {
      bool contiguous = static_cast<int>(bits->size()) == options.max_bits - options.min_bits + 1;
      for (std::size_t i = 0; contiguous && i < bits->size(); ++i)
        contiguous = (*bits)[i] == options.min_bits + static_cast<int>(i);
      if (!contiguous)
        throw ArgumentError(fmt::format("AdaQAT layer {}: candidates must be {}..{}", layer.info.name, options.min_bits,
                                        options.max_bits));
    }
  }
  mw_.assign(n, 0.0);
  vw_.assign(n, 0.0);
  ma_.assign(n, 0.0);
  va_.assign(n, 0.0);
  apply();
}

namespace {

// One-hot logits with a finite "off" value (the trainer refuses non-finite parameters, so not
// fix_to's −inf): exp(−1e30) is exactly 0, so the mixture skips those candidates as it does −inf.
void one_hot(QuantizerMixture& mixture, std::size_t index) {
  Tensor& logits = mixture.strength().value;
  for (int64_t i = 0; i < logits.numel(); ++i) logits[i] = static_cast<std::size_t>(i) == index ? 0.0f : -1e30f;
}

}  // namespace

void AdaQat::set_layer(std::size_t layer, int w_bits, int a_bits) {
  SearchedLayer& l = layers_[layer];
  one_hot(*l.weights, static_cast<std::size_t>(w_bits - options_.min_bits));
  one_hot(*l.inputs, static_cast<std::size_t>(a_bits - options_.min_bits));
}

void AdaQat::set_relaxed(std::vector<double> w, std::vector<double> a) {
  if (w.size() != layers_.size() || a.size() != layers_.size()) throw ArgumentError("AdaQAT: relaxed bits per layer");
  for (std::size_t l = 0; l < layers_.size(); ++l)
    if (!layers_[l].pinned) {
      w_[l] = std::clamp(w[l], double(options_.min_bits), double(options_.max_bits));
      a_[l] = std::clamp(a[l], double(options_.min_bits), double(options_.max_bits));
    }
  apply();
}

void AdaQat::apply() {
  for (std::size_t l = 0; l < layers_.size(); ++l)
    if (!layers_[l].pinned)
      set_layer(l, adaqat_bits(w_[l], options_.min_bits, options_.max_bits),
                adaqat_bits(a_[l], options_.min_bits, options_.max_bits));
}

std::vector<LayerBits> AdaQat::bits() const {
  std::vector<LayerBits> result;
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].pinned) {
      result.push_back({layers_[l].w_bits()[0], layers_[l].a_bits()[0]});
    } else {
      result.push_back({adaqat_bits(w_[l], options_.min_bits, options_.max_bits),
                        adaqat_bits(a_[l], options_.min_bits, options_.max_bits)});
    }
  }
  return result;
}

double AdaQat::loss_at(nn::Module& model, const Tensor& images, std::span<const int> labels, float smoothing) {
  const Tensor& logits = model.forward(images);
  return nn::softmax_cross_entropy(logits, labels, smoothing, nullptr).loss;
}

BitGradients AdaQat::loss_gradient(nn::Module& model, const Tensor& images, std::span<const int> labels,
                                   float label_smoothing) {
  // Every forward in training mode moves BatchNorm's running statistics; the differences are a
  // measurement, so the buffers are put back afterwards.
  std::vector<std::pair<Buffer*, Tensor>> saved;
  for (const NamedBuffer& b : model.named_buffers()) saved.emplace_back(b.buffer, b.buffer->value);
  const std::vector<LayerBits> now = bits();
  apply();
  const double base = loss_at(model, images, labels, label_smoothing);
  BitGradients g{std::vector<double>(layers_.size(), 0.0), std::vector<double>(layers_.size(), 0.0)};
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].pinned) continue;
    for (bool weights : {true, false}) {
      const int k = weights ? now[l].w_bits : now[l].a_bits;
      const bool at_bottom = k == options_.min_bits;
      const int other = at_bottom ? k + 1 : k - 1;
      if (weights)
        set_layer(l, other, now[l].a_bits);
      else
        set_layer(l, now[l].w_bits, other);
      const double moved = loss_at(model, images, labels, label_smoothing);
      set_layer(l, now[l].w_bits, now[l].a_bits);
      (weights ? g.w : g.a)[l] = at_bottom ? moved - base : base - moved;
    }
  }
  for (auto& [buffer, value] : saved) buffer->value = std::move(value);
  return g;
}

BitGradients AdaQat::cost_gradient() const {
  std::vector<LayerBits> now = bits();
  const double base = cost_.total(now);
  BitGradients g{std::vector<double>(layers_.size(), 0.0), std::vector<double>(layers_.size(), 0.0)};
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].pinned) continue;
    for (bool weights : {true, false}) {
      int& k = weights ? now[l].w_bits : now[l].a_bits;
      const int keep = k;
      const bool at_bottom = k == options_.min_bits;
      k = at_bottom ? k + 1 : k - 1;
      const double moved = cost_.total(now);
      k = keep;
      (weights ? g.w : g.a)[l] = at_bottom ? moved - base : base - moved;
    }
  }
  return g;
}

Penalty AdaQat::penalty() const {
  const double c = cost_.total(bits());
  if (c <= budget_) return {0, 0};
  return budget_penalty(c, budget_, lambda_);
}

double AdaQat::step(nn::Module& model, const data::Batch& batch, float label_smoothing) {
  const Penalty p = penalty();
  const BitGradients loss = loss_gradient(model, batch.images, batch.labels, label_smoothing);
  const BitGradients cost = cost_gradient();
  constexpr double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  ++adam_steps_;
  const double c1 = 1.0 - std::pow(beta1, static_cast<double>(adam_steps_));
  const double c2 = 1.0 - std::pow(beta2, static_cast<double>(adam_steps_));
  auto adam = [&](double g, double& m, double& v, double& b) {
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    b -= options_.bit_lr * (m / c1) / (std::sqrt(v / c2) + eps);
    b = std::clamp(b, double(options_.min_bits), double(options_.max_bits));
  };
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].pinned) continue;
    adam(loss.w[l] + p.d_cost * cost.w[l], mw_[l], vw_[l], w_[l]);
    adam(loss.a[l] + p.d_cost * cost.a[l], ma_[l], va_[l], a_[l]);
  }
  apply();
  return p.value;
}

Candidates AdaQat::candidates() const {
  Candidates c;
  for (int b = options_.min_bits; b <= options_.max_bits; ++b) {
    c.w_bits.push_back(b);
    c.a_bits.push_back(b);
  }
  return c;
}

std::vector<LayerProbabilities> AdaQat::selection_probabilities() const {
  std::vector<LayerProbabilities> result(layers_.size());
  auto scores = [&](double b) {
    const int k = adaqat_bits(b, options_.min_bits, options_.max_bits);
    std::vector<double> z;
    for (int j = options_.min_bits; j <= options_.max_bits; ++j) z.push_back(j == k ? 0.0 : -std::abs(j - b));
    double sum = 0;
    for (double& v : z) sum += v = std::exp(v);
    for (double& v : z) v /= sum;
    return z;
  };
  for (std::size_t l = 0; l < layers_.size(); ++l)
    if (!layers_[l].pinned) result[l] = {scores(w_[l]), scores(a_[l])};
  return result;
}

}  // namespace bitmix::search
