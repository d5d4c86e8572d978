#include "bitmix/search/search.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <iostream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/support/resources.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/search/adaqat.hpp"
#include "bitmix/search/dnas.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "search/search_artifacts.hpp"

namespace bitmix::search {
namespace fs = std::filesystem;
using detail::human_cost;
using detail::StrengthRecord;
using json = nlohmann::ordered_json;

SearchMethod parse_search_method(std::string_view text) {
  if (text == "ebs") return SearchMethod::ebs;
  if (text == "dnas") return SearchMethod::dnas;
  if (text == "adaqat") return SearchMethod::adaqat;
  throw ArgumentError(fmt::format("--method '{}': expected ebs, dnas or adaqat", text));
}

std::string_view search_method_name(SearchMethod method) {
  return method == SearchMethod::ebs ? "ebs" : method == SearchMethod::dnas ? "dnas" : "adaqat";
}

namespace {

int64_t out_channels_of(const nn::LayerInfo& info) {
  return info.conv != nullptr ? info.conv->options().out_channels : info.linear->out_features();
}

bool is_pinned(std::size_t index, std::size_t count, const quant::BitPolicy& policy, int* bits) {
  if (index == 0 && policy.first_layer_bits) {
    *bits = *policy.first_layer_bits;
    return true;
  }
  if (index + 1 == count && policy.last_layer_bits) {
    *bits = *policy.last_layer_bits;
    return true;
  }
  return false;
}

nn::TransformSlots& slots_of(const nn::LayerInfo& info) {
  if (info.conv != nullptr) return *info.conv;
  if (info.linear != nullptr) return *info.linear;
  throw Error(fmt::format("layer {} is neither a convolution nor a linear layer", info.name));
}

// Strength logits: EBS mixtures' "strength", DNAS layers' "strength_w" / "strength_a".
bool is_strength(const std::string& name) {
  const auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".strength") || ends_with(".strength_w") || ends_with(".strength_a");
}

// The candidate index of `bits` in a mixture.
std::size_t index_of(const QuantizerMixture& mixture, int bits) {
  for (std::size_t i = 0; i < mixture.bits().size(); ++i)
    if (mixture.bits()[i] == bits) return i;
  throw Error(fmt::format("bitwidth {} is not a candidate of this mixture", bits));
}

std::string strip_candidate(const std::string& local_name) {
  const auto dot = local_name.find('.');
  return dot == std::string::npos ? local_name : local_name.substr(dot + 1);
}

// The fine-tuning checkpoint: the meta weights (for DNAS layers, the chosen weight copy),
// BatchNorm state, and the chosen candidates' quantizer state under the names a QAT model uses.
nn::Checkpoint finetune_checkpoint(nn::Module& model, const std::vector<SearchedLayer>& layers,
                                   const quant::BitConfig& config, const nn::RunMetadata& metadata) {
  nn::Checkpoint ck;
  nn::set_run_metadata(ck, metadata);
  auto searched = [](const std::string& name) {
    return name.find(".weight_transform.") != std::string::npos || name.find(".input_transform.") != std::string::npos ||
           name.find(".override.") != std::string::npos;
  };
  std::map<std::string, const Tensor*> chosen_weights;
  for (const SearchedLayer& layer : layers)
    if (layer.dnas != nullptr) {
      const int bits = config.at(layer.info.name).w_bits;
      std::size_t i = 0;
      while (layer.dnas->w_bits()[i] != bits) ++i;
      chosen_weights[layer.info.name + ".weight"] = &layer.dnas->weight_copy(i).value;
    }
  for (const NamedParameter& p : model.named_parameters()) {
    if (searched(p.name)) continue;
    const auto it = chosen_weights.find(p.name);
    ck.add(nn::CheckpointTensorKind::parameter, p.name, it != chosen_weights.end() ? *it->second : p.parameter->value);
  }
  for (const NamedBuffer& b : model.named_buffers())
    if (!searched(b.name)) ck.add(nn::CheckpointTensorKind::buffer, b.name, b.buffer->value);
  for (const SearchedLayer& layer : layers) {
    const quant::LayerBits& bits = config.at(layer.info.name);
    quant::Quantizer* weight_quantizer = nullptr;
    quant::Quantizer* input_quantizer = nullptr;
    if (layer.dnas != nullptr) {
      std::size_t i = 0, j = 0;
      while (layer.dnas->w_bits()[i] != bits.w_bits) ++i;
      while (layer.dnas->a_bits()[j] != bits.a_bits) ++j;
      weight_quantizer = &layer.dnas->weight_quantizer(i);
      input_quantizer = &layer.dnas->input_quantizer(j);
    } else {
      weight_quantizer = &layer.weights->quantizer(index_of(*layer.weights, bits.w_bits));
      input_quantizer = &layer.inputs->quantizer(index_of(*layer.inputs, bits.a_bits));
    }
    for (const auto& [q, prefix] : {std::pair{weight_quantizer, "weight_transform"}, std::pair{input_quantizer, "input_transform"}}) {
      for (Parameter* p : q->parameters())
        ck.add(nn::CheckpointTensorKind::parameter,
               fmt::format("{}.{}.{}", layer.info.name, prefix, strip_candidate(p->name)), p->value);
      for (Buffer* b : q->buffers())
        ck.add(nn::CheckpointTensorKind::buffer, fmt::format("{}.{}.{}", layer.info.name, prefix, strip_candidate(b->name)),
               b->value);
    }
  }
  return ck;
}

}  // namespace

