// CLADO's measurement engine: single-layer and pairwise loss increases from forward passes.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/search/sensitivity.hpp"
#include "search/clado_internal.hpp"

namespace bitmix::search {

namespace {

using Clock = std::chrono::steady_clock;

// A layer's weight or input transform that applies one of several quantizers (or none), chosen
// per evaluation. While observing, every input quantizer sees the float activations.
class OptionSwitch final : public nn::TensorTransform {
 public:
  std::string kind() const override { return "clado-switch"; }
  const Tensor& forward(const Tensor& x) override {
    if (observing_) {
      for (auto& c : choices) c->forward(x);  // each observes and returns x
      return x;
    }
    if (active < 0) return x;
    return choices[static_cast<std::size_t>(active)]->forward(x);
  }
  const Tensor& backward(const Tensor& /*x*/, const Tensor& grad_output) override { return grad_output; }

  void observe(const quant::CalibrationOptions& options) {
    for (auto& c : choices) c->begin_observation(options);
    observing_ = true;
  }
  void finish_observation() {
    for (auto& c : choices) c->end_observation();
    observing_ = false;
  }

  std::vector<std::unique_ptr<nn::QuantizerTransform>> choices;
  int active = -1;

 private:
  bool observing_ = false;
};

// One model with a weight switch and an input switch on every layer that has options.
struct Replica {
  std::unique_ptr<nn::Module> model;
  std::vector<OptionSwitch*> weight, input;            // per layer
  std::vector<std::vector<int>> weight_index, input_index;  // per layer, per option
};

template <typename T>
int index_of(std::vector<T>& list, const T& value) {
  const auto it = std::find(list.begin(), list.end(), value);
  if (it != list.end()) return static_cast<int>(it - list.begin());
  list.push_back(value);
  return static_cast<int>(list.size()) - 1;
}

Replica make_replica(const ModelFactory& make_model, const Shape& image_shape, const std::vector<LayerOptions>& layers,
                     const quant::CalibrationOptions& weight_calibration) {
  Replica r;
  r.model = make_model();
  if (!r.model) throw ArgumentError("CLADO: the model factory returned no model");
  const std::vector<nn::LayerInfo> infos = r.model->quantizable_layers(image_shape);
  if (infos.size() != layers.size())
    throw ArgumentError(fmt::format("CLADO: options for {} layers, the model has {} quantizable layers", layers.size(),
                                    infos.size()));
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const nn::LayerInfo& info = infos[i];
    if (info.name != layers[i].name)
      throw ArgumentError(fmt::format("CLADO: layer {} is '{}' in the model but '{}' in the options", i, info.name,
                                      layers[i].name));
    if (layers[i].options.empty()) throw ArgumentError(fmt::format("CLADO: layer '{}' has no options", info.name));
    std::vector<int> wbits, abits;
    std::vector<int> wi, ai;
    for (const LayerBits& o : layers[i].options) {
      wi.push_back(index_of(wbits, o.w_bits));
      ai.push_back(index_of(abits, o.a_bits));
    }
    auto ws = std::make_unique<OptionSwitch>();
    auto xs = std::make_unique<OptionSwitch>();
    const Tensor& weight = info.conv != nullptr ? info.conv->weight().value : info.linear->weight().value;
    for (int w : wbits) {
      quant::LayerBits entry;
      entry.w_bits = w;
      entry.w_quant = quant::QuantizerKind::symmetric;
      entry.w_granularity = quant::Granularity::per_channel;
      auto q = std::make_unique<nn::QuantizerTransform>(entry.weight_spec(weight.dim(0)));
      q->set_training(false);
      nn::calibrate_weight_quantizer(*q, weight, weight_calibration);
      ws->choices.push_back(std::move(q));
    }
    for (int a : abits) {
      quant::LayerBits entry;
      entry.a_bits = a;
      entry.a_quant = quant::QuantizerKind::uniform;
      // The first layer reads the normalized image, as in nn::apply_bit_config.
      auto q = std::make_unique<nn::QuantizerTransform>(entry.activation_spec(i == 0));
      q->set_training(false);
      xs->choices.push_back(std::move(q));
    }
    r.weight.push_back(ws.get());
    r.input.push_back(xs.get());
    r.weight_index.push_back(wi);
    r.input_index.push_back(ai);
    nn::TransformSlots& slots = info.conv != nullptr ? static_cast<nn::TransformSlots&>(*info.conv) : *info.linear;
    slots.set_weight_transform(std::move(ws));
    slots.set_input_transform(std::move(xs));
  }
  r.model->eval();
  return r;
}

void calibrate_inputs(Replica& r, std::span<const Tensor> calibration, const quant::CalibrationOptions& options) {
  for (OptionSwitch* s : r.input) s->observe(options);
  for (const Tensor& batch : calibration) r.model->forward(batch);
  for (OptionSwitch* s : r.input) s->finish_observation();
}

double mean_loss(nn::Module& model, const LabelledBatches& data) {
  double total = 0;
  for (std::size_t b = 0; b < data.images.size(); ++b) {
    const Tensor& logits = model.forward(data.images[b]);
    const nn::CrossEntropyResult ce = nn::softmax_cross_entropy(logits, data.labels[b], 0.0f, nullptr);
    total += ce.loss * static_cast<double>(data.labels[b].size());
  }
  return total / static_cast<double>(data.count());
}

// One evaluation: up to two layers quantized (layer -1 = none).
struct Evaluation {
  int i = -1, b = 0, j = -1, c = 0;
};

double evaluate(Replica& r, const Evaluation& e, const LabelledBatches& data) {
  auto set = [&](int layer, int option, bool on) {
    if (layer < 0) return;
    const auto l = static_cast<std::size_t>(layer);
    r.weight[l]->active = on ? r.weight_index[l][static_cast<std::size_t>(option)] : -1;
    r.input[l]->active = on ? r.input_index[l][static_cast<std::size_t>(option)] : -1;
  };
  set(e.i, e.b, true);
  set(e.j, e.c, true);
  struct Reset {
    std::function<void()> fn;
    ~Reset() { fn(); }
  } reset{[&] {
    set(e.i, e.b, false);
    set(e.j, e.c, false);
  }};
  return mean_loss(*r.model, data);
}

uint64_t measurement_key(nn::Module& model, const Shape& image_shape, const std::vector<LayerOptions>& layers,
                         const LabelledBatches& sensitivity, std::span<const Tensor> calibration,
                         const CladoOptions& options) {
  detail::Fnv1a h;
  h.add("bitmix-clado-measurement 1");
  for (int64_t d : image_shape) h.add_u64(static_cast<uint64_t>(d));
  for (const NamedParameter& p : model.named_parameters()) {
    h.add(p.name);
    h.add(p.parameter->value.data(), p.parameter->value.bytes());
  }
  for (const NamedBuffer& b : model.named_buffers()) {
    h.add(b.name);
    h.add(b.buffer->value.data(), b.buffer->value.bytes());
  }
  for (const LayerOptions& l : layers) {
    h.add(l.name);
    for (const LayerBits& o : l.options) {
      h.add_u64(static_cast<uint64_t>(o.w_bits));
      h.add_u64(static_cast<uint64_t>(o.a_bits));
    }
  }
  for (const quant::CalibrationOptions* c : {&options.quantization.weights, &options.quantization.activations}) {
    h.add_u64(static_cast<uint64_t>(c->method));
    h.add_double(c->percentile);
    h.add_u64(static_cast<uint64_t>(c->histogram_bins));
    h.add_u64(static_cast<uint64_t>(c->mse_candidates));
  }
  h.add_u64(options.sensitivity_seed);
  for (std::size_t b = 0; b < sensitivity.images.size(); ++b) {
    h.add(sensitivity.images[b].data(), sensitivity.images[b].bytes());
    h.add(sensitivity.labels[b].data(), sensitivity.labels[b].size() * sizeof(int));
  }
  h.add_u64(calibration.size());
  for (const Tensor& t : calibration) h.add(t.data(), t.bytes());
  return h.value();
}

}  // namespace

