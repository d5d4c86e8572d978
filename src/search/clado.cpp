// CLADO's measurement engine: single-layer and pairwise loss increases from forward passes.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
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

// The model as a chain of modules run one after another: Sequentials (and their subclasses such
// as ResNet, which keep Sequential's forward) are expanded, so a ResNet becomes conv1, bn1, each
// BasicBlock, avgpool, fc. An evaluation starts at the element holding the first quantized
// layer from the activations cached there, and everything before it is never recomputed.
struct Chain {
  std::vector<nn::Module*> elements;
  std::vector<int> element_of_layer;  // per layer
};

void flatten(nn::Module& m, std::vector<nn::Module*>& out) {
  if (auto* seq = dynamic_cast<nn::Sequential*>(&m)) {
    for (const auto& child : seq->children()) flatten(*child.second, out);
    return;
  }
  out.push_back(&m);
}

Chain make_chain(nn::Module& model, const std::vector<LayerOptions>& layers) {
  Chain chain;
  flatten(model, chain.elements);
  for (const LayerOptions& l : layers) {
    int found = -1;
    for (std::size_t e = 0; e < chain.elements.size() && found < 0; ++e) {
      const std::string& name = chain.elements[e]->name();
      if (name.empty() || l.name == name || (l.name.size() > name.size() && l.name.compare(0, name.size(), name) == 0 &&
                             l.name[name.size()] == '.'))
        found = static_cast<int>(e);
    }
    if (found < 0) throw Error(fmt::format("CLADO: layer '{}' is in no module of the model's chain", l.name));
    if (!chain.element_of_layer.empty() && found < chain.element_of_layer.back())
      throw Error(fmt::format("CLADO: layer '{}' runs before the layer listed ahead of it", l.name));
    chain.element_of_layer.push_back(found);
  }
  return chain;
}

// Runs elements [from, to) on every batch, in place.
void advance(const Chain& chain, std::vector<Tensor>& acts, int from, int to) {
  if (from >= to) return;
  for (Tensor& x : acts) {
    const Tensor* y = &x;
    for (int e = from; e < to; ++e) y = &chain.elements[static_cast<std::size_t>(e)]->forward(*y);
    Tensor out = *y;
    x = std::move(out);
  }
}

// Mean cross-entropy of the rest of the chain from element `from` on `acts`.
double loss_from(const Chain& chain, const std::vector<Tensor>& acts, int from, const LabelledBatches& data) {
  double total = 0;
  const int end = static_cast<int>(chain.elements.size());
  for (std::size_t b = 0; b < acts.size(); ++b) {
    const Tensor* y = &acts[b];
    for (int e = from; e < end; ++e) y = &chain.elements[static_cast<std::size_t>(e)]->forward(*y);
    const nn::CrossEntropyResult ce = nn::softmax_cross_entropy(*y, data.labels[b], 0.0f, nullptr);
    total += ce.loss * static_cast<double>(data.labels[b].size());
  }
  return total / static_cast<double>(data.count());
}

void activate(Replica& r, int layer, int option) {
  const auto l = static_cast<std::size_t>(layer);
  r.weight[l]->active = option < 0 ? -1 : r.weight_index[l][static_cast<std::size_t>(option)];
  r.input[l]->active = option < 0 ? -1 : r.input_index[l][static_cast<std::size_t>(option)];
}

// The evaluations that share a prefix: layer i at option b alone and with every later (j, c);
// i < 0 is the float model alone. Their indices in the canonical list.
struct Group {
  int i = -1, b = 0;
  int64_t single = 0;                 // evaluation index of (i, b) alone (or of the float model)
  std::vector<int64_t> pairs;         // (j, c) for j > i in order, K_j entries per j
};