const std::vector<int>& SearchedLayer::w_bits() const { return dnas != nullptr ? dnas->w_bits() : weights->bits(); }
const std::vector<int>& SearchedLayer::a_bits() const { return dnas != nullptr ? dnas->a_bits() : inputs->bits(); }

LayerProbabilities SearchedLayer::probabilities() const {
  if (pinned) return {};
  if (dnas != nullptr) return {dnas->w_probabilities(), dnas->a_probabilities()};
  return {weights->probabilities(), inputs->probabilities()};
}

void SearchedLayer::add_probability_gradient(std::span<const double> grad_w, std::span<const double> grad_a) {
  if (dnas != nullptr) {
    dnas->add_probability_gradient(grad_w, grad_a);
  } else {
    weights->add_probability_gradient(grad_w);
    inputs->add_probability_gradient(grad_a);
  }
}

std::vector<SearchedLayer> attach_search(nn::Module& model, const Shape& image_shape, const SearchOptions& options) {
  validate_candidates(options.candidates);
  const std::vector<nn::LayerInfo> infos = model.quantizable_layers(image_shape);
  if (infos.empty()) throw ArgumentError("the model has no quantizable layers to search");
  // Check everything before changing the model.
  for (std::size_t i = 0; i < infos.size(); ++i) {
    int pin = 8;
    const bool pinned = is_pinned(i, infos.size(), options.policy, &pin);
    if (options.method == SearchMethod::dnas && !pinned && infos[i].conv == nullptr)
      throw ArgumentError(fmt::format("layer {}: the DNAS baseline searches convolutions only; pin this layer",
                                      infos[i].name));
    const nn::TransformSlots& slots = slots_of(infos[i]);
    if (slots.weight_transform() != nullptr || slots.input_transform() != nullptr ||
        (infos[i].conv != nullptr && infos[i].conv->compute_override() != nullptr))
      throw ArgumentError(fmt::format("layer {} already has quantizers or a search attached", infos[i].name));
  }
  std::vector<SearchedLayer> layers;
  for (std::size_t i = 0; i < infos.size(); ++i) {
    int pin = 8;
    const bool pinned = is_pinned(i, infos.size(), options.policy, &pin);
    std::vector<int> w_bits = pinned ? std::vector<int>{pin} : options.candidates.w_bits;
    std::vector<int> a_bits = pinned ? std::vector<int>{pin} : options.candidates.a_bits;
    const quant::QuantizerSpec w_spec =
        quant::weight_spec(options.w_quant, w_bits[0], quant::Granularity::per_channel, out_channels_of(infos[i]));
    const quant::QuantizerSpec a_spec = quant::activation_spec(options.a_quant, a_bits[0], /*signed=*/i == 0);
    SearchedLayer layer{infos[i], pinned, nullptr, nullptr, nullptr};
    if (options.method == SearchMethod::dnas && !pinned) {
      auto dnas = std::make_unique<DnasConvolution>(*infos[i].conv, w_spec, w_bits, a_spec, a_bits);
      layer.dnas = dnas.get();
      infos[i].conv->set_compute_override(std::move(dnas));
    } else {
      auto weights = std::make_unique<QuantizerMixture>(w_spec, w_bits);
      auto inputs = std::make_unique<QuantizerMixture>(a_spec, a_bits);
      layer.weights = weights.get();
      layer.inputs = inputs.get();
      nn::TransformSlots& slots = slots_of(infos[i]);
      slots.set_weight_transform(std::move(weights));
      slots.set_input_transform(std::move(inputs));
    }
    layers.push_back(std::move(layer));
  }
  model.train(model.training());  // forward the mode to the new transforms
  return layers;
}

