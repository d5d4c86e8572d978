// HAWQ-style sensitivities: per-layer Hessian traces by Hutchinson's method.
//
// Why central differences of two backward passes: nn's layers have explicit first-order
// backward passes and no double-backward, so an exact Hessian-vector product would need a
// second (forward-over-reverse) implementation of every layer. The central difference is exact
// for a quadratic loss and O(h^2) otherwise; the float32 gradients add a rounding error of
// about eps_32 |g| / h. tests/search/hawq_test.cpp measures both against the Hessian obtained
// coordinate by coordinate.
#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "search/hessian.hpp"

namespace bitmix::search {

namespace detail {

std::vector<double> loss_gradient(nn::Module& model, std::span<Parameter* const> params, const LabelledBatches& data) {
  model.eval();
  model.zero_grad();
  const auto total = static_cast<double>(data.count());
  Tensor grad_logits;
  for (std::size_t b = 0; b < data.images.size(); ++b) {
    const Tensor& logits = model.forward(data.images[b]);
    nn::softmax_cross_entropy(logits, data.labels[b], 0.0f, &grad_logits);
    // The batch's mean loss carries weight N_b / N in the set's mean.
    const auto scale = static_cast<float>(static_cast<double>(data.labels[b].size()) / total);
    for (float& g : grad_logits.values()) g *= scale;
    model.backward(grad_logits);
  }
  std::vector<double> g;
  for (Parameter* p : params)
    for (float v : p->grad.values()) g.push_back(static_cast<double>(v));
  return g;
}

std::vector<double> hessian_vector_product(nn::Module& model, std::span<Parameter* const> params,
                                           const LabelledBatches& data, std::span<const double> v, double h) {
  std::vector<Tensor> saved;
  for (Parameter* p : params) saved.push_back(p->value);
  auto shift = [&](double sign) {
    std::size_t k = 0;
    for (std::size_t i = 0; i < params.size(); ++i) {
      float* w = params[i]->value.data();
      const float* w0 = saved[i].data();
      for (int64_t e = 0; e < params[i]->value.numel(); ++e, ++k)
        w[e] = static_cast<float>(static_cast<double>(w0[e]) + sign * h * v[k]);
    }
  };
  struct Restore {
    std::span<Parameter* const> params;
    std::vector<Tensor>& saved;
    ~Restore() {
      for (std::size_t i = 0; i < params.size(); ++i) params[i]->value = saved[i];
    }
  } restore{params, saved};
  shift(+1);
  const std::vector<double> plus = loss_gradient(model, params, data);
  shift(-1);
  const std::vector<double> minus = loss_gradient(model, params, data);
  std::vector<double> hv(plus.size());
  for (std::size_t k = 0; k < hv.size(); ++k) hv[k] = (plus[k] - minus[k]) / (2 * h);
  return hv;
}

}  // namespace detail

HawqSensitivity hawq_sensitivity(nn::Module& model, const Shape& image_shape, const std::vector<LayerOptions>& layers,
                                 const LabelledBatches& data, const HawqOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  data.validate("HAWQ data");
  if (options.max_iterations < 1)
    throw ArgumentError(fmt::format("HAWQ: max_iterations {} must be at least 1", options.max_iterations));
  if (!(options.tolerance >= 0)) throw ArgumentError(fmt::format("HAWQ: tolerance {} must be >= 0", options.tolerance));
  if (!(options.epsilon > 0)) throw ArgumentError(fmt::format("HAWQ: epsilon {} must be positive", options.epsilon));
  const std::vector<nn::LayerInfo> infos = model.quantizable_layers(image_shape);
  if (infos.size() != layers.size())
    throw ArgumentError(fmt::format("HAWQ: options for {} layers, the model has {} quantizable layers", layers.size(),
                                    infos.size()));
  std::vector<Parameter*> params;
  HawqSensitivity out;
  double sum_sq = 0;
  int64_t count = 0;
  for (std::size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].name != layers[i].name)
      throw ArgumentError(fmt::format("HAWQ: layer {} is '{}' in the model but '{}' in the options", i, infos[i].name,
                                      layers[i].name));
    Parameter& w = infos[i].conv != nullptr ? infos[i].conv->weight() : infos[i].linear->weight();
    params.push_back(&w);
    HawqLayer layer;
    layer.name = infos[i].name;
    layer.params = w.value.numel();
    for (float v : w.value.values()) sum_sq += static_cast<double>(v) * static_cast<double>(v);
    count += w.value.numel();
    // ||W - Q_b(W)||^2 with PTQ's weight quantizer at the option's weight bits.
    for (const LayerBits& o : layers[i].options) {
      quant::LayerBits entry;
      entry.w_bits = o.w_bits;
      entry.w_quant = quant::QuantizerKind::symmetric;
      entry.w_granularity = quant::Granularity::per_channel;
      nn::QuantizerTransform q(entry.weight_spec(w.value.dim(0)));
      nn::calibrate_weight_quantizer(q, w.value, options.weights);
      const Tensor qw = q.quantizer().forward(w.value);
      double e = 0;
      for (int64_t k = 0; k < qw.numel(); ++k) {
        const double d = static_cast<double>(qw[k]) - static_cast<double>(w.value[k]);
        e += d * d;
      }
      layer.perturbation.push_back(e);
    }
    out.layers.push_back(std::move(layer));
  }
  const double h = options.epsilon * std::sqrt(sum_sq / static_cast<double>(std::max<int64_t>(count, 1)));
  if (!(h > 0)) throw ArgumentError("HAWQ: the weights are all zero, no step for the Hessian-vector products");

  const bool was_training = model.training();
  Rng rng(options.seed);
  std::vector<double> v(static_cast<std::size_t>(count)), mean(infos.size(), 0.0);
  for (int it = 1; it <= options.max_iterations; ++it) {
    for (double& x : v) x = (rng.next_u64() >> 63) != 0 ? 1.0 : -1.0;
    const std::vector<double> hv = detail::hessian_vector_product(model, params, data, v, h);
    bool settled = it > 1;
    std::size_t k = 0;
    for (std::size_t i = 0; i < infos.size(); ++i) {
      double t = 0;
      for (int64_t e = 0; e < out.layers[i].params; ++e, ++k) t += v[k] * hv[k];
      const double previous = mean[i];
      mean[i] += (t - mean[i]) / it;
      if (std::abs(mean[i] - previous) > options.tolerance * (std::abs(previous) + 1e-12)) settled = false;
    }
    out.iterations = it;
    if (options.progress) options.progress(it, options.max_iterations);
    if (settled) {
      out.converged = true;
      break;
    }
  }
  model.train(was_training);
  for (std::size_t i = 0; i < infos.size(); ++i) {
    HawqLayer& layer = out.layers[i];
    layer.trace = mean[i];
    for (double e : layer.perturbation) layer.omega.push_back(layer.trace / static_cast<double>(layer.params) * e);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace bitmix::search