CladoMeasurement measure_clado(const ModelFactory& make_model, const Shape& image_shape,
                               const std::vector<LayerOptions>& layers, const LabelledBatches& sensitivity,
                               std::span<const Tensor> calibration, const CladoOptions& options) {
  const auto start = Clock::now();
  sensitivity.validate("CLADO sensitivity set");
  if (calibration.empty()) throw ArgumentError("CLADO: no calibration batches (expected at least one)");
  if (options.save_every < 1) throw ArgumentError(fmt::format("CLADO: save_every {} must be positive", options.save_every));

  // The evaluation list: the float model, every single option, every pair.
  std::vector<Evaluation> list{{}};
  const int L = static_cast<int>(layers.size());
  std::vector<int64_t> offset(static_cast<std::size_t>(L) + 1, 0);
  for (int i = 0; i < L; ++i)
    offset[static_cast<std::size_t>(i) + 1] = offset[static_cast<std::size_t>(i)] + static_cast<int64_t>(layers[static_cast<std::size_t>(i)].options.size());
  for (int i = 0; i < L; ++i)
    for (int b = 0; b < static_cast<int>(layers[static_cast<std::size_t>(i)].options.size()); ++b) list.push_back({i, b, -1, 0});
  if (options.pairs)
    for (int i = 0; i < L; ++i)
      for (int j = i + 1; j < L; ++j)
        for (int b = 0; b < static_cast<int>(layers[static_cast<std::size_t>(i)].options.size()); ++b)
          for (int c = 0; c < static_cast<int>(layers[static_cast<std::size_t>(j)].options.size()); ++c)
            list.push_back({i, b, j, c});

  // Replicas, one per thread; the first also gives the key (before it is touched).
  const int threads = std::max(1, num_threads());
  std::vector<Replica> replicas;
  CladoMeasurement result;
  result.layers = layers;
  {
    std::unique_ptr<nn::Module> probe = make_model();
    if (!probe) throw ArgumentError("CLADO: the model factory returned no model");
    result.key = measurement_key(*probe, image_shape, layers, sensitivity, calibration, options);
  }
  std::map<int64_t, double> done;
  if (!options.cache.empty()) done = detail::load_clado_cache(options.cache, result.key);
  for (auto it = done.begin(); it != done.end();)
    it = it->first >= static_cast<int64_t>(list.size()) ? done.erase(it) : std::next(it);
  std::vector<int64_t> pending;
  for (int64_t e = 0; e < static_cast<int64_t>(list.size()); ++e)
    if (!done.count(e)) pending.push_back(e);
  result.evaluations = static_cast<int64_t>(list.size());
  result.from_cache = result.evaluations - static_cast<int64_t>(pending.size());

  if (!pending.empty()) {
    const int used = static_cast<int>(std::min<int64_t>(threads, static_cast<int64_t>(pending.size())));
    for (int t = 0; t < used; ++t)
      replicas.push_back(make_replica(make_model, image_shape, layers, options.quantization.weights));
    parallel_run([&](int t, int) { calibrate_inputs(replicas[static_cast<std::size_t>(t)], calibration, options.quantization.activations); },
                 used);
    const int64_t block = std::max<int64_t>(options.save_every, used);
    std::vector<double> values(static_cast<std::size_t>(block));
    for (int64_t first = 0; first < static_cast<int64_t>(pending.size()); first += block) {
      const int64_t count = std::min<int64_t>(block, static_cast<int64_t>(pending.size()) - first);
      parallel_run(
          [&](int t, int thread_count) {
            for (int64_t k = count * t / thread_count; k < count * (t + 1) / thread_count; ++k)
              values[static_cast<std::size_t>(k)] =
                  evaluate(replicas[static_cast<std::size_t>(t)], list[static_cast<std::size_t>(pending[static_cast<std::size_t>(first + k)])], sensitivity);
          },
          used);
      for (int64_t k = 0; k < count; ++k) done[pending[static_cast<std::size_t>(first + k)]] = values[static_cast<std::size_t>(k)];
      if (!options.cache.empty()) detail::save_clado_cache(options.cache, result.key, done);
      if (options.progress) options.progress(result.from_cache + first + count, result.evaluations);
    }
  } else if (options.progress) {
    options.progress(result.evaluations, result.evaluations);
  }

  // Loss increases.
  const int64_t n = offset[static_cast<std::size_t>(L)];
  result.base_loss = done.at(0);
  result.single.assign(static_cast<std::size_t>(n), 0.0);
  if (options.pairs) result.pair.assign(static_cast<std::size_t>(n * n), 0.0);
  for (std::size_t e = 1; e < list.size(); ++e) {
    const Evaluation& ev = list[e];
    const double delta = done.at(static_cast<int64_t>(e)) - result.base_loss;
    const int64_t r = offset[static_cast<std::size_t>(ev.i)] + ev.b;
    if (ev.j < 0) {
      result.single[static_cast<std::size_t>(r)] = delta;
    } else {
      const int64_t s = offset[static_cast<std::size_t>(ev.j)] + ev.c;
      result.pair[static_cast<std::size_t>(r * n + s)] = result.pair[static_cast<std::size_t>(s * n + r)] = delta;
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace bitmix::search