std::vector<LayerInfo> cost_layers(const std::vector<SearchedLayer>& layers) {
  std::vector<LayerInfo> result;
  for (const SearchedLayer& l : layers) {
    LayerInfo info{l.info.name, l.info.macs_per_image, l.info.weight_count, l.pinned, 8, 8};
    if (l.pinned) {
      info.pinned_w_bits = l.w_bits()[0];
      info.pinned_a_bits = l.a_bits()[0];
    }
    result.push_back(info);
  }
  return result;
}

std::vector<LayerProbabilities> layer_probabilities(const std::vector<SearchedLayer>& layers) {
  std::vector<LayerProbabilities> result;
  for (const SearchedLayer& l : layers) result.push_back(l.probabilities());
  return result;
}

SearchResult run_search(nn::Module& model, const data::DatasetSplits& data, const SearchOptions& requested,
                        const nn::RunMetadata& run) {
  const bool adaqat = requested.method == SearchMethod::adaqat;
  SearchOptions options = requested;
  if (adaqat) {
    if (options.gumbel || options.bilevel)
      throw ArgumentError("--gumbel and --bilevel apply to --method ebs/dnas (AdaQAT has no strengths)");
    // The relaxed bitwidths and their Adam state are not in the supernet checkpoint, so a resumed
    // AdaQAT search could not continue bit-exactly: refuse it rather than restart them silently.
    if (!options.resume.empty())
      throw ArgumentError("--resume applies to --method ebs/dnas (an AdaQAT search keeps its relaxed bitwidths "
                          "only in memory; rerun it from --init)");
    // AdaQAT's rounded bits may take any value of its range: every one is a mixture candidate.
    options.candidates = {{}, {}};
    for (int b = options.adaqat.min_bits; b <= options.adaqat.max_bits; ++b) {
      options.candidates.w_bits.push_back(b);
      options.candidates.a_bits.push_back(b);
    }
  }
  if (options.method == SearchMethod::dnas && options.gumbel)
    throw ArgumentError("--gumbel applies to --method ebs only (the DNAS baseline uses a plain softmax)");
  if (options.out_dir.empty()) throw ArgumentError("the search needs an output directory (--out)");
  if (!(options.penalty_weight >= 0)) throw ArgumentError("--penalty must be >= 0");
  if (!(options.strength_lr > 0)) throw ArgumentError("--strength-lr must be > 0");
  if (options.bilevel && !(options.holdout_fraction > 0 && options.holdout_fraction < 1))
    throw ArgumentError(fmt::format("--holdout {}: expected a fraction in (0, 1)", options.holdout_fraction));
  Stopwatch watch;
  const Shape image_shape{data.train.channels, data.train.height, data.train.width};
  std::vector<SearchedLayer> layers = attach_search(model, image_shape, options);

  // Cost model and budget, checked before any training.
  LatencyTable latency;
  const bool latency_budget = options.budget.kind == Budget::Kind::latency_ms;
  if (latency_budget) {
    if (options.latency_table.empty())
      throw ArgumentError("--budget-latency-ms needs --latency-table FILE (write one with `bitmix latency`)");
    latency = LatencyTable::load(options.latency_table);
  }
  const std::vector<LayerInfo> infos = cost_layers(layers);
  if (latency_budget) latency.require(infos, options.candidates.w_bits, options.candidates.a_bits);
  const ResolvedBudget budget = resolve_budget(options.budget, infos);
  const CostModel cost_model(budget.kind, infos, latency_budget ? &latency : nullptr);
  {
    std::vector<LayerBits> lowest, highest;
    for (const LayerInfo& l : infos) {
      lowest.push_back(l.pinned ? LayerBits{l.pinned_w_bits, l.pinned_a_bits}
                                : LayerBits{options.candidates.w_bits.front(), options.candidates.a_bits.front()});
      highest.push_back(l.pinned ? LayerBits{l.pinned_w_bits, l.pinned_a_bits}
                                 : LayerBits{options.candidates.w_bits.back(), options.candidates.a_bits.back()});
    }
    const double lo = cost_model.total(lowest), hi = cost_model.total(highest);
    if (budget.value < lo)
      throw ArgumentError(fmt::format("budget {} = {} is below the cheapest configuration of these candidates ({})",
                                      options.budget.describe(), human_cost(budget.kind, budget.value),
                                      human_cost(budget.kind, lo)));
    if (budget.value >= hi)
      std::cerr << fmt::format("note: budget {} exceeds the cost of the highest candidates ({}); the search "
                               "cannot miss it\n",
                               human_cost(budget.kind, budget.value), human_cost(budget.kind, hi));
  }

  // Data: with bilevel optimization the strengths see a held-out part of the training set.
  const data::Dataset* train_set = &data.train;
  data::Dataset weight_part, holdout_part;
  if (options.bilevel) {
    const int64_t holdout = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(static_cast<double>(data.train.size()) * options.holdout_fraction)));
    weight_part = data.train.slice(0, data.train.size() - holdout);
    holdout_part = data.train.slice(data.train.size() - holdout, holdout);
    train_set = &weight_part;
  }

  nn::TrainerOptions train_options = options.train;
  train_options.out_dir = options.out_dir / "supernet";
  fs::create_directories(train_options.out_dir);
  const std::string search_description =
      fmt::format("{} search, budget {}, candidates W{{{}}} A{{{}}}", search_method_name(options.method),
                  options.budget.describe(), fmt::join(options.candidates.w_bits, ","),
                  fmt::join(options.candidates.a_bits, ","));
  nn::Trainer trainer(model, *train_set, &data.test, train_options);
  // Who wrote the checkpoints: the caller's provenance, or this process's when it gave none.
  const nn::Provenance provenance =
      run.provenance.producer.empty() ? nn::Provenance::current("search", {}, train_options.seed) : run.provenance;
  {
    // The supernet's own (resumable) checkpoint: the searched model, not a zoo model at any
    // BitConfig.
    nn::RunMetadata supernet = run;
    supernet.provenance = provenance;
    supernet.provenance.producer = "search-supernet";
    supernet.provenance.notes = search_description;
    supernet.quantization.reset();
    trainer.set_run_metadata(std::move(supernet));
  }

  // Strengths: their own Adam group at a constant rate.
  std::vector<NamedParameter> strengths;
  for (const NamedParameter& p : model.named_parameters())
    if (is_strength(p.name)) strengths.push_back(p);
  nn::LrScheduleOptions strength_schedule;
  strength_schedule.kind = nn::ScheduleKind::constant;
  strength_schedule.base_lr = options.strength_lr;
  strength_schedule.steps_per_epoch = trainer.batches_per_epoch();
  strength_schedule.total_steps = trainer.batches_per_epoch() * train_options.epochs;
  trainer.add_parameter_group("strengths", std::make_unique<nn::Adam>(strengths, nn::AdamOptions{}),
                              nn::LrSchedule(strength_schedule));

  // The noise of step s comes from its own stream (reseeded by the step hook), so a resumed
  // search draws what an uninterrupted one would.
  const Rng gumbel_streams = Rng(train_options.seed).fork(0x6b6b);
  Rng gumbel_rng = gumbel_streams;
  auto set_temperature = [&](int64_t step) {
    if (!options.gumbel) return;
    const double total = static_cast<double>(std::max<int64_t>(1, strength_schedule.total_steps));
    const double t = std::min(1.0, static_cast<double>(step) / total);
    const double tau = options.temperature_start * std::pow(options.temperature_end / options.temperature_start, t);
    for (SearchedLayer& l : layers) {
      if (l.pinned || l.weights == nullptr) continue;
      l.weights->set_temperature(tau);
      l.inputs->set_temperature(tau);
    }
  };
  if (options.gumbel) {
    for (SearchedLayer& l : layers) {
      if (l.pinned || l.weights == nullptr) continue;
      l.weights->set_gumbel(&gumbel_rng);
      l.inputs->set_gumbel(&gumbel_rng);
    }
    set_temperature(0);
  }

  // Bilevel: the held-out batches that step the strengths.
  std::unique_ptr<data::BatchLoader> holdout_loader;
  data::Batch holdout_batch;
  if (options.bilevel) {
    data::LoaderOptions lo;
    lo.batch_size = train_options.batch_size;
    lo.shuffle = true;
    lo.seed = train_options.seed ^ 0x401d;
    lo.normalization = trainer.normalization();
    holdout_loader = std::make_unique<data::BatchLoader>(holdout_part, lo);
  }
  std::vector<std::pair<std::string, Tensor>> saved_grads;

  const int64_t warmup_steps =
      static_cast<int64_t>(std::llround(options.strength_warmup_epochs * static_cast<float>(trainer.batches_per_epoch())));
  trainer.set_step_hook([&](int64_t step) {
    set_temperature(step);
    if (options.gumbel) gumbel_rng = gumbel_streams.fork(static_cast<uint64_t>(step));
  });
  int holdout_epoch = -1;
  std::unique_ptr<AdaQat> ada;
  if (adaqat) {
    // The relaxed bits replace the strengths (which stay one-hot, their gradients unused).
    ada = std::make_unique<AdaQat>(layers, cost_model, budget.value, options.penalty_weight, options.adaqat);
    trainer.set_extra_loss([&]() -> double {
      for (const NamedParameter& p : strengths) p.parameter->grad.zero();
      const int64_t step = trainer.steps_done();
      const data::Batch* batch = trainer.current_batch();
      if (step < warmup_steps || step % options.adaqat.every != 0 || batch == nullptr) return ada->penalty().value;
      return ada->step(model, *batch, train_options.label_smoothing);
    });
  } else trainer.set_extra_loss([&]() -> double {
    const int64_t step = trainer.steps_done();
    if (step < warmup_steps) {
      for (const NamedParameter& p : strengths) p.parameter->grad.zero();
      return 0.0;
    }
    if (options.bilevel) {
      // First-order bilevel: the strengths' gradient comes from a held-out batch; the weights
      // keep the gradient of their own batch.
      saved_grads.clear();
      for (const NamedParameter& p : model.named_parameters()) saved_grads.emplace_back(p.name, p.parameter->grad);
      model.zero_grad();
      const int64_t batches = holdout_loader->num_batches();
      const int64_t index = step % batches;
      if (holdout_epoch != static_cast<int>(step / batches)) {  // (also the first step after a resume)
        holdout_epoch = static_cast<int>(step / batches);
        holdout_loader->set_epoch(holdout_epoch);
      }
      holdout_loader->fill_batch(index, holdout_batch);
      const Tensor& logits = model.forward(holdout_batch.images);
      Tensor grad_logits;
      nn::softmax_cross_entropy(logits, holdout_batch.labels, train_options.label_smoothing, &grad_logits);
      model.backward(grad_logits);
      std::size_t k = 0;
      for (const NamedParameter& p : model.named_parameters()) {
        if (!is_strength(p.name)) p.parameter->grad = std::move(saved_grads[k].second);
        ++k;
      }
    }
    const std::vector<LayerProbabilities> probs = layer_probabilities(layers);
    const ExpectedCost expected = expected_cost(cost_model, options.candidates, probs);
    const Penalty penalty = budget_penalty(expected.value, budget.value, options.penalty_weight);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (layers[l].pinned) continue;
      std::vector<double> gw = expected.gradient[l].w, ga = expected.gradient[l].a;
      for (double& g : gw) g *= penalty.d_cost;
      for (double& g : ga) g *= penalty.d_cost;
      layers[l].add_probability_gradient(gw, ga);
    }
    return penalty.value;
  });

  std::vector<StrengthRecord> records;
  std::vector<detail::RelaxedBitsRecord> relaxed;
  auto record = [&](int epoch) {
    const std::vector<LayerProbabilities> probs = layer_probabilities(layers);
    records.push_back({epoch, probs, expected_cost(cost_model, options.candidates, probs).value});
    write_file_atomic(options.out_dir / "strengths.csv",
                      detail::strengths_csv(layers, options.candidates, records, cost_model));
    write_file_atomic(train_options.out_dir / "strengths.json", detail::strength_records_json(records));
    if (!ada) return;
    relaxed.push_back({epoch, ada->relaxed_w(), ada->relaxed_a(), ada->bits(), cost_model.total(ada->bits())});
    write_file_atomic(options.out_dir / "relaxed_bits.csv", detail::relaxed_bits_csv(layers, relaxed));
  };
  if (options.resume.empty()) {
    record(0);
  } else {
    // The supernet's checkpoint: weights, strengths, quantizer state, both optimizers and the
    // step, mid-epoch if the search was interrupted.
    trainer.resume(options.resume);
    records = detail::read_strength_records(train_options.out_dir / "strengths.json", trainer.epochs_done(),
                                            layers.size(), options.candidates);
    std::cerr << fmt::format("resumed the search from {} at epoch {} (step {})\n", options.resume.string(),
                             trainer.epochs_done(), trainer.steps_done());
  }
  trainer.add_epoch_callback([&](const nn::EpochStats& stats) {
    record(stats.epoch);
    const double e = records.back().expected_cost;
    std::cerr << fmt::format("search epoch {}: E[cost] {} = {:.1f}% of the budget; test acc {:.2f}%\n", stats.epoch,
                             human_cost(budget.kind, e), 100.0 * e / budget.value, 100.0 * stats.test_accuracy);
  });

  SearchResult result;
  result.history = trainer.fit();
  result.budget = budget;

  // Selection and artifacts.
  const std::vector<LayerProbabilities> probs = ada ? ada->selection_probabilities() : layer_probabilities(layers);
  result.selection = select_bits(cost_model, options.candidates, probs, budget.value, SelectionOptions{options.fill});
  quant::BitConfig& config = result.config;
  config.model = options.model_name;
  config.policy = options.policy;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    quant::LayerBits lb;
    lb.name = layers[l].info.name;
    lb.w_bits = result.selection.bits[l].w_bits;
    lb.a_bits = result.selection.bits[l].a_bits;
    lb.w_quant = options.w_quant;
    lb.a_quant = options.a_quant;
    lb.w_granularity = quant::Granularity::per_channel;
    lb.macs = layers[l].info.macs_per_image;
    lb.params = layers[l].info.weight_count;
    config.layers.push_back(lb);
  }
  config.totals = config.compute_totals();
  config.notes = fmt::format("{} search, budget {} ({}), selected {} ({:.2f}% of the budget), {} epochs, seed {}",
                             search_method_name(options.method), options.budget.describe(),
                             human_cost(budget.kind, budget.value), human_cost(budget.kind, result.selection.cost),
                             100.0 * result.selection.cost / budget.value, train_options.epochs, train_options.seed);
  config.save(options.out_dir / "bits.json");

  // The fine-tuning checkpoint carries the BitConfig itself (bits.json is a copy for users).
  nn::RunMetadata chosen = trainer.run_metadata();
  chosen.training.reset();
  chosen.provenance = provenance;
  chosen.provenance.producer = "search";
  chosen.provenance.notes = search_description;
  chosen.quantization = nn::QuantizationRecipe{config.notes, config};
  nn::save_checkpoint(options.out_dir / "model.ckpt", finetune_checkpoint(model, layers, config, chosen));
  write_file_atomic(options.out_dir / "bits.svg",
                    detail::bits_svg(config, fmt::format("{}: bits per layer ({} budget {})", options.model_name,
                                                 search_method_name(options.method), options.budget.describe())));
  if (ada)
    write_file_atomic(options.out_dir / "relaxed_bits.svg", detail::relaxed_bits_svg(layers, relaxed));
  else
    write_file_atomic(options.out_dir / "strengths.svg", detail::strengths_svg(layers, options.candidates, records));

  result.seconds = watch.seconds();
  result.peak_rss_bytes = peak_rss_bytes();
  const double bitops = total_bitops(infos, result.selection.bits);
  const double weight_bits = total_weight_bits(infos, result.selection.bits);
  json summary = {
      {"method", search_method_name(options.method)},
      {"model", options.model_name},
      {"budget", {{"request", options.budget.describe()}, {"kind", cost_kind_name(budget.kind)}, {"value", budget.value}}},
      {"selected", {{"cost", result.selection.cost},
                    {"fraction_of_budget", result.selection.cost / budget.value},
                    {"argmax_cost", result.selection.argmax_cost},
                    {"lowered", result.selection.lowered},
                    {"raised", result.selection.raised},
                    {"bitops", bitops},
                    {"weight_kib", weight_bits / 8.0 / 1024.0}}},
      {"candidates", {{"w_bits", options.candidates.w_bits}, {"a_bits", options.candidates.a_bits}}},
      {"penalty_weight", options.penalty_weight},
      {"strength_lr", options.strength_lr},
      {"gumbel", options.gumbel},
      {"bilevel", options.bilevel},
      {"adaqat", adaqat ? json{{"init_bits", options.adaqat.init_bits}, {"min_bits", options.adaqat.min_bits},
                               {"max_bits", options.adaqat.max_bits}, {"bit_lr", options.adaqat.bit_lr},
                               {"every", options.adaqat.every}}
                        : json(nullptr)},
      {"epochs", train_options.epochs},
      {"seconds", result.seconds},
      {"peak_rss_bytes", result.peak_rss_bytes},
      {"final_supernet_test_accuracy", result.history.empty() ? 0.0 : result.history.back().test_accuracy},
      {"images_per_second", result.history.empty() ? 0.0 : result.history.back().images_per_second}};
  write_file_atomic(options.out_dir / "summary.json", summary.dump(2) + "\n");
  return result;
}

}  // namespace bitmix::search
