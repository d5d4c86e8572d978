#pragma once
// AdaQAT (adaptive bit-width quantization-aware training): one real-valued bitwidth per searched
// layer for its weights and one for its input activations, used rounded up,
//
//   k = clamp(ceil(b), b_min, b_max),
//
// in every quantization (the layer's EBS mixtures made one-hot on candidate k, i.e. the plain
// quantizer at k bits with its own LSQ step), and updated during training by
//
//   g = ΔL/Δb + ΔP/Δb,   ΔL/Δb = L(k) − L(k − 1),   ΔP/Δb = P'(C) · (C(k) − C(k − 1)),
//
// both differences taken with every other layer at its current bits, L the task loss on the
// current training batch (training mode, batch statistics; running statistics are restored
// afterwards), C the cost model's total and P the budget penalty (active over budget only). At
// k = b_min the forward difference L(k + 1) − L(k) is used instead. The relaxed bits take an
// Adam step on g (docs/search.md "AdaQAT").

#include <cstdint>
#include <span>
#include <vector>

#include "bitmix/data/loader.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/search/cost.hpp"
#include "bitmix/search/selection.hpp"

namespace bitmix::search {

struct SearchedLayer;

struct AdaQatOptions {
  double init_bits = 8.0;  // starting relaxed bitwidth of every searched weight and activation
  int min_bits = 2;        // the rounded bits stay in [min_bits, max_bits]
  int max_bits = 8;
  double bit_lr = 0.05;    // Adam step size of the relaxed bits
  int every = 1;           // update the bits every N training steps
};

// clamp(ceil(b), min_bits, max_bits).
int adaqat_bits(double relaxed, int min_bits, int max_bits);

// dL/db and dC/db of every searched layer (pinned layers: 0), by the differences above.
struct BitGradients {
  std::vector<double> w, a;
};

class AdaQat {
 public:
  // `layers` must have EBS mixtures whose candidates are exactly min_bits..max_bits.
  AdaQat(std::vector<SearchedLayer>& layers, const CostModel& cost, double budget, double penalty_weight,
         const AdaQatOptions& options);

  // Makes every searched mixture one-hot on its rounded bits.
  void apply();
  // Rounded bits per layer (pinned layers at their pins).
  std::vector<LayerBits> bits() const;
  const std::vector<double>& relaxed_w() const { return w_; }
  const std::vector<double>& relaxed_a() const { return a_; }
  void set_relaxed(std::vector<double> w, std::vector<double> a);

  // Task-loss differences on (images, labels), in the model's current mode; the model's buffers
  // (BatchNorm running statistics) are left as they were, the mixtures at their rounded bits.
  BitGradients loss_gradient(nn::Module& model, const Tensor& images, std::span<const int> labels,
                             float label_smoothing);
  // Cost differences of the total C (not yet multiplied by the penalty's derivative).
  BitGradients cost_gradient() const;
  // Penalty λ·ln(C/B)² and its derivative dP/dC when C > B, else zero.
  Penalty penalty() const;
  // One update: loss and penalty gradients, an Adam step on the relaxed bits, clamping, apply().
  // Returns the penalty's value before the step.
  double step(nn::Module& model, const data::Batch& batch, float label_smoothing);

  // Selection scores for select_bits: the argmax is the rounded bits k; log p(j) = −|j − b| for
  // j ≠ k, so the repair first lowers layers whose b is closest to k − 1 per unit of cost saved.
  std::vector<LayerProbabilities> selection_probabilities() const;
  Candidates candidates() const;

 private:
  double loss_at(nn::Module& model, const Tensor& images, std::span<const int> labels, float smoothing);
  void set_layer(std::size_t layer, int w_bits, int a_bits);

  std::vector<SearchedLayer>& layers_;
  const CostModel& cost_;
  double budget_;
  double lambda_;
  AdaQatOptions options_;
  std::vector<double> w_, a_;                  // relaxed bits (pinned layers: their pins)
  std::vector<double> mw_, vw_, ma_, va_;      // Adam moments
  int64_t adam_steps_ = 0;
};

}  // namespace bitmix::search