// Evaluates the group's pending evaluations on one replica; appends (index, mean loss).
void run_group(Replica& r, const Chain& chain, const std::vector<LayerOptions>& layers, const Group& g,
               const std::vector<bool>& pending, const LabelledBatches& data,
               std::vector<std::pair<int64_t, double>>& results) {
  if (g.i < 0) {
    if (pending[static_cast<std::size_t>(g.single)]) results.emplace_back(g.single, loss_from(chain, data.images, 0, data));
    return;
  }
  std::vector<Tensor> acts = data.images;
  int at = chain.element_of_layer[static_cast<std::size_t>(g.i)];
  advance(chain, acts, 0, at);  // float up to the element holding layer i
  struct Off {
    Replica& r;
    int i;
    ~Off() { activate(r, i, -1); }
  } off{r, g.i};
  activate(r, g.i, g.b);
  if (pending[static_cast<std::size_t>(g.single)]) results.emplace_back(g.single, loss_from(chain, acts, at, data));
  std::size_t k = 0;
  for (int j = g.i + 1; j < static_cast<int>(layers.size()) && !g.pairs.empty(); ++j) {
    const std::size_t kj = layers[static_cast<std::size_t>(j)].options.size();
    bool any = false;
    for (std::size_t c = 0; c < kj; ++c) any = any || pending[static_cast<std::size_t>(g.pairs[k + c])];
    if (any) {
      const int target = chain.element_of_layer[static_cast<std::size_t>(j)];
      advance(chain, acts, at, target);  // only layer i quantized on the way
      at = target;
      for (std::size_t c = 0; c < kj; ++c) {
        const int64_t index = g.pairs[k + c];
        if (!pending[static_cast<std::size_t>(index)]) continue;
        activate(r, j, static_cast<int>(c));
        const double v = loss_from(chain, acts, at, data);
        activate(r, j, -1);
        results.emplace_back(index, v);
      }
    }
    k += kj;
  }
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
  const int L = static_cast<int>(layers.size());
  if (L == 0) throw ArgumentError("CLADO: no layers");

  // The canonical evaluation list (its indices key the cache): the float model, every single
  // option in layer order, then every pair (i < j) by i, j, b, c. Grouped by (i, b).
  std::vector<int64_t> offset(static_cast<std::size_t>(L) + 1, 0);
  for (int i = 0; i < L; ++i)
    offset[static_cast<std::size_t>(i) + 1] =
        offset[static_cast<std::size_t>(i)] + static_cast<int64_t>(layers[static_cast<std::size_t>(i)].options.size());
  const int64_t n = offset[static_cast<std::size_t>(L)];
  auto K = [&](int i) { return static_cast<int>(layers[static_cast<std::size_t>(i)].options.size()); };
  std::vector<Group> groups{Group{}};
  for (int i = 0; i < L; ++i)
    for (int b = 0; b < K(i); ++b) groups.push_back({i, b, 1 + offset[static_cast<std::size_t>(i)] + b, {}});
  struct PairRef {
    int64_t r, s;
  };
  std::vector<PairRef> pair_of;  // per pair evaluation (index - 1 - n)
  int64_t next = 1 + n;
  if (options.pairs)
    for (int i = 0; i < L; ++i)
      for (int j = i + 1; j < L; ++j)
        for (int b = 0; b < K(i); ++b)
          for (int c = 0; c < K(j); ++c) {
            groups[static_cast<std::size_t>(1 + offset[static_cast<std::size_t>(i)] + b)].pairs.push_back(next++);
            pair_of.push_back({offset[static_cast<std::size_t>(i)] + b, offset[static_cast<std::size_t>(j)] + c});
          }
  // Within a group the pairs must run in (j, c) order: they were appended by j then c.
  const int64_t total = next;

  CladoMeasurement result;
  result.layers = layers;
  {
    std::unique_ptr<nn::Module> probe = make_model();
    if (!probe) throw ArgumentError("CLADO: the model factory returned no model");
    result.key = measurement_key(*probe, image_shape, layers, sensitivity, calibration, options);
  }
  std::map<int64_t, double> done;
  if (!options.cache.empty()) done = detail::load_clado_cache(options.cache, result.key);
  // Entries beyond this measurement's list (pairs of a full run read by a singles-only one) are
  // kept in the file but not used.
  std::vector<bool> pending(static_cast<std::size_t>(total), true);
  int64_t cached = 0;
  for (const auto& entry : done)
    if (entry.first < total) {
      pending[static_cast<std::size_t>(entry.first)] = false;
      ++cached;
    }
  std::vector<std::size_t> todo;  // groups with something left
  for (std::size_t g = 0; g < groups.size(); ++g) {
    bool any = pending[static_cast<std::size_t>(groups[g].single)];
    for (int64_t e : groups[g].pairs) any = any || pending[static_cast<std::size_t>(e)];
    if (any) todo.push_back(g);
  }
  result.evaluations = total;
  result.from_cache = cached;

  if (!todo.empty()) {
    const int used = static_cast<int>(std::min<int64_t>(std::max(1, num_threads()), static_cast<int64_t>(todo.size())));
    std::vector<Replica> replicas;
    std::vector<Chain> chains;
    for (int t = 0; t < used; ++t) {
      replicas.push_back(make_replica(make_model, image_shape, layers, options.quantization.weights));
      chains.push_back(make_chain(*replicas.back().model, layers));
    }
    parallel_run([&](int t, int) {
      calibrate_inputs(replicas[static_cast<std::size_t>(t)], calibration, options.quantization.activations);
    }, used);
    // Rounds of groups, taken by the threads in turn; the cache is written after every round.
    const std::size_t round = static_cast<std::size_t>(2 * used);
    std::vector<std::vector<std::pair<int64_t, double>>> results(static_cast<std::size_t>(used));
    for (std::size_t first = 0; first < todo.size(); first += round) {
      const std::size_t count = std::min(round, todo.size() - first);
      std::atomic<std::size_t> cursor{0};
      parallel_run(
          [&](int t, int) {
            for (std::size_t k = cursor++; k < count; k = cursor++)
              run_group(replicas[static_cast<std::size_t>(t)], chains[static_cast<std::size_t>(t)], layers,
                        groups[todo[first + k]], pending, sensitivity, results[static_cast<std::size_t>(t)]);
          },
          used);
      for (auto& list : results) {
        for (const auto& [index, value] : list) {
          done[index] = value;
          pending[static_cast<std::size_t>(index)] = false;
        }
        list.clear();
      }
      if (!options.cache.empty()) detail::save_clado_cache(options.cache, result.key, done);
      if (options.progress) {
        int64_t finished = 0;
        for (bool p : pending) finished += p ? 0 : 1;
        options.progress(finished, total);
      }
    }
  } else if (options.progress) {
    options.progress(total, total);
  }

  // Loss increases.
  result.base_loss = done.at(0);
  result.single.assign(static_cast<std::size_t>(n), 0.0);
  for (int64_t r = 0; r < n; ++r) result.single[static_cast<std::size_t>(r)] = done.at(1 + r) - result.base_loss;
  if (options.pairs) {
    result.pair.assign(static_cast<std::size_t>(n * n), 0.0);
    for (std::size_t p = 0; p < pair_of.size(); ++p) {
      const double delta = done.at(1 + n + static_cast<int64_t>(p)) - result.base_loss;
      result.pair[static_cast<std::size_t>(pair_of[p].r * n + pair_of[p].s)] =
          result.pair[static_cast<std::size_t>(pair_of[p].s * n + pair_of[p].r)] = delta;
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace bitmix::search
