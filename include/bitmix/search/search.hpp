#pragma once
// Bitwidth search over a trained model: EBS (shared meta weights, one convolution per layer),
// the DNAS-style baseline or AdaQAT (relaxed bits per layer, bitmix/search/adaqat.hpp), steered onto a budget, then the selection of one (w_bits, a_bits)
// per layer and the artifacts the rest of the pipeline reads (docs/search.md):
//
//   DIR/bits.json        the BitConfig (per layer: name, w_bits, a_bits, MACs, params; totals)
//   DIR/model.ckpt       the meta weights with the chosen candidates' quantizer state, named as a
//                        QAT model expects, and the BitConfig in its metadata:
//                        `bitmix train --bits DIR/bits.json --init DIR/model.ckpt`
//   DIR/strengths.csv    per epoch and layer: probabilities, expected bits and expected cost
//   DIR/bits.svg, DIR/strengths.svg (AdaQAT: DIR/relaxed_bits.csv/.svg), DIR/summary.json
//   DIR/supernet/        the search run's own log.csv, summary.json and resumable checkpoint
//                        (model.ckpt; strengths.json, the strength records, goes with it)

#include <cstdint>
#include <filesystem>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/data/dataset.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/trainer.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/search/adaqat.hpp"
#include "bitmix/search/cost.hpp"
#include "bitmix/search/mixture.hpp"
#include "bitmix/search/selection.hpp"

namespace bitmix::search {

enum class SearchMethod { ebs, dnas, adaqat };
SearchMethod parse_search_method(std::string_view text);  // "ebs" | "dnas" | "adaqat"
std::string_view search_method_name(SearchMethod method);

struct SearchOptions {
  SearchMethod method = SearchMethod::ebs;
  Candidates candidates{{2, 3, 4, 5}, {2, 3, 4, 5}};
  quant::QuantizerKind w_quant = quant::QuantizerKind::lsq;
  quant::QuantizerKind a_quant = quant::QuantizerKind::lsq;
  quant::BitPolicy policy;  // first conv / last linear pinned at 8 bits unless changed

  Budget budget{Budget::Kind::avg_bits, 3.0};
  std::filesystem::path latency_table;  // required for a latency budget
  double penalty_weight = 2.0;          // λ of the budget penalty λ·ln(E[C]/B)²
  bool fill = true;                     // selection spends leftover budget

  // Strengths: Adam at this rate (constant), frozen for the first `strength_warmup_epochs`.
  float strength_lr = 0.01f;
  float strength_warmup_epochs = 0.0f;
  bool gumbel = false;                  // Gumbel-softmax with τ annealed exponentially
  double temperature_start = 5.0, temperature_end = 0.5;
  // First-order bilevel: strengths stepped on batches of a held-out part of the training set.
  bool bilevel = false;
  double holdout_fraction = 0.1;

  // --method adaqat: relaxed bits per layer (candidates become min_bits..max_bits for both).
  AdaQatOptions adaqat;

  nn::TrainerOptions train;             // weights (and quantizer steps): epochs, SGD, lr, ...
  std::string model_name = "resnet20";
  std::filesystem::path out_dir;
  // Continue an interrupted search from its supernet checkpoint (out_dir/supernet/model.ckpt),
  // with the same options: the result is that of an uninterrupted search.
  std::filesystem::path resume;
};

class DnasConvolution;

// One quantizable layer of the searched model: EBS mixtures on its weight and input (also used,
// with one candidate, for pinned layers), or a DNAS override (searched layers of --method dnas).
// The objects are owned by the layer.
struct SearchedLayer {
  nn::LayerInfo info;
  bool pinned = false;
  QuantizerMixture* weights = nullptr;
  QuantizerMixture* inputs = nullptr;
  DnasConvolution* dnas = nullptr;

  const std::vector<int>& w_bits() const;
  const std::vector<int>& a_bits() const;
  LayerProbabilities probabilities() const;
  void add_probability_gradient(std::span<const double> grad_w, std::span<const double> grad_a);
};

// Attaches the search to every quantizable layer of `model`: EBS mixtures, or for
// SearchMethod::dnas a DnasConvolution on every searched convolution. Pinned layers get
// single-candidate mixtures at their pinned bits, i.e. plain quantizers. Weights are quantized
// per output channel; the first layer's input (the normalized image) as signed.
std::vector<SearchedLayer> attach_search(nn::Module& model, const Shape& image_shape, const SearchOptions& options);

// The search's view of the layers (MACs, params, pins) for the cost model.
std::vector<LayerInfo> cost_layers(const std::vector<SearchedLayer>& layers);
// Current probabilities of every layer (pinned layers: empty).
std::vector<LayerProbabilities> layer_probabilities(const std::vector<SearchedLayer>& layers);

struct SearchResult {
  quant::BitConfig config;
  Selection selection;
  ResolvedBudget budget;
  double uniform_reference = 0;          // cost of uniform W_bA_b at the budget's nearest b (context)
  std::vector<nn::EpochStats> history;
  double seconds = 0;
  int64_t peak_rss_bytes = 0;
};

// Runs the whole search on `model` (already holding the float weights to start from) and writes
// the artifacts to options.out_dir. `run` describes the model (its spec), the data (--data
// string) and the provenance; the checkpoints carry it, the final one with the selected BitConfig
// as its quantization (nn::RunMetadata::quantization) and the supernet's normalization.
SearchResult run_search(nn::Module& model, const data::DatasetSplits& data, const SearchOptions& options,
                        const nn::RunMetadata& run);

}  // namespace bitmix::search
